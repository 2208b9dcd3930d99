"""Palette-style conditional models (Saharia et al. 2022): ε_θ(x_t, t, c) with the condition c concatenated to
x_t as input channels. One function builds c from a measurement and its operator, for training and sampling
alike: super-resolution → y upsampled (bicubic) to the image grid; inpainting → (y with holes at 0, mask)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..operators.base import Operator
from .problem import Problem
from .warmstart import start_timesteps, warm_state, warm_timesteps

__all__ = ["denoised_measurement", "palette", "palette_condition", "range_noise_sigma", "start_timesteps"]


def palette_condition(y: Tensor, op: Operator, shape) -> Tensor:
    """The condition channels for a measurement y = A(x) of images of ``shape``: the operator's own image-grid
    form of the measurement (``Operator.on_grid``)."""
    return op.on_grid(y, shape)


def palette(p: Problem, *, steps: int = 100, eta: float = 1.0, start: float = 1.0, paste: bool = False,
            paste_rho: float = 0.0, paste_denoiser: str = "", spacing: str = "uniform", init: str = "measurement",
            guidance: float = 0.0, callback=None) -> Tensor:
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
    SR ×4: benchmarks/RESULTS.md, "soft paste"). ``paste_denoiser`` (a name in ``invdiff.denoisers.DENOISERS`` or
    a KAIR checkpoint path) pastes a denoised measurement instead of the noisy one (``denoised_measurement``): the
    measured part of the result is the posterior mean's, not the measurement's noise."""
    from .. import rng
    from ..operators.base import Capability
    from .core import ddim_step, step_coefficients

    if paste and Capability.LINEAR not in p.op.capabilities:
        raise ValueError("palette with paste=True needs a linear operator (it pastes A⁺y into the result)")
    if paste_denoiser and not paste:
        raise ValueError("paste_denoiser applies to the paste: give paste=True with it")
    y_paste = p.y
    if paste_denoiser:  # one evaluation of the denoiser's network, counted with the sampler's
        y_paste = denoised_measurement(p.y, p.op, p.sigma, paste_denoiser, p.shape)
        p.counts.nfe += 1
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
        x = p.op.prox(x, y_paste, paste_rho)
    return x


def range_noise_sigma(op: Operator, sigma: float, shape) -> float:
    """The noise level of A⁺y along the directions A measures, for y = A x + σ n: σ/s where s is A's singular value
    (A⁺n has std σ/s_i along the i-th right singular vector, and nothing in A's null space). A denoiser made for
    white noise of that level removes it exactly where it is; the rule needs the nonzero singular values to be equal
    (colourisation: s = ‖w‖ = 1/√3 for the channel mean, so σ√3; inpainting and denoising: σ), and other operators
    get a ValueError."""
    from ..operators.base import Capability

    if Capability.SVD not in op.capabilities:
        raise ValueError("a denoised paste needs an operator with an SVD (its singular values set the noise level)")
    s = op.singular_values(tuple(shape)).double()
    s = s[s > 1e-6 * s.abs().max()]
    if s.numel() == 0 or float(s.max() - s.min()) > 1e-6 * float(s.max()):
        raise ValueError("a denoised paste needs an operator whose nonzero singular values are all equal "
                         "(colourisation, inpainting, denoising); this one's vary")
    return float(sigma) / float(s[0])


def denoised_measurement(y: Tensor, op: Operator, sigma: float, denoiser: str, shape) -> Tensor:
    """A D(A⁺y, σ/s): the measurement with its noise removed by a Gaussian denoiser (``invdiff.denoisers``) applied
    to A⁺y at the level of its noise (``range_noise_sigma``). With σ = 0 it is y itself."""
    if not sigma > 0:
        return y
    level = range_noise_sigma(op, sigma, shape)
    den = _denoiser(denoiser)
    if level > den.sigma_max:
        raise ValueError(f"the measurement's noise (σ = {level:.3g} on [-1, 1] in A⁺y) is above what the denoiser "
                         f"{denoiser!r} covers ({den.sigma_max:.3g})")
    xp = op.pinv(y)
    if xp.shape[1] != den.channels:
        raise ValueError(f"the denoiser {denoiser!r} takes {den.channels}-channel images; this measurement's A⁺y has "
                         f"{xp.shape[1]}")
    with torch.inference_mode():
        xd = den.to(y.device)(xp.to(torch.float32), level).to(y.dtype).clamp(-1, 1)
    return op(xd)


_DENOISERS: dict[str, object] = {}


def _denoiser(key: str):
    """A denoiser by name or path, loaded once per process."""
    from ..denoisers import DENOISERS, _load_part

    if key not in _DENOISERS:
        den = _load_part(key)
        if den is None:
            raise ValueError(f"paste_denoiser {key!r} is not a denoiser: use one of {', '.join(DENOISERS)} or a "
                             "KAIR FFDNet/DnCNN/DRUNet checkpoint path")
        _DENOISERS[key] = den
    return _DENOISERS[key]
