"""Training of ε-networks: DDPM's Algorithm 1 (ε-prediction MSE, "L_simple") with AdamW, warm-up, EMA
weights, gradient clipping, bf16 autocast and torch.compile on GPU, periodic checkpoints with exact resume,
sample grids during training, and DDP under ``torchrun``.

Exact resume: every random draw of step ``k`` (which images, crops, t, ε) comes from generators seeded by
(seed, k, rank), so a run resumed from a checkpoint continues with exactly the numbers it would have drawn.
Palette-style conditional models train the same way with ``condition`` set: a function that degrades the
clean batch into the conditioning input (see ``invdiff.samplers.palette``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .nets.unet import UNet, UNetConfig
from .eps import EpsPrior, drop_condition
from .schedule import NoiseSchedule

#: (batch size, generator) -> clean images in [-1, 1], or (images, class labels) for a class-conditional model
Batches = Callable[[int, torch.Generator], "Tensor | tuple[Tensor, Tensor]"]
Condition = Callable[[Tensor, torch.Generator], Tensor]  # (clean batch, generator) -> conditioning input


@dataclass(frozen=True)
class TrainConfig:
    name: str
    data: str  # "fmnist", "natural", "natural-no-webp" (the listed photos not from WebPs), "natural-webp-half" (those
    # and the WebP ones at half their size), or "folder:PATH"
    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: dict = field(default_factory=lambda: {"kind": "linear", "num_timesteps": 1000})
    patch: int = 64  # natural/folder patch size
    batch_size: int = 32
    lr: float = 2e-4
    warmup: int = 500
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    steps: int = 100_000
    max_minutes: float | None = None  # stop (checkpointed) after this much wall time
    seed: int = 0
    ckpt_dir: str = "ckpt"
    ckpt_every: int = 500
    ckpt_minutes: float | None = None  # also checkpoint when this much wall time has passed since the last one
    sample_every: int = 2000
    condition: str | None = None  # Palette: name in CONDITIONS
    #: classifier-free guidance: the probability that an image's condition (channels or label) is replaced by the
    #: null condition during training (0: a plain conditional model, which cannot be guided)
    cond_dropout: float = 0.0
    device: str | None = None
    bf16: bool = True  # autocast on CUDA only
    compile: bool = False
    threads: int | None = None
    warmup_from: int = 0  # the learning rate warms up over `warmup` steps counted from this step (a re-warmed optimiser)
    #: after the warm-up: "constant", or "cosine" from lr down to lr_min over lr_decay_steps (counted from warmup_from)
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    lr_decay_steps: int = 0
    #: the noise levels of training: "uniform" t (DDPM), or "lognormal": ln σ_t ~ N(mean, std²) as in EDM (Karras et
    #: al. 2022, σ_t = √((1 − ᾱ_t)/ᾱ_t)) mixed with a uniform share of t so that every t of the schedule is trained
    t_sampling: str = "uniform"
    t_lognormal: tuple[float, float, float] = (-1.2, 1.2, 0.2)  # (mean, std, uniform share)
    #: the weight of each level's ε-MSE: "eps" (L_simple), or "min-snr": min(SNR_t, γ)/SNR_t (Hang et al. 2023)
    loss_weighting: str = "eps"
    min_snr_gamma: float = 5.0
    #: natural/folder data: the largest crop scale (a region of up to max_scale·patch pixels resized to the patch)
    #: and mild colour jitter (saturation and contrast scaled by up to ±colour_jitter)
    max_scale: float = 2.0
    colour_jitter: float = 0.0
    #: natural/folder data: each patch the most colourful of this many candidates (1: every patch as drawn)
    colour_pick: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["unet"] = UNetConfig.from_dict(d["unet"])
        if "t_lognormal" in d:
            d["t_lognormal"] = tuple(d["t_lognormal"])
        return cls(**d)


# ---- data ------------------------------------------------------------------------------------
def make_batches(cfg: TrainConfig, device: str | torch.device | None = None) -> Batches:
    """The training batches of ``cfg.data``; photo patches are cut on ``device`` (Fashion-MNIST stays on the CPU)."""
    from . import data as D

    if cfg.data == "fmnist":
        x, labels = D.fashion_mnist("train")
        labelled = cfg.unet.num_classes > 0

        def fmnist(n: int, g: torch.Generator):
            idx = torch.randint(0, x.shape[0], (n,), generator=g)
            flip = torch.rand(n, generator=g) < 0.5
            b = x[idx]
            b = torch.where(flip[:, None, None, None], b.flip(-1), b)
            return (b, torch.as_tensor(labels[idx], dtype=torch.long)) if labelled else b

        return fmnist
    if cfg.data in ("natural", "natural-no-webp", "natural-webp-half") or cfg.data.startswith("folder:"):
        if cfg.data == "natural":
            photos = D.natural_photos(listed=True)
        elif cfg.data == "natural-no-webp":  # the listed photos without those that exist only as lossy WebPs
            photos = D.natural_photos(names=D.natural_names(skip_format="webp"))
        elif cfg.data == "natural-webp-half":  # the same, and the WebP ones at half size (their artefacts shrink)
            kept = D.natural_names(skip_format="webp")
            photos = D.natural_photos(names=kept) + [D.downscale_uint8(p, 2) for p in D.natural_photos(
                names=sorted(set(D.natural_names()) - set(kept)))]
        else:
            from .io import read_image

            photos = [read_image(p, channels=cfg.unet.in_channels)[0] for p in D.list_images(cfg.data[7:])]
        sampler = D.PatchSampler(photos, patch=cfg.patch, max_scale=cfg.max_scale, colour_jitter=cfg.colour_jitter,
                                 colour_pick=cfg.colour_pick, device=device)
        return sampler.sample
    raise ValueError(f"unknown training data {cfg.data!r} (fmnist, natural, natural-no-webp, natural-webp-half, "
                     "folder:PATH)")


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) * 64 + int(rank))


# ---- the objective -----------------------------------------------------------------------------
def noise_levels(schedule: NoiseSchedule) -> Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t): the noise level of x_t/√ᾱ_t (the variance-exploding view of the schedule), float64."""
    ac = schedule.alphas_cumprod.double().cpu()
    return ((1 - ac) / ac).sqrt()


