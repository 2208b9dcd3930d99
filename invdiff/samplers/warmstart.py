"""Warm starts (come-closer-diffuse-faster, Chung et al. 2022; SDEdit, Meng et al. 2022), one mechanism for every
method: instead of pure noise at t = T−1, start at t₀ = round(start·(T−1)) from

    x_{t₀} = √ᾱ_{t₀} x_init + √(1−ᾱ_{t₀}) ε,

with ε drawn from the per-image streams, and spread the method's ``steps`` steps over [0, t₀] (the first at t₀
itself), so that the levels above t₀ are not paid for: single-evaluation methods still cost ``steps`` network
evaluations (at most t₀ + 1). ``start = 1`` is the cold start of each method, unchanged.

``x_init`` is an estimate of x: ``init="pinv"`` (A⁺y, linear operators), ``"measurement"`` (the measurement on
the image grid: y itself where A keeps the image's shape, else ``Operator.on_grid``'s image channels, e.g. y
upsampled bicubically for super-resolution), ``"zeros"``, or a classical solver of ``invdiff.baselines`` by name
(``"wiener"``, ``"tv"``, ``"bicubic"``, ``"biharmonic"``, ``"tv-denoise"``, ``"hio"`` and ``"hio-multiscale"`` for phase retrieval: run on y
with the problem's noise σ, image by image); or a tensor the caller computed (``restore(...,
x_init=...)``: a classical estimate such as Wiener/TV deconvolution or bicubic upsampling, ``invdiff.baselines``),
which takes precedence over ``init``."""

from __future__ import annotations

import math
import typing
from typing import Literal

import torch
from torch import Tensor

from .. import rng
from ..operators.base import Capability, Operator

Init = Literal["pinv", "measurement", "zeros", "wiener", "tv", "bicubic", "biharmonic", "tv-denoise", "hio", "hio-multiscale"]
#: the inits that are classical solvers (``invdiff.baselines``)
BASELINE_INITS: tuple[str, ...] = ("wiener", "tv", "bicubic", "biharmonic", "tv-denoise", "hio", "hio-multiscale")
INITS: tuple[str, ...] = typing.get_args(Init)


def start_timestep(schedule, start: float) -> int:
    """t₀ = round(start·(T−1)): the level a warm start begins at (T−1 for start = 1)."""
    if not 0 < start <= 1:
        raise ValueError(f"start must be in (0, 1] (a fraction of the T timesteps; 1 = from pure noise), got {start!r}")
    return round(start * (schedule.num_timesteps - 1))


def start_timesteps(schedule, steps: int, t_start: int, spacing: str = "uniform") -> list[int]:
    """``steps`` descending timesteps spread over [0, t_start] (both ends included): ``uniform`` spaces them evenly
    on that interval; other spacings are the schedule's own, scaled from [0, T−1] to [0, t_start]. Repeated
    timesteps (more steps than t_start + 1) are dropped."""
    T = schedule.num_timesteps
    if not 0 <= t_start <= T - 1:
        raise ValueError(f"t_start must be in [0, {T - 1}], got {t_start}")
    s = max(1, min(int(steps), t_start + 1))
    if spacing == "uniform":
        ts = torch.round(torch.linspace(t_start, 0, s, dtype=torch.float64)).long().tolist()
    else:
        full = schedule.timesteps(s, spacing=spacing).double()
        ts = torch.round(full * t_start / (T - 1)).long().tolist()
    out: list[int] = []
    for t in ts:
        if not out or t < out[-1]:
            out.append(int(t))
    return out


def warm_timesteps(schedule, steps: int, spacing: str = "uniform", start: float = 1.0) -> list[int]:
    """The descending timesteps of a run: the schedule's own ``steps`` for start = 1, else ``start_timesteps``
    from t₀ = ``start_timestep(start)``."""
    if start >= 1:
        return schedule.timesteps(steps, spacing=spacing).tolist()
    return start_timesteps(schedule, steps, start_timestep(schedule, start), spacing)


def initial_estimate(init: str, y: Tensor, op: Operator, x_shape, sigma: float = 0.0) -> Tensor:
    """x_init from its name (see the module's docstring), for images of ``x_shape`` (``sigma``: the noise σ on the
    [-1, 1] scale, for the classical solvers); a ValueError where the operator cannot give it."""
    xs = tuple(int(v) for v in x_shape)
    if init in BASELINE_INITS:
        from ..baselines import run_baseline

        try:
            x = run_baseline(init, y, op, float(sigma))
        except ValueError as e:
            raise ValueError(f"init={init!r}: {e}") from None
        if tuple(x.shape) != xs:
            raise ValueError(f"init={init!r} gives images of shape {tuple(x.shape)}, not the images' {xs}")
        return x.to(device=y.device, dtype=y.dtype)
    if init == "zeros":
        return torch.zeros(xs, device=y.device, dtype=y.dtype)
    if init == "pinv":
        if Capability.LINEAR not in op.capabilities:
            raise ValueError(f"init='pinv' needs a linear operator; {type(op).__name__} is non-linear: pass an "
                             "estimate as x_init=..., or init='measurement' or 'zeros'")
        return op.pinv(y)
    if init == "measurement":
        try:
            grid = op.on_grid(y, xs)
        except ValueError as e:
            raise ValueError(f"init='measurement': {e}; pass an estimate as x_init=... instead") from None
        if tuple(grid.shape[2:]) != xs[2:] or grid.shape[1] < xs[1]:
            raise ValueError(f"init='measurement': the measurement on the image grid has shape {tuple(grid.shape)}, "
                             f"not the image's {xs}; pass an estimate as x_init=... instead")
        return grid[:, : xs[1]]
    raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")


