"""Methods that guide the DDPM/DDIM update: gradient methods through the network (DPS, MCG, ΠGDM) and the
measurement projection of score-SDE/RePaint. Each is a guidance object for ``core.sample``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from ..prior import Denoised
from ..operators.base import Capability
from .params import PiGDMParams
from .problem import Problem, noisy_measurement, per_image_norm, proximal, weighted_pinv_residual


class DPS:
    """Diffusion posterior sampling (Chung et al. 2022, Algorithm 1): after each step,
    x_{t−1} ← x_{t−1} − ζ ∇_{x_t} ‖y − A(x̂0(x_t))‖, the norm taken per image (the paper's code takes it over
    the whole batch, which makes each image's step depend on the others). Equivalently the squared residual's
    gradient with the per-image step ζ / (2‖residual‖)."""

    def __init__(self, problem: Problem, *, zeta: float = 1.0) -> None:
        self.p = problem
        self.zeta = zeta

    def _norm_gradient(self, x: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        p = self.p
        with torch.enable_grad():
            xg, x0, eps = p.denoise_with_graph(x, t)
            norms = per_image_norm(p.residual(x0))
            (g,) = torch.autograd.grad(norms.sum(), xg)  # Σ_i ‖r_i‖: image i's gradient involves only ‖r_i‖
        p.vjps += 1
        return g, x0.detach(), eps.detach()

    def denoise(self, prior, x_t: Tensor, t: int, ctx: dict) -> Denoised:
        g, x0, _ = self._norm_gradient(x_t, t)
        ctx["grad"] = g
        return self.p.finish(x_t, t, x0)

    def after_step(self, prior, x_prev, x_t, t, t_prev, d, ctx) -> Tensor:
        return x_prev - self.zeta * ctx.pop("grad")


class MCG(DPS):
    """Manifold-constrained gradient (Chung et al. 2022b): the DPS-style gradient step followed by the projection
    onto the noised measurement, x_{t−1} ← x_{t−1} + A⁺(y_{t−1} − A x_{t−1}). Needs a linear A."""

    def after_step(self, prior, x_prev, x_t, t, t_prev, d, ctx) -> Tensor:
        x_prev = super().after_step(prior, x_prev, x_t, t, t_prev, d, ctx)
        return Projection.project(self.p, x_prev, t_prev)


class Projection:
    """Score-SDE / RePaint-style conditioning without gradients: the unconditional step, then the noised
    measurement replaces the measured part, x_{t−1} ← x_{t−1} + A⁺(y_{t−1} − A x_{t−1}),
    y_{t−1} = √ᾱ_{t−1} y + √(1−ᾱ_{t−1}) A ξ. Needs a linear A (for inpainting it is exactly RePaint's merge)."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem

    def denoise(self, prior, x_t: Tensor, t: int, ctx: dict) -> Denoised:
        return self.p.denoise(x_t, t)

    @staticmethod
    def project(p: Problem, x: Tensor, t_prev: int) -> Tensor:
        """Hard projection for noiseless y; with noise σ, the Gaussian update that weighs y_{t−1} (noise √ᾱ σ) against
        x_{t−1} (noise √(1−ᾱ)): ρ = ᾱσ²/(1−ᾱ), so noise is not amplified by small singular values."""
        a = p.alpha_bar(t_prev)
        if a >= 1:
            return x
        y_t = noisy_measurement(p, a, p.generator)
        return proximal(p.op, y_t, x, a * p.sigma**2 / (1 - a))

    def after_step(self, prior, x_prev, x_t, t, t_prev, d, ctx) -> Tensor:
        return self.project(self.p, x_prev, t_prev)


def _pixel_mask(op, shape, like: Tensor) -> bool:
    """True when A observes a subset of the pixels (an SVD with singular values 0 and 1, some 0: inpainting), where
    pasting y is what the authors' ΠGDM does."""
    if Capability.SVD not in op.capabilities:
        return False
    s = op._s(tuple(shape), like)
    return bool(((s == 0) | (s == 1)).all()) and bool((s == 0).any())


class PiGDM:
    """Pseudo-inverse guided diffusion (Song et al. 2023). Needs a linear A.

    ``weighting="authors"`` (NVlabs/RED-diff ``algos/pgdm.py``, awd): the DDIM step from the network's (x̂0, ε_θ)
    to x_s plus √ᾱ_s √ᾱ_t · scale · Jᵀ(A⁺y − A⁺A x̂0), J = ∂x̂0/∂x_t; for a pixel mask x̂0's observed pixels are
    replaced by y and the guidance is kept on the unobserved ones; the start is √ᾱ_T A⁺y + √(1−ᾱ_T) z
    (``authors_start``). ``weighting="exact"``: p(x0|x_t) ≈ N(x̂0, r_t² I) with r_t² = 1 − ᾱ_t gives the likelihood
    score g = Jᵀ Aᵀ(r_t² AAᵀ + σ² I)⁻¹ (y − A x̂0), added to the prior score: ε ← ε − √(1−ᾱ_t) g; exact when
    Cov[x0|x_t] = r_t² I (e.g. unit-variance Gaussian data)."""

    def __init__(self, problem: Problem, hp: PiGDMParams = PiGDMParams()) -> None:
        self.p = problem
        self.scale = hp.scale
        self.weighting = hp.weighting
        self.paste = hp.weighting == "authors" and _pixel_mask(problem.op, problem.shape, problem.y)

    def authors_start(self, t_first: int) -> Tensor:
        """x_T = √ᾱ_T A⁺y + √(1−ᾱ_T) z."""
        p = self.p
        a = p.alpha_bar(t_first)
        z = rng.randn(p.shape, p.generator, device=p.y.device, dtype=p.y.dtype)
        return math.sqrt(a) * p.op.pinv(p.y) + math.sqrt(1 - a) * z

    def denoise(self, prior, x_t: Tensor, t: int, ctx: dict) -> Denoised:
        if self.weighting == "authors":
            return self._authors(x_t, t, ctx)
        p = self.p
        a = p.alpha_bar(t)
        r2 = 1 - a
        with torch.enable_grad():
            xg, x0, eps = p.denoise_with_graph(x_t, t)
            v = weighted_pinv_residual(p.op, p.residual(x0.detach()), r2, p.sigma**2)
            (g,) = torch.autograd.grad(x0, xg, v)
        p.vjps += 1
        eps = eps.detach() - self.scale * math.sqrt(1 - a) * g
        x0 = prior.x0_from_eps(x_t, p.tt(t, x_t), eps)
        return p.finish(x_t, t, x0)

    def _authors(self, x_t: Tensor, t: int, ctx: dict) -> Denoised:
        p, op = self.p, self.p.op
        with torch.enable_grad():
            xg, x0, eps = p.denoise_with_graph(x_t, t)
            mat = op.pinv(p.residual(x0.detach()))  # A⁺y − A⁺A x̂0
            (g,) = torch.autograd.grad(x0, xg, mat)
        p.vjps += 1
        x0, eps = x0.detach(), eps.detach()
        if self.paste:  # observed pixels from y, guidance on the others only
            x0 = x0 + op.pinv(p.residual(x0))
            g = g - op.pinv(op(g))
        coeff = math.sqrt(p.alpha_bar(ctx["t_prev"])) * math.sqrt(p.alpha_bar(t)) * self.scale
        ctx["grad"] = coeff * g
        return Denoised(x0=x0, eps=eps)

    def after_step(self, prior, x_prev, x_t, t, t_prev, d, ctx) -> Tensor:
        g = ctx.pop("grad", None)
        return x_prev if g is None else x_prev + g


def guided_sample(problem: Problem, guidance, *, steps: int, eta: float, callback=None, x_T: Tensor | None = None,
                  spacing: str = "uniform") -> Tensor:
    from .core import sample

    ctx: dict = {}
    x = sample(problem.prior, problem.shape, steps=steps, eta=eta, guidance=guidance, generator=problem.generator,
               callback=callback, device=problem.y.device, x_T=x_T, ctx=ctx, spacing=spacing, dtype=problem.y.dtype)
    problem.nfe += ctx.get("nfe", 0)
    return x


__all__ = ["DPS", "MCG", "Projection", "PiGDM", "guided_sample"]
