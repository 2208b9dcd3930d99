"""Symmetrised posterior samples: chain k of an image restores g_k(y) with the same operator and is mapped back by
g_k⁻¹, for g_k the flips (4) or the dihedral group of the square (8; rotations by 90° and their mirror images).

Where A commutes with g (A(g x) = g A(x): super-resolution by a symmetric filter, colourisation, denoising, a blur
whose kernel is symmetric under g), g(y) is a measurement of g(x) by the same A and noise, so each back-mapped chain
is still a posterior sample of x; but the network's own errors are not equivariant, and the mean of the K chains
averages them over the group as well as over the noise (the "self-ensemble" of super-resolution networks, here over
posterior samples). ``restore(..., symmetry=...)`` checks the commutation on a random probe and refuses operators
that fail it (a motion blur, a mask, phase retrieval)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..operators.base import Operator

__all__ = ["SYMMETRIES", "group_size", "transform", "untransform", "check_commutes", "per_chain"]

#: the groups ``restore(..., symmetry=...)`` takes: None (no symmetrisation), the flips, the square's dihedral group
SYMMETRIES: tuple = (None, "flips", "dihedral")


def group_size(symmetry: str) -> int:
    if symmetry not in SYMMETRIES[1:]:
        raise ValueError(f"symmetry must be one of None, 'flips', 'dihedral', got {symmetry!r}")
    return 4 if symmetry == "flips" else 8


def transform(x: Tensor, k: int, symmetry: str) -> Tensor:
    """g_k(x) on the last two dimensions. Flips: k = 0 identity, 1 left-right, 2 up-down, 3 both (a 180° turn).
    Dihedral: rotation by k·90° (k mod 4) counter-clockwise, then a left-right mirror for k ≥ 4."""
    if symmetry == "flips":
        dims = [d for d, on in ((-1, k & 1), (-2, k & 2)) if on]
        return x.flip(dims) if dims else x
    x = torch.rot90(x, k % 4, (-2, -1))
    return x.flip(-1) if k >= 4 else x


def untransform(x: Tensor, k: int, symmetry: str) -> Tensor:
    """g_k⁻¹(x): the inverse of ``transform``."""
    if symmetry == "flips":
        return transform(x, k, symmetry)  # every flip is its own inverse
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, -(k % 4), (-2, -1))


def per_chain(x: Tensor, samples: int, symmetry: str, inverse: bool = False) -> Tensor:
    """Apply g_k (or g_k⁻¹) to every chain of a batch of B·K chains (image-major: chain j of the batch is sample
    k = j mod K of its image, and takes the element k mod |G|)."""
    m = group_size(symmetry)
    k_of = (torch.arange(x.shape[0]) % samples % m).to(x.device)
    fn = untransform if inverse else transform
    out = x.clone()
    for k in range(1, m):  # the identity (k = 0) is already in place
        sel = k_of == k
        if bool(sel.any()):
            out[sel] = fn(x[sel], k, symmetry)
    return out


def check_commutes(op: Operator, x_shape, symmetry: str, *, dtype=torch.float32, device=None) -> None:
    """Raise a ValueError unless A(g x) = g A(x) for every g of the group, on a random probe (fixed stream: the
    caller's generators are not touched). The tolerance is float32 rounding of the operator's arithmetic,
    relative to the measurement's size."""
    H, W = x_shape[-2:]
    if symmetry == "dihedral" and H != W:
        raise ValueError(f"symmetry='dihedral' turns the image by 90° and needs a square image, got {H}×{W}; "
                         "use symmetry='flips'")
    gen = torch.Generator().manual_seed(20261202)
    probe = torch.randn((max(1, op.batch_size), *x_shape[1:]), generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    with torch.no_grad():
        ay = op(probe)
        if ay.ndim != 4:
            raise ValueError(f"symmetry needs a measurement on a pixel grid; {type(op).__name__} gives shape {tuple(ay.shape)}")
        scale = float(ay.abs().max()) + 1e-12
        for k in range(1, group_size(symmetry)):
            a = op(transform(probe, k, symmetry))
            b = transform(ay, k, symmetry)
            if a.shape != b.shape or float((a - b).abs().max()) > 1e-4 * scale:
                raise ValueError(f"symmetry={symmetry!r} needs an operator that commutes with the group's flips"
                                 f"{' and turns' if symmetry == 'dihedral' else ''}; {type(op).__name__} does not "
                                 "(a blur kernel or mask that is not symmetric, phase retrieval)")
