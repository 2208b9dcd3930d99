"""Inpainting: a diagonal 0/1 mask (its SVD is trivial: U = V = I, singular values = the mask), and the masks
of the benchmarks (DPS's box, random pixels, free-form strokes)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from .base import PixelBasis


class Inpainting(PixelBasis):
    """y = m ⊙ x with a 0/1 mask m of shape (B|1, 1|C, H, W) (1 = observed). The measurement keeps the image
    shape with zeros at the missing pixels. SVD: U = V = I, singular values = the mask (DDRM's convention)."""

    batched = ("mask",)

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.ndim == 2:
            mask = mask[None, None]
        elif mask.ndim == 3:
            mask = mask[:, None]
        if mask.ndim != 4:
            raise ValueError(f"mask must be (H, W), (B, H, W) or (B, C, H, W), got shape {tuple(mask.shape)}")
        if not torch.isfinite(mask).all():
            raise ValueError("mask contains NaN or infinite values")
        self.register_buffer("mask", (mask > 0.5).float())

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        m = self.mask
        if tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
            raise ValueError(f"mask of size {tuple(m.shape[-2:])} does not match the image {tuple(x.shape[-2:])}")
        if m.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"mask has {m.shape[1]} channels but the image has {x.shape[1]}")

    def _m(self, x: Tensor) -> Tensor:
        return self.mask.to(device=x.device, dtype=x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self._m(x) * x

    def adjoint(self, y: Tensor) -> Tensor:
        return self._m(y) * y

    def pinv(self, y: Tensor, **_: object) -> Tensor:
        return self._m(y) * y

    def on_grid(self, y: Tensor, x_shape) -> Tensor:
        """(y with the missing pixels at 0, the mask): the conditioning input of Palette inpainting models."""
        h, w = x_shape[-2:]
        m = self.mask.to(y).expand(y.shape[0], 1, h, w)
        return torch.cat([y * m, m], 1)

    def singular_values(self, x_shape) -> Tensor:
        b = self.mask.shape[0]
        return self.mask.expand(b, x_shape[1], *x_shape[2:]).reshape(b, -1)


def _scaled_side(size: int, frac: float) -> int:
    return max(1, int(round(size * frac)))


def box_mask(shape, *, size: float = 0.5, margin: float = 16 / 256, generator: rng.Generators = None) -> Tensor:
    """A missing square box of side ``size``·side (DPS: 128 in 256) at a random position at least ``margin``·side
    from the border (DPS: 16 px in 256), one per image: (B, 1, H, W), 1 = observed."""
    b, _, h, w = shape
    bh, bw = _scaled_side(h, size), _scaled_side(w, size)
    mh, mw = int(round(h * margin)), int(round(w * margin))
    u = rng.rand((b, 2), generator, dtype=torch.float64)
    top = (mh + u[:, 0] * (max(h - bh - 2 * mh, 0) + 1)).long().clamp_max(h - bh)
    left = (mw + u[:, 1] * (max(w - bw - 2 * mw, 0) + 1)).long().clamp_max(w - bw)
    m = torch.ones(b, 1, h, w)
    for i in range(b):
        m[i, :, top[i] : top[i] + bh, left[i] : left[i] + bw] = 0
    return m


def random_mask(shape, *, p: float = 0.7, generator: rng.Generators = None) -> Tensor:
    """Each pixel missing with probability ``p`` (DPS: 70 %), shared over channels: (B, 1, H, W)."""
    if not 0 <= p < 1:
        raise ValueError(f"missing fraction p must be in [0, 1), got {p}")
    b, _, h, w = shape
    return (rng.rand((b, 1, h, w), generator) >= p).float()


def freeform_mask(shape, *, strokes: tuple[int, int] = (2, 4), width: float = 0.05, generator: rng.Generators = None) -> Tensor:
    """Free-form brush strokes (random polylines drawn with a round brush): (B, 1, H, W), 1 = observed."""
    b, _, h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    out = torch.ones(b, 1, h, w)
    u = rng.rand((b, 64), generator, dtype=torch.float64)  # all the randomness of one image, drawn at once
    side = min(h, w)
    for i in range(b):
        it = iter(u[i].tolist())
        hole = torch.zeros(h, w, dtype=torch.bool)
        for _ in range(strokes[0] + int(next(it) * (strokes[1] - strokes[0] + 1))):
            py, px = next(it) * (h - 1), next(it) * (w - 1)
            rad = max(1.0, side * width * (0.5 + next(it)))
            for _ in range(2 + int(next(it) * 3)):
                ang = next(it) * 2 * math.pi
                length = side * (0.1 + 0.25 * next(it))
                qy = min(max(py + length * math.sin(ang), 0), h - 1)
                qx = min(max(px + length * math.cos(ang), 0), w - 1)
                # distance from every pixel to the segment p-q
                dy, dx = qy - py, qx - px
                L2 = max(dy * dy + dx * dx, 1e-12)
                s = (((yy - py) * dy + (xx - px) * dx) / L2).clamp(0, 1)
                hole |= (yy - py - s * dy) ** 2 + (xx - px - s * dx) ** 2 <= rad**2
                py, px = qy, qx
        out[i, 0][hole] = 0
    return out

