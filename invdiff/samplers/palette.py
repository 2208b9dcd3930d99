"""Palette-style conditional models (Saharia et al. 2022): ε_θ(x_t, t, c) with the condition c concatenated to
x_t as input channels. One function builds c from a measurement and its operator, for training and sampling
alike: super-resolution → y upsampled (bicubic) to the image grid; inpainting → (y with holes at 0, mask)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..operators.base import Operator
from ..operators.separable import BlockAverage
from ..operators.inpaint import Inpainting
from .problem import Problem


def palette_condition(y: Tensor, op: Operator, shape) -> Tensor:
    """The condition channels for a measurement y = A(x) of images of ``shape``."""
    h, w = shape[-2:]
    if isinstance(op, BlockAverage):  # includes the bicubic downsampling
        return F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False)
    if isinstance(op, Inpainting):
        m = op.mask.to(y).expand(y.shape[0], 1, h, w)
        return torch.cat([y * m, m], 1)
    if tuple(y.shape[-2:]) == (h, w):
        return y
    raise ValueError(f"no Palette conditioning is defined for {type(op).__name__}")


def palette(p: Problem, *, steps: int = 100, eta: float = 1.0, start: float = 1.0, spacing: str = "uniform",
            callback=None) -> Tensor:
    """Sample ε_θ(x_t, t, c): the prior must be a conditional model whose condition channels match c.

    ``start`` < 1 starts the reverse process at t = start·T from the noised initial guess √ᾱ_t c₀ + √(1−ᾱ_t) z
    (c₀ = the condition's image channels: the upsampled or hole-filled measurement), as in Chung et al.'s
    come-closer-diffuse-faster; it keeps a briefly trained model from settling on a wrong global layout at the
    highest noise levels, where ε barely depends on the condition."""
    from .core import sample

    cond = palette_condition(p.y, p.op, p.shape)
    cc = p.prior.cond_channels
    if cc != cond.shape[1]:
        raise ValueError(f"prior {p.prior.name!r} takes {cc} condition channel(s) but this task gives {cond.shape[1]}; "
                         "use the Palette model trained for the task")
    ctx: dict = {}
    x_T, t_start = None, None
    if start < 1:
        from .. import rng

        T = p.schedule.num_timesteps
        t_start = int(round(start * (T - 1)))
        a = p.alpha_bar(t_start)
        init = cond[:, : p.shape[1]]
        x_T = a**0.5 * init + (1 - a) ** 0.5 * rng.randn(p.shape, p.generator, device=p.y.device, dtype=p.y.dtype)
        steps = max(1, int(round(steps * start)))
    x = sample(p.prior, p.shape, steps=steps, eta=eta, generator=p.generator, callback=callback, cond=cond,
               clip=p.clip, device=p.y.device, ctx=ctx, x_T=x_T, t_start=t_start, spacing=spacing)
    p.nfe += ctx["nfe"]
    return x
