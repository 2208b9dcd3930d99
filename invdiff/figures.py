"""Pictures people would rather see than read: side-by-side panels, uncertainty maps, sample grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import atomic_path, to_unit


def display(x: Tensor, like: Tensor | None = None) -> np.ndarray:
    """One image (1|C, h, w) of any kind as an HxWx3 float array in [0, 1] for a panel; measurements of another
    size (super-resolution, phase retrieval) are resized to ``like``'s grid (nearest) for comparison."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x[0]
    if like is not None and tuple(x.shape[-2:]) != tuple(like.shape[-2:]):
        x = F.interpolate(x[None], size=tuple(like.shape[-2:]), mode="nearest")[0]
    a = to_unit(x).clamp(0, 1)
    if a.shape[0] == 1:
        a = a.expand(3, -1, -1)
    return a[:3].permute(1, 2, 0).numpy()


def magnitude_display(y: Tensor) -> Tensor:
    """A Fourier magnitude shown as log(1+|y|), centred (fftshift), scaled to [-1, 1]."""
    v = torch.log1p(y.detach().float().abs())
    v = torch.fft.fftshift(v, dim=(-2, -1))
    v = v / v.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
    return v * 2 - 1


def error_map(x: Tensor, ref: Tensor) -> np.ndarray:
    e = (x.detach().float().cpu() - ref.detach().float().cpu()).abs().mean(dim=-3)
    if e.ndim == 3:
        e = e[0]
    return e.numpy()


def panels(path: str | Path, items: list[tuple[str, np.ndarray, str | None]], *, title: str | None = None, size: float = 3.2) -> Path:
    """Save a row of labelled panels; each item is (label, HxW(x3) array, colormap or None). Atomic."""
    from matplotlib.figure import Figure  # the object API: the caller's backend is never changed

    fig = Figure(figsize=(size * len(items), size + (0.4 if title else 0.1)))
    axes = fig.subplots(1, len(items), squeeze=False)
    for ax, (label, img, cmap) in zip(axes[0], items):
        im = ax.imshow(img, cmap=cmap, interpolation="nearest", vmin=0 if cmap is None else None)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
        if cmap is not None:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def outlined(img: np.ndarray, region, colour=(1.0, 0.85, 0.0)) -> np.ndarray:
    """A copy of the HxWx3 panel ``img`` with the window ``region`` (top, left, height, width) outlined, the line
    wide enough to see at a panel's size."""
    out = img.copy()
    t, left, h, w = (int(v) for v in region)
    d = max(2, round(max(out.shape[:2]) / 150))
    box = np.zeros(out.shape[:2], dtype=bool)
    box[t: t + h, left: left + w] = True
    box[t + d: t + h - d, left + d: left + w - d] = False
    out[box] = colour
    return out


def kernel_display(kernel: Tensor) -> np.ndarray:
    """A blur kernel (the first image's, if per image) as an HxW array scaled to its maximum, for a panel."""
    k = kernel.detach().float().cpu()
    k = k.reshape(-1, *k.shape[-2:])[0]
    return (k / k.max().clamp_min(1e-12)).numpy()


def std_display(std: Tensor) -> np.ndarray:
    s = std.detach().float().cpu()
    if s.ndim == 4:
        s = s[0]
    return s.mean(0).numpy()
