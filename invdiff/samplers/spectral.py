"""Methods that correct x̂0 by solving the data term: DDRM (per singular value), DDNM (range/null-space) and
DiffPIR (a proximal step), each keeping the prior's x̂0 where the measurement says nothing."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from ..operators.base import Capability, conjugate_gradient, pinv_singular_values
from ..eps import Denoised
from .core import Guidance, Loop, ddim_step, jump_schedule, step_coefficients
from .params import DDNMParams, DDRMParams, DiffPIRParams
from .problem import Problem
from .warmstart import warm_state, warm_timesteps


class DDRM(Guidance):
    """Denoising diffusion restoration models (Kawar et al. 2022, eq. 7-8). In the spectral domain of
    A = U S Vᵀ with x̄_t = x_t/√ᾱ_t = x0 + σ_t ε, σ_t = √((1−ᾱ_t)/ᾱ_t), ȳ = Uᵀy/s:
    unmeasured components follow DDIM(η); measured ones are pulled to ȳ, with the measurement noise σ_y/s
    either still below σ_{t−1} (then ȳ plus fresh noise, weight η_b) or above (then a DDIM-like mix)."""

    def __init__(self, problem: Problem, hp: DDRMParams = DDRMParams()) -> None:
        super().__init__(counts=problem.counts)
        self.p = problem
        self.eta, self.eta_b = hp.eta, hp.eta_b
        op = problem.op
        zy = op.Ut(problem.y)
        s = op.spectrum(problem.shape, zy)
        self.s = s
        self.inv = pinv_singular_values(s)
        self.ybar = zy * self.inv
        self.measured = self.inv > 0
        self.noise = torch.where(self.measured, problem.sigma * self.inv, torch.zeros_like(s))  # σ_y / s

    def denoise(self, prior, x_t: Tensor, t: int, t_prev: int) -> Denoised:
        return self.p.denoise(x_t, t)

    def step(self, x_t: Tensor, t: int, t_prev: int, d: Denoised, loop: Loop) -> Tensor:
        p, op = self.p, self.p.op
        a, a_prev = p.alpha_bar(t), p.alpha_bar(t_prev)
        sig, sig_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
        xs = op.Vt(x_t) / math.sqrt(a)
        x0s = op.Vt(d.x0)
        z = rng.randn(x0s.shape, p.generator, device=x0s.device, dtype=x0s.dtype)
        eta, eta_b = self.eta, self.eta_b
        m = self.s.shape[1]
        # unmeasured (s = 0 or beyond m): DDIM in the VE parametrisation
        new = x0s + math.sqrt(1 - eta**2) * sig_prev * (xs - x0s) / sig + eta * sig_prev * z
        x0m, zm = x0s[:, :m], z[:, :m]
        nz = self.noise.expand_as(x0m)
        low = self.measured & (sig_prev < nz)  # measurement noisier than the target level
        high = self.measured & ~low
        safe = torch.where(nz > 0, nz, torch.ones_like(nz))
        v_low = x0m + math.sqrt(1 - eta**2) * sig_prev * (self.ybar - x0m) / safe + eta * sig_prev * zm
        v_high = (1 - eta_b) * x0m + eta_b * self.ybar + (sig_prev**2 - (nz * eta_b) ** 2).clamp_min(0).sqrt() * zm
        meas = torch.where(low, v_low, torch.where(high, v_high, new[:, :m]))
        new = torch.cat([meas, new[:, m:]], 1)
        return math.sqrt(a_prev) * op.V(new, x_t.shape)


def ddnm_lambda_noise(s: Tensor, a: float, sigma_t: float, sigma_y: float, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """DDNM+'s per-singular-value coefficients as the authors' code computes them (``Lambda`` and ``Lambda_noise``
    in wyhuai/DDNM ``functions/svd_operators.py``), for the step to x_{t'} with a = √ᾱ', σ_t = √(1−ᾱ'):
    λ (the share of the range-space correction), d1 (weight of fresh noise) and d2 (weight of ε_θ).

    Where the measurement noise a·σ_y/s exceeds σ_t: λ = s σ_t √(1−η²)/(a σ_y), d1 = σ_t η, d2 = 0; where it is
    below: λ = 1, d1 = √(σ_t² − a²σ_y²/s²), d2 = 0; unmeasured directions (s = 0), σ_y = 0 or a = 0: λ = 1,
    d1 = σ_t η, d2 = σ_t √(1−η²) (the noiseless DDNM step)."""
    inv = pinv_singular_values(s)
    lam = torch.ones_like(s)
    d1 = torch.full_like(s, sigma_t * eta)
    d2 = torch.full_like(s, sigma_t * math.sqrt(max(1 - eta**2, 0.0)))
    if a != 0 and sigma_y != 0:
        noise = a * sigma_y * inv
        low = sigma_t < noise  # measurement noisier than the step: partial correction
        high = sigma_t > noise
        lam = torch.where(low, s * sigma_t * math.sqrt(max(1 - eta**2, 0.0)) / (a * sigma_y), lam)
        d1 = torch.where(high, (sigma_t**2 - noise**2).clamp_min(0).sqrt(), d1)
        d2 = torch.where(low | high, torch.zeros_like(d2), d2)
        unmeasured = s == 0
        d1 = torch.where(unmeasured, torch.full_like(d1, sigma_t * eta), d1)
        d2 = torch.where(unmeasured, torch.full_like(d2, sigma_t * math.sqrt(max(1 - eta**2, 0.0))), d2)
    return lam, d1, d2


def ddnm_step(p: Problem, x0: Tensor, eps: Tensor, t_prev: int, eta: float, z: Tensor, w: Tensor | None = None) -> Tensor:
    """One DDNM/DDNM+ update from the network's (x̂0, ε_θ) at x_t to x_{t'} (Wang et al. 2023; the authors' code,
    ``ddnm_diffusion`` / ``ddnm_plus_diffusion``), with the fresh noise ``z`` (image-shaped) and, for DDNM+
    without an SVD, ``w`` (measurement-shaped).

    σ_y = 0: x̂0 ← x̂0 + A⁺(y − A x̂0), x_{t'} = √ᾱ' x̂0 + √(1−ᾱ')(η z + √(1−η²) ε_θ) (ε_θ the network's, not
    re-derived from the corrected x̂0). σ_y > 0 with an SVD: per singular value, the correction scaled by λ and
    the noise d1 Vᵀz + d2 Vᵀε_θ (``ddnm_lambda_noise``). σ_y > 0 without an SVD: the soft version of the same
    rule, ρ = (√ᾱ' σ_y/σ_t)² (where λ switches from 1 to < 1): the correction (AᵀA + ρ)⁻¹Aᵀ(y − A x̂0) has gain
    g = s²/(s² + ρ) per direction and lets in measurement noise of variance σ_t² g(1−g); ε_θ keeps the weight
    σ_t√(1−η²)(1−g) and the fresh noise σ_t² (η²(1−g)² + g), so each direction has variance σ_t² as in the
    reference. All of it is one conjugate-gradient solve:
    x_{t'} = a x̂0 + σ_t(√(1−η²) ε + η z) + (AᵀA + ρ)⁻¹Aᵀ[a(y − A x̂0) + σ_t(A(z₂ − η z − √(1−η²) ε) + √ρ w)],
    with z₂ a second noise image (``z`` then stacks (z, z₂) along a new leading axis)."""
    op, sy = p.op, p.sigma
    a = math.sqrt(p.alpha_bar(t_prev))
    sig = math.sqrt(max(1 - p.alpha_bar(t_prev), 0.0))
    c = math.sqrt(max(1 - eta**2, 0.0))
    if sy == 0:
        x0c = op.prox(x0, p.y, 0.0)
        return a * x0c + sig * (eta * z + c * eps)
    if Capability.SVD in op.capabilities:
        z0, zy = op.Vt(x0), op.Ut(p.y)
        s = op.spectrum(x0.shape, zy)
        m = s.shape[1]
        lam, d1, d2 = ddnm_lambda_noise(s, a, sig, sy, eta)
        inv = pinv_singular_values(s)
        # Vᵀ A⁺(A x̂0 − y) on the range: (s z0 − Uᵀy)/s where s > 0, 0 elsewhere
        corr = torch.where(inv > 0, z0[:, :m] - zy * inv, torch.zeros_like(zy))
        zhat = torch.cat([z0[:, :m] - lam * corr, z0[:, m:]], 1)
        n = zhat.shape[1]
        D1 = torch.cat([d1.expand(x0.shape[0], m), torch.full((x0.shape[0], n - m), sig * eta, dtype=x0.dtype,
                                                               device=x0.device)], 1)
        D2 = torch.cat([d2.expand(x0.shape[0], m), torch.full((x0.shape[0], n - m), sig * c, dtype=x0.dtype,
                                                               device=x0.device)], 1)
        return op.V(a * zhat + D1 * op.Vt(z) + D2 * op.Vt(eps), x0.shape)
    z1, z2 = z[0], z[1]
    if sig == 0:  # the last step: the reference's λ is 0 on every measured direction
        return a * x0
    rho = (a * sy / sig) ** 2
    rhs = a * (p.y - op(x0)) + sig * (op(z2 - eta * z1 - c * eps) + math.sqrt(rho) * w)
    r4 = torch.full((x0.shape[0],) + (1,) * (x0.ndim - 1), rho, dtype=x0.dtype, device=x0.device)
    delta = conjugate_gradient(lambda v: torch.addcmul(op.normal(v), r4, v), op.adjoint(rhs), iters=100, tol=1e-5)
    return a * x0 + sig * (c * eps + eta * z1) + delta


def ddnm(p: Problem, hp: DDNMParams = DDNMParams(), callback=None) -> Tensor:
    """Denoising diffusion null-space model (Wang et al. 2023), DDNM+ for noisy y, as in the authors' code: the
    network's x̂0 and ε_θ at each step (x̂0 not clipped), ``ddnm_step`` to the next level, and, with
    ``travel_length``/``travel_repeat``, the time travel of ``jump_schedule``: going back up one index re-noises
    the last x̂0 (before correction) to that level, x = √ᾱ x̂0 + √(1−ᾱ) z. Needs a linear operator; the result is
    clipped to [-1, 1] when the problem clips. ``hp.start`` < 1: the warm start (``warmstart``) at t₀."""
    ts = warm_timesteps(p.schedule, hp.steps, hp.spacing, hp.start)[::-1]  # index -> timestep, ascending
    sched = jump_schedule(len(ts), hp.travel_length, hp.travel_repeat)
    dev, dt = p.y.device, p.y.dtype
    svd = Capability.SVD in p.op.capabilities
    if hp.start < 1:
        x = warm_state(p, ts[-1], hp.init)
    else:
        x = rng.randn(p.shape, p.generator, device=dev, dtype=dt)
    x0 = x
    total = sum(1 for i, j in zip(sched, sched[1:]) if j < i)
    k = 0
    for i, j in zip(sched, sched[1:]):
        t_next = ts[j] if j >= 0 else -1
        if j < i:
            t = ts[i]
            with torch.inference_mode():
                eps = p.prior.eps(x, p.tt(t, x), p.cond)
            p.counts.nfe += 1
            eps = eps.clone()
            x0 = p.prior.x0_from_eps(x, p.tt(t, x), eps)
            noisy_cg = p.sigma > 0 and not svd
            z = rng.randn(p.shape, p.generator, device=dev, dtype=dt)
            if noisy_cg:  # two independent images of noise (z, z₂), each drawn per image
                z = torch.stack([z, rng.randn(p.shape, p.generator, device=dev, dtype=dt)])
            w = rng.randn(p.y.shape, p.generator, device=dev, dtype=dt) if noisy_cg else None
            x = ddnm_step(p, x0, eps, t_next, hp.eta, z, w)
            if callback is not None:
                callback({"step": k, "total": total, "t": t, "x_t": x, "x0": x0})
            k += 1
        else:  # time travel: back up one index from the last prediction
            ab = p.alpha_bar(t_next)
            x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * rng.randn(p.shape, p.generator, device=dev, dtype=dt)
    return x.clamp(-1, 1) if p.clip else x


def ddnm_nfe(hp: dict) -> int:
    """Network evaluations of ``ddnm``: the descending steps of its schedule."""
    s = jump_schedule(hp["steps"], hp["travel_length"], hp["travel_repeat"])
    return sum(1 for i, j in zip(s, s[1:]) if j < i)


class DiffPIR(Guidance):
    """Diffusion plug-and-play image restoration (Zhu et al. 2023, Algorithm 1; yuanzhi-zhu/DiffPIR):
    x̂0 ← argmin ‖y − A x‖² + ρ_t ‖x − x̂0‖², ρ_t = λ σ_n² / σ̄_t² with σ_n = σ/2 (the noise level on the [0, 1]
    scale, as the reference) and σ̄_t² = (1−ᾱ_t)/ᾱ_t; then x_{t−1} = √ᾱ_{t−1} x̂0 + √(1−ᾱ_{t−1})(√(1−ζ) ε̂ + √ζ z)
    with ε̂ re-derived from the corrected x̂0. The data step is the operator's ``prox``: exact for SVD operators,
    conjugate gradients to the relative tolerance ``cg_tol`` for other linear ones, gradient steps for
    non-linear ones. With the problem's ``operator_update`` (joint estimation of a blind kernel, as the inner loop
    of Laroche et al.'s Fast Diffusion EM), the operator is refitted to the prior's x̂0 at every step before the
    data step uses it."""

    def __init__(self, problem: Problem, hp: DiffPIRParams = DiffPIRParams()) -> None:
        super().__init__(counts=problem.counts)
        self.p = problem
        self.lam, self.zeta = hp.lam, hp.zeta
        self.cg_tol, self.cg_iters, self.grad_steps = hp.cg_tol, hp.cg_iters, hp.grad_steps

    def rho(self, t: int) -> float:
        a = self.p.alpha_bar(t)
        return self.lam * (self.p.sigma / 2) ** 2 * a / (1 - a)

    def denoise(self, prior, x_t: Tensor, t: int, t_prev: int) -> Denoised:
        p = self.p
        d = p.denoise(x_t, t)
        if p.operator_update is not None:  # the operator refitted to the prior's x̂0 before the data step (blind EM)
            op = p.operator_update(d.x0, t)
            if op is not None:
                p.op = op.unchecked()
        x0 = p.op.prox(d.x0, p.y, self.rho(t), iters=self.cg_iters, grad_steps=self.grad_steps, tol=self.cg_tol)
        return p.finish(x_t, t, x0)

    def step(self, x_t: Tensor, t: int, t_prev: int, d: Denoised, loop: Loop) -> Tensor:
        p = self.p
        a_prev = p.alpha_bar(t_prev)
        if t_prev < 0:
            return d.x0
        z = rng.randn_like(x_t, p.generator)
        noise = math.sqrt(1 - self.zeta) * d.eps + math.sqrt(self.zeta) * z
        return math.sqrt(a_prev) * d.x0 + math.sqrt(1 - a_prev) * noise


__all__ = ["DDRM", "ddnm", "ddnm_step", "ddnm_lambda_noise", "DiffPIR", "ddim_step", "step_coefficients"]
