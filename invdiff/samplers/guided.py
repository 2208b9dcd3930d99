"""Methods that guide the DDPM/DDIM update: gradient methods through the network (DPS, MCG, ΠGDM), the
measurement projection of score-SDE (guidance objects for ``core.sample``), and RePaint, the projection with
resampling (its own loop over a schedule that goes back up in noise)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import rng
from ..eps import Denoised
from ..operators.base import Capability
from .params import PiGDMParams
from .core import Guidance, jump_schedule
from .problem import Problem, noisy_measurement
from .warmstart import warm_state, warm_timesteps


class DPS(Guidance):
    """Diffusion posterior sampling (Chung et al. 2022, Algorithm 1; the authors' ``PosteriorSampling``): after each
    ancestral step, x_{t−1} ← x_{t−1} − ζ ∇_{x_t} ‖y − A(x̂0(x_t))‖ (the norm, not its square).

    ``gradient="clipped"`` (the reference): the gradient flows through the x̂0 that the step uses, clipped to
    [-1, 1] when the problem clips (guided-diffusion's ``clip_denoised``; clipped pixels pass no gradient).
    ``gradient="raw"``: through the unclipped x̂0 (this toolkit's earlier behaviour).

    ζ is 1 by default. The released per-task values (``invdiff.tasks.DPS_REFERENCE_ZETA``: 0.3 blur/SR, 0.5
    inpainting, 1.0 phase retrieval), tuned for 1000 steps, under-guide at our 100-200 (fmnist32, same images and
    noise: deblur 18.3 vs 21.1 dB with ζ = 1, SR 15.1 vs 17.5, random inpainting 20.7 vs 22.6; RESULTS.md); the
    dps-ffhq suite, the released protocol, sets them task by task.

    The norm is taken per image. The authors' code takes it over the whole batch, which is the same at their batch
    size of 1 but makes each image's step depend on the others in a batch. A zero residual gives a zero gradient
    (the derivative of ‖r‖ is taken as r/‖r‖ where ‖r‖ > 0 and 0 elsewhere, as ``torch.linalg.norm`` does)."""

    def __init__(self, problem: Problem, *, zeta: float = 1.0, gradient: str = "clipped") -> None:
        if gradient not in ("clipped", "raw"):
            raise ValueError(f"gradient must be 'clipped' or 'raw', got {gradient!r}")
        super().__init__(counts=problem.counts)
        self.p = problem
        self.zeta = zeta
        self.gradient = gradient
        self._grad: Tensor | None = None  # ∇‖y − A(x̂0)‖ at x_t, from denoise to after_step

    def _norm_gradient(self, x: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        p = self.p
        with torch.enable_grad():
            xg, x0, eps = p.denoise_with_graph(x, t)
            x0_used = x0.clamp(-1, 1) if (p.clip and self.gradient == "clipped") else x0
            r = p.residual(x0_used)
            sq = r.flatten(1).pow(2).sum(1)  # ‖r_i‖² per image
            norms = sq.detach().sqrt()
            # d‖r_i‖ = d‖r_i‖² / (2‖r_i‖): one backward for the batch, image i's gradient involves only its own ‖r_i‖
            w = torch.where(norms > 0, 0.5 / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(norms))
            (g,) = torch.autograd.grad(sq, xg, w)
        p.counts.vjps += 1
        return g, x0.detach(), eps.detach()

    def denoise(self, prior, x_t: Tensor, t: int, t_prev: int) -> Denoised:
        self._grad, x0, _ = self._norm_gradient(x_t, t)
        return self.p.finish(x_t, t, x0)

    def after_step(self, x_prev: Tensor, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
        g, self._grad = self._grad, None
        return x_prev - self.zeta * g


class MCG(DPS):
    """Manifold-constrained gradient (Chung et al. 2022b): the DPS-style gradient step followed by the projection
    onto the noised measurement, x_{t−1} ← x_{t−1} + A⁺(y_{t−1} − A x_{t−1}). Needs a linear A."""

    def after_step(self, x_prev: Tensor, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
        x_prev = super().after_step(x_prev, x_t, t, t_prev, d)
        return Projection.project(self.p, x_prev, t_prev)


class Projection(Guidance):
    """Score-SDE conditioning without gradients (Song et al. 2021, the measurement-replacement method): the
    unconditional step, then the noised measurement replaces the measured part,
    x_{t−1} ← x_{t−1} + A⁺(y_{t−1} − A x_{t−1}), y_{t−1} = √ᾱ_{t−1} y + √(1−ᾱ_{t−1}) A ξ. Needs a linear A. It has
    no resampling; RePaint (Lugmayr et al. 2022) is the ``repaint`` method."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(counts=problem.counts)
        self.p = problem

    def denoise(self, prior, x_t: Tensor, t: int, t_prev: int) -> Denoised:
        return self.p.denoise(x_t, t)

    @staticmethod
    def project(p: Problem, x: Tensor, t_prev: int) -> Tensor:
        """Hard projection for noiseless y; with noise σ, the Gaussian update that weighs y_{t−1} (noise √ᾱ σ) against
        x_{t−1} (noise √(1−ᾱ)): ρ = ᾱσ²/(1−ᾱ), so noise is not amplified by small singular values."""
        a = p.alpha_bar(t_prev)
        if a >= 1:
            return x
        y_t = noisy_measurement(p, a, p.generator)
        return p.op.prox(x, y_t, a * p.sigma**2 / (1 - a))

    def after_step(self, x_prev: Tensor, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
        return self.project(self.p, x_prev, t_prev)


def repaint_schedule(steps: int, jump_length: int, resamples: int) -> list[int]:
    """RePaint's time schedule over step indices 0 … steps−1 (Lugmayr et al. 2022, Algorithm 1 with the jumps of
    the authors' ``get_schedule_jump``): descend one index at a time from steps−1; on reaching an index that is a
    multiple of ``jump_length`` (below steps − jump_length), go back up ``jump_length`` indices, ``resamples`` − 1
    times in all for that index, then continue down; ends with −1 (x0). Consecutive entries differ by one."""
    return jump_schedule(steps, jump_length, resamples)  # DDNM's time travel is the same schedule


def repaint_nfe(steps: int, jump_length: int, resamples: int) -> int:
    """Network evaluations of ``repaint``: the reverse steps of its schedule."""
    ts = repaint_schedule(steps, jump_length, resamples)
    return sum(1 for a, b in zip(ts, ts[1:]) if b < a)


def repaint(p: Problem, *, steps: int = 250, jump_length: int = 10, resamples: int = 10, eta: float = 1.0,
            spacing: str = "uniform", start: float = 1.0, init: str = "pinv", callback=None) -> Tensor:
    """RePaint (Lugmayr et al. 2022; andreas128/RePaint, ``inpa_inj_sched_prev``): ancestral sampling on ``steps``
    respaced steps along ``repaint_schedule``. Before every reverse step but the first, the measured part of x_t is
    replaced by the measurement noised to the level of x_t: x_t ← x_t + A⁺(y_t − A x_t), y_t = √ᾱ_t y + √(1−ᾱ_t) A ξ
    (for inpainting exactly m ⊙ (√ᾱ_t y + √(1−ᾱ_t) ξ) + (1 − m) ⊙ x_t); then x_{t−1} ~ p(x_{t−1} | x_t) (η = 1:
    DDPM). Going back up one step re-noises with the forward transition of the respaced chain,
    x_{t+1} = √(1−β'_{t+1}) x_t + √β'_{t+1} z, β'_{t+1} = 1 − ᾱ_{t+1}/ᾱ_t. Network evaluations: one per reverse
    step, len(repaint_schedule) − 1 − (number of jumps up); ``resamples=1`` has no resampling (``steps`` NFE).
    The measurement replacement is hard (as the reference, which assumes noiseless y). Needs a linear A.
    ``start`` < 1: the warm start, the schedule over min(steps, t₀ + 1) respaced steps of [0, t₀] from
    x_{t₀} = √ᾱ_{t₀} x_init + √(1−ᾱ_{t₀}) ε."""
    from .core import ddim_step, step_coefficients

    y = p.y
    ts = warm_timesteps(p.schedule, steps, spacing, start)[::-1]  # index i -> timestep, ascending
    def abar(i: int) -> float:
        return 1.0 if i < 0 else p.alpha_bar(ts[i])

    sched = repaint_schedule(len(ts), jump_length, resamples)
    if start < 1:
        x = warm_state(p, ts[-1], init)
    else:
        x = rng.randn(p.shape, p.generator, device=y.device, dtype=y.dtype)
    first, k = True, 0
    total = sum(1 for a, b in zip(sched, sched[1:]) if b < a)
    for i, j in zip(sched, sched[1:]):
        if j < i:  # reverse step at index i
            z = rng.randn_like(x, p.generator)
            if not first:
                a = abar(i)
                x = p.op.prox(x, noisy_measurement(p, a, p.generator), 0.0)
            first = False
            d = p.denoise(x, ts[i])
            coef = step_coefficients(p.schedule, ts[i], ts[j] if j >= 0 else -1, eta)
            x = ddim_step(x, d, coef, z)
            if callback is not None:
                callback({"step": k, "total": total, "t": ts[i], "x_t": x, "x0": d.x0})
            k += 1
        else:  # back up one index: the forward transition of the respaced chain
            beta = 1 - abar(j) / abar(i)
            x = math.sqrt(1 - beta) * x + math.sqrt(beta) * rng.randn_like(x, p.generator)
    return x


def _pixel_mask(op, shape, like: Tensor) -> bool:
    """True when A observes a subset of the pixels (an SVD with singular values 0 and 1, some 0: inpainting), where
    pasting y is what the authors' ΠGDM does."""
    if Capability.SVD not in op.capabilities:
        return False
    s = op.spectrum(tuple(shape), like)
    return bool(((s == 0) | (s == 1)).all()) and bool((s == 0).any())


class PiGDM(Guidance):
    """Pseudo-inverse guided diffusion (Song et al. 2023). Needs a linear A.

    ``weighting="authors"`` (NVlabs/RED-diff ``algos/pgdm.py``, awd): the DDIM step from the network's (x̂0, ε_θ)
    to x_s plus √ᾱ_s √ᾱ_t · scale · Jᵀ(A⁺y − A⁺A x̂0), J = ∂x̂0/∂x_t; for a pixel mask x̂0's observed pixels are
    replaced by y and the guidance is kept on the unobserved ones; the start is √ᾱ_T A⁺y + √(1−ᾱ_T) z
    (``authors_start``). ``weighting="exact"``: p(x0|x_t) ≈ N(x̂0, r_t² I) with r_t² = 1 − ᾱ_t gives the likelihood
    score g = Jᵀ Aᵀ(r_t² AAᵀ + σ² I)⁻¹ (y − A x̂0), added to the prior score: ε ← ε − √(1−ᾱ_t) g; exact when
    Cov[x0|x_t] = r_t² I (e.g. unit-variance Gaussian data)."""

    def __init__(self, problem: Problem, hp: PiGDMParams = PiGDMParams()) -> None:
        super().__init__(counts=problem.counts)
        self.p = problem
        self._grad: Tensor | None = None  # the authors' guidance term, from denoise to after_step
        self.scale = hp.scale
        self.weighting = hp.weighting
        self.paste = hp.weighting == "authors" and _pixel_mask(problem.op, problem.shape, problem.y)

    def authors_start(self, t_first: int) -> Tensor:
        """x_T = √ᾱ_T A⁺y + √(1−ᾱ_T) z."""
        p = self.p
        a = p.alpha_bar(t_first)
        z = rng.randn(p.shape, p.generator, device=p.y.device, dtype=p.y.dtype)
        return math.sqrt(a) * p.op.pinv(p.y) + math.sqrt(1 - a) * z

    def denoise(self, prior, x_t: Tensor, t: int, t_prev: int) -> Denoised:
        if self.weighting == "authors":
            return self._authors(x_t, t, t_prev)
        p = self.p
        a = p.alpha_bar(t)
        r2 = 1 - a
        with torch.enable_grad():
            xg, x0, eps = p.denoise_with_graph(x_t, t)
            v = p.op.weighted_pinv(p.residual(x0.detach()), r2, p.sigma**2)
            (g,) = torch.autograd.grad(x0, xg, v)
        p.counts.vjps += 1
        eps = eps.detach() - self.scale * math.sqrt(1 - a) * g
        x0 = prior.x0_from_eps(x_t, p.tt(t, x_t), eps)
        return p.finish(x_t, t, x0)

    def _authors(self, x_t: Tensor, t: int, t_prev: int) -> Denoised:
        p, op = self.p, self.p.op
        with torch.enable_grad():
            xg, x0, eps = p.denoise_with_graph(x_t, t)
            mat = op.pinv(p.residual(x0.detach()))  # A⁺y − A⁺A x̂0
            (g,) = torch.autograd.grad(x0, xg, mat)
        p.counts.vjps += 1
        x0, eps = x0.detach(), eps.detach()
        if self.paste:  # observed pixels from y, guidance on the others only
            x0 = x0 + op.pinv(p.residual(x0))
            g = g - op.pinv(op(g))
        coeff = math.sqrt(p.alpha_bar(t_prev)) * math.sqrt(p.alpha_bar(t)) * self.scale
        self._grad = coeff * g
        return Denoised(x0=x0, eps=eps)

    def after_step(self, x_prev: Tensor, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
        g, self._grad = self._grad, None
        return x_prev if g is None else x_prev + g


def guided_sample(problem: Problem, guidance, *, steps: int, eta: float, callback=None, x_T: Tensor | None = None,
                  spacing: str = "uniform", start: float = 1.0, init: str = "pinv") -> Tensor:
    """The one loop with a method's guidance. ``start`` < 1: the warm start (``warmstart``): ``steps`` steps over
    [0, t₀] from x_{t₀} = √ᾱ_{t₀} x_init + √(1−ᾱ_{t₀}) ε (``x_T`` is then not used)."""
    from .core import sample

    ts = None
    if start < 1:
        ts = warm_timesteps(problem.schedule, steps, spacing, start)
        x_T = warm_state(problem, ts[0], init)
    return sample(problem.prior, problem.shape, steps=steps, eta=eta, guidance=guidance, generator=problem.generator,
                  callback=callback, device=problem.y.device, x_T=x_T, spacing=spacing, dtype=problem.y.dtype,
                  timesteps=ts)


__all__ = ["DPS", "MCG", "Projection", "PiGDM", "guided_sample", "repaint", "repaint_nfe", "repaint_schedule"]
