"""The natural-photo prior's training campaign: legs of (CPU) training that each resume from the committed
weights, with a ledger in the model card.

A leg (``python scripts/train_campaign.py --minutes M``) continues the ``natural`` prior:

* from ``ckpt/natural/state.pt`` when it exists and is not older than the committed weights: an exact resume
  (online and EMA weights, Adam moments, step counter, random streams; see ``invdiff.train``);
* otherwise from the compact state committed in the repository: the EMA weights shipped as the prior
  (``invdiff/weights/natural.safetensors``, fp16) and the online weights (``training/natural/online.safetensors``,
  fp16), with a fresh Adam whose learning rate warms up again over ``rewarm`` steps;
* and, for the very first leg, from the shipped ``natural64`` (both nets take its EMA weights).

Every checkpoint (``ckpt_every`` steps, about 5 minutes on one CPU thread) rewrites the full state under ``ckpt/``
and the compact state plus the card in the working tree, so a leg that is cut off loses at most the steps since
the last checkpoint, and what is committed is never more than one checkpoint behind. The card's ledger records,
per leg: steps, images seen, wall minutes, threads × wall minutes and the CPU minutes the process really used (they
differ when the machine is busy: the leg runs at low priority), and the validation L_simple (the same 512 64×64
patches of the validation photos as ``natural64``'s figure, uniform t) with per-noise-level buckets.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from .schedule import NoiseSchedule
from .train import TrainConfig, Trainer
from .zoo import WEIGHTS_DIR

NAME = "natural"
REPO = Path(__file__).resolve().parents[1]

#: the campaigns: recipe name → (the shipped prior its first leg starts from, the card's note)
CAMPAIGNS: dict[str, tuple[str, str]] = {
    "natural": ("natural64", "continues natural64 (same 2.41M-parameter U-Net, same 38 photos) with more training; from "
                             "leg 11 on with log-normal training levels, from leg 14 on with 128x128 patches, 4 a step, "
                             "from leg 20 on grown deeper (two more residual blocks per decoder stage, 3.00M parameters), "
                             "from leg 34 on 53 training photos instead of 38 (15 more from lomiri-wallpapers), from leg 36 on "
                             "66 (13 more from opencv-doc), from leg 56 on 206 (140 from gcompris-qt-data, "
                             "lossy WebPs), from leg 58 on the 66 that are not WebPs again (A/B round 5) "
                             "(each leg records its patch and batch size, and from leg 34 on its number of photos); the "
                             "version is the number of legs in the ledger"),
    "natural-palette-colorize": ("natural", "Palette colourisation: the natural prior's U-Net with the grey image as "
                                            "one more input channel (its weights started at zero), started from the "
                                            "natural campaign's weights and trained on the same photos with the "
                                            "condition dropped for 10 % of the patches; the version is the number "
                                            "of legs in the ledger"),
    "natural-palette-sr4": ("natural", "Palette SR x4: the natural prior's U-Net with the bicubic-upsampled "
                                       "measurement as three more input channels (their weights started at zero), "
                                       "started from the natural campaign's weights and trained on the same photos "
                                       "with the condition dropped for 10 % of the patches; the version is the "
                                       "number of legs in the ledger"),
}


def online_path(name: str) -> Path:
    """Where a campaign's compact state keeps its online (non-EMA) weights."""
    return REPO / "training" / name / "online.safetensors"


ONLINE = online_path(NAME)


# ---- validation ------------------------------------------------------------------------------
def arm_card(recipe: str, name: str, unet: dict, path: Path, *, weights_dir: Path | None = None) -> Path:
    """The JSON card of a recipe A/B arm's weights (``scripts/campaign_ab.py``), so that ``invdiff.prior.load`` reads
    them: the campaign's card (its schedule and condition) with the arm's name and U-Net. Written once: results
    cached by the files' hash stay valid."""
    path = Path(path)
    if not path.is_file():
        from . import zoo

        card = json.loads((Path(weights_dir or zoo.WEIGHTS_DIR) / f"{recipe}.json").read_text())
        card["name"], card["unet"] = name, unet
        path.write_text(json.dumps(card))
    return path


