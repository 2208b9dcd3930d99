"""Fourier phase retrieval: y = |F(pad(x))| with an orthonormal 2-D FFT (non-linear: no adjoint; its
vector-Jacobian product comes from autograd)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Operator


#: how the oversampling sets the canvas: "dps" pads int(oversampling/8 · side) zeros on each side, as DPS and DAPS
#: do (oversampling 2: 256 → 384); "total" makes the canvas round(oversampling · side) (oversampling 2: 256 → 512)
Canvas = Literal["dps", "total"]


class PhaseRetrieval(Operator):
    """|F(pad(x))| with an orthonormal FFT, so ‖y‖ = ‖x‖. By default (``canvas="dps"``) x is zero-padded with
    int(oversampling/8 · side) on each side, exactly as DPS's and DAPS's operators (oversampling 2: a 384 canvas for
    256, 48 for 32); ``canvas="total"`` pads to round(oversampling · side) per axis instead. ``squared=True`` gives
    the intensity |F|² instead. Invariant to a global sign of x, to shifts of x inside the padded canvas and to its
    point reflection (the trivial ambiguities)."""

    sign_blind = True

    def __init__(self, oversampling: float = 2.0, *, squared: bool = False, canvas: Canvas = "dps") -> None:
        super().__init__()
        if not oversampling >= 1:
            raise ValueError(f"oversampling must be ≥ 1, got {oversampling}")
        if canvas not in ("dps", "total"):
            raise ValueError(f"unknown canvas {canvas!r}; choose dps or total")
        self.oversampling = float(oversampling)
        self.squared = squared
        self.canvas = canvas

    def side_pad(self, n: int) -> int:
        """Zeros added on each side of a side of length n (``canvas="dps"``)."""
        return int(self.oversampling / 8.0 * n)

    def padded_size(self, n: int) -> int:
        if self.canvas == "dps":
            return n + 2 * self.side_pad(n)
        return int(round(n * self.oversampling))

    def unpadded_size(self, m: int) -> int:
        """The side n whose canvas is m (the inverse of ``padded_size``)."""
        guess = int(round(m / (1 + self.oversampling / 4))) if self.canvas == "dps" else int(round(m / self.oversampling))
        for n in sorted(range(max(1, guess - 3), guess + 4), key=lambda k: abs(k - guess)):
            if self.padded_size(n) == m:
                return n
        raise ValueError(f"a measurement of side {m} is not the canvas of any image at oversampling {self.oversampling} "
                         f"({self.canvas} canvas)")

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        if self.canvas == "dps":
            ph, pw = self.side_pad(h), self.side_pad(w)
            return (pw, pw, ph, ph)
        ph, pw = self.padded_size(h) - h, self.padded_size(w) - w
        return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def twin(self, x: Tensor) -> Tensor:
        """x turned by 180°: its canvas is the point reflection of x's, shifted (both trivial ambiguities), so the
        measurement is the same."""
        return x.flip(-2, -1)

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
        return (b, c, self.unpadded_size(h), self.unpadded_size(w))

    def extra_repr(self) -> str:
        return f"oversampling={self.oversampling}, squared={self.squared}, canvas={self.canvas}"
