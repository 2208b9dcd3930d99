"""Colourisation: RGB to grey (the mean of the channels) with its per-pixel SVD."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SVDOperator


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