def timestep_weights(cfg: TrainConfig, schedule: NoiseSchedule) -> tuple[Tensor, Tensor] | None:
    """(p_t, w_t) over the schedule's timesteps: the probability of drawing t and the weight of its ε-MSE, the
    weights normalised to E_p[w] = 1 (the learning rate keeps its meaning). None for DDPM's uniform t and L_simple.

    "lognormal": p_t is the N(mean, std²) mass of ln σ between the midpoints of t's neighbours (EDM's
    distribution of training levels, discretised), mixed with a uniform share. "min-snr": w_t = min(SNR_t, γ)/SNR_t
    with SNR_t = 1/σ_t², which for ε-prediction turns down only the low-noise levels."""
    if cfg.t_sampling == "uniform" and cfg.loss_weighting == "eps":
        return None
    T = schedule.num_timesteps
    ln_sigma = noise_levels(schedule).log()
    if cfg.t_sampling == "uniform":
        p = torch.full((T,), 1.0 / T, dtype=torch.float64)
    elif cfg.t_sampling == "lognormal":
        mean, std, share = cfg.t_lognormal
        if not (std > 0 and 0 < share <= 1):
            raise ValueError(f"t_lognormal needs std > 0 and a uniform share in (0, 1], got {cfg.t_lognormal}")
        mid = (ln_sigma[1:] + ln_sigma[:-1]) / 2
        edges = torch.cat([ln_sigma.new_tensor([-math.inf]), mid, ln_sigma.new_tensor([math.inf])])
        cdf = torch.special.ndtr((edges - mean) / std)
        p = (1 - share) * (cdf[1:] - cdf[:-1]) + share / T
    else:
        raise ValueError(f"unknown t_sampling {cfg.t_sampling!r} (uniform, lognormal)")
    if cfg.loss_weighting == "eps":
        w = torch.ones(T, dtype=torch.float64)
    elif cfg.loss_weighting == "min-snr":
        snr = (-2 * ln_sigma).exp()
        w = snr.clamp(max=cfg.min_snr_gamma) / snr
    else:
        raise ValueError(f"unknown loss_weighting {cfg.loss_weighting!r} (eps, min-snr)")
    p = p / p.sum()
    return p, w / (p * w).sum()


