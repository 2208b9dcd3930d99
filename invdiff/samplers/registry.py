"""The methods registry and the one entry point, ``restore``.

Every method is a ``Method``: what it needs from the operator, whether it differentiates through the network,
its cost per step, its hyper-parameters (paper defaults, every one a keyword argument of ``restore``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import rng
from ..accel import auto_batch_size, is_out_of_memory
from ..operators.base import Capability, Operator
from ..eps import EpsPrior
from .guided import DPS, MCG, PiGDM, Projection, guided_sample, repaint, repaint_nfe
from .palette import palette
from .problem import REQUIREMENT_TEXT, Problem, require
from .params import (DAPSParams, DDNMParams, DDRMParams, DiffPIRParams, DPSParams, MCGParams, PaletteParams, Params,
                     PiGDMParams, ProjectionParams, RedDiffParams, RePaintParams, make_params)
from .spectral import DDRM, DiffPIR, ddnm, ddnm_nfe
from .symmetry import check_commutes, group_size, per_chain
from .validate import check_restore_inputs
from .variational import daps, reddiff
from .warmstart import prior_sign, resolve_warm_start


@dataclass(frozen=True)
class Method:
    """A restoration method: ``run(problem, hp, callback)`` with ``hp`` an instance of ``params`` (its one
    hyper-parameter definition, see ``invdiff.samplers.params``)."""

    name: str
    paper: str
    run: Callable[..., Tensor]
    params: type[Params]
    #: what the operator must offer (Capability.NONE: any operator, non-linear too)
    requires: Capability
    #: differentiates through the network (one VJP per step)
    network_gradient: bool
    #: network evaluations per step: "1" or the name of the hyper-parameter that multiplies steps (DAPS: ode_steps)
    nfe_per_step: str = "1"
    #: network evaluations per image from the hyper-parameters, where steps × nfe_per_step does not give them
    nfe: Callable[[dict], int] | None = None
    conditional: bool = False
    #: refits the operator during sampling when the problem carries an ``operator_update`` (blind kernels)
    operator_update: bool = False
    #: what differs from the authors' released code, on purpose (docs/methods.md)
    differences: str = "—"

    @property
    def defaults(self) -> dict:
        """The default hyper-parameters, ``steps`` included."""
        return self.params().as_dict()


def _guided(cls):
    """DPS/MCG-style methods: the guidance object takes the hyper-parameters other than steps, spacing, eta and the
    warm start's."""

    def run(p: Problem, hp: Params, callback=None) -> Tensor:
        kw = {k: v for k, v in hp.as_dict().items() if k not in ("steps", "spacing", "eta", "start", "init")}
        return guided_sample(p, cls(p, **kw), steps=hp.steps, eta=hp.eta, spacing=hp.spacing, callback=callback,
                             start=hp.start, init=hp.init)

    return run


def _ddrm(p: Problem, hp: DDRMParams, callback=None) -> Tensor:
    return guided_sample(p, DDRM(p, hp), steps=hp.steps, eta=0.0, spacing=hp.spacing, callback=callback,
                         start=hp.start, init=hp.init)


def _diffpir(p: Problem, hp: DiffPIRParams, callback=None) -> Tensor:
    return guided_sample(p, DiffPIR(p, hp), steps=hp.steps, eta=0.0, spacing=hp.spacing, callback=callback,
                         start=hp.start, init=hp.init)


def _pigdm(p: Problem, hp: PiGDMParams, callback=None) -> Tensor:
    g = PiGDM(p, hp)
    x_T = None
    if hp.weighting == "authors" and hp.start >= 1:  # a warm start replaces the authors' √ᾱ_T A⁺y + noise
        x_T = g.authors_start(int(p.schedule.timesteps(hp.steps, spacing=hp.spacing)[0]))
    return guided_sample(p, g, steps=hp.steps, eta=hp.eta, spacing=hp.spacing, callback=callback, x_T=x_T,
                         start=hp.start, init=hp.init)


def _daps(p: Problem, hp: DAPSParams, callback=None) -> Tensor:
    return daps(p, **hp.as_dict(), callback=callback)


