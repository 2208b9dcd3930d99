"""Methods with their own outer loop: RED-diff (variational optimisation of x0) and DAPS (decoupled annealed
posterior sampling: at each noise level, x̂0 from the prior, a sample of p(x0 | x_t, y), then re-noising)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from ..operators.base import Capability
from .params import RedDiffParams
from .problem import Problem, measurement_count
from .warmstart import initial_estimate, ve_start, warm_timesteps


def _callback(callback, i, total, t, x_t, x0):
    if callback is not None:
        callback({"step": i, "total": total, "t": t, "x_t": x_t, "x0": x0})


def reddiff_gradient(p: Problem, mu: Tensor, eps_error: Tensor, w: float, m: Tensor | None = None) -> Tensor:
    """∇_μ of RED-diff's per-image loss ½‖y − A(μ)‖²/m + w ⟨ε_θ − ε, μ⟩/n in closed form, without building a graph:
    −Aᵀ(y − A μ)/m (a VJP for non-linear A) + w (ε_θ − ε)/n. n: the image size; m: the number of measurements per
    image ((B,), default ``measurement_count``: for inpainting the observed pixels, as the reference's y holds
    only those)."""
    if m is None:
        m = measurement_count(p.op, p.y, mu.shape)
    with torch.no_grad():
        g = p.data_gradient(mu)
        return g.div_(m.reshape(-1, *([1] * (g.ndim - 1)))).add_(eps_error, alpha=w / mu[0].numel())


def _reddiff_cold_start(p: Problem, cg_iters: int) -> Tensor:
    """A⁺y for linear A: closed form through an SVD; otherwise ``cg_iters`` of conjugate gradients from 0, an
    early-stopped (regularised) pseudo-inverse that does not amplify the noise in A's small singular values.
    0 for non-linear A."""
    zeros = torch.zeros(p.shape, device=p.y.device, dtype=p.y.dtype)
    if Capability.LINEAR in p.op.capabilities:
        return p.op.prox(zeros, p.y, 0.0, iters=cg_iters)
    return zeros


def reddiff(p: Problem, hp: RedDiffParams = RedDiffParams(), callback=None) -> Tensor:
    """RED-diff (Mardani et al. 2023; NVlabs/RED-diff ``algos/reddiff.py``): minimise over μ, with Adam,
    mean_m ½(y − A(μ))² + λ_t mean_n sg(ε_θ(x_t, t) − ε)·μ (means over the m measurements and the n pixels),
    x_t = √ᾱ_t μ + √(1−ᾱ_t) ε, t swept from high to low noise, λ_t = λ √(1−ᾱ_t)/√ᾱ_t (the paper's SNR weighting).
    Losses are per-image means summed over the batch, so every image's optimisation is its own (Adam is
    element-wise). μ starts at A⁺y for linear A, at 0 otherwise (clipped to [-1, 1]). A warm start (start < 1)
    sweeps t over the ``steps`` levels of [0, t₀] only and starts μ at x_init (clipped when the problem clips)."""
    y, op = p.y, p.op
    lam, lr = hp.lam, hp.lr
    if hp.start < 1:
        mu = p.init if p.init is not None else initial_estimate(hp.init, y, op, p.shape, p.sigma)
        mu = mu.clamp(-1, 1) if p.clip else mu.clone()
    else:
        mu = _reddiff_cold_start(p, hp.init_cg_iters).clamp(-1, 1)
    mu = mu.requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99))
    ts = warm_timesteps(p.schedule, hp.steps, hp.spacing, hp.start)
    pairs = list(zip(ts, ts[1:] + [-1]))
    m = measurement_count(op, y, p.shape)
    for i, (t, _) in enumerate(pairs):
        a = p.alpha_bar(t)
        eps = rng.randn(p.shape, p.generator, device=y.device, dtype=y.dtype)
        x_t = math.sqrt(a) * mu.detach() + math.sqrt(1 - a) * eps
        with torch.inference_mode():
            e = p.prior.eps(x_t, p.tt(t, x_t), p.cond)
        p.counts.nfe += 1
        w = lam * math.sqrt(1 - a) / math.sqrt(a)
        mu.grad = reddiff_gradient(p, mu.detach(), e - eps, w, m)
        opt.step()
        _callback(callback, i, len(pairs), t, x_t, mu.detach())
    return mu.detach().clamp(-1, 1) if p.clip else mu.detach()


def edm_sigmas(n: int, sigma_max: float, sigma_min: float, rho: float = 7.0) -> list[float]:
    """n + 1 noise levels from sigma_max down to sigma_min on EDM's schedule (Karras et al. 2022, eq. 5):
    σ_i = (σ_max^{1/ρ} + i/n · (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / n * (b - a)) ** rho if n > 0 else sigma_max for i in range(n + 1)]


