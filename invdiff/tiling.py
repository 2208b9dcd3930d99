"""The prior's network on overlapping tiles, for images whose whole forward pass would not fit in memory.

``tiled_map(fn, x, cond, tile, overlap)`` evaluates ``fn`` (the network's ε for a batch) on tiles of at most
``tile`` × ``tile`` pixels that overlap by ``overlap``, and blends them with weights that ramp linearly across each
overlap (a partition of unity after normalisation: every pixel is the weighted mean of the tiles that hold it, so
there is no seam where one tile ends). Tile corners sit on the network's multiple, so a fully convolutional network
sees each tile on the same grid as the whole image: for a network whose receptive field is within the overlap the
result is the whole image's up to float rounding. Networks with group normalisation or attention see each tile's
own statistics, which is what they were trained on (patches of 64-128 px); see benchmarks/RESULTS.md, "Tiles".
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

#: pixels by which neighbouring tiles overlap (the natural prior's training patches are 128 px)
TILE_OVERLAP = 64


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """First pixels of tiles of ``tile`` covering 0..n−1 with at least ``overlap`` in common; the last ends at n.
    All starts are multiples of (tile − overlap) except the last (n − tile): with n, tile and overlap multiples of the
    network's multiple, every start is one too."""
    if tile >= n:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"the overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    step = tile - overlap
    starts = list(range(0, n - tile, step))
    return starts + [n - tile]


def ramp(n: int, overlap: int, first: bool, last: bool) -> Tensor:
    """One tile's weights along an axis of length n: rising linearly over the first ``overlap`` pixels (unless it
    is the ``first`` tile, which has no neighbour there) and falling over the last ones (unless ``last``); > 0."""
    w = torch.ones(n, dtype=torch.float64)
    if overlap > 0:
        r = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
        if not first:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if not last:
            w[n - overlap:] = torch.minimum(w[n - overlap:], r.flip(0))
    return w


def tiled_map(fn: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, cond: Tensor | None, tile: int,
              overlap: int = TILE_OVERLAP) -> Tensor:
    """fn(x, cond) for an image batch x (B, C, H, W), computed tile by tile and blended (module docstring).
    ``cond`` with x's spatial size (condition channels) is cut like x; any other condition (class labels) is
    passed whole."""
    H, W = x.shape[-2:]
    if H <= tile and W <= tile:
        return fn(x, cond)
    rows, cols = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    out = total = None
    for i, a in enumerate(rows):
        h = min(tile, H)
        wa = ramp(h, overlap, i == 0, i == len(rows) - 1)
        for j, b in enumerate(cols):
            w = min(tile, W)
            wb = ramp(w, overlap, j == 0, j == len(cols) - 1)
            c = cond
            if isinstance(cond, Tensor) and cond.ndim == 4 and tuple(cond.shape[-2:]) == (H, W):
                c = cond[..., a: a + h, b: b + w]
            e = fn(x[..., a: a + h, b: b + w], c)
            if out is None:
                out = torch.zeros(*e.shape[:-2], H, W, dtype=e.dtype, device=e.device)
                total = torch.zeros(H, W, dtype=torch.float64, device=e.device)
            wt = (wa[:, None] * wb[None, :]).to(e.device)
            out[..., a: a + h, b: b + w] += e * wt.to(e.dtype)
            total[a: a + h, b: b + w] += wt
    return out / total.to(out.dtype)


def count_tiles(shape: tuple[int, int], tile: int, overlap: int = TILE_OVERLAP) -> int:
    return len(tile_starts(shape[0], tile, overlap)) * len(tile_starts(shape[1], tile, overlap))


__all__ = ["TILE_OVERLAP", "count_tiles", "ramp", "tile_starts", "tiled_map"]