def diffusion_loss(net, schedule: NoiseSchedule, x0: Tensor, g: torch.Generator, *, cond: Tensor | None = None,
                   levels: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """L_simple: E_t,ε ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖² with t uniform (per-image mean); with ``levels`` =
    (p_t, w_t) from ``timestep_weights``, t ~ p and each image's ε-MSE weighted by w_t."""
    b = x0.shape[0]
    if levels is None:
        t = torch.randint(0, schedule.num_timesteps, (b,), generator=g)
    else:
        t = torch.multinomial(levels[0], b, replacement=True, generator=g)
    t = t.to(x0.device)
    eps = torch.randn(x0.shape, generator=g).to(x0.device)
    x_t = schedule.q_sample(x0, t, eps)
    pred = net(x_t, t, cond) if cond is not None else net(x_t, t)
    if levels is None:
        return F.mse_loss(pred.float(), eps)
    per_image = (pred.float() - eps).pow(2).mean(dim=tuple(range(1, eps.ndim)))
    return (per_image * levels[1].to(per_image)[t]).mean()


def lr_at(cfg: TrainConfig, step: int) -> float:
    k = step - cfg.warmup_from
    warm = min(1.0, (k + 1) / max(1, cfg.warmup))
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    if cfg.lr_schedule == "cosine":
        frac = min(1.0, max(0, k) / max(1, cfg.lr_decay_steps))
        return warm * (cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * frac)))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r} (constant, cosine)")


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    return min(cfg.ema_decay, (1 + step) / (10 + step))