def validation_patches(n_patches: int = 512, photos: Tensor | None = None) -> tuple[Tensor, torch.Generator]:
    """The validation patches of the natural prior's card: 64×64 crops of the validation photos (256×256, no
    rescaling), drawn from a generator seeded with 0. Returns the patches and the generator, whose stream then
    continues with the noise levels and noises (as ``natural64``'s figure drew them). ``photos``: other photos
    (N, 3, H, W) cropped the same way (the tuning split's, for recipe decisions)."""
    from .data import PatchSampler, validation_photos

    sampler = PatchSampler(list(validation_photos(256) if photos is None else photos), patch=64, max_scale=1.0)
    g = torch.Generator().manual_seed(0)
    return [sampler.sample(64, g) for _ in range(n_patches // 64)], g


@torch.no_grad()
def patch_losses(net, schedule: NoiseSchedule, chunks: list[Tensor], g: torch.Generator, *, condition=None,
                 g_cond: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Per-patch ε-MSE and t (uniform, then ε, drawn from ``g`` in batches of 8): the validation protocol, whose
    draws are the same for every network, so the losses of two networks pair up patch by patch."""
    param = next(iter(net.parameters()), None) if isinstance(net, torch.nn.Module) else None
    dev = param.device if param is not None else torch.device("cpu")  # the draws stay on the CPU generators
    losses, ts = [], []
    for x in chunks:
        for i in range(0, x.shape[0], 8):
            x0 = x[i: i + 8]
            t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), generator=g)
            eps = torch.randn(x0.shape, generator=g)
            cond = (condition(x0, g_cond).to(dev),) if condition is not None else ()
            x0, eps, td = x0.to(dev), eps.to(dev), t.to(dev)
            pred = net(schedule.q_sample(x0, td, eps), td, *cond)
            losses.append((pred.float() - eps).pow(2).mean(dim=(1, 2, 3)).cpu())
            ts.append(t)
    return torch.cat(losses).double(), torch.cat(ts)


def t_buckets(t: Tensor, buckets: int, num_timesteps: int) -> list[tuple[list[int], Tensor]]:
    """``buckets`` equal ranges of the schedule's timesteps: for each, its first and last t and the mask of ``t`` in it."""
    width = num_timesteps / buckets
    return [([int(b * width), int((b + 1) * width) - 1], (t >= b * width) & (t < (b + 1) * width)) for b in range(buckets)]


@torch.no_grad()
def validation_loss(net, schedule: NoiseSchedule, *, n_patches: int = 512, buckets: int = 10, condition=None) -> dict:
    """L_simple on the validation patches with t uniform, its standard error over patches, and the mean per
    bucket of t (``buckets`` equal ranges of the schedule's timesteps). ``condition(x0, generator)``: the
    condition of a Palette model (``invdiff.train.palette_condition_fn``), drawn from its own generator (seeded
    with 1) so that the patches, noise levels and noises are those of the unconditional figure."""
    chunks, g = validation_patches(n_patches)
    loss, t = patch_losses(net, schedule, chunks, g, condition=condition, g_cond=torch.Generator().manual_seed(1))
    per = []
    for span, sel in t_buckets(t, buckets, schedule.num_timesteps):
        v = loss[sel]
        per.append({"t": span, "n": int(sel.sum()),
                    "l_simple": round(float(v.mean()), 5) if len(v) else None,
                    "stderr": round(float(v.std() / math.sqrt(len(v))), 5) if len(v) > 1 else None})
    return {"l_simple": round(float(loss.mean()), 5), "stderr": round(float(loss.std() / math.sqrt(len(loss))), 5),
            "patches": len(loss), "buckets": per}


# ---- the compact state -----------------------------------------------------------------------
def _read_fp(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path)).items()}


def _write_fp16(sd: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().half().contiguous() if v.is_floating_point() else v.cpu().contiguous()
               for k, v in sd.items()}, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(path)


class CampaignTrainer(Trainer):
    """A ``Trainer`` that also writes the compact state, the prior and its card at every checkpoint."""

    def __init__(self, cfg: TrainConfig, *, weights_dir: Path = WEIGHTS_DIR, online: Path | None = None,
                 seed_prior: str | Path | None = None, validator=None, val_every: int = 1000, val_patches: int = 512, **kw):
        seed, self.note = CAMPAIGNS.get(cfg.name, (None, f"{cfg.name}: legs of training; the version is the number of "
                                                         "legs in the ledger"))
        self.weights_dir, self.val_every, self.val_patches = Path(weights_dir), val_every, val_patches
        self.online = Path(online) if online is not None else online_path(cfg.name)
        self.seed_prior = seed_prior if seed_prior is not None else seed
        if self.seed_prior is None:
            raise ValueError(f"no campaign is defined for {cfg.name!r} (known: {', '.join(CAMPAIGNS)})")
        self.validator = validator or (lambda net, schedule: validation_loss(net, schedule, n_patches=self.val_patches,
                                                                             condition=self.condition))
        self.card_path = self.weights_dir / f"{cfg.name}.json"
        self.card: dict = json.loads(self.card_path.read_text()) if self.card_path.is_file() else {}
        self.leg: dict = {}
        super().__init__(cfg, **kw)

    # -- where a leg starts --
    def begin_leg(self, *, rewarm: int, threads: int) -> None:
        ledger = self.card.get("campaign", {}).get("legs", [])
        committed_step = int(self.card.get("training", {}).get("steps", -1))
        if self.step and self.step >= committed_step:
            how = f"exact resume from ckpt at step {self.step}"
        elif self.card and self.online.is_file():
            self.net.load_state_dict(_read_fp(self.online))
            self.ema.load_state_dict(_read_fp(self.weights_dir / f"{self.cfg.name}.safetensors"))
            tr = self.card["training"]
            self.step, self.images_seen, self.seconds = int(tr["steps"]), int(tr["images_seen"]), float(tr["seconds"])
            how = f"compact state at step {self.step} (fp16 online + EMA weights), Adam re-warmed over {rewarm} steps"
        else:
            from .prior import load

            seed = load(self.seed_prior)
            self.load_weights(seed)
            tr = seed.config["training"]
            self.step, self.images_seen, self.seconds = int(tr["steps"]), int(tr["images_seen"]), float(tr["seconds"])
            leg0 = {"leg": 0, "what": f"{seed.name} (its own training run)", "steps": [0, self.step],
                    "images_seen": [0, self.images_seen], "wall_minutes": round(self.seconds / 60, 1),
                    "cpu_minutes": round(self.seconds / 60, 1), "threads": 1}
            fig = seed.config.get("figures", {})
            if "validation_l_simple" in fig:
                leg0["validation"] = {"l_simple": fig["validation_l_simple"], "stderr": fig.get("validation_l_simple_stderr")}
            ledger = [leg0]
            how = f"{seed.name}'s EMA weights (online and EMA), Adam re-warmed over {rewarm} steps"
        if "exact" not in how:
            self.cfg = replace(self.cfg, warmup=rewarm, warmup_from=self.step)
        self.ledger = list(ledger)
        self.leg = {"leg": len(self.ledger), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "from": how, "steps": [self.step, self.step], "images_seen": [self.images_seen, self.images_seen],
                    "wall_minutes": 0.0, "cpu_minutes": 0.0, "threads": threads, "machine": platform.machine(),
                    "device": self._device_name(), "patch": self.cfg.patch, "batch_size": self.cfg.batch_size,
                    "lr": self.cfg.lr}
        sampler = getattr(self.batches, "__self__", None)  # a PatchSampler's bound `sample`: the photos it draws from
        if hasattr(sampler, "images"):
            self.leg["photos"] = len(sampler.images)
        self._seconds0 = self.seconds
        self._cpu0 = time.process_time()

    def _device_name(self) -> str:
        """The ledger's device: 'cpu', or a CUDA device with its model (e.g. 'cuda (NVIDIA H200)')."""
        return f"{self.device} ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else str(self.device)

    # -- checkpoints write the compact state too --
    def save_state(self) -> None:
        super().save_state()
        if self.leg:
            validate = self.val_every and self.step % self.val_every == 0
            self.export_compact(validate=bool(validate))

    def export_compact(self, *, validate: bool) -> Path:
        leg = self.leg
        leg["steps"][1], leg["images_seen"][1] = self.step, self.images_seen
        leg["wall_minutes"] = round((self.seconds - self._seconds0) / 60, 1)
        leg["process_cpu_minutes"] = round((time.process_time() - self._cpu0) / 60, 1)  # what the process did use
        if self.device.type == "cpu":
            leg["cpu_minutes"] = round(leg["wall_minutes"] * leg["threads"], 1)  # what the threads could have used
        else:  # an accelerator's leg: its own minutes, and only the host CPU time the process used
            leg["gpu_minutes"] = leg["wall_minutes"]
            leg["cpu_minutes"] = leg["process_cpu_minutes"]
            leg["precision"] = "bf16 autocast" if self.autocast_bf16 else "fp32"  # it moves the loss at high t (RESULTS)
        curve = list(self.card.get("campaign", {}).get("validation_curve", []))
        if not curve and self.ledger and "validation" in self.ledger[0]:
            v0 = self.ledger[0]
            curve = [[v0["images_seen"][1], v0["validation"]["l_simple"], v0["validation"]["stderr"]]]
        if validate:
            self.ema.eval()
            val = self.validator(self.ema, self.schedule)
            leg["validation"] = val
            curve = [c for c in curve if c[0] != self.images_seen] + [[self.images_seen, val["l_simple"], val["stderr"]]]
        legs = self.ledger + [leg]
        cpu = sum(entry["cpu_minutes"] for entry in legs)
        last_val = next((entry["validation"] for entry in reversed(legs) if "validation" in entry), None)
        gpu = sum(entry.get("gpu_minutes", 0.0) for entry in legs)
        campaign = {"note": self.note, "legs": legs, "validation_curve": curve, "cpu_minutes_total": round(cpu, 1),
                    **({"gpu_minutes_total": round(gpu, 1)} if gpu else {}),
                    "resume": f"python scripts/train_campaign.py --recipe {self.cfg.name} --minutes M  (see CONTRIBUTING.md)"}
        figures = dict(self.card.get("figures", {}))
        if last_val is not None:
            figures.update({"validation_l_simple": last_val["l_simple"], "validation_l_simple_stderr": last_val["stderr"]})
            if "buckets" in last_val:
                figures["validation_l_simple_buckets"] = last_val["buckets"]
        _write_fp16(self.net.state_dict(), self.online)
        path = self.export(self.weights_dir / f"{self.cfg.name}.safetensors",
                           extra={"version": len(legs) - 1, "campaign": campaign, "figures": figures})
        self.card = json.loads(self.card_path.read_text())
        return path


def campaign_config(*, threads: int = 1, minutes: float | None = None, ckpt_dir: str = "ckpt",
                    recipe: str = NAME) -> TrainConfig:
    from .recipes import RECIPES

    if recipe not in CAMPAIGNS:
        raise ValueError(f"no campaign is defined for {recipe!r} (known: {', '.join(CAMPAIGNS)})")
    return replace(RECIPES[recipe], max_minutes=minutes, threads=threads, ckpt_dir=ckpt_dir)


__all__ = ["CAMPAIGNS", "arm_card", "CampaignTrainer", "campaign_config", "online_path", "patch_losses", "validation_loss", "NAME", "ONLINE"]
