"""A JPEG-like compression operator: orthonormal 8×8 block DCT per channel, division by the standard JPEG luminance
quantisation table at a quality, rounding, and back. Non-linear; the rounding is r(u) = round(u) + (u − round(u))³:
within 0.125 of round(u), jumping at the half-integers as JPEG's rounding does, and in between with the derivative
3(u − round(u))² that autograd follows, so gradient methods and Langevin steps see a useful Jacobian.
Written against ``Operator`` alone: every method that accepts a non-linear operator (DiffPIR, RED-diff, DAPS, DPS)
runs on it unchanged."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Operator

#: ITU-T T.81 Annex K, table K.1 (luminance), row-major
JPEG_LUMA_TABLE = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float64).reshape(8, 8)


def quantisation_table(quality: int) -> Tensor:
    """The libjpeg scaling of the luminance table: 5000/q % below quality 50, 200 − 2q % above, at least 1."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be an integer in [1, 100], got {quality}")
    s = 5000 / quality if quality < 50 else 200 - 2 * quality
    return torch.clamp(torch.floor((JPEG_LUMA_TABLE * s + 50) / 100), min=1)


def dct_matrix(n: int = 8) -> Tensor:
    """The orthonormal DCT-II matrix D (D Dᵀ = I): coefficients of a block b are D b Dᵀ."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def soft_round(u: Tensor) -> Tensor:
    r = torch.round(u).detach()
    return r + (u - r) ** 3


class JPEGLike(Operator):
    """y = IDCT(Q · r(DCT(x) · 127.5 / Q)) / 127.5 on 8×8 blocks of every channel (x on [-1, 1], i.e. pixel values
    around mid-grey on the 0-255 scale, as JPEG shifts them); image sides must be multiples of 8."""

    def __init__(self, quality: int = 50) -> None:
        super().__init__()
        self.quality = int(quality)
        self.register_buffer("table", quantisation_table(self.quality).float())
        self.register_buffer("dct", dct_matrix(8).float())

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"JPEGLike needs image sides that are multiples of 8, got {tuple(x.shape[-2:])}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        b, c, h, w = x.shape
        d, q = self.dct.to(x.dtype), self.table.to(x.dtype)
        blocks = x.reshape(b, c, h // 8, 8, w // 8, 8)
        coef = torch.einsum("kn,bcinjm,lm->bcikjl", d, blocks, d) * 127.5
        coef = soft_round(coef / q[:, None, :]) * q[:, None, :] / 127.5
        return torch.einsum("kn,bcikjl,lm->bcinjm", d, coef, d).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"