def _repaint(p: Problem, hp: RePaintParams, callback=None) -> Tensor:
    return repaint(p, **hp.as_dict(), callback=callback)


def _palette(p: Problem, hp: PaletteParams, callback=None) -> Tensor:
    return palette(p, **hp.as_dict(), callback=callback)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("dps", "Chung et al. 2022, Diffusion posterior sampling", _guided(DPS), DPSParams, Capability.NONE, True,
           differences="the norm is per image (the reference's is over its batch, of size 1: the same there); the "
           "ancestral variance is β̃_t (the reference's FFHQ model learns it); ζ = 1 by default: the released per-task "
           "values (0.3 blur/SR, 0.5 inpainting, 1.0 phase retrieval; DPS_REFERENCE_ZETA, set by the dps-ffhq suite) "
           "lose 2-3 dB at 100 steps on our priors; gradient='raw' (through the unclipped x̂0) kept as an option, and "
           "the phase-retrieval task's preset (+2.2 dB over the clipped gradient on 100 fmnist images; neutral on the "
           "linear tasks)"),
    Method("mcg", "Chung et al. 2022, Manifold constrained gradients", _guided(MCG), MCGParams, Capability.LINEAR, True,
           differences="the DPS step, then x + A⁺(y_{t−1} − A x) with y noised to t−1 (the DPS repository's 'mcg' "
           "replaces the masked pixels by y noised to t); with noisy y the projection is Gaussian-weighted "
           "(ρ = ᾱσ²/(1−ᾱ)) rather than hard"),
    Method("pigdm", "Song et al. 2023, Pseudoinverse-guided diffusion", _pigdm, PiGDMParams, Capability.LINEAR, True,
           differences="default weighting='exact': the paper's likelihood score with Aᵀ(r²AAᵀ + σ²)⁻¹, η = 1 "
           "(measured better on fmnist: SR×4 19.25 vs 18.04 dB, deblurring 22.6 vs 4.1 dB where A⁺ amplifies "
           "the noise); weighting='authors' (with eta=0) is NVlabs/RED-diff's pgdm.py: start at √ᾱ_T A⁺y + "
           "noise (a warm start, start < 1, replaces that start), √ᾱ_s√ᾱ_t·Jᵀ(A⁺y − A⁺A x̂0), y pasted where a 0/1 "
           "mask observes"),
    Method("ddrm", "Kawar et al. 2022, Denoising diffusion restoration models", _ddrm, DDRMParams, Capability.SVD, False,
           differences="none in the update (checked against bahjat-kawar/ddrm in all three singular-value cases); "
           "timesteps 'uniform' by default (the reference's are spacing='leading')"),
    Method("ddnm", "Wang et al. 2023, Null-space model (DDNM+ for noise)", ddnm, DDNMParams, Capability.LINEAR, False,
           nfe=ddnm_nfe,
           differences="as wyhuai/DDNM's code for SVD operators, except that ε_θ enters DDNM+'s noise through Vᵀ "
           "(the reference applies V to the unrotated ε for SR and colourisation; identical for inpainting and "
           "denoising); operators without an SVD take a soft version (one CG solve, same per-direction variance); "
           "timesteps spaced 'uniform' by default (the reference's are spacing='leading')"),
    Method("diffpir", "Zhu et al. 2023, Diffusion plug-and-play", _diffpir, DiffPIRParams, Capability.NONE, False,
           operator_update=True,
           differences="λ in the paper's units (σ_n on [0, 1]); timesteps 'uniform' by default (the reference "
           "uses spacing='quad'); the last step returns the data-consistent x̂0 (the reference skips the data "
           "step there); the initial x_T is pure noise (the reference's starts from y noised to t = T−1; start < 1 with "
           "init='measurement' starts so from a lower level)"),
    Method("reddiff", "Mardani et al. 2023, RED-diff (variational)", reddiff, RedDiffParams, Capability.NONE, False,
           differences="losses per image (the reference averages over its batch of 1); the initial A⁺y is "
           "clipped to [-1, 1] and μ carries no σ_x0 jitter"),
    Method("daps", "Zhang et al. 2024, Decoupled annealed posterior sampling", _daps, DAPSParams, Capability.NONE, False,
           "ode_steps",
           differences="the network is evaluated at the discrete timestep whose σ is nearest (the reference's VP "
           "preconditioning takes a continuous t); no NaN early stop; phase retrieval stays on [-1, 1] (DAPS's "
           "operator maps x to [0, 1] before padding, DPS's does not); inner='exact' (the inner Gaussian through "
           "the SVD) kept as an option; fewer steps/ode_steps are cheaper budgets"),
    Method("projection", "Song et al. 2021, score-SDE measurement projection (no resampling)",
           _guided(Projection), ProjectionParams, Capability.LINEAR, False,
           differences="with noisy y the projection is Gaussian-weighted (ρ = ᾱσ²/(1−ᾱ)) rather than hard; not "
           "RePaint (no resampling: see repaint)"),
    Method("repaint", "Lugmayr et al. 2022, RePaint (projection with resampling)", _repaint, RePaintParams, Capability.LINEAR,
           False, nfe=lambda hp: repaint_nfe(hp["steps"], hp["jump_length"], hp["resamples"]),
           differences="the paper's schedule (n_sample 1, no second/third jump levels, as its configs); the "
           "ancestral variance is β̃ (the reference's models learn it); any linear A through x + A⁺(y_t − A x) "
           "(the reference: masks); hard replacement also for noisy y, as the reference"),
    Method("palette", "Saharia et al. 2022, Palette (conditional model)", _palette, PaletteParams, Capability.NONE, False,
           conditional=True,
           differences="no code released by the authors; start = 0.5 by default (every method's warm start: from the "
           "noised measurement on the image grid, init='measurement', the steps spread over [0, t₀]) and paste (the "
           "known pixels pasted into the result; soft with paste_rho > 0; of a denoised measurement with paste_denoiser) "
           "are this toolkit's options; NFE = steps (+1 for the paste's denoiser)"),
]}


