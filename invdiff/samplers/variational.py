"""Methods with their own outer loop: RED-diff (variational optimisation of x0) and DAPS (decoupled annealed
posterior sampling: at each noise level, x̂0 from the prior, a sample of p(x0 | x_t, y), then re-noising)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from ..operators.base import LinearOperator, SVDOperator
from .core import ddim_step, step_coefficients, timestep_pairs
from .params import RedDiffParams
from .problem import Problem, measurement_count, proximal


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


def reddiff(p: Problem, hp: RedDiffParams = RedDiffParams(), callback=None) -> Tensor:
    """RED-diff (Mardani et al. 2023; NVlabs/RED-diff ``algos/reddiff.py``): minimise over μ, with Adam,
    mean_m ½(y − A(μ))² + λ_t mean_n sg(ε_θ(x_t, t) − ε)·μ (means over the m measurements and the n pixels),
    x_t = √ᾱ_t μ + √(1−ᾱ_t) ε, t swept from high to low noise, λ_t = λ √(1−ᾱ_t)/√ᾱ_t (the paper's SNR weighting).
    Losses are per-image means summed over the batch, so every image's optimisation is its own (Adam is
    element-wise). μ starts at A⁺y for linear A, at 0 otherwise."""
    y, op = p.y, p.op
    lam, lr = hp.lam, hp.lr
    if isinstance(op, LinearOperator):
        # A⁺y: closed form through an SVD; otherwise ``init_cg_iters`` of conjugate gradients from 0, an
        # early-stopped (regularised) pseudo-inverse that does not amplify the noise in A's small singular values
        mu = proximal(op, y, torch.zeros(p.shape, device=y.device, dtype=y.dtype), 0.0, cg_iters=hp.init_cg_iters)
    else:
        mu = torch.zeros(p.shape, device=y.device, dtype=y.dtype)
    mu = mu.clamp(-1, 1).requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99))
    pairs = timestep_pairs(p.schedule, hp.steps, hp.spacing)
    m = measurement_count(op, y, p.shape)
    for i, (t, _) in enumerate(pairs):
        a = p.alpha_bar(t)
        eps = rng.randn(p.shape, p.generator, device=y.device, dtype=y.dtype)
        x_t = math.sqrt(a) * mu.detach() + math.sqrt(1 - a) * eps
        with torch.inference_mode():
            e = p.prior.eps(x_t, p.tt(t, x_t), p.cond)
        p.nfe += 1
        w = lam * math.sqrt(1 - a) / math.sqrt(a)
        mu.grad = reddiff_gradient(p, mu.detach(), e - eps, w, m)
        opt.step()
        _callback(callback, i, len(pairs), t, x_t, mu.detach())
    return mu.detach().clamp(-1, 1) if p.clip else mu.detach()


def _ode_x0(p: Problem, x: Tensor, t: int, ode_steps: int) -> Tensor:
    """x̂0 from x_t by the probability-flow ODE (DDIM η = 0) in ``ode_steps`` network evaluations; one step is
    Tweedie's x̂0 = E[x0 | x_t]."""
    ts = torch.linspace(t, 0, max(ode_steps, 1) + 1)[:-1].round().long().tolist()
    ts = sorted(set(ts), reverse=True)
    for i, tc in enumerate(ts):
        d = p.denoise(x, tc)
        if i == len(ts) - 1:
            return d.x0
        x = ddim_step(x, d, step_coefficients(p.schedule, tc, ts[i + 1], 0.0), None)
    raise AssertionError("unreachable")


def _exact_inner(p: Problem, x0hat: Tensor, r2: float) -> Tensor:
    """A sample of N(x̂0, r² I) conditioned on y = A x0 + σ n, exactly, through the SVD of A."""
    op: SVDOperator = p.op
    z0 = op.Vt(x0hat)
    zy = op.Ut(p.y)
    s = op._s(p.shape, zy)
    m = s.shape[1]
    prec = 1 / r2 + s * s / max(p.sigma**2, 1e-12)
    mean = (z0[:, :m] / r2 + s * zy / max(p.sigma**2, 1e-12)) / prec
    noise = rng.randn(z0.shape, p.generator, device=z0.device, dtype=z0.dtype)
    z = torch.cat([mean + noise[:, :m] / prec.sqrt(), z0[:, m:] + math.sqrt(r2) * noise[:, m:]], 1)
    return op.V(z, p.shape)


def daps(p: Problem, *, steps: int = 50, ode_steps: int = 4, langevin_steps: int = 50, lr: float = 0.5,
         r_scale: float = 1.0, inner: str = "auto", spacing: str = "uniform", callback=None) -> Tensor:
    """DAPS (Zhang et al. 2024) on the VP schedule: for noise levels t from high to low, x̂0 = ODE(x_t → 0),
    x0 ~ p(x0 | x_t, y) ∝ N(x0; x̂0, r_t² I) · N(y; A(x0), σ² I) with r_t² = r_scale² (1 − ᾱ_t), then
    x_{t'} = √ᾱ_{t'} x0 + √(1−ᾱ_{t'}) z. The inner sample is exact through the SVD (``inner="exact"``, the
    default for SVD operators) or ``langevin_steps`` of Langevin dynamics with the step
    lr / (1/r² + 1/σ²) (stable for ‖A‖ ≤ 1). σ is floored at 1e-3 for noiseless measurements."""
    y = p.y
    sigma2 = max(p.sigma, 1e-3) ** 2
    use_exact = inner == "exact" or (inner == "auto" and isinstance(p.op, SVDOperator))
    if use_exact and not isinstance(p.op, SVDOperator):
        raise ValueError("DAPS with inner='exact' needs an SVD operator")
    x = rng.randn(p.shape, p.generator, device=y.device, dtype=y.dtype)
    pairs = timestep_pairs(p.schedule, steps, spacing)
    x0 = x
    for i, (t, t_prev) in enumerate(pairs):
        x0hat = _ode_x0(p, x, t, ode_steps)
        r2 = r_scale**2 * (1 - p.alpha_bar(t))
        if use_exact:
            x0 = _exact_inner(p, x0hat, r2)
        else:
            x0 = x0hat.clone()
            delta = lr / (1 / r2 + 1 / sigma2)
            for _ in range(langevin_steps):
                g = p.data_gradient(x0) / sigma2 + (x0 - x0hat) / r2
                x0 = x0 - delta * g + math.sqrt(2 * delta) * rng.randn_like(x0, p.generator)
        a_prev = p.alpha_bar(t_prev)
        if t_prev >= 0:
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * rng.randn_like(x0, p.generator)
        _callback(callback, i, len(pairs), t, x, x0)
    return x0.clamp(-1, 1) if p.clip else x0
