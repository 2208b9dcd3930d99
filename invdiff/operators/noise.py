"""Noise models. σ is stated on the [-1, 1] scale of the images (σ = 0.05 is DPS's preset)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import rng


@dataclass(frozen=True)
class GaussianNoise:
    """y + σ n, n ~ N(0, I). σ on the [-1, 1] scale."""

    sigma: float = 0.05

    def __post_init__(self) -> None:
        if not (self.sigma >= 0 and self.sigma < float("inf")):
            raise ValueError(f"noise sigma must be a finite non-negative number, got {self.sigma}")

    def __call__(self, y: Tensor, *, generator: rng.Generators = None) -> Tensor:
        if self.sigma == 0:
            return y.clone()
        return y + self.sigma * rng.randn_like(y, generator)


@dataclass(frozen=True)
class PoissonNoise:
    """Photon-counting noise: the [0, 1] intensity (y + 1)/2 is scaled by ``rate`` photons, drawn from a
    Poisson law and mapped back to [-1, 1]. ``sigma`` is the Gaussian approximation at mid-grey."""

    rate: float = 100.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"Poisson rate must be positive, got {self.rate}")

    @property
    def sigma(self) -> float:
        return 2 * (0.5 / self.rate) ** 0.5

    def __call__(self, y: Tensor, *, generator: rng.Generators = None) -> Tensor:
        lam = ((y + 1) / 2).clamp_min(0) * self.rate
        return rng.poisson(lam, generator) / self.rate * 2 - 1