def method_requirements(name: str) -> dict:
    """What a method needs and costs (the table of ``invdiff methods`` and docs/methods.md)."""
    m = get_method(name)
    steps = m.defaults["steps"]
    per = m.nfe_per_step
    nfe = f"{steps}" if per == "1" else f"{steps}×{per} = {steps * m.defaults.get(per, 1)}"
    if m.nfe is not None:
        nfe = str(m.nfe(m.defaults))
    return {"operator": REQUIREMENT_TEXT[m.requires],
            "network_gradient": m.network_gradient, "default_steps": steps, "nfe": nfe,
            "vjps": str(steps) if m.network_gradient else "0", "conditional_prior": m.conditional, "paper": m.paper}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
    return METHODS[name]


def check_method(method: str, op: Operator, prior: EpsPrior) -> Method:
    m = get_method(method)
    require(op, m.requires, m.name)
    if m.conditional and not prior.cond_channels:
        raise ValueError(f"method 'palette' needs a conditional (Palette) prior; {prior.name!r} is unconditional")
    if not m.conditional and prior.cond_channels:
        raise ValueError(f"prior {prior.name!r} is a conditional (Palette) model: use method 'palette'")
    return m


@dataclass(frozen=True)
class Restoration:
    """K posterior samples per measurement: ``samples`` (B, K, C, H, W), their ``mean`` and per-pixel ``std``
    (B, C, H, W; zero when K = 1), with the cost: network evaluations and VJPs through the network that each
    image went through (the same however the batch was split), and seconds.

    One of the K samples instead of their mean (``restore(..., select=...)``): ``chosen`` (B,) is its index per
    image and ``mean`` is that sample (``std`` stays the spread of the K samples); ``residuals`` (B, K) holds
    ‖y − A(x)‖ of every sample. ``select="residual"`` chooses the smallest residual (best-of-K by the measurement);
    ``select="mbr"`` the sample nearest the mean of the K, whose RMS distances ``distances`` (B, K) holds: the
    minimum-Bayes-risk choice among the samples for the squared error, since Σ_j ‖x_k − x_j‖² = K‖x_k − x̄‖² + const.
    All three are None without a selection (``distances`` also with ``"residual"``)."""

    samples: Tensor
    mean: Tensor
    std: Tensor
    nfe: int
    vjps: int
    seconds: float
    method: str
    hyper_parameters: dict
    residuals: Tensor | None = None
    chosen: Tensor | None = None
    distances: Tensor | None = None


