"""Likelihood figures of a trained prior: the simplified loss L_simple and the variational bound in bits/dim.

The bound is DDPM's decomposition  L = L_T + Σ_{t=2}^{T} L_{t−1} + L_0  (Ho et al. 2020, eq. 5) on data
discretised to 256 levels: L_T = KL(q(x_T|x0) ‖ N(0, I)); L_{t−1} = KL(q(x_{t−1}|x_t, x0) ‖ p_θ(x_{t−1}|x_t))
with p_θ's mean from ε_θ and a fixed variance (σ_t² = β̃_t "small" or β_t "large"); L_0 = −log p_θ(x0|x1) under
the discretised Gaussian decoder. The sum over the T−1 middle terms is estimated without bias by stratified
sampling of t per image (``samples_per_image`` strata), so its standard error is reported with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .eps import EpsPrior

LOG2 = math.log(2.0)


@dataclass(frozen=True)
class BoundEstimate:
    bits_per_dim: dict[str, float]  # {"small": …, "large": …}
    stderr: dict[str, float]
    terms: dict[str, float]  # mean bits/dim of L_T, L_0 (per variance choice) and the middle sum
    l_simple: float
    l_simple_stderr: float
    images: int


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """−log P(x) of 8-bit data in [-1, 1] (bins of width 2/255) under N(mean, exp(log_scale)²); edges open."""
    centred = x - mean
    inv = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv * (centred + 1.0 / 255))
    cdf_min = _approx_std_normal_cdf(inv * (centred - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    logp = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -logp


@torch.no_grad()
def variational_bound(prior: EpsPrior, x0: Tensor, *, samples_per_image: int = 16, generator: torch.Generator | None = None,
                      batch_size: int = 256, cond: Tensor | None = None) -> BoundEstimate:
    """Estimate the bound (bits/dim) and L_simple on a batch of test images ``x0`` ([-1, 1], float)."""
    s = prior.schedule
    T = s.num_timesteps
    dev = prior.device
    x0 = ((x0.double() + 1) * 127.5).round() / 127.5 - 1  # the 8-bit data the bound is about
    n, dims = x0.shape[0], x0[0].numel()
    g = generator or torch.Generator().manual_seed(0)
    betas = s.betas.double()
    logvar_small = s.posterior_log_variance_clipped.double()
    logvar_large = torch.log(torch.cat([s.posterior_variance[1:2], betas[1:]]))
    ac_T = float(s.alphas_cumprod[-1])
    # L_T (no network)
    prior_T = _normal_kl(math.sqrt(ac_T) * x0, torch.full_like(x0, math.log(1 - ac_T)), torch.zeros_like(x0), torch.zeros_like(x0))
    l_T = prior_T.flatten(1).sum(1) / (dims * LOG2)
    # timesteps: index 0 (decoder) for every image, plus stratified indices in 1..T−1 for the middle sum
    k = samples_per_image
    strata = torch.linspace(1, T, k + 1, dtype=torch.float64)
    u = torch.rand(n, k, generator=g, dtype=torch.float64)
    mid_t = (strata[:-1] + u * (strata[1:] - strata[:-1])).floor().long().clamp(1, T - 1)  # (n, k)
    weights = (strata[1:] - strata[:-1]).double()  # stratum sizes: Σ_t L_t ≈ Σ_j w_j L_{t_j}
    ts = torch.cat([torch.zeros(n, 1, dtype=torch.long), mid_t], 1)  # (n, k+1)
    rows = torch.arange(n).repeat_interleave(k + 1)
    flat_t = ts.reshape(-1)
    noise = torch.randn((rows.numel(), *x0.shape[1:]), generator=g, dtype=torch.float64)
    out = {"small": torch.zeros(n, k + 1, dtype=torch.float64), "large": torch.zeros(n, k + 1, dtype=torch.float64)}
    mse = torch.zeros(n, k + 1, dtype=torch.float64)
    for lo in range(0, rows.numel(), batch_size):
        r, t, e = rows[lo: lo + batch_size], flat_t[lo: lo + batch_size], noise[lo: lo + batch_size]
        xs = x0[r]
        x_t = s.q_sample(xs, t, e)
        c = cond[r].to(dev) if cond is not None else None
        eps = prior.eps(x_t.to(dev, prior.dtype), t.to(dev), c).double().cpu()
        mse.view(-1)[lo: lo + batch_size] = ((eps - e) ** 2).flatten(1).mean(1)
        x0_hat = s.at("alphas_cumprod", t, x_t).rsqrt() * (x_t - s.at("alphas_cumprod", t, x_t).neg().add(1).sqrt() * eps)
        true_mean, _ = s.q_posterior(xs, x_t, t)
        model_mean, _ = s.q_posterior(x0_hat, x_t, t)
        true_logvar = s.at(logvar_small, t, x_t)
        for name, lv in (("small", logvar_small), ("large", logvar_large)):
            mlv = s.at(lv, t, x_t)
            kl = _normal_kl(true_mean, true_logvar.expand_as(xs), model_mean, mlv.expand_as(xs)).flatten(1).sum(1) / (dims * LOG2)
            dec = discretized_gaussian_nll(xs, model_mean, 0.5 * mlv.expand_as(xs)).flatten(1).sum(1) / (dims * LOG2)
            out[name].view(-1)[lo: lo + batch_size] = torch.where(t == 0, dec, kl)
    bpd, se, terms = {}, {}, {"L_T": float(l_T.mean())}
    for name, v in out.items():
        l0 = v[:, 0]
        middle = (v[:, 1:] * weights).sum(1)
        total = l_T + l0 + middle
        bpd[name] = float(total.mean())
        se[name] = float(total.std() / math.sqrt(n)) if n > 1 else float("nan")
        terms[f"L_0[{name}]"] = float(l0.mean())
        terms[f"sum L_t[{name}]"] = float(middle.mean())
    ls = mse[:, 1:].mean(1)  # L_simple: uniform t in 1..T−1 (stratified), per image
    return BoundEstimate(bpd, se, terms, float(ls.mean()), float(ls.std() / math.sqrt(n)) if n > 1 else float("nan"), n)