def check_x_init(x_init, x_shape, y: Tensor) -> Tensor:
    """A caller's starting estimate: a finite float tensor of the images' shape (B, C, H, W), moved to y's device
    and dtype."""
    xs = tuple(int(v) for v in x_shape)
    if not isinstance(x_init, Tensor):
        raise ValueError(f"x_init must be a torch.Tensor of shape {xs}, got {type(x_init).__name__}")  # noqa: TRY004
    if tuple(x_init.shape) != xs:
        raise ValueError(f"x_init must have the images' shape {xs} (B, C, H, W), got {tuple(x_init.shape)}")
    if not x_init.is_floating_point() or not bool(torch.isfinite(x_init).all()):
        raise ValueError("x_init must be a finite float tensor on the [-1, 1] scale")
    return x_init.detach().to(device=y.device, dtype=y.dtype)


def resolve_warm_start(start: float, init: str, x_init, y: Tensor, op: Operator, x_shape,
                       sigma: float = 0.0) -> Tensor | None:
    """What ``restore`` starts from, checked before any network evaluation: None for a cold start (start = 1,
    where x_init is refused: it would not be used), else x_init (B, C, H, W) from the tensor or ``init``."""
    if start >= 1:
        if x_init is not None:
            raise ValueError("x_init is the starting estimate of a warm start: give start < 1 as well (start=1 runs "
                             "from pure noise)")
        return None
    if x_init is not None:
        return check_x_init(x_init, x_shape, y)
    return initial_estimate(init, y, op, x_shape, sigma)


#: the levels (fractions of T) at which ``prior_sign`` compares x with −x
SIGN_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3)


def prior_sign(prior, x: Tensor, generator: rng.Generators = None,
               levels: tuple[float, ...] = SIGN_LEVELS) -> tuple[Tensor, int]:
    """x or −x, image by image, whichever the prior finds more likely, for operators blind to the sign of x
    (``Operator.sign_blind``: a warm start's estimate could be the negative of the photo, and no data step can
    flip it). The criterion is the denoising loss Σ_t ‖ε_θ(√ᾱ_t s·x + √(1−ᾱ_t) ε, t) − ε‖² at the ``levels``,
    with the same ε for s = ±1 (drawn from streams derived from the per-image ones, which are not advanced);
    the smaller loss wins. Returns the oriented x and the network evaluations per image (two per level)."""
    B = x.shape[0]
    gens = rng.repeat(generator, 1)
    T = prior.schedule.num_timesteps
    loss = torch.zeros(2, B, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for f in levels:
            t = round(f * (T - 1))
            a = prior.schedule.alpha_bar(t)
            e = rng.randn(x.shape, gens, device=x.device, dtype=x.dtype)
            both = torch.cat([x, -x]) * a**0.5 + (1 - a) ** 0.5 * torch.cat([e, e])
            err = (prior.eps(both, t) - torch.cat([e, e])).pow(2).flatten(1).sum(1).double()
            loss += err.reshape(2, B)
    sign = torch.where(loss[0] <= loss[1], 1.0, -1.0).to(x)
    return x * sign.reshape(-1, *([1] * (x.ndim - 1))), 2 * len(levels)


def warm_state(p, t0: int, init: str = "pinv") -> Tensor:
    """x_{t₀} = √ᾱ_{t₀} x_init + √(1−ᾱ_{t₀}) ε for the problem ``p`` (its ``init`` tensor, else ``init`` by name),
    ε from the problem's per-image streams."""
    x_init = p.init if p.init is not None else initial_estimate(init, p.y, p.op, p.shape, p.sigma)
    a = p.alpha_bar(t0)
    z = rng.randn(p.shape, p.generator, device=p.y.device, dtype=p.y.dtype)
    return a**0.5 * x_init + (1 - a) ** 0.5 * z


def ve_start(p, start: float, init: str, sigma_max: float, sigma_min: float) -> tuple[float, Tensor]:
    """The warm start in the variance-exploding form (DAPS): σ₀ = min(σ_max, σ_{t₀}) with σ_t = √((1−ᾱ_t)/ᾱ_t),
    and x = x_init + σ₀ ε (the VP state x_{t₀} divided by √ᾱ_{t₀})."""
    t0 = start_timestep(p.schedule, start)
    a = p.alpha_bar(t0)
    sigma = min(sigma_max, math.sqrt((1 - a) / a))
    if not sigma > sigma_min:
        raise ValueError(f"start={start} gives σ = {sigma:.3g} at t₀ = {t0}, not above DAPS's sigma_min = {sigma_min}: "
                         "use a larger start or a smaller sigma_min")
    x_init = p.init if p.init is not None else initial_estimate(init, p.y, p.op, p.shape, p.sigma)
    return sigma, x_init + sigma * rng.randn(p.shape, p.generator, device=p.y.device, dtype=p.y.dtype)


__all__ = ["BASELINE_INITS", "INITS", "Init", "check_x_init", "initial_estimate", "prior_sign", "resolve_warm_start", "start_timestep", "start_timesteps",
           "ve_start", "warm_state", "warm_timesteps"]