# ---- the loop ----------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, *, batches: Batches | None = None, condition: Condition | None = None, quiet: bool = False):
        self.cfg = cfg
        self.quiet = quiet
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        dev = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.world > 1 and dev.startswith("cuda"):
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(dev)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.schedule = NoiseSchedule.from_config(cfg.schedule)
        with torch.random.fork_rng(devices=[]):  # deterministic initialisation without touching the global stream
            torch.manual_seed(cfg.seed)
            self.net = UNet(cfg.unet).to(self.device)
        self.ema = UNet(cfg.unet).to(self.device).requires_grad_(False)
        self.ema.load_state_dict(self.net.state_dict())
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.stop_requested = False  # set (e.g. by a signal handler) to checkpoint and leave the loop after this step
        self.step = 0
        self.images_seen = 0
        self.seconds = 0.0
        self.history: list[tuple[int, float]] = []
        self.init_from: dict | None = None  # the shipped weights this run started from (load_weights)
        self.batches = batches or make_batches(cfg, device=self.device)
        self.condition = condition or (palette_condition_fn(cfg.condition) if cfg.condition else None)
        self.levels = timestep_weights(cfg, self.schedule)
        model = self.net
        if cfg.compile:
            model = torch.compile(model)
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model
        self.ckpt = Path(cfg.ckpt_dir) / cfg.name
        if (self.ckpt / "state.pt").is_file():
            self.load_state()

    # -- checkpoints --
    def state(self) -> dict:
        return {"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "images_seen": self.images_seen, "seconds": self.seconds, "history": self.history, "config": self.cfg.to_dict(),
                **({"init_from": self.init_from} if self.init_from else {})}

    def save_state(self) -> None:
        if self.rank != 0:
            return
        self.ckpt.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt / "state.pt.tmp"
        torch.save(self.state(), tmp)
        tmp.replace(self.ckpt / "state.pt")

    def load_state(self) -> None:
        st = torch.load(self.ckpt / "state.pt", map_location=self.device, weights_only=True)
        self.net.load_state_dict(st["net"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.images_seen, self.seconds = int(st["step"]), int(st["images_seen"]), float(st["seconds"])
        self.history = [tuple(h) for h in st.get("history", [])]
        self.init_from = st.get("init_from")
        saved = st.get("config", {})
        if "warmup_from" in saved:  # the learning-rate schedule is part of the state (a re-warmed optimiser)
            self.cfg = replace(self.cfg, warmup=int(saved["warmup"]), warmup_from=int(saved["warmup_from"]))

    def load_weights(self, prior: EpsPrior) -> None:
        """Start (or continue) from shipped weights: both the online and EMA nets take them.

        An unconditional prior may seed a conditional network of the same architecture: the label embedding of a
        class-conditional one, absent from the prior, starts at zero, and so do the input convolution's weights on
        a Palette model's condition channels. The new network then begins as exactly the old one, whatever the
        condition, and learns to use it from there. Any other mismatch is an error."""
        own, theirs = self.net.state_dict(), dict(prior.net.state_dict())
        w_in, cc = theirs.get("inp.weight"), self.cfg.unet.cond_channels
        if w_in is not None and cc and own["inp.weight"].shape[1] == w_in.shape[1] + cc:
            theirs["inp.weight"] = torch.cat([w_in.to(own["inp.weight"]), own["inp.weight"].new_zeros(
                w_in.shape[0], cc, *w_in.shape[2:])], 1)
        missing, unexpected = self.net.load_state_dict(theirs, strict=False)
        extra = [k for k in missing if not k.startswith("label_emb.")]
        if extra or unexpected:
            raise ValueError(f"these weights do not fit the {self.cfg.name} network (missing {extra[:3]}, "
                             f"unexpected {unexpected[:3]})")
        if missing:
            with torch.no_grad():
                self.net.label_emb.weight.zero_()
        self.ema.load_state_dict(self.net.state_dict())
        self.init_from = {"name": prior.config.get("name"), "training": {k: prior.config.get("training", {}).get(k)
                          for k in ("steps", "images_seen", "seconds")}}

    # -- one step --
    def _batch(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Clean images and their condition (Palette channels, class labels or None), with condition dropout."""
        b = self.batches(n, g)
        x0, labels = b if isinstance(b, tuple) else (b, None)
        x0 = x0.to(self.device)
        cond = self.condition(x0, g) if self.condition is not None else labels
        if cond is None:
            return x0, None
        cond = cond.to(self.device)
        if self.cfg.cond_dropout > 0:
            cond = drop_condition(cond, self.cfg.cond_dropout, g, self.cfg.unet.num_classes)
        return x0, cond

    @property
    def autocast_bf16(self) -> bool:
        """Whether a training step runs in bf16 autocast: asked for by the recipe, and on CUDA only."""
        return self.cfg.bf16 and self.device.type == "cuda"

    def train_step(self) -> float:
        cfg = self.cfg
        g = step_generator(cfg.seed, self.step, self.rank)
        local = cfg.batch_size // self.world
        x0, cond = self._batch(local, g)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(cfg, self.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            loss = diffusion_loss(self.model, self.schedule, x0, g, cond=cond, levels=self.levels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.opt.step()
        d = ema_decay_at(cfg, self.step)
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.lerp_(p, 1 - d)
        self.step += 1
        self.images_seen += cfg.batch_size
        return float(loss.detach())

    def prior(self, *, ema: bool = True) -> EpsPrior:
        net = self.ema if ema else self.net
        return EpsPrior(net.eval(), self.schedule, config={"name": self.cfg.name})

    def run(self) -> "Trainer":
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        cfg = self.cfg
        t_start = time.perf_counter()
        seconds0 = self.seconds
        losses: list[float] = []
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.1f} img/s"), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*cols, disable=self.quiet or self.rank != 0) as bar:
            task = bar.add_task(cfg.name, total=cfg.steps, completed=self.step, loss=float("nan"), ips=0.0)
            tick, seen0 = time.perf_counter(), self.images_seen
            last_ckpt = time.perf_counter()
            while self.step < cfg.steps:
                losses.append(self.train_step())
                self.seconds = seconds0 + time.perf_counter() - t_start
                if self.step % 25 == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    ips = (self.images_seen - seen0) / max(now - tick, 1e-9)
                    tick, seen0 = now, self.images_seen
                    mean = sum(losses) / len(losses)
                    self.history.append((self.step, mean))
                    losses.clear()
                    bar.update(task, completed=self.step, loss=mean, ips=ips)
                out_of_time = self.stop_requested or (cfg.max_minutes is not None and (time.perf_counter() - t_start) > 60 * cfg.max_minutes)
                overdue = cfg.ckpt_minutes is not None and time.perf_counter() - last_ckpt > 60 * cfg.ckpt_minutes
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or out_of_time or overdue:
                    self.save_state()
                    last_ckpt = time.perf_counter()
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.rank == 0:
                    self.write_samples()
                if out_of_time:
                    break
        return self

    def write_samples(self, n: int = 16) -> Path | None:
        """A grid of DDIM-50 samples from the EMA weights (unconditional models only)."""
        if self.condition is not None or self.cfg.unet.num_classes:
            return None
        from .io import save_grid

        try:
            from .samplers import sample
        except ImportError:  # sampling code not importable (partial install): skip the grid
            return None

        size = 32 if self.cfg.data == "fmnist" else self.cfg.patch
        g = torch.Generator().manual_seed(self.cfg.seed)
        with torch.no_grad():
            x = sample(self.prior(), (n, self.cfg.unet.in_channels, size, size), steps=50, eta=0.0, generator=g, device=self.device)
        return save_grid(self.ckpt / f"samples_{self.step:07d}.png", x, nrow=int(math.sqrt(n)))

    def export(self, path: str | Path, *, dtype: torch.dtype | None = torch.float16, extra: dict | None = None) -> Path:
        """Ship the EMA weights as a prior (safetensors + JSON with the training record)."""
        cfg = self.cfg
        size = 32 if cfg.data == "fmnist" else cfg.patch
        info = {"name": cfg.name,
                "data": {"dataset": cfg.data, "image_size": size, "channels": cfg.unet.in_channels,
                         "cond_channels": cfg.unet.cond_channels, "multiple": cfg.unet.multiple,
                         "condition": cfg.condition, "cond_dropout": cfg.cond_dropout,
                         **({"num_classes": cfg.unet.num_classes, "classes": _class_names(cfg)} if cfg.unet.num_classes else {})},
                "training": {"steps": self.step, "images_seen": self.images_seen, "batch_size": cfg.batch_size,
                             "seconds": round(self.seconds, 1), "final_loss": self.history[-1][1] if self.history else None,
                             "lr": cfg.lr, "ema_decay": cfg.ema_decay, "config": cfg.to_dict(),
                             "params": sum(p.numel() for p in self.net.parameters()),
                             **({"initialised_from": self.init_from} if self.init_from else {})}}
        for k, v in (extra or {}).items():
            info[k] = {**info.get(k, {}), **v} if isinstance(v, dict) and isinstance(info.get(k), dict) else v
        return self.prior().save(path, dtype=dtype, extra=info)


def _class_names(cfg: TrainConfig) -> list[str]:
    from .data import FMNIST_CLASSES

    return list(FMNIST_CLASSES) if cfg.data == "fmnist" else [str(i) for i in range(cfg.unet.num_classes)]


def palette_condition_fn(name: str) -> Condition:
    """The degradation that builds a Palette model's conditioning input from clean images: the task's operator
    and noise (``invdiff.tasks.PALETTE_CONDITIONS``), then ``invdiff.samplers.palette.palette_condition`` — the
    same function that builds the input at restoration time."""
    from .samplers.palette import palette_condition
    from .tasks import PALETTE_CONDITIONS, simulate

    if name not in PALETTE_CONDITIONS:
        raise ValueError(f"unknown Palette condition {name!r}; known: {', '.join(PALETTE_CONDITIONS)}")
    task, opts = PALETTE_CONDITIONS[name]

    def condition(x0: Tensor, g: torch.Generator) -> Tensor:
        op, y = simulate(task, x0, opts, generator=g)
        return palette_condition(y, op, tuple(x0.shape))

    return condition


__all__ = ["TrainConfig", "Trainer", "diffusion_loss", "make_batches", "noise_levels", "step_generator", "timestep_weights",
           "replace"]
