"""The one DDPM/DDIM update and the sampling loop.

x_{t'} = √ᾱ_{t'} x̂0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z,  σ = η √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'})

(Song et al. 2021, eq. 12). With all T steps, η = 1 is DDPM's ancestral sampler with σ_t² = β̃_t
(Algorithm 2); ``variance="large"`` uses σ_t² = β_t instead. η = 0 is deterministic DDIM. Coefficients are
computed in float64 on the host once per step index and applied in the batch's dtype.

Methods plug in as a ``Guidance``: the loop calls its three hooks at every step, each with a default, so a
method overrides only what it changes: ``denoise`` (the prediction x̂0, ε̂ at x_t: by default the network's, in
inference mode), ``step`` (x_t → x_{t'}: by default the update above) and ``after_step`` (a correction of
x_{t'}, e.g. DPS's gradient step: by default none). What a method carries from one hook to the next lives on
its own object. Network evaluations and VJPs are counted in one ``Counts`` per run, where they happen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .. import rng
from ..eps import Denoised, EpsPrior
from ..schedule import NoiseSchedule


@dataclass(frozen=True)
class StepCoefficients:
    a_prev: float  # √ᾱ_{t'}
    c_eps: float  # √(1 − ᾱ_{t'} − σ²)
    sigma: float


def step_coefficients(schedule: NoiseSchedule, t: int, t_prev: int, eta: float,
                      variance: Literal["small", "large"] = "small") -> StepCoefficients:
    ac = schedule.alpha_bar(t)
    ac_prev = schedule.alpha_bar(t_prev)
    if variance == "large" and t_prev == t - 1 and t_prev >= 0:
        var = eta**2 * float(schedule.betas[t])
    else:
        var = eta**2 * (1 - ac_prev) / (1 - ac) * (1 - ac / ac_prev)
    var = min(var, 1 - ac_prev)
    return StepCoefficients(math.sqrt(ac_prev), math.sqrt(max(1 - ac_prev - var, 0.0)), math.sqrt(max(var, 0.0)))


def ddim_step(x_t: Tensor, denoised: Denoised, coef: StepCoefficients, noise: Tensor | None) -> Tensor:
    """One update from (x̂0, ε̂) to x_{t'}; ``noise`` is needed when σ > 0."""
    out = coef.a_prev * denoised.x0 + coef.c_eps * denoised.eps
    if coef.sigma > 0:
        out = out + coef.sigma * noise
    return out


@dataclass
class Counts:
    """Network evaluations (``nfe``) and vector-Jacobian products through the network (``vjps``) of one run, per
    image (every image of a batch goes through the same evaluations)."""

    nfe: int = 0
    vjps: int = 0


@dataclass(frozen=True)
class Loop:
    """What the default update needs from ``sample``: the schedule, η, the variance choice, the random streams."""

    schedule: NoiseSchedule
    eta: float
    variance: Literal["small", "large"]
    generator: rng.Generators


class Guidance:
    """The hooks of the one sampling loop, with the defaults of plain (unguided, or Palette-conditional) sampling.
    ``counts`` is where the network evaluations of the default ``denoise`` are counted."""

    def __init__(self, *, counts: Counts | None = None, cond: Tensor | None = None, clip: bool = False,
                 cfg_weight: float = 0.0) -> None:
        self.counts = counts if counts is not None else Counts()
        self.cond, self.clip, self.cfg_weight = cond, clip, cfg_weight

    def denoise(self, prior: EpsPrior, x_t: Tensor, t: int, t_prev: int) -> Denoised:
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        with torch.inference_mode():
            d = prior.denoise(x_t, tt, self.cond, clip=self.clip, guidance=self.cfg_weight)
        self.counts.nfe += 2 if self.cfg_weight else 1
        return d

    def step(self, x_t: Tensor, t: int, t_prev: int, d: Denoised, loop: Loop) -> Tensor:
        coef = step_coefficients(loop.schedule, t, t_prev, loop.eta, loop.variance)
        z = rng.randn_like(x_t, loop.generator) if coef.sigma > 0 else None
        return ddim_step(x_t, d, coef, z)

    def after_step(self, x_prev: Tensor, x_t: Tensor, t: int, t_prev: int, d: Denoised) -> Tensor:
        return x_prev


def timestep_pairs(schedule: NoiseSchedule, steps: int | None, spacing: str = "uniform") -> list[tuple[int, int]]:
    ts = schedule.timesteps(steps, spacing=spacing).tolist()
    return list(zip(ts, ts[1:] + [-1]))


def jump_schedule(steps: int, length: int, repeat: int) -> list[int]:
    """Step indices steps−1, …, 0, −1 with RePaint-style jumps back (DDNM's time travel, the authors'
    ``get_schedule_jump``): at every index j = 0, length, 2·length, … below steps − length, go back up ``length``
    indices one at a time, ``repeat`` − 1 times, then continue down. Consecutive entries differ by one;
    ``length = repeat = 1`` (or ``repeat = 1``) is the plain descent."""
    if steps < 1 or length < 1 or repeat < 1:
        raise ValueError("steps, travel length and repeat must be at least 1")
    left = {j: repeat - 1 for j in range(0, steps - length, length)}
    t, out = steps, []
    while t >= 1:
        t -= 1
        out.append(t)
        if left.get(t, 0) > 0:
            left[t] -= 1
            for _ in range(length):
                t += 1
                out.append(t)
    out.append(-1)
    return out


def sample(prior: EpsPrior, shape, *, steps: int | None = None, eta: float = 1.0, guidance: Guidance | None = None,
           generator: rng.Generators = None, callback=None, cond: Tensor | None = None, clip: bool = False,
           device=None, x_T: Tensor | None = None, variance: Literal["small", "large"] = "small",
           spacing: str = "uniform", counts: Counts | None = None, t_start: int | None = None,
           dtype: torch.dtype = torch.float32, timesteps: list[int] | None = None, cfg_weight: float = 0.0) -> Tensor:
    """Draw samples: unconditional (``guidance`` None), conditional (Palette condition channels or class labels
    ``cond``; ``cfg_weight`` w: classifier-free guidance, two network evaluations per step) or guided.

    ``generator``: one per image for batch invariance (see ``invdiff.rng``). ``callback(info)`` gets a dict
    with step, total, t, x_t and x0 after every step. ``counts``: where the network evaluations of the
    unguided loop are counted (a guidance counts its own). ``timesteps``: the descending timesteps to visit,
    instead of ``steps`` and ``spacing`` (a warm start's, ``warmstart.warm_timesteps``)."""
    device = torch.device(device) if device is not None else prior.device
    shape = tuple(shape)
    x = rng.randn(shape, generator, device=device, dtype=dtype) if x_T is None else x_T.to(device)
    if timesteps is not None:
        pairs = list(zip(timesteps, list(timesteps[1:]) + [-1]))
    else:
        pairs = timestep_pairs(prior.schedule, steps, spacing)
    if t_start is not None:  # start part-way (x_T is then a noised initial guess at level t_start: CCDF / SDEdit)
        pairs = [(t, tp) for t, tp in pairs if t <= t_start]
    prior.check_guidance(cfg_weight)
    guidance = guidance if guidance is not None else Guidance(counts=counts, cond=cond, clip=clip, cfg_weight=cfg_weight)
    loop = Loop(prior.schedule, eta, variance, generator)
    for i, (t, t_prev) in enumerate(pairs):
        d = guidance.denoise(prior, x, t, t_prev)
        x_prev = guidance.step(x, t, t_prev, d, loop)
        x = guidance.after_step(x_prev, x, t, t_prev, d).detach()
        if callback is not None:
            callback({"step": i, "total": len(pairs), "t": t, "x_t": x, "x0": d.x0.detach()})
    return x
