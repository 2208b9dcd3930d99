"""Image quality: PSNR, SSIM and LPIPS, one value per image (reduction left to the caller).

Images are NCHW in [-1, 1]; scores are computed on the [0, 1] scale (data range 1), the convention of the
papers. SSIM is Wang et al.'s with an 11-tap Gaussian window (σ = 1.5), identical to scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``.

LPIPS uses the ``lpips`` package (its linear heads ship with it) on torchvision's AlexNet, whose weights are
downloaded by torchvision when online. Offline, point at the file: ``INVDIFF_LPIPS_BACKBONE=/path/alexnet.pth``
or ``lpips_model(backbone=...)``, or place it in the torch hub cache (``$TORCH_HOME/hub/checkpoints``). Without
it LPIPS is reported as unavailable, never computed with a random backbone.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


class LPIPSUnavailable(RuntimeError):
    """The AlexNet backbone weights for LPIPS are not available."""


def _unit(x: Tensor) -> Tensor:
    return ((x.double() + 1) / 2).clamp(0, 1)


def _check(x: Tensor, ref: Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"cannot score images of shape {tuple(x.shape)} against {tuple(ref.shape)}")


def psnr(x: Tensor, ref: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (data range 1 on the [0, 1] scale); x is clipped to range."""
    _check(x, ref)
    mse = ((_unit(x) - _unit(ref)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-20))


def psnr_upto_shift(x: Tensor, ref: Tensor, *, maxshift: float = 5.0, step: float = 0.25,
                    border: int = 15) -> Tensor:
    """PSNR per image (as ``psnr``) after the best sub-pixel translation of x, the evaluation of blind
    deblurring (Levin et al. 2009, their ``comp_upto_shift``; also Köhler et al. 2012): ``border`` pixels are
    shaved from the reference, x is moved by every shift in [−maxshift, maxshift]² on a grid of ``step`` pixels
    (bilinear, sampled from x's own pixels around the shaved window), and the least mean squared error is kept.
    A blind kernel, and so its restoration, is defined only up to a translation of the image."""
    _check(x, ref)
    h, w = ref.shape[-2:]
    if 2 * border >= min(h, w) or maxshift > border:
        raise ValueError(f"border {border} must leave an image of {h}x{w} and be at least maxshift {maxshift}")
    u, r = _unit(x).double(), _unit(ref).double()[..., border: h - border, border: w - border]
    n = round(2 * maxshift / step) + 1
    shifts = torch.linspace(-maxshift, maxshift, n, dtype=torch.float64)
    # pixel centres of the shaved window, in x's normalised coordinates (align_corners=True)
    iy = torch.arange(border, h - border, dtype=torch.float64)
    ix = torch.arange(border, w - border, dtype=torch.float64)
    best = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)
    for dy in shifts:
        gy = (iy + dy) / (h - 1) * 2 - 1
        gx = (ix[None, :] + shifts[:, None]) / (w - 1) * 2 - 1  # (n, W')
        g = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[None, :, None]), -1)  # (n, H', W', 2)
        moved = F.grid_sample(u.repeat_interleave(n, 0), g.repeat(u.shape[0], 1, 1, 1), mode="bilinear",
                              align_corners=True)
        mse = (moved - r.repeat_interleave(n, 0)).square().flatten(1).mean(1).reshape(u.shape[0], n)
        best = torch.minimum(best, mse.min(1).values)
    return (10 * torch.log10(1 / best.clamp_min(1e-20))).float()


