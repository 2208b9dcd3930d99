"""Operators with a trivial SVD: identity, inpainting (a diagonal 0/1 mask) and colourisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from .base import SVDOperator


class Identity(SVDOperator):
    """A = I (denoising)."""

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x.clone()

    def adjoint(self, y: Tensor) -> Tensor:
        return y.clone()

    def pinv(self, y: Tensor, **_: object) -> Tensor:
        return y.clone()

    def Vt(self, x):
        return x.flatten(1)

    Ut = Vt

    def V(self, z, shape):
        return z.reshape(z.shape[0], *shape[1:])

    U = V

    def singular_values(self, x_shape) -> Tensor:
        return torch.ones(1, math.prod(x_shape[1:]))


class Inpainting(SVDOperator):
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

    def Vt(self, x):
        return x.flatten(1)

    Ut = Vt

    def V(self, z, shape):
        return z.reshape(z.shape[0], *shape[1:])

    U = V

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


class Colorize(SVDOperator):
    """y = mean over RGB (other weights, e.g. ITU luma, via ``weights``). x: (B, 3, H, W) -> y: (B, 1, H, W).
    SVD per pixel: the weight vector w = ‖w‖ q₁ with q₁ the first row of an orthogonal 3×3 Q."""

    def __init__(self, weights=(1 / 3, 1 / 3, 1 / 3)) -> None:
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (3,):
            raise ValueError("colourisation weights must be 3 numbers")
        q1 = w / w.norm()
        q, _ = torch.linalg.qr(torch.cat([q1[:, None], torch.eye(3, dtype=torch.float64)], 1))
        q = q[:, :3] * torch.sign((q[:, 0] * q1).sum())  # first column = +q1
        self.register_buffer("w", w.reshape(1, 3, 1, 1))
        self.register_buffer("Q", q.T.contiguous())  # rows q1, q2, q3
        self.register_buffer("s", w.norm().reshape(1, 1))

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        if x.shape[1] != 3:
            raise ValueError(f"colourisation needs RGB images (3 channels), got {x.shape[1]}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return (x * self.w.to(x)).sum(1, keepdim=True)

    def adjoint(self, y: Tensor) -> Tensor:
        return y * self.w.to(y)

    def y_shape(self, x_shape):
        return (x_shape[0], 1, *x_shape[2:])

    def in_shape(self, out_shape):
        return (out_shape[0], 3, *out_shape[2:])

    def Vt(self, x):
        return torch.einsum("ij,bjhw->bihw", self.Q.to(x), x).flatten(1)

    def V(self, z, shape):
        return torch.einsum("ij,bihw->bjhw", self.Q.to(z), z.reshape(z.shape[0], 3, *shape[2:]))

    def Ut(self, y):
        return y.flatten(1)

    def U(self, z, shape):
        return z.reshape(z.shape[0], 1, *shape[2:])

    def singular_values(self, x_shape) -> Tensor:
        return self.s.expand(1, math.prod(x_shape[2:]))