def ve_denoise(p: Problem, x: Tensor, sigma: float) -> Tensor:
    """D(x; σ) = E[x0 | x0 + σ n = x] from the ε-network, in the variance-exploding form DAPS works in:
    x is the VE state, the network sees the VP state x/√(1+σ²) at the discrete timestep whose σ_t = √((1−ᾱ_t)/ᾱ_t)
    is nearest to σ in log scale (as EDM's preconditioning of discrete-time models), and D = x − σ ε̂.
    Not clipped."""
    sig = _schedule_sigmas(p)
    t = int(torch.argmin((sig.log() - math.log(max(sigma, 1e-12))).abs()))
    with torch.inference_mode():
        eps = p.prior.eps(x / math.sqrt(1 + sigma**2), p.tt(t, x), p.cond)
    p.counts.nfe += 1
    return x - sigma * eps


def _schedule_sigmas(p: Problem) -> Tensor:
    a = torch.as_tensor(p.schedule.alphas_cumprod, dtype=torch.float64)
    return ((1 - a) / a).sqrt()


def daps_x0hat(p: Problem, x: Tensor, sigma: float, ode_steps: int, sigma_end: float = 0.01) -> Tensor:
    """x̂0 from the VE state x at level σ: Euler steps of the probability-flow ODE dx/dσ = (x − D(x; σ))/σ over
    ``ode_steps`` + 1 EDM levels from σ down to ``sigma_end`` (DAPS's ``DiffusionPFODE`` with an EDM scheduler of
    ``ode_steps`` steps and σ_min 0.01); the result is the state at ``sigma_end`` (not denoised further).
    ``ode_steps`` network evaluations."""
    levels = edm_sigmas(ode_steps, sigma, sigma_end)
    for s_cur, s_next in zip(levels, levels[1:]):
        d = ve_denoise(p, x, s_cur)
        x = x + (s_next - s_cur) * (x - d) / s_cur
    return x


def _likelihood_gradient(p: Problem, x: Tensor) -> Tensor:
    """∇ ‖A(x) − y‖² = 2 Aᵀ(A x − y) (a VJP for non-linear A): DAPS's data term, per image."""
    return p.data_gradient(x).mul_(2)


def _exact_inner(p: Problem, x0hat: Tensor, r2: float, tau: float) -> Tensor:
    """A sample of N(x̂0, r² I) · exp(−‖A x − y‖²/τ²) exactly, through the SVD of A (the limit of the inner
    Langevin chain)."""
    op = p.op  # an operator with Capability.SVD
    z0 = op.Vt(x0hat)
    zy = op.Ut(p.y)
    s = op.spectrum(p.shape, zy)
    m = s.shape[1]
    prec = 1 / r2 + 2 * s * s / tau**2
    mean = (z0[:, :m] / r2 + 2 * s * zy / tau**2) / prec
    noise = rng.randn(z0.shape, p.generator, device=z0.device, dtype=z0.dtype)
    z = torch.cat([mean + noise[:, :m] / prec.sqrt(), z0[:, m:] + math.sqrt(r2) * noise[:, m:]], 1)
    return op.V(z, p.shape)