#: how ``restore`` sums up the K samples of an image: None, their mean; "residual", the one closest to y; "mbr", the
#: one closest to the others (the sample that minimises the mean squared distance to the K samples)
SELECTS: tuple = (None, "residual", "mbr")


def measurement_residuals(y: Tensor, op: Operator, x: Tensor) -> Tensor:
    """‖y − A(x)‖ per sample, (B, K), for samples x (B, K, C, H, W) of the measurements y (B, …) and the operator
    of the B·K samples (image-major, as ``Operator.repeat_interleave``); per image, in y's dtype."""
    B, K = x.shape[:2]
    with torch.no_grad():
        r = (y.repeat_interleave(K, 0) if K > 1 else y) - op(x.reshape(B * K, *x.shape[2:]))
    return torch.linalg.vector_norm(r.flatten(1), dim=1).reshape(B, K)


def distances_to_mean(x: Tensor) -> Tensor:
    """RMS distance of each of the K samples x (B, K, C, H, W) to their mean, (B, K); a diverged (non-finite)
    sample is left out of the mean and is at distance NaN."""
    with torch.no_grad():
        flat = x.flatten(2)
        ok = torch.isfinite(flat).all(2, keepdim=True)
        mean = torch.where(ok, flat, 0).sum(1, keepdim=True) / ok.sum(1, keepdim=True).clamp(min=1)
        d = (flat - mean).pow(2).mean(2).sqrt()
    return torch.where(ok[..., 0], d, torch.full_like(d, float("nan")))


def _summarise(x: Tensor, select, y: Tensor, op: Operator) -> dict:
    """mean, std, residuals, chosen and distances of the samples x (B, K, C, H, W) for ``select`` (see
    ``Restoration``)."""
    K = x.shape[1]
    std = x.std(1, unbiased=False) if K > 1 else torch.zeros_like(x[:, 0])
    if select is None:
        return {"mean": x.mean(1), "std": std}
    residuals = measurement_residuals(y, op, x)
    distances = distances_to_mean(x) if select == "mbr" else None
    score = residuals if select == "residual" else distances
    finite = torch.where(torch.isfinite(score), score, torch.full_like(score, float("inf")))
    chosen = finite.argmin(1)  # the first of equal scores; a diverged (non-finite) sample only if all are
    return {"mean": x[torch.arange(x.shape[0], device=x.device), chosen.to(x.device)], "std": std,
            "residuals": residuals, "chosen": chosen, "distances": distances}


def _noise_sigma(noise) -> float:
    if noise is None:
        return 0.0
    if isinstance(noise, (int, float)):
        return float(noise)
    return float(getattr(noise, "sigma"))


