"""Hyper-parameters of the restoration methods: one frozen dataclass per method, the single definition that the
method's code, ``restore``, the registry, the CLI (``--hp NAME=VALUE``) and docs/methods.md all read.

Every class derives from ``Params`` (``steps``, the timestep ``spacing`` and the warm start ``start``/``init``); a
new method adds one dataclass here and one entry in ``registry.METHODS``. Values are checked on construction
(``Literal`` choices, numbers), so a wrong ``--hp`` fails with a one-line error before any network evaluation."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

from ..schedule import SPACINGS, Spacing
from .warmstart import Init


@dataclass(frozen=True)
class Params:
    """``steps``: sampler steps (network evaluations per image, times ``nfe_per_step`` where the registry says so);
    ``spacing``: how the steps are placed on [0, T) (``invdiff.schedule.NoiseSchedule.timesteps``).

    ``start`` (in (0, 1]): the warm start (``invdiff.samplers.warmstart``): start < 1 begins at
    t₀ = round(start·(T−1)) from x_{t₀} = √ᾱ_{t₀} x_init + √(1−ᾱ_{t₀}) ε and spreads the ``steps`` steps over
    [0, t₀]; 1 (the default) is the method's own start from pure noise. ``init``: x_init when ``restore`` gets no
    ``x_init`` tensor: ``pinv`` (A⁺y; linear operators), ``measurement`` (y on the image grid), ``zeros``, or a
    classical solver (``wiener``, ``tv``, ``bicubic``, ``biharmonic``, ``tv-denoise``); not used when start = 1."""

    steps: int = 100
    spacing: Spacing = "uniform"
    start: float = 1.0
    init: Init = "pinv"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = hints[f.name]
            choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
            if choices is not None:
                if v not in choices:
                    raise ValueError(f"{f.name} must be one of {', '.join(map(repr, choices))}, got {v!r}")
            elif kind is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"{f.name} must be a number, got {v!r}")
                object.__setattr__(self, f.name, float(v))
            elif kind is int:
                if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
                    raise ValueError(f"{f.name} must be an integer, got {v!r}")
                object.__setattr__(self, f.name, int(v))
            elif kind is bool and not isinstance(v, bool):
                raise ValueError(f"{f.name} must be true or false, got {v!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not 0 < self.start <= 1:
            raise ValueError(f"start must be in (0, 1] (a fraction of the T timesteps; 1 = from pure noise), "
                             f"got {self.start!r}")
        assert set(typing.get_args(Spacing)) == set(SPACINGS)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class DPSParams(Params):
    """``eta``: DDIM η of the unconditional step; ``zeta``: step size of the gradient of ‖y − A(x̂0)‖ (the
    reference's per-task values are the tasks' presets, invdiff.tasks); ``gradient``: through the clipped x̂0 the
    step uses (``clipped``, the reference) or the unclipped one (``raw``)."""

    steps: int = 200
    eta: float = 1.0
    zeta: float = 1.0
    gradient: Literal["clipped", "raw"] = "clipped"


@dataclass(frozen=True)
class MCGParams(Params):
    """As DPS, followed by the projection onto the noised measurement."""

    steps: int = 200
    eta: float = 1.0
    zeta: float = 1.0
    gradient: Literal["clipped", "raw"] = "clipped"


@dataclass(frozen=True)
class PiGDMParams(Params):
    """``weighting``: ``exact`` (the likelihood score Jᵀ Aᵀ(r_t² AAᵀ + σ²)⁻¹(y − A x̂0) added to the prior score,
    exact for Gaussian data; the default, which measures better on our priors: benchmarks/RESULTS.md) or
    ``authors`` (NVlabs/RED-diff ``algos/pgdm.py``: x_s gets √ᾱ_s√ᾱ_t·Jᵀ(A⁺y − A⁺A x̂0), the start is
    √ᾱ_T A⁺y + noise, pixels a mask observes are pasted from y; use it with ``eta=0``, the authors' η, and on
    noiseless or well-conditioned problems: A⁺ amplifies the measurement noise); ``eta``: DDIM η; ``scale``:
    multiplies the guidance term (the authors' ``grad_term_weight``)."""

    steps: int = 100
    eta: float = 1.0
    scale: float = 1.0
    weighting: Literal["exact", "authors"] = "exact"


@dataclass(frozen=True)
class DDRMParams(Params):
    """``eta``: η of unmeasured components (and measured ones noisier than the step); ``eta_b``: weight of ȳ for
    measured components less noisy than the step."""

    steps: int = 20
    eta: float = 0.85
    eta_b: float = 1.0


@dataclass(frozen=True)
class DDNMParams(Params):
    """``eta``: the share of fresh noise in the step, x_{t'} = √ᾱ' x̂0 + √(1−ᾱ')(η z + √(1−η²) ε_θ) (wyhuai/DDNM);
    ``travel_length``, ``travel_repeat``: the reference's time travel (RePaint-style resampling over step indices;
    1, 1 = none)."""

    steps: int = 100
    eta: float = 0.85
    travel_length: int = 1
    travel_repeat: int = 1


@dataclass(frozen=True)
class DiffPIRParams(Params):
    """``lam``: λ in the paper's units, ρ_t = λ σ_n²/σ̄_t² with σ_n on the [0, 1] scale (σ/2; yuanzhi-zhu/DiffPIR);
    ``zeta``: share of fresh noise in the step; ``cg_tol``, ``cg_iters``: the data step's conjugate gradients for
    linear operators without a closed form (relative tolerance, at most ``cg_iters`` iterations);
    ``grad_steps``: gradient steps for non-linear ones."""

    steps: int = 100
    lam: float = 28.0
    zeta: float = 0.3
    cg_tol: float = 1e-4
    cg_iters: int = 200
    grad_steps: int = 20


@dataclass(frozen=True)
class RedDiffParams(Params):
    """``lam``: weight of the denoising regulariser; ``lr``: Adam's learning rate; ``init_cg_iters``: CG iterations
    of the initial A⁺y for linear operators without an SVD (the cold start). A warm start (start < 1) sweeps t
    over [0, t₀] only and starts the variable μ at x_init."""

    steps: int = 100
    lam: float = 0.25
    lr: float = 0.1
    init_cg_iters: int = 10


@dataclass(frozen=True)
class DAPSParams(Params):
    """The reference's pixel-space configuration: ``steps`` annealing levels (200) × ``ode_steps`` Euler steps of
    the x̂0 ODE (5) = 1000 network evaluations; ``langevin_steps`` (100) of step ``lr`` (per task, invdiff.tasks)
    decaying linearly to ``lr_min_ratio``·lr; likelihood width ``tau``; EDM σ levels from ``sigma_max`` to
    ``sigma_min``; ``inner``: ``langevin`` (the reference) or ``exact`` (the same Gaussian sampled through the SVD).
    Fewer ``steps``/``ode_steps`` are the cheaper budgets. ``spacing`` is not used (EDM σ levels). A warm start
    (start < 1) spreads the ``steps`` levels from σ₀ = min(sigma_max, σ_{t₀}) (σ_t = √((1−ᾱ_t)/ᾱ_t)) down to
    ``sigma_min`` and starts from x = x_init + σ₀ ε."""

    steps: int = 200
    ode_steps: int = 5
    langevin_steps: int = 100
    lr: float = 1e-4
    lr_min_ratio: float = 0.01
    tau: float = 0.01
    sigma_max: float = 100.0
    sigma_min: float = 0.1
    inner: Literal["langevin", "exact"] = "langevin"


@dataclass(frozen=True)
class ProjectionParams(Params):
    """``eta``: DDIM η of the unconditional step."""

    steps: int = 250
    eta: float = 1.0


@dataclass(frozen=True)
class RePaintParams(Params):
    """``steps``: respaced steps (250); ``jump_length`` (10) and ``resamples`` (10): RePaint's resampling, each
    jump point passed ``resamples`` times (``resamples=1``: no resampling); ``eta``: DDIM η (1: DDPM)."""

    steps: int = 250
    eta: float = 1.0
    jump_length: int = 10
    resamples: int = 10


@dataclass(frozen=True)
class PaletteParams(Params):
    """``eta``: DDIM η; ``start``: the warm start of every method, here 0.5 by default: the reverse process
    begins at t₀ = round(0.5·(T−1)) from the noised measurement on the image grid (``init="measurement"``: the
    condition's image channels); ``paste``: the measured part of the result replaced by the measurement;
    ``guidance``: the classifier-free guidance weight w (0: the plain conditional model; w ≠ 0 costs two network
    evaluations per step and needs a model trained with condition dropout). ``paste_rho`` ρ ≥ 0 (with ``paste``):
    the paste as the data-consistent point nearest the sample, argmin_z ‖y − A z‖² + ρ‖z − x‖² (``Operator.prox``);
    0 is the exact paste, which with a noisy measurement copies its noise, amplified where A's singular values are
    small (SR); ρ > 0 trusts the sample more where A sees little. ``paste_denoiser`` (with ``paste``): a Gaussian
    denoiser (``invdiff.denoisers``: ``"ffdnet"`` or a checkpoint path) removes the measurement's noise before it is
    pasted, at the level of that noise in A⁺y (operators whose singular values are equal: colourisation,
    inpainting); "" pastes y as it is."""

    steps: int = 100
    eta: float = 1.0
    start: float = 0.5
    init: Init = "measurement"
    paste: bool = False
    paste_rho: float = 0.0
    paste_denoiser: str = ""
    guidance: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.paste_denoiser and not self.paste:
            raise ValueError("paste_denoiser applies to the paste: give paste=True with it")
        if self.paste_rho < 0:
            raise ValueError(f"paste_rho must be ≥ 0, got {self.paste_rho!r}")
        if self.paste_rho > 0 and not self.paste:
            raise ValueError("paste_rho applies to the paste: give paste=True with it")


def make_params(cls: type[Params], method: str, overrides: dict) -> Params:
    """``cls`` with ``overrides`` (unknown names raise, naming what the method takes)."""
    unknown = set(overrides) - set(cls.names())
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) for {method}: {', '.join(sorted(unknown))}; "
                         f"it takes {', '.join(sorted(n for n in cls.names()))}")
    return cls(**overrides)
