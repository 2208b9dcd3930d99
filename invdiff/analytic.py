"""Gaussian data with everything in closed form: the reference for testing samplers.

For x0 ~ N(μ, Σ) and x_t = √ᾱ x0 + √(1−ᾱ) ε, the MMSE noise prediction is
E[ε | x_t] = √(1−ᾱ) (ᾱΣ + (1−ᾱ)I)⁻¹ (x_t − √ᾱ μ). For y = A x0 + σn the posterior is Gaussian with
covariance (Σ⁻¹ + AᵀA/σ²)⁻¹ and mean Cov (Σ⁻¹μ + Aᵀy/σ²).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .schedule import NoiseSchedule


class GaussianEps(nn.Module):
    """The exact ε-network of N(μ, Σ) over images of ``shape`` (C, H, W); computes in float64."""

    def __init__(self, mean: Tensor, cov: Tensor, schedule: NoiseSchedule, shape: tuple[int, int, int]):
        super().__init__()
        d = mean.numel()
        if cov.shape != (d, d):
            raise ValueError(f"covariance must be {d}x{d}, got {tuple(cov.shape)}")
        self.shape = tuple(shape)
        self.register_buffer("mean", mean.reshape(-1).double())
        self.register_buffer("cov", cov.double())
        self.register_buffer("ac", schedule.alphas_cumprod.double())
        # eigendecomposition once: (ᾱΣ + (1−ᾱ)I)⁻¹ = Q diag(1/(ᾱλ + 1 − ᾱ)) Qᵀ
        lam, q = torch.linalg.eigh(self.cov)
        self.register_buffer("lam", lam.clamp_min(0))
        self.register_buffer("q", q)
        self._dummy = nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        ac = self.ac[t.long().cpu()].to(x.device).reshape(b, 1)
        r = x.reshape(b, -1).double() - ac.sqrt() * self.mean
        z = r @ self.q
        z = z / (ac * self.lam + (1 - ac))
        eps = (1 - ac).sqrt() * (z @ self.q.T)
        return eps.reshape(x.shape).to(x.dtype)


def gaussian_posterior(mean: Tensor, cov: Tensor, A: Tensor, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Exact posterior (mean, covariance) of x given y = A x + σ n, x ~ N(mean, cov); A is an (m, d) matrix,
    y a (m,) vector. float64."""
    mean, cov, A, y = (v.double() for v in (mean.reshape(-1), cov, A, y.reshape(-1)))
    if sigma == 0:
        # noiseless: condition a Gaussian on a linear constraint
        s = A @ cov @ A.T
        k = cov @ A.T @ torch.linalg.pinv(s)
        return mean + k @ (y - A @ mean), cov - k @ A @ cov
    s = A @ cov @ A.T + sigma**2 * torch.eye(A.shape[0], dtype=torch.float64)
    k = cov @ A.T @ torch.linalg.inv(s)
    return mean + k @ (y - A @ mean), cov - k @ A @ cov


def random_covariance(d: int, *, generator: torch.Generator | None = None, scale: float = 0.3, floor: float = 1e-2) -> Tensor:
    """A well-conditioned random SPD matrix (smooth-ish spectrum), float64."""
    g = torch.randn(d, d, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(g)
    lam = scale * torch.linspace(1.0, floor, d, dtype=torch.float64)
    return (q * lam) @ q.T


def isotropic_gaussian_case(shape: tuple[int, ...], *, seed: int = 0, spread: float = 0.3):
    """A Gaussian data distribution N(μ, I) on images of ``shape`` (1, C, H, W) with μ ~ N(0, spread²), its exact-ε
    prior on the linear schedule, and one draw x from it: (μ, prior, x), float64. The test case of the samplers'
    exact-posterior checks."""
    from .eps import EpsPrior

    d = int(torch.tensor(shape[1:]).prod())
    g = torch.Generator().manual_seed(seed)
    mu = spread * torch.randn(d, dtype=torch.float64, generator=g)
    s = NoiseSchedule.linear()
    prior = EpsPrior(GaussianEps(mu, torch.eye(d, dtype=torch.float64), s, tuple(shape[1:])), s)
    x = (mu + torch.randn(d, dtype=torch.float64, generator=g)).reshape(shape)
    return mu, prior, x
