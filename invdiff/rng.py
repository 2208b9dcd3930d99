"""Explicit random streams.

Every stochastic function takes ``generator``: ``None`` (global stream), one
``torch.Generator`` for the whole batch, or a sequence of generators, one per image.
Only the per-image form gives batch invariance: image ``i`` draws the same numbers
whether it runs alone or in a batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None


def stream_seed(seed: int, purpose: str, index: int) -> int:
    """The seed of the stream for (``seed``, ``purpose``, image ``index``), mixed by numpy's ``SeedSequence``:
    streams of different purposes or images never coincide as ``seed + 1`` schemes do (where one run's sampling
    stream is the next seed's degradation stream)."""
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seeds and image indices must be non-negative, got seed {seed}, index {index}")
    tag = int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=8).digest(), "little")
    return int(np.random.SeedSequence([int(seed), tag, int(index)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def make_generators(seed: int, n: int, device: torch.device | str = "cpu", *, purpose: str = "default",
                    start: int = 0) -> list[torch.Generator]:
    """``n`` independent generators, one per image: image ``start + i`` of ``purpose`` (e.g. "degrade",
    "sample") gets the stream ``stream_seed(seed, purpose, start + i)``; image i of a batch draws what it draws
    alone with ``start=i``."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"generators on {device!r} asked for, but this machine has no CUDA device; use device='cpu'")
    return [torch.Generator(device=device).manual_seed(stream_seed(seed, purpose, start + i)) for i in range(n)]


def _per_image(generator: Generators, n: int) -> list[torch.Generator] | None:
    if generator is None or isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    if len(gens) != n:
        raise ValueError(f"got {len(gens)} generators for a batch of {n} images")
    return gens


def _draw(fn, shape, generator: Generators, device, dtype) -> Tensor:
    n = shape[0]
    gens = _per_image(generator, n)
    if gens is None:  # one generator: drawn where it lives (a CPU stream also feeds a CUDA run), then moved
        if generator is None:
            return fn(shape, device=device, dtype=dtype)
        return fn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    out = torch.empty(shape, device=device, dtype=dtype)
    for i, g in enumerate(gens):
        gdev = g.device
        out[i] = fn(tuple(shape[1:]), generator=g, device=gdev, dtype=dtype).to(device)
    return out


def randn(shape: Sequence[int], generator: Generators = None, *, device=None, dtype=torch.float32) -> Tensor:
    return _draw(torch.randn, tuple(shape), generator, device, dtype)


def poisson(rates: Tensor, generator: Generators = None) -> Tensor:
    """Poisson counts of ``rates`` (B, …), drawn where the generator lives (one, or one per image) and returned on
    the rates' device: a CPU stream gives the same counts to a CUDA run."""
    gens = _per_image(generator, rates.shape[0])
    if gens is None:
        if generator is None:
            return torch.poisson(rates)
        return torch.poisson(rates.to(generator.device), generator=generator).to(rates.device)
    return torch.stack([torch.poisson(rates[i: i + 1].to(g.device), generator=g)[0].to(rates.device)
                        for i, g in enumerate(gens)])


def rand(shape: Sequence[int], generator: Generators = None, *, device=None, dtype=torch.float32) -> Tensor:
    return _draw(torch.rand, tuple(shape), generator, device, dtype)


def randn_like(x: Tensor, generator: Generators = None) -> Tensor:
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def repeat(generator: Generators, k: int) -> Generators:
    """Per-image streams for ``k`` samples of each image: image ``i`` sample ``j`` gets a generator seeded from
    image ``i``'s seed (not from its current state), so results depend neither on the batch size nor on what the
    given generators drew before: the same generators give the same samples, for k = 1 as for k > 1. One shared
    generator (or None) is returned as it is."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    out = []
    for g in generator:
        seeds = torch.randint(0, 2**62, (k,), generator=torch.Generator().manual_seed(int(g.initial_seed())))
        out.extend(torch.Generator(device=g.device).manual_seed(int(s)) for s in seeds)
    return out


def get_state(generator: Generators):
    """A snapshot of the generator(s) (the global RNGs when None), for ``set_state``."""
    if generator is None:
        return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
    if isinstance(generator, torch.Generator):
        return generator.get_state()
    return [g.get_state() for g in generator]


def set_state(generator: Generators, state) -> None:
    """Rewind the generator(s) to a ``get_state`` snapshot: what is drawn next repeats what was drawn after it."""
    if generator is None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
    elif isinstance(generator, torch.Generator):
        generator.set_state(state)
    else:
        for g, s in zip(generator, state, strict=True):
            g.set_state(s)