def daps(p: Problem, *, steps: int = 200, ode_steps: int = 5, langevin_steps: int = 100, lr: float = 1e-4,
         lr_min_ratio: float = 0.01, tau: float = 0.01, sigma_max: float = 100.0, sigma_min: float = 0.1,
         inner: str = "langevin", spacing: str = "uniform", start: float = 1.0, init: str = "pinv",
         callback=None) -> Tensor:
    """DAPS (Zhang et al. 2024; zhangbingliang2019/DAPS, ``edm_daps`` with the pixel-space Langevin configs), in the
    variance-exploding form x_σ = x0 + σ n. ``steps`` annealing levels σ_0 > … > σ_{steps−1} on EDM's ρ = 7
    schedule from ``sigma_max`` towards ``sigma_min`` (n = ``steps`` intervals; as in the reference, the level
    ``sigma_min`` itself is replaced by 0), starting from x = σ_max z. At level σ_i:

    1. x̂0 = ``daps_x0hat``(x, σ_i): ``ode_steps`` Euler steps of the probability-flow ODE down to σ = 0.01;
    2. x0 ~ p(x0 | x_σ, y) ∝ N(x0; x̂0, σ_i² I) · exp(−‖A(x0) − y‖²/τ²), by ``langevin_steps`` of Langevin dynamics
       x0 ← x0 + η_i [−∇‖A(x0) − y‖²/τ² + (x̂0 − x0)/σ_i²] + √(2η_i) ε, with η_i = lr·(1 + i/(steps+1)·
       (lr_min_ratio − 1)) (the reference's linear decay), starting at x̂0; ``inner="exact"`` samples the same
       Gaussian exactly through the SVD of A instead;
    3. x = x0 + σ_{i+1} z (σ_steps = 0: the last x0 is the result).

    The likelihood uses τ (0.01), not the measurement noise σ_y: exp(−‖A x − y‖²/τ²) is N(y; A x, τ²/2), a data term
    far stronger than the true one; the prior variance σ_i² = (1−ᾱ)/ᾱ in VP terms. Network evaluations:
    steps × ode_steps (reference 200 × 5 = 1000); the per-task Langevin step sizes of the reference are the tasks'
    ``lr`` (invdiff.tasks). ``spacing`` is not used: the annealing follows the EDM σ schedule. ``start`` < 1: the
    warm start (``warmstart.ve_start``): the ``steps`` levels run from σ₀ = min(sigma_max, σ_{t₀}) instead of
    sigma_max, from x = x_init + σ₀ z (the same number of network evaluations)."""
    if inner not in ("langevin", "exact"):
        raise ValueError(f"inner must be 'langevin' or 'exact', got {inner!r}")
    if inner == "exact" and Capability.SVD not in p.op.capabilities:
        raise ValueError("DAPS with inner='exact' needs an SVD operator")
    if not sigma_max > sigma_min > 0:
        raise ValueError(f"DAPS needs sigma_max > sigma_min > 0, got {sigma_max} and {sigma_min}")
    y = p.y
    if start < 1:
        sigma_0, x = ve_start(p, start, init, sigma_max, sigma_min)
    else:
        sigma_0 = sigma_max
        x = sigma_max * rng.randn(p.shape, p.generator, device=y.device, dtype=y.dtype)
    levels = edm_sigmas(steps, sigma_0, sigma_min)[:-1] + [0.0]
    for i in range(steps):
        sigma = levels[i]
        x0hat = daps_x0hat(p, x, sigma, ode_steps)
        if inner == "exact":
            x0 = _exact_inner(p, x0hat, sigma**2, tau)
        else:
            eta = lr * (1 + i / (steps + 1) * (lr_min_ratio - 1))
            x0 = x0hat.clone()
            for _ in range(langevin_steps):
                score = _likelihood_gradient(p, x0).div_(-(tau**2)).add_((x0hat - x0) / sigma**2)
                x0 = x0 + eta * score + math.sqrt(2 * eta) * rng.randn_like(x0, p.generator)
        x = x0 + levels[i + 1] * rng.randn_like(x0, p.generator)
        _callback(callback, i, steps, sigma, x, x0)
    return x.clamp(-1, 1) if p.clip else x