def _run_in_chunks(m: Method, hp: Params, whole: Problem, *, chunk: int, auto: bool, callback=None) -> tuple[Tensor, int, int]:
    """Run ``m`` on ``whole``'s images ``chunk`` at a time (each chunk a Problem of its own, with its images' operator
    and streams); with ``auto``, a chunk that runs out of GPU memory is halved and redone with the same noise.
    Returns the samples and the network evaluations and VJPs per image."""
    n = whole.shape[0]
    op, gens = whole.op, whole.generator
    parts, nfe, vjps, start = [], 0, 0, 0
    while start < n:
        idx = list(range(start, min(n, start + chunk)))
        every = len(idx) == n
        sub_gens = gens if (every or gens is None or isinstance(gens, torch.Generator)) else [gens[i] for i in idx]
        saved = rng.get_state(sub_gens) if auto else None
        problem = Problem(prior=whole.prior, y=whole.y[idx[0]: idx[-1] + 1], op=op if every else op.select(idx),
                          sigma=whole.sigma, shape=(len(idx), *whole.shape[1:]), generator=sub_gens, clip=whole.clip,
                          init=None if whole.init is None else whole.init[idx[0]: idx[-1] + 1],
                          operator_update=whole.operator_update if every else None)
        try:
            parts.append(m.run(problem, hp, callback))
        except Exception as e:  # out of GPU memory with an automatic size: halve it and redo this chunk
            if not (auto and chunk > 1 and is_out_of_memory(e)):
                raise
            del problem, e
            rng.set_state(sub_gens, saved)  # the retry draws exactly the noise the failed attempt drew
            if whole.y.device.type == "cuda":
                torch.cuda.empty_cache()
            chunk = max(1, chunk // 2)
            continue
        nfe, vjps = max(nfe, problem.nfe), max(vjps, problem.vjps)  # per image: every chunk runs the same loop
        start = idx[-1] + 1
    return torch.cat(parts), nfe, vjps


def _chunk_size(batch_size, prior: EpsPrior, m: Method, xs: tuple, n: int, device) -> tuple[int, bool]:
    """How many of the n samples run together, and whether that size is automatic (halved on running out of
    memory)."""
    if isinstance(batch_size, str) and batch_size != "auto":
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    auto = batch_size == "auto"
    if auto:
        batch_size = auto_batch_size(prior, xs[1:], n, gradient=m.network_gradient, device=device)
    chunk = n if not batch_size or batch_size >= n else int(batch_size)
    if chunk < 1:
        raise ValueError("batch_size must be at least 1")
    return chunk, auto


def _warm_start(hp, x_init, y, operator, x_shape, noise, prior, generator, samples: int) -> tuple[Tensor | None, int]:
    """The warm start's estimate for each of the B·K chains (None for a cold start) and the network evaluations
    spent on it. The estimate of a sign-blind measurement (phase retrieval), given or computed, takes the sign the
    prior prefers (``prior_sign``): nothing after it could flip it. Where the operator has a ``twin`` (an image
    with the same measurement that no prior can tell from it: phase retrieval's 180° turn, for a prior trained
    with rotations), every other one of an image's K chains starts from the twin, so that the K samples cover
    both modes of the posterior as chains from pure noise do, instead of collapsing onto the estimate's."""
    init = resolve_warm_start(hp.start, hp.init, x_init, y, operator, x_shape, _noise_sigma(noise))
    spent = 0
    if init is not None and operator.sign_blind and bool(init.any()):  # (zeros have no sign to choose)
        init, spent = prior_sign(prior, init, generator)
    if init is not None and samples > 1:
        init = init.repeat_interleave(samples, 0)
        if hasattr(operator, "twin"):
            odd = (torch.arange(init.shape[0], device=init.device) % samples % 2 == 1).reshape(-1, 1, 1, 1)
            init = torch.where(odd, operator.twin(init), init)
    return init, spent


def _check_sampling_options(m: Method, samples: int, select, symmetry, operator_update) -> None:
    """``restore``'s options that concern the K samples and the method: a clear error for each bad one."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if symmetry is not None:
        group_size(symmetry)  # an unknown group raises here
        if samples < 2:
            raise ValueError(f"symmetry={symmetry!r} spreads the K samples over the group: it needs samples ≥ 2")
    if select not in SELECTS:
        raise ValueError(f"select must be None (the mean of the samples), 'residual' (the sample with the smallest "
                         f"measurement residual) or 'mbr' (the sample nearest the mean of the samples), got {select!r}")
    if operator_update is not None and not m.operator_update:
        raise ValueError(f"method {m.name!r} does not refit the operator during sampling (operator_update); "
                         f"use one of: {', '.join(n for n, v in METHODS.items() if v.operator_update)}")
    if operator_update is not None and symmetry is not None:
        raise ValueError("operator_update cannot be combined with symmetry")


def restore(y: Tensor, operator: Operator, noise, prior: EpsPrior, *, method: str = "dps", steps: int | None = None,
            samples: int = 1, generator: rng.Generators = None, callback=None, x_shape=None, clip: bool = True,
            batch_size: int | str | None = None, x_init: Tensor | None = None, select: str | None = None,
            symmetry: str | None = None, operator_update=None, **hyper_parameters) -> Restoration:
    """Restore x from y = A(x) + n with the prior. ``noise``: a noise model or σ (on the [-1, 1] scale).
    ``generator``: one per measurement (``rng.make_generators``) for batch-invariant results; each of the K
    samples of image i gets its own stream derived from image i's, so results do not depend on ``batch_size``
    (how many of the B·K samples run together; default all; ``"auto"``: as many as memory allows, see
    ``invdiff.accel.auto_batch_size``, halved and retried if a GPU still runs out). Unknown hyper-parameters raise.

    ``x_init`` (B, C, H, W): the starting estimate of a warm start (hyper-parameter ``start`` < 1; see
    ``invdiff.samplers.warmstart``), e.g. a classical estimate from ``invdiff.baselines``; it takes precedence
    over the hyper-parameter ``init``. ``select="residual"``: best-of-K by the measurement, the sample with the
    smallest ‖y − A(x)‖ per image (``Restoration.residuals``, ``chosen``); ``select="mbr"``: the sample nearest the
    mean of the K (``Restoration.distances``), a real sample where the mean would blur the K together; None: the
    mean of the K samples.
    ``symmetry`` ("flips", "dihedral"; ``invdiff.samplers.symmetry``): sample k of an image restores g_k(y) and is
    mapped back by g_k⁻¹ (g_k the group's element k mod |G|), for an operator that commutes with the group (checked;
    others raise); the callback sees the transformed chains.

    ``operator_update(x̂0, t)``: joint estimation of the operator (a blind kernel, ``invdiff.blind``): at every step
    the method refits the operator to the prior's x̂0 of all B·K chains and uses the one returned (None: keep it).
    Methods with ``Method.operator_update`` only (``diffpir``); the B·K chains run as one batch, without symmetry.
    ``residuals`` are then measured with the operator given."""
    check_restore_inputs(y, operator, noise, prior, steps=steps, samples=samples, batch_size=batch_size, generator=generator, x_shape=x_shape)
    m = check_method(method, operator, prior)
    if not torch.isfinite(y).all():
        raise ValueError("the measurement contains NaN or infinite values")
    _check_sampling_options(m, samples, select, symmetry, operator_update)
    hp = make_params(m.params, m.name, {**hyper_parameters, **({"steps": steps} if steps is not None else {})})
    B = y.shape[0]
    xs = tuple(x_shape) if x_shape is not None else tuple(operator.in_shape(y.shape))
    if prior.channels is not None and xs[1] != prior.channels:
        raise ValueError(f"prior {prior.name!r} works on {prior.channels}-channel images but the operator needs {xs[1]}")
    init, sign_nfe = _warm_start(hp, x_init, y, operator, xs, noise, prior, generator, samples)
    yk = y.repeat_interleave(samples, 0) if samples > 1 else y
    if symmetry is not None:
        check_commutes(operator, xs, symmetry, dtype=y.dtype, device=y.device)
        yk = per_chain(yk, samples, symmetry)
        init = None if init is None else per_chain(init, samples, symmetry)
    op = operator.repeat_interleave(samples).unchecked()  # copies: the caller's operator is not touched
    gens = rng.repeat(generator, samples)  # derived streams, K = 1 included: the caller's generators are not advanced
    n = B * samples
    chunk, auto = _chunk_size(batch_size, prior, m, xs, n, y.device)
    if operator_update is not None:
        chunk, auto = n, False
    t0 = time.perf_counter()
    x, nfe, vjps = _run_in_chunks(m, hp, Problem(prior=prior, y=yk, op=op, sigma=_noise_sigma(noise), shape=(n, *xs[1:]),
                                                 generator=gens, clip=clip, init=init, operator_update=operator_update),
                                  chunk=chunk, auto=auto, callback=callback)
    seconds = time.perf_counter() - t0
    if symmetry is not None:
        x = per_chain(x, samples, symmetry, inverse=True)
    x = x.reshape(B, samples, *xs[1:])
    summary = _summarise(x, select, y, op)
    used = {**hp.as_dict(), **({"init": "x_init"} if x_init is not None else {}),
            **({"symmetry": symmetry} if symmetry is not None else {})}
    return Restoration(samples=x, nfe=nfe + sign_nfe, vjps=vjps, seconds=seconds, method=m.name,
                       hyper_parameters=used, **summary)