def colourfulness(x: Tensor) -> Tensor:
    """Hasler and Süsstrunk's colourfulness M per RGB image (2003, on the 0-255 scale): with rg = R − G and
    yb = (R + G)/2 − B, M = √(σ_rg² + σ_yb²) + 0.3·√(μ_rg² + μ_yb²); 0 for a grey image."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"colourfulness needs RGB images (B, 3, H, W), got {tuple(x.shape)}")
    r, g, b = (_unit(x) * 255).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    mean = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return std + 0.3 * mean


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> Tensor:
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: Tensor, ref: Tensor, *, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (mean over channels and the valid window positions)."""
    _check(x, ref)
    a, b = _unit(x), _unit(ref)
    c = a.shape[1]
    g = _gaussian_window(sigma).to(a.device)
    if a.shape[-1] < g.numel() or a.shape[-2] < g.numel():
        raise ValueError(f"SSIM needs images of at least {g.numel()}x{g.numel()} pixels")
    wh = g.reshape(1, 1, -1, 1).expand(c, 1, -1, 1)
    ww = g.reshape(1, 1, 1, -1).expand(c, 1, 1, -1)

    def filt(v):
        return F.conv2d(F.conv2d(v, wh, groups=c), ww, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a**2
    sbb = filt(b * b) - mu_b**2
    sab = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.flatten(1).mean(1)


ALEXNET_FILES = ("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth")


def find_backbone(path: str | Path | None = None) -> Path | None:
    """The AlexNet weights: an explicit path, $INVDIFF_LPIPS_BACKBONE, or torchvision's file in the hub cache."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise LPIPSUnavailable(f"LPIPS backbone file not found: {p}")
        return p
    env = os.environ.get("INVDIFF_LPIPS_BACKBONE")
    if env:
        p = Path(env)
        if not p.is_file():
            raise LPIPSUnavailable(f"INVDIFF_LPIPS_BACKBONE points at a missing file: {p}")
        return p
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in ALEXNET_FILES:
        if (cache / name).is_file():
            return cache / name
    return None


def lpips_model(backbone: str | Path | None = None, *, device="cpu", allow_random_backbone: bool = False):
    """An ``lpips.LPIPS`` (AlexNet, v0.1 linear heads) with the backbone loaded from ``backbone`` (a torchvision
    AlexNet state_dict). ``allow_random_backbone`` is for testing the plumbing only."""
    import lpips
    import torchvision

    path = None if allow_random_backbone else find_backbone(backbone)
    if path is None and not allow_random_backbone:
        raise LPIPSUnavailable("LPIPS needs torchvision's AlexNet weights (alexnet-owt-7be5be79.pth): set "
                               "INVDIFF_LPIPS_BACKBONE or put the file in the torch hub cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lpips uses torchvision's deprecated `pretrained` argument
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file
            raise LPIPSUnavailable(f"cannot read the LPIPS backbone {path}: {e}") from None
        net = torchvision.models.alexnet()
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise LPIPSUnavailable(f"{path} is not a torchvision AlexNet state_dict: {e}") from None
        load_alexnet_features(model, net.features)
    return model.eval().to(device)


def load_alexnet_features(model, features: torch.nn.Sequential) -> None:
    """Copy torchvision AlexNet ``features`` into an lpips model's sliced backbone."""
    for name, sl in model.net.named_children():
        if not name.startswith("slice"):
            continue
        for idx, layer in sl.named_children():
            layer.load_state_dict(features[int(idx)].state_dict())


def lpips_or_none(backbone: str | Path | None = None, *, device="cpu"):
    """The LPIPS model, or None when the backbone is not available."""
    try:
        return lpips_model(backbone, device=device)
    except LPIPSUnavailable:
        return None


def lpips(x: Tensor, ref: Tensor, model) -> Tensor:
    """LPIPS distance per image (inputs in [-1, 1]; grey images are repeated to RGB)."""
    _check(x, ref)
    a, b = x.float().clamp(-1, 1), ref.float().clamp(-1, 1)
    if a.shape[1] == 1:
        a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
    dev = next(model.parameters()).device
    with torch.no_grad():
        return model(a.to(dev), b.to(dev)).flatten().double().cpu()


def score(x: Tensor, ref: Tensor, *, lpips_model=None) -> dict[str, Tensor | None]:
    """{"psnr", "ssim", "lpips"} per image; lpips is None when no model is given."""
    x, ref = x.detach(), ref.detach().to(x.device)
    return {"psnr": psnr(x, ref).cpu(), "ssim": ssim(x, ref).cpu(),
            "lpips": lpips(x, ref, lpips_model) if lpips_model is not None else None}


__all__ = ["colourfulness", "psnr", "ssim", "lpips", "lpips_model", "lpips_or_none", "score", "LPIPSUnavailable", "find_backbone"]
