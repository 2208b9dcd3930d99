"""Methods that correct x̂0 by solving the data term: DDRM (per singular value), DDNM (range/null-space) and
DiffPIR (a proximal step), each keeping the prior's x̂0 where the measurement says nothing."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from ..operators.base import SVDOperator, pinv_singular_values
from ..prior import Denoised
from .core import ddim_step, step_coefficients
from .params import DDNMParams, DDRMParams, DiffPIRParams
from .problem import Problem, proximal


class DDRM:
    """Denoising diffusion restoration models (Kawar et al. 2022, eq. 7-8). In the spectral domain of
    A = U S Vᵀ with x̄_t = x_t/√ᾱ_t = x0 + σ_t ε, σ_t = √((1−ᾱ_t)/ᾱ_t), ȳ = Uᵀy/s:
    unmeasured components follow DDIM(η); measured ones are pulled to ȳ, with the measurement noise σ_y/s
    either still below σ_{t−1} (then ȳ plus fresh noise, weight η_b) or above (then a DDIM-like mix)."""

    def __init__(self, problem: Problem, hp: DDRMParams = DDRMParams()) -> None:
        self.p = problem
        self.eta, self.eta_b = hp.eta, hp.eta_b
        op = problem.op
        assert isinstance(op, SVDOperator)
        zy = op.Ut(problem.y)
        s = op._s(problem.shape, zy)
        self.s = s
        self.inv = pinv_singular_values(s)
        self.ybar = zy * self.inv
        self.measured = self.inv > 0
        self.noise = torch.where(self.measured, problem.sigma * self.inv, torch.zeros_like(s))  # σ_y / s

    def denoise(self, prior, x_t: Tensor, t: int, ctx: dict) -> Denoised:
        return self.p.denoise(x_t, t)

    def step(self, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
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


class DDNM:
    """Denoising diffusion null-space model (Wang et al. 2023): x̂0 ← x̂0 + A⁺(y − A x̂0), keeping the null-space
    part of x̂0 and taking the range-space part from y. With noise (DDNM+, eq. 17-19), each singular direction is
    only partly replaced, λ = min(1, σ_step s / (c σ_y)) with c the weight of x̂0 in the update, and the fresh
    noise of the step is reduced by the measurement noise that λ lets in, so x_{t−1} keeps the right noise level
    (per singular value through the SVD; by a Tikhonov-regularised CG solve otherwise). Needs η > 0 for noisy y."""

    def __init__(self, problem: Problem, hp: DDNMParams = DDNMParams()) -> None:
        self.p = problem
        self.eta = hp.eta

    def denoise(self, prior, x_t: Tensor, t: int, ctx: dict) -> Denoised:
        return self.p.denoise(x_t, t)

    def step(self, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
        p, op = self.p, self.p.op
        coef = step_coefficients(p.schedule, t, t_prev, self.eta)
        a = p.alpha_bar(t)
        # x_{t'} = c x̂0 + (c_eps/√(1−ᾱ_t)) x_t + σ z with c the weight of x̂0 once ε is re-derived from it
        c = coef.a_prev - coef.c_eps * math.sqrt(a) / math.sqrt(1 - a)
        if p.sigma == 0:
            x0 = proximal(op, p.y, d.x0, 0.0)
            lam_noise = None
        elif isinstance(op, SVDOperator):
            z0, zy = op.Vt(d.x0), op.Ut(p.y)
            s = op._s(x0_shape := d.x0.shape, zy)
            inv = pinv_singular_values(s)
            m = s.shape[1]
            lam = torch.where(inv > 0, (coef.sigma * s / max(abs(c) * p.sigma, 1e-12)).clamp(max=1.0), torch.zeros_like(s))
            upd = z0[:, :m] + lam * (zy * inv - z0[:, :m]) * (inv > 0)
            x0 = op.V(torch.cat([upd, z0[:, m:]], 1), x0_shape)
            lam_noise = (c * lam * p.sigma * inv) ** 2  # variance let in per measured direction
        elif coef.sigma == 0:
            x0, lam_noise = d.x0, 0.0
        else:
            # without an SVD the per-direction λ is applied implicitly: the Tikhonov step
            # x̂0 + (AᵀA + ρI)⁻¹Aᵀ(y − Ax̂0), ρ = (c σ_y / σ_step)², shrinks each direction by s²/(s² + ρ), which is ≈ 1 where
            # DDNM+ takes λ = 1 and small where the measurement noise would exceed the step's noise
            rho = (abs(c) * p.sigma / coef.sigma) ** 2
            x0 = proximal(op, p.y, d.x0, rho)
            lam_noise = 0.0
        if p.clip:
            x0 = x0.clamp(-1, 1)
        eps = p.prior.eps_from_x0(x_t, p.tt(t, x_t), x0)
        out = coef.a_prev * x0 + coef.c_eps * eps
        if coef.sigma == 0:
            return out
        if lam_noise is None:
            return out + coef.sigma * rng.randn_like(x_t, p.generator)
        if isinstance(op, SVDOperator):
            z = rng.randn((x_t.shape[0], x_t[0].numel()), p.generator, device=x_t.device, dtype=x_t.dtype)
            m = lam_noise.shape[1]
            std = torch.cat([(coef.sigma**2 - lam_noise).clamp_min(0).sqrt().expand(x_t.shape[0], m),
                             torch.full_like(z[:, m:], coef.sigma)], 1)
            return out + op.V(std * z, x_t.shape)
        return out + math.sqrt(max(coef.sigma**2 - lam_noise, 0.0)) * rng.randn_like(x_t, p.generator)


class DiffPIR:
    """Diffusion plug-and-play image restoration (Zhu et al. 2023, Algorithm 1): x̂0 ← argmin ‖y − A x‖² +
    ρ_t ‖x − x̂0‖², ρ_t = λ σ_y² / σ̄_t² with σ̄_t² = (1−ᾱ_t)/ᾱ_t (closed form through the SVD, CG for other linear
    operators, gradient steps for non-linear ones), then x_{t−1} = √ᾱ_{t−1} x̂0 + √(1−ᾱ_{t−1})(√(1−ζ) ε̂ + √ζ z)."""

    def __init__(self, problem: Problem, hp: DiffPIRParams = DiffPIRParams()) -> None:
        self.p = problem
        self.lam, self.zeta = hp.lam, hp.zeta
        self.cg_iters, self.grad_steps = hp.cg_iters, hp.grad_steps

    def denoise(self, prior, x_t: Tensor, t: int, ctx: dict) -> Denoised:
        p = self.p
        d = p.denoise(x_t, t)
        a = p.alpha_bar(t)
        rho = self.lam * p.sigma**2 * a / (1 - a)
        x0 = proximal(p.op, p.y, d.x0, rho, cg_iters=self.cg_iters, grad_steps=self.grad_steps)
        return p.finish(x_t, t, x0)

    def step(self, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
        p = self.p
        a_prev = p.alpha_bar(t_prev)
        if t_prev < 0:
            return d.x0
        z = rng.randn_like(x_t, p.generator)
        noise = math.sqrt(1 - self.zeta) * d.eps + math.sqrt(self.zeta) * z
        return math.sqrt(a_prev) * d.x0 + math.sqrt(1 - a_prev) * noise


__all__ = ["DDRM", "DDNM", "DiffPIR", "ddim_step", "step_coefficients"]
