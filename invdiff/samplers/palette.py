"""Palette-style conditional models (Saharia et al. 2022): ε_θ(x_t, t, c) with the condition c concatenated to
x_t as input channels. One function builds c from a measurement and its operator, for training and sampling
alike: super-resolution → y upsampled (bicubic) to the image grid; inpainting → (y with holes at 0, mask)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..operators.base import Operator
from .problem import Problem
from .warmstart import start_timesteps, warm_state, warm_timesteps

__all__ = ["palette", "palette_condition", "start_timesteps"]


def palette_condition(y: Tensor, op: Operator, shape) -> Tensor:
    """The condition channels for a measurement y = A(x) of images of ``shape``: the operator's own image-grid
    form of the measurement (``Operator.on_grid``)."""
    return op.on_grid(y, shape)


def palette(p: Problem, *, steps: int = 100, eta: float = 1.0, start: float = 1.0, paste: bool = False,
            paste_rho: float = 0.0, spacing: str = "uniform", init: str = "measurement", guidance: float = 0.0,
            callback=None) -> Tensor:
    """Sample ε_θ(x_t, t, c): the prior must be a conditional model whose condition channels match c. Network
    evaluations: ``steps`` (at most t_start + 1), twice that with classifier-free guidance (``guidance`` w ≠ 0:
    ε̂ = (1 + w)·ε(x_t, c) − w·ε(x_t, ∅), ``EpsPrior.eps``).

    ``start`` < 1 is the warm start of every method (``warmstart``): the reverse process begins at
    t_start = round(start·(T−1)) from the noised initial guess √ᾱ_t x_init + √(1−ᾱ_t) z, by default
    (``init="measurement"``) the condition's image channels (the upsampled or hole-filled measurement), as in
    Chung et al.'s come-closer-diffuse-faster, with the ``steps`` steps spread over [0, t_start] (the first at
    t_start itself); it keeps a briefly trained model from settling on a wrong global layout at the highest noise
    levels, where ε barely depends on the condition. ``paste=True`` replaces the measured part of the result by the
    measurement, x ← x + A⁺(y − A x) (for inpainting: the known pixels are pasted in, as inpainting models are
    usually deployed); it needs a linear A. ``paste_rho`` ρ > 0 makes it soft: argmin_z ‖y − A z‖² + ρ‖z − x‖²
    (``Operator.prox``), which with a noisy y keeps the sample where A's singular values are small (measured on
    SR ×4: benchmarks/RESULTS.md, "soft paste")."""
    from .. import rng
    from ..operators.base import Capability
    from .core import ddim_step, step_coefficients

    if paste and Capability.LINEAR not in p.op.capabilities:
        raise ValueError("palette with paste=True needs a linear operator (it pastes A⁺y into the result)")
    p.prior.check_guidance(guidance)
    cond = palette_condition(p.y, p.op, p.shape)
    cc = p.prior.cond_channels
    if cc != cond.shape[1]:
        raise ValueError(f"prior {p.prior.name!r} takes {cc} condition channel(s) but this task gives {cond.shape[1]}; "
                         "use the Palette model trained for the task")
    ts = warm_timesteps(p.schedule, steps, spacing, start)
    if start < 1:
        x = warm_state(p, ts[0], init)
    else:
        x = rng.randn(p.shape, p.generator, device=p.y.device, dtype=p.y.dtype)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        with torch.inference_mode():
            d = p.prior.denoise(x, tt, cond, clip=p.clip, guidance=guidance)
        p.counts.nfe += 2 if guidance else 1
        coef = step_coefficients(p.schedule, t, t_prev, eta)
        z = rng.randn_like(x, p.generator) if coef.sigma > 0 else None
        x = ddim_step(x, d, coef, z)
        if callback is not None:
            callback({"step": i, "total": len(ts), "t": t, "x_t": x, "x0": d.x0})
    if paste:
        x = p.op.prox(x, p.y, paste_rho)
    return x
