"""A learned prior on motion-blur kernels: a small denoiser of kernels, used as the regulariser of the kernel
update (plug-and-play half-quadratic splitting), as Laroche et al. 2024 ("Fast Diffusion EM") regularise their
M-step with a kernel denoiser trained on the blur generator's kernels.

The denoiser sees a kernel scaled to a maximum of 1 (so one network serves every kernel size and every level of a
coarse-to-fine pyramid) and a map of the noise level on that scale, and returns the clean kernel on the same
scale. It is trained on the motion-deblur task's own kernel models (``invdiff.operators.motion.MOTION_MODELS``),
stretched to random scales, flipped and transposed, with Gaussian noise that is sometimes clipped at zero (the
kernel update hands it non-negative kernels); ``scripts/train_kernel_prior.py`` trains it, its card keeps the
ledger. The authors scale nothing (their kernels sum to 1 at one fixed size) and train with a 5-layer FDnCNN;
ours is a dilated 7-layer network of the same width (receptive field 33 px, for 61-px trajectories)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rng

#: the bundled kernel prior's files (weights and card) inside the package
WEIGHTS = Path(__file__).parent / "weights" / "motion-kernel-prior.safetensors"
#: the noise levels it is trained for, on the kernel's max-1 scale
SIGMA_RANGE = (0.01, 0.5)
#: the canvas kernels are trained on, and the stretch range of the kernels drawn onto it
CANVAS = 64
SCALE_RANGE = (0.12, 1.0)


class KernelDenoiser(nn.Module):
    """Residual dilated CNN (IRCNN-style, with FFDNet's noise-level map as a second input channel):
    (B, 1, H, W) kernels on a max-1 scale and a noise level → the denoised kernels, any H and W."""

    def __init__(self, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 3, 4, 3, 2, 1)) -> None:
        super().__init__()
        self.channels, self.dilations = channels, tuple(dilations)
        layers: list[nn.Module] = []
        c_in = 2
        for i, d in enumerate(dilations):
            c_out = 1 if i == len(dilations) - 1 else channels
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=d, dilation=d))
            if i < len(dilations) - 1:
                layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.body = nn.Sequential(*layers)

    def forward(self, k: Tensor, sigma: Tensor | float) -> Tensor:
        s = torch.as_tensor(sigma, dtype=k.dtype, device=k.device).reshape(-1, 1, 1, 1)
        return k - self.body(torch.cat([k, s.expand(k.shape[0], 1, *k.shape[-2:])], 1))

    def config(self) -> dict:
        return {"channels": self.channels, "dilations": list(self.dilations)}


def training_kernels(n: int, generator: torch.Generator, *, size: int = 61, canvas: int = CANVAS) -> Tensor:
    """``n`` clean training kernels (n, 1, canvas, canvas) on a max-1 scale: each drawn from the motion-deblur
    task's ``motionblur`` model (3 in 4) or its ``boracchi-foi`` shake model, at a random intensity in [0.3, 0.7],
    stretched about its centre by a factor log-uniform in ``SCALE_RANGE`` (the kernel sizes a coarse-to-fine
    estimate passes through), and flipped / transposed at random."""
    from .blind import resample_kernel
    from .operators.motion import motion_kernels, shake_kernels

    u = torch.rand(n, 5, generator=generator, dtype=torch.float64).tolist()
    out = []
    for i in range(n):
        sub = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        model = motion_kernels if u[i][0] < 0.75 else shake_kernels
        k = model(1, size, intensity=0.3 + 0.4 * u[i][1], generator=sub)[0].double()
        f = math.exp(math.log(SCALE_RANGE[0]) + u[i][2] * math.log(SCALE_RANGE[1] / SCALE_RANGE[0]))
        k = resample_kernel(k, (canvas - 1, canvas - 1), f)
        k = F.pad(k, (0, 1, 0, 1))
        if u[i][3] < 0.5:
            k = k.flip(1)
        if u[i][4] < 0.5:
            k = k.t()
        out.append(k / k.max())
    return torch.stack(out)[:, None].float()


def noisy(k: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The training input for clean kernels k (B, 1, H, W): noise of a level log-uniform in ``SIGMA_RANGE``,
    clipped at zero for half of the kernels. Returns (noisy kernels, levels (B,))."""
    b = k.shape[0]
    lo, hi = math.log(SIGMA_RANGE[0]), math.log(SIGMA_RANGE[1])
    sigma = torch.exp(lo + torch.rand(b, generator=generator) * (hi - lo))
    z = k + sigma.reshape(-1, 1, 1, 1) * torch.randn(k.shape, generator=generator)
    clip = torch.rand(b, generator=generator) < 0.5
    return torch.where(clip.reshape(-1, 1, 1, 1), z.clamp_min(0), z), sigma


def validation_set(n: int = 256, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """A fixed validation set (clean, noisy, levels) from its own stream (never the training stream, never the
    benchmarks' ``blind-motion-kernel`` stream)."""
    g = rng.make_generators(seed, 1, purpose="kernel-prior-validation")[0]
    k = training_kernels(n, g)
    z, s = noisy(k, g)
    return k, z, s


@torch.no_grad()
def validation_loss(net: KernelDenoiser, data: tuple[Tensor, Tensor, Tensor], batch: int = 64) -> dict:
    """Mean squared error of the denoised validation kernels (max-1 scale), overall and for the noise levels
    below and above 0.07, with the same figure for the noisy input (what a denoiser must beat)."""
    k, z, s = data
    errs = torch.cat([(net(z[i:i + batch], s[i:i + batch]) - k[i:i + batch]).square().mean((1, 2, 3))
                      for i in range(0, len(k), batch)])
    base = (z - k).square().mean((1, 2, 3))
    low = s < 0.07
    return {"mse": float(errs.mean()), "mse_se": float(errs.std() / math.sqrt(len(errs))),
            "mse_low_sigma": float(errs[low].mean()), "mse_high_sigma": float(errs[~low].mean()),
            "input_mse": float(base.mean())}


@dataclass
class KernelPrior:
    """A kernel denoiser with the settings of its plug-and-play use in ``invdiff.blind.update_kernel``:
    ``sigma`` the denoiser's noise level (max-1 scale), ``weight`` the splitting weight α (times the gradient
    energy, as the update's own L2 weight), ``rounds`` the splitting rounds."""

    net: KernelDenoiser
    sigma: float = 0.05
    weight: float = 1.0
    rounds: int = 4

    @torch.no_grad()
    def denoise(self, k: Tensor) -> Tensor:
        """One kernel (kh, kw) that sums to 1 → its denoised version, non-negative, summing to 1."""
        m = k.max().clamp_min(1e-12)
        p = next(self.net.parameters())
        out = self.net((k / m).to(p)[None, None], self.sigma)[0, 0].to(k) * m
        out = out.clamp_min(0)
        s = out.sum()
        return out / s if float(s) > 0 else k


def load_kernel_prior(path: str | Path | None = None, **settings) -> KernelPrior:
    """The kernel prior from ``path`` (a .safetensors file with its .json card; the bundled one by default)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise FileNotFoundError(f"the motion-kernel prior is missing ({path} and its .json card); train it with "
                                "scripts/train_kernel_prior.py or give --kernel-prior none")
    card = json.loads(card_path.read_text())
    net = KernelDenoiser(**card["config"])
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    net.eval()
    return KernelPrior(net, **{**card.get("use", {}), **settings})


def from_spec(spec: dict | str | None) -> KernelPrior | None:
    """A kernel prior from a JSON-able spec: None or "none" for no prior; "bundled" for the bundled weights with
    their card's settings; a dict {"path": a weights file or null for the bundled one, and any of "sigma",
    "weight", "rounds"}."""
    if spec is None or spec == "none":
        return None
    if spec == "bundled":
        return load_kernel_prior()
    if not isinstance(spec, dict):
        raise ValueError(f"a kernel prior spec is 'none', 'bundled' or a dict with path/sigma/weight/rounds, got {spec!r}")
    unknown = set(spec) - {"path", "sigma", "weight", "rounds"}
    if unknown:
        raise ValueError(f"unknown kernel prior settings {sorted(unknown)}: use path, sigma, weight, rounds")
    spec = dict(spec)
    return load_kernel_prior(spec.pop("path", None), **spec)
