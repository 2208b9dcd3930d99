"""Image padding for the convolution operators, and its exact adjoint (the padded border folded back)."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

Padding = Literal["zeros", "reflect", "replicate", "circular"]
PADDINGS: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")


def check_padding(padding: str, option: str = "padding") -> str:
    """The padding name, or a ValueError that lists the valid ones (the one check every operator and the CLI use)."""
    if padding not in PADDINGS:
        raise ValueError(f"unknown {option} {padding!r}; choose from {', '.join(PADDINGS)}")
    return padding


def pad(x: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw, pw, ph, ph), mode="constant" if mode == "zeros" else mode)


def _fold(z: Tensor, p: int, n: int, dim: int, mode: str) -> Tensor:
    """Adjoint of padding one dimension (size n, p on each side): crop, then add the padded borders back onto
    the samples they were copied from."""
    if p == 0:
        return z
    c = z.narrow(dim, p, n).clone()
    lo, hi = z.narrow(dim, 0, p), z.narrow(dim, p + n, p)
    if mode == "reflect":  # pad[i] = x[p − i] (i < p), pad[p + n + j] = x[n − 2 − j]
        c.narrow(dim, 1, p).add_(lo.flip(dim))
        c.narrow(dim, n - 1 - p, p).add_(hi.flip(dim))
    elif mode == "replicate":  # every border sample is a copy of the edge sample
        c.narrow(dim, 0, 1).add_(lo.sum(dim, keepdim=True))
        c.narrow(dim, n - 1, 1).add_(hi.sum(dim, keepdim=True))
    elif mode == "circular":  # pad[i] = x[n − p + i], pad[p + n + j] = x[j]
        c.narrow(dim, n - p, p).add_(lo)
        c.narrow(dim, 0, p).add_(hi)
    else:
        raise ValueError(f"unknown padding {mode!r}")
    return c


def pad_adjoint(z: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    """The exact adjoint of ``pad`` (cropping plus folding back the copied borders)."""
    h, w = z.shape[-2] - 2 * ph, z.shape[-1] - 2 * pw
    if mode == "zeros" or (ph == 0 and pw == 0):
        return z[..., ph : ph + h, pw : pw + w]
    return _fold(_fold(z, ph, h, z.ndim - 2, mode), pw, w, z.ndim - 1, mode)
