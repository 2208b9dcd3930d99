"""Fourier phase retrieval: y = |F(pad(x))| with an orthonormal 2-D FFT (non-linear: no adjoint; its
vector-Jacobian product comes from autograd)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Operator


class PhaseRetrieval(Operator):
    """|F(pad(x))|, x zero-padded to round(oversampling · side) per axis (DPS: oversampling 2), orthonormal FFT so
    ‖y‖ = ‖x‖. ``squared=True`` gives the intensity |F|² instead. Invariant to a global sign of x, to shifts of x
    inside the padded canvas and to its point reflection (the trivial ambiguities)."""

    def __init__(self, oversampling: float = 2.0, *, squared: bool = False) -> None:
        super().__init__()
        if not oversampling >= 1:
            raise ValueError(f"oversampling must be ≥ 1, got {oversampling}")
        self.oversampling = float(oversampling)
        self.squared = squared

    def padded_size(self, n: int) -> int:
        return int(round(n * self.oversampling))

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        ph, pw = self.padded_size(h) - h, self.padded_size(w) - w
        return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def pad(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pads(*x.shape[-2:]))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        X = torch.fft.fft2(self.pad(x), norm="ortho")
        return X.real**2 + X.imag**2 if self.squared else X.abs()

    def out_shape(self, in_shape):
        b, c, h, w = in_shape
        return (b, c, self.padded_size(h), self.padded_size(w))

    def in_shape(self, out_shape):
        b, c, h, w = out_shape
        return (b, c, int(round(h / self.oversampling)), int(round(w / self.oversampling)))

    def extra_repr(self) -> str:
        return f"oversampling={self.oversampling}, squared={self.squared}"
