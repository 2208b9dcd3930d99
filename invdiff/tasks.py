"""The task registry: name -> how to build the forward operator (from options, for a given image shape),
the noise, the default restoration method and its hyper-parameters. The CLI, the benchmarks and the tests all
iterate this one dict.

Presets follow DPS (Chung et al. 2022) at 256×256: Gaussian blur 61×61 σ=3, motion blur 61×61 intensity 0.5,
SR×4 (bicubic), a 128×128 box (half the side), a 70 % random mask, phase retrieval with oversampling 2 (a 384
canvas for 256: int(oversampling/8 · side) zeros on each side, as DPS and DAPS) and noise σ=0.05 on the [-1, 1]
scale. Motion kernels follow the ``motionblur`` package's model that DPS uses (``operators.motion_kernels``). On small images (side < 128, e.g. Fashion-MNIST 32×32) kernel sizes scale
down (9×9, σ=1.5) and the box stays half the side.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from . import operators as ops
from . import rng
from .operators.base import Operator
from .operators.padding import Padding
from .rng import Generators



@dataclass(frozen=True)
class TaskOptions:
    """Every knob of every task; each task reads the ones it needs. ``None`` means "the preset"."""

    noise_sigma: float = 0.05
    kernel_size: int | None = None
    blur_sigma: float | None = None
    motion_intensity: float = 0.5
    motion_model: str = "motionblur"  # motionblur (DPS's kernels) | boracchi-foi (invdiff.operators.MOTION_MODELS)
    kernel: Tensor | None = None  # user kernel (kh, kw) or (B, kh, kw)
    padding: Padding = "reflect"
    scale: int = 4
    sr_mode: Literal["bicubic", "average"] = "bicubic"
    mask: str | Tensor = "box"  # box | random | freeform | a (B|1, 1, H, W) tensor
    #: fraction of pixels missing for the random mask, or a (low, high) range drawn per image (DPS's released
    #: inpainting config: (0.3, 0.7))
    mask_fraction: float | tuple[float, float] = 0.7
    oversampling: float = 2.0
    shake_grid: int = 3

    def with_(self, **kw) -> "TaskOptions":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def _small(shape) -> bool:
    return min(shape[-2:]) < 128


def _kernel_size(shape, opts: TaskOptions) -> int:
    k = opts.kernel_size or (9 if _small(shape) else 61)
    return k


def _blur_sigma(shape, opts: TaskOptions) -> float:
    return opts.blur_sigma or (1.5 if _small(shape) else 3.0)


def _check_kernel(kernel: Tensor, shape) -> Tensor:
    k = kernel if kernel.ndim == 3 else kernel[None]
    if k.shape[-1] > shape[-1] or k.shape[-2] > shape[-2]:
        raise ValueError(f"kernel of size {tuple(k.shape[-2:])} is larger than the image {tuple(shape[-2:])}")
    return k


def build_deblur(shape, opts: TaskOptions, generator: Generators) -> Operator:
    if opts.kernel is not None:
        return ops.Blur(_check_kernel(opts.kernel, shape), padding=opts.padding)
    k = ops.gaussian_kernel(_kernel_size(shape, opts), _blur_sigma(shape, opts))
    return ops.Blur(_check_kernel(k, shape), padding=opts.padding)


def build_motion(shape, opts: TaskOptions, generator: Generators) -> Operator:
    if opts.kernel is not None:
        return ops.Blur(_check_kernel(opts.kernel, shape), padding=opts.padding)
    if opts.motion_model not in ops.MOTION_MODELS:
        raise ValueError(f"unknown motion model {opts.motion_model!r}; choose from: {', '.join(ops.MOTION_MODELS)}")
    make = ops.MOTION_MODELS[opts.motion_model]
    k = make(shape[0], _kernel_size(shape, opts), intensity=opts.motion_intensity, generator=generator)
    return ops.Blur(_check_kernel(k, shape), padding=opts.padding)


def kernel_field_grid(kernels: Tensor) -> int:
    """The side G of a kernel field of G×G kernels (G², kh, kw) or (G, G, kh, kw); a ValueError otherwise."""
    if kernels.ndim == 4 and kernels.shape[0] == kernels.shape[1]:
        return int(kernels.shape[0])
    g = round(kernels.shape[0] ** 0.5) if kernels.ndim == 3 else 0
    if kernels.ndim != 3 or g * g != kernels.shape[0]:
        raise ValueError(f"a kernel field holds G×G kernels of one odd size, as an array (G, G, kh, kw) or (G·G, kh, kw); "
                         f"got shape {tuple(kernels.shape)}")
    return g


def build_nonuniform(shape, opts: TaskOptions, generator: Generators) -> Operator:
    if opts.kernel is not None:  # a kernel field: G×G kernels at the nodes of a regular grid, blended smoothly
        g = kernel_field_grid(opts.kernel)
        k = _check_kernel(opts.kernel.reshape(g * g, *opts.kernel.shape[-2:]), shape)
        weights = ops.blend_weights(shape[-2], shape[-1], g)[None].to(k)
        return ops.NonUniformBlur(k[None].expand(shape[0], -1, -1, -1), weights, padding=opts.padding)
    return ops.camera_shake(shape, size=_kernel_size(shape, opts), grid=opts.shake_grid, intensity=opts.motion_intensity,
                            generator=generator)


def build_sr(shape, opts: TaskOptions, generator: Generators) -> Operator:
    if shape[-1] % opts.scale or shape[-2] % opts.scale:
        raise ValueError(f"image sides {tuple(shape[-2:])} must be multiples of the scale {opts.scale}")
    return ops.BicubicDownsample(opts.scale) if opts.sr_mode == "bicubic" else ops.BlockAverage(opts.scale)


def _random_mask(shape, fraction, generator: Generators) -> Tensor:
    """A random mask missing ``fraction`` of the pixels, or, for a (low, high) range, a fraction drawn uniformly per
    image from that image's stream before its mask (batch-invariant with one generator per image)."""
    if isinstance(fraction, (int, float)):
        return ops.random_mask(shape, p=float(fraction), generator=generator)
    lo, hi = (float(v) for v in fraction)
    if not 0 <= lo <= hi < 1:
        raise ValueError(f"mask_fraction range must satisfy 0 ≤ low ≤ high < 1, got {fraction!r}")
    b = shape[0]
    gens = list(generator) if isinstance(generator, (list, tuple)) else None
    masks = []
    for i in range(b):
        g = [gens[i]] if gens is not None else generator
        u = float(rng.rand((1,), g, dtype=torch.float64)[0])
        masks.append(ops.random_mask((1, *shape[1:]), p=lo + (hi - lo) * u, generator=g))
    return torch.cat(masks)


def build_inpaint(shape, opts: TaskOptions, generator: Generators) -> Operator:
    m = opts.mask
    if isinstance(m, Tensor):
        if m.shape[-2:] != tuple(shape[-2:]):
            raise ValueError(f"mask of size {tuple(m.shape[-2:])} does not match the image {tuple(shape[-2:])}")
        return ops.Inpainting(m)
    makers: dict[str, Callable[[], Tensor]] = {
        "box": lambda: ops.box_mask(shape, generator=generator),
        "random": lambda: _random_mask(shape, opts.mask_fraction, generator),
        "freeform": lambda: ops.freeform_mask(shape, generator=generator),
    }
    if m not in makers:
        raise ValueError(f"unknown mask {m!r}: expected box, random, freeform or a mask image")
    return ops.Inpainting(makers[m]())


def build_phase(shape, opts: TaskOptions, generator: Generators) -> Operator:
    return ops.PhaseRetrieval(oversampling=opts.oversampling)


def build_colorize(shape, opts: TaskOptions, generator: Generators) -> Operator:
    if shape[1] != 3:
        raise ValueError(f"colourisation needs an RGB prior/image, got {shape[1]} channel(s)")
    return ops.Colorize()


def build_denoise(shape, opts: TaskOptions, generator: Generators) -> Operator:
    return ops.Identity()


def _no_parameters(op: Operator) -> dict:
    return {}


def _kernel_of(op: Operator) -> dict:
    return {"kernel": op.kernel.reshape(-1, *op.kernel.shape[-2:])[0]}


def _field_of(op: Operator) -> dict:
    return {"kernel": op.kernels[0]}


def _mask_of(op: Operator) -> dict:
    return {"mask": op.mask}


@dataclass(frozen=True)
class Task:
    """Everything the toolkit knows about one task: how to build its operator and noise, its default method, and
    what a measured photo needs (which the solver, the CLI and the benchmarks read instead of testing names)."""

    name: str
    description: str
    build: Callable[[tuple[int, ...], TaskOptions, Generators], Operator]
    default_method: str
    #: per-method hyper-parameter overrides for this task (on top of each method's paper defaults)
    hyper_parameters: dict[str, dict] = field(default_factory=dict)
    #: the Palette model condition name that solves this task, if any
    palette: str | None = None
    #: the image shape x for a measurement of shape y (measured mode); identity unless the task changes it
    x_shape: Callable[[tuple[int, ...], TaskOptions], tuple[int, ...]] = lambda y, opts: tuple(y)
    #: the side ratio x / y (super-resolution's scale; 1 when the measurement lies on the image's grid)
    upscale: Callable[[TaskOptions], int] = lambda opts: 1
    #: "image" (y lies on a pixel grid and can be padded) or "fourier" (magnitudes: shown on a log scale, read
    #: from .npy, never padded)
    measurement: str = "image"
    #: channels of a measured image file (colourisation reads grey); None: the prior's
    measured_channels: int | None = None
    #: what a measured photo must come with, "kernel", "kernel-field" or "mask"; never invented
    needs: str | None = None
    #: how a missing kernel is estimated from the measurement ("gaussian" or "motion", see invdiff.blind)
    blind: str | None = None
    #: the operator's parameters as TaskOptions fields (the kernel, the mask), to rebuild it on another grid
    parameters: Callable[[Operator], dict] = _no_parameters
    #: the TaskOptions fields this task's operator reads
    options: tuple[str, ...] = ()

    def operator(self, shape, opts: TaskOptions | None = None, *, generator: Generators = None) -> Operator:
        return self.build(tuple(shape), opts or TaskOptions(), generator)

    def noise(self, opts: TaskOptions | None = None):
        return ops.GaussianNoise((opts or TaskOptions()).noise_sigma)

    def pad_multiple(self, multiple: int, opts: TaskOptions) -> int:
        """The multiple the measurement's sides are padded to, so that the image's are multiples of ``multiple``."""
        import math

        s = self.upscale(opts)
        return multiple // math.gcd(multiple, s)


#: DiffPIR's paper values (λ = 7, ζ = 0.3) were tuned for its FFHQ/ImageNet models; on our priors λ = 1, ζ = 1 is
#: better for deblurring (natural64, 128×128 validation crops, 30 steps: +1.0 to +1.6 dB over λ = 7, ζ = 0.3), and
#: it is also the setting that recovers the exact posterior mean on Gaussian data (tests/test_restore.py).
_DEBLUR_HP = {"diffpir": {"lam": 4.0, "zeta": 1.0}}  # λ in the paper's units (σ_n on [0, 1]): 4 here is the λ = 1 above

#: The authors' per-task settings. DPS (configs/*_config.yaml, 1000 ancestral steps): ζ ("scale") 0.3 for Gaussian,
#: motion and non-uniform blur and SR, 0.5 for inpainting, 1.0 for phase retrieval. DAPS (configs/task/*.yaml,
#: pixel-space Langevin): step lr 1e-4 for Gaussian blur and SR, 5e-5 for motion blur, box inpainting and phase
#: retrieval (their random-mask inpainting uses 1e-4; our non-uniform blur takes the motion-blur value).
#: The tasks' presets take DAPS's values (measured better on our priors, RESULTS.md) but not DPS's ζ: tuned for
#: 1000 steps, they lose 2-3 dB at the 100-200 steps that are our defaults (fmnist, RESULTS.md), so DPS keeps ζ = 1
#: and the dps-ffhq suite, which runs the released protocol, sets DPS_REFERENCE_ZETA per task.
DPS_REFERENCE_ZETA: dict[str, float] = {"deblur": 0.3, "motion-deblur": 0.3, "nonuniform-deblur": 0.3, "sr": 0.3,
                                        "inpaint": 0.5, "phase-retrieval": 1.0}
_REFERENCE_HP: dict[str, dict[str, dict]] = {
    "deblur": {"daps": {"lr": 1e-4}},
    "motion-deblur": {"daps": {"lr": 5e-5}},
    "nonuniform-deblur": {"daps": {"lr": 5e-5}},
    "sr": {"daps": {"lr": 1e-4}},
    "inpaint": {"daps": {"lr": 5e-5}},
    "phase-retrieval": {"daps": {"lr": 5e-5}},
}

#: DPS's gradient through the raw x̂0 (not the reference's clipped one) for phase retrieval: on 100 fmnist test images
#: (100 steps, ζ = 1) it measured +2.19 ± 0.68 dB over the clipped gradient, which was neutral on every linear task
#: (within ±0.03 dB; RESULTS.md, "Faithful methods: the natural suite, and 100 fmnist images ...")
_PHASE_DPS = {"dps": {"gradient": "raw"}}

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("deblur", "Gaussian deblurring (DPS preset 61x61, sigma 3)",
         build_deblur, "diffpir", {**_DEBLUR_HP, **_REFERENCE_HP["deblur"]}, needs="kernel", blind="gaussian",
         parameters=_kernel_of, options=("kernel", "kernel_size", "blur_sigma", "padding")),
    Task("motion-deblur", "motion deblurring (random motionblur kernel 61x61, intensity 0.5, as DPS)", build_motion, "diffpir", {**_DEBLUR_HP, **_REFERENCE_HP["motion-deblur"]},
         needs="kernel", blind="motion", parameters=_kernel_of,
         options=("kernel", "kernel_size", "motion_intensity", "motion_model", "padding")),
    Task("nonuniform-deblur", "spatially varying camera-shake blur (kernels blended over the image)", build_nonuniform, "diffpir", {**_DEBLUR_HP, **_REFERENCE_HP["nonuniform-deblur"]},
         needs="kernel-field", parameters=_field_of,
         options=("kernel", "kernel_size", "motion_intensity", "shake_grid", "padding")),
    Task("sr", "super-resolution (bicubic antialiased downsampling, --scale 4)", build_sr, "ddrm",
         _REFERENCE_HP["sr"], palette="sr4", x_shape=lambda y, o: (*y[:2], y[2] * o.scale, y[3] * o.scale),
         upscale=lambda o: o.scale, options=("scale", "sr_mode")),
    Task("inpaint", "inpainting (--mask FILE; simulated: box|random|freeform)",
         build_inpaint, "ddrm", _REFERENCE_HP["inpaint"], palette="inpaint-box", needs="mask", parameters=_mask_of,
         options=("mask", "mask_fraction")),
    Task("phase-retrieval", "Fourier phase retrieval |F(pad(x))|, oversampling 2 (int(2/8·side) zeros per side)",
         build_phase, "dps", {**_REFERENCE_HP["phase-retrieval"], **_PHASE_DPS},
         x_shape=lambda y, o: tuple(ops.PhaseRetrieval(o.oversampling).in_shape(tuple(y))), measurement="fourier",
         options=("oversampling",)),
    # a Palette colouriser's warm start begins from A⁺y, the grey image in every channel (its condition, the grey
    # image itself, has one channel where the image has three)
    Task("colorize", "colourisation (grey = mean of RGB)", build_colorize, "ddnm", {"palette": {"init": "pinv"}},
         palette="colorize",
         x_shape=lambda y, o: (y[0], 3, *y[2:]),
         measured_channels=1),
    Task("denoise", "Gaussian denoising (A = identity)", build_denoise, "ddnm"),
]}


#: Palette models: condition name -> (task, options) of the degradation they are trained to invert
PALETTE_CONDITIONS: dict[str, tuple[str, TaskOptions]] = {
    "sr4": ("sr", TaskOptions(scale=4)),
    "inpaint-box": ("inpaint", TaskOptions(mask="box")),
    "colorize": ("colorize", TaskOptions()),
}


SOLVE_PRESETS = Path(__file__).resolve().parent / "data" / "solve_presets.json"


@dataclass(frozen=True)
class Preset:
    """What ``invdiff solve`` runs for a task when no --method is given: the method, its steps and hyper-parameters
    (a warm start among them), chosen by ``benchmarks/tune.py`` on a tuning split (``invdiff/data/solve_presets.json``).
    Tasks without one run ``Task.default_method`` with the method's own defaults."""

    method: str
    steps: int
    hyper_parameters: dict
    #: the bundled prior the preset runs with (a task's Palette model); None: the default prior or --prior. A preset
    #: with a prior applies only when that prior is installed and no other --prior is given.
    prior: str | None = None
    #: the same method with other steps / hyper-parameters for a kind of measurement (``measurement_kind``):
    #: inpainting masks with large holes ("holes") take another preset than scattered missing pixels; a kernel
    #: that was estimated from the photo ("blind") can take another preset than a known one
    variants: dict = field(default_factory=dict)
    #: K samples per image when --samples is not given, and how they make one result: None, their mean; "residual",
    #: the one with the smallest ‖y − A(x)‖ (phase retrieval's best-of-K by the measurement)
    samples: int = 1
    select: str | None = None
    #: rounds of kernel EM with the restoration (``invdiff.blind.refine_kernel_em``) when the kernel was estimated
    #: as a free-form motion kernel; 0: the classical estimate as it is
    kernel_em: int = 0
    #: the kernel EM's E-step also refits the kernel at every diffusion step (``refine_kernel_em(per_step=True)``)
    kernel_em_per_step: bool = False
    #: posterior samples per E-step of the kernel EM: with K > 1 the M-step fits the kernel to all K (a Monte Carlo
    #: E-step, ``refine_kernel_em``), which carries the posterior's spread into the fit; 1: one restoration
    kernel_em_samples: int = 1
    #: the learned kernel prior in the first this many rounds of kernel EM only (``refine_kernel_em(prior_rounds=)``);
    #: None: in every round
    kernel_em_prior_rounds: int | None = None
    #: after kernel EM, the refined kernel's error is taken as extra noise of this level (on [−1, 1]) in the final
    #: restoration: DiffPIR's λ scaled by 1 + τ²/σ² (``invdiff.blind.kernel_error_lam``); 0: the preset's λ
    kernel_error_tau: float = 0.0
    #: the learned kernel prior's settings (``invdiff.kernel_prior``: sigma, weight, rounds) for the blind motion
    #: estimate and the kernel EM's M-step; None: no kernel prior
    kernel_prior: dict | None = None
    #: a second kernel after the EM, from Laroche et al.'s Fast Diffusion EM (one E-step run from pure noise and a
    #: delta kernel, the kernel refitted at every step; these are that E-step's options over the blind variant's:
    #: steps, start, init, lam; and ``rule``, one of ``invdiff.blind.CHOICE_RULES`` or several joined by "+"); both
    #: kernels are restored as the final restoration restores a refined kernel, and the one whose restoration scores
    #: lower by the rule (``invdiff.blind.choice_score``, ``invdiff.blind.choose``) is kept; None: the EM's
    kernel_fast_em: dict | None = None

    def __post_init__(self):
        if isinstance(self.kernel_em_samples, bool) or not isinstance(self.kernel_em_samples, int) \
                or self.kernel_em_samples < 1:
            raise ValueError(f"kernel_em_samples must be a whole number ≥ 1, got {self.kernel_em_samples!r}")
        r = self.kernel_em_prior_rounds
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ValueError(f"kernel_em_prior_rounds must be a whole number ≥ 0 or null, got {r!r}")
        from .blind import CHOICE_RULES, FAST_EM_RULE, choice_rules

        rule = (self.kernel_fast_em or {}).get("rule", FAST_EM_RULE)
        try:
            choice_rules(rule)
        except ValueError:
            raise ValueError(f"kernel_fast_em's rule must be one of {', '.join(CHOICE_RULES)}, or several joined by "
                             f"'+'; got {rule!r}") from None

    def describe(self) -> str:
        from .blind import FAST_EM_E_STEP, FAST_EM_RULE as _rule

        hp = self.hyper_parameters
        warm = (f", warm start {hp['start']} from {hp.get('init', 'pinv')}" if hp.get("start", 1) < 1 else "")
        guided = f", guidance {hp['guidance']:g}" if hp.get("guidance") else ""
        guided += "".join(f", {k} {v:g}" for k, v in hp.items() if k in ("lam", "eta", "zeta"))
        extra = "".join(f"; {kind}: {v.describe()}" for kind, v in self.variants.items())
        k = ({"residual": f", best of {self.samples} by residual", "mbr": f", the one of {self.samples} nearest their mean"}
             .get(self.select, f", mean of {self.samples}")) if self.samples > 1 else ""
        k += (f", {self.kernel_em} rounds of kernel EM" + (" (kernel refitted at every step)"
              if self.kernel_em_per_step else "")
              + (f" ({self.kernel_em_samples} samples per E-step)" if self.kernel_em_samples > 1 else "")
              + (f" (kernel prior in the first {self.kernel_em_prior_rounds})"
                 if self.kernel_em_prior_rounds is not None and self.kernel_prior else "")
              + (f", then λ for a kernel error τ {self.kernel_error_tau:g}" if self.kernel_error_tau else "")) \
            if self.kernel_em else ""
        k += ", learned kernel prior" if self.kernel_prior else ""
        rule = " and ".join((self.kernel_fast_em or {}).get("rule", _rule).split("+"))
        k += (f", or Fast Diffusion EM's kernel ({self.kernel_fast_em.get('steps', FAST_EM_E_STEP['steps'])} steps) when its restoration "
              f"scores lower by {rule}") if self.kernel_fast_em and self.kernel_em else ""
        return (f"{self.method}" + (f" ({self.prior})" if self.prior else "") + f", {self.steps} steps{warm}{guided}{k}{extra}")

    def run_hyper_parameters(self, task: "Task") -> dict:
        """What ``restore`` runs: the task's hyper-parameters of the method with the preset's on top."""
        return {**task.hyper_parameters.get(self.method, {}), **self.hyper_parameters}

    def for_operator(self, op: Operator, *, blind: bool = False) -> "Preset":
        """The variant for this operator's kind of measurement (``blind``: its kernel was estimated from the
        measurement), or this preset."""
        if blind and "blind" in self.variants:
            return self.variants["blind"]
        return self.variants.get(measurement_kind(op), self)


#: an inpainting mask whose missing pixels lie farther than this from every observed one has "holes": the smooth
#: classical fill is a poor start there (chosen between the tuning split's box and 70 % random masks)
HOLE_DISTANCE = 8.0


def measurement_kind(op: Operator) -> str | None:
    """"holes" for an inpainting mask with a missing pixel more than HOLE_DISTANCE pixels from every observed
    pixel (Euclidean distance transform), "scattered" for other masks, None for operators without a mask."""
    m = getattr(op, "mask", None)
    if not isinstance(op, ops.Inpainting) or not isinstance(m, Tensor):
        return None
    from scipy.ndimage import distance_transform_edt

    missing = (m.detach().cpu().reshape(-1, *m.shape[-2:]) <= 0).numpy()
    far = max(float(distance_transform_edt(im).max()) if im.any() else 0.0 for im in missing)
    return "holes" if far > HOLE_DISTANCE else "scattered"


@functools.cache
def _spec() -> dict:
    return json.loads(SOLVE_PRESETS.read_text()) if SOLVE_PRESETS.is_file() else {}


def _presets() -> dict:
    """The presets tuned with the file's ``prior`` (the fallback for every prior)."""
    return _spec().get("presets", {})


def _prior_presets(prior: str | None) -> dict:
    """The presets tuned with one particular prior (the file's ``by_prior``), or {}."""
    return (_spec().get("by_prior") or {}).get(prior, {}).get("presets", {}) if prior else {}


def solve_preset(task: str, prior: str | None = None) -> Preset | None:
    """The tuned solve defaults of a task: those tuned with ``prior`` when there are, else the general ones, or None."""
    p = _prior_presets(prior).get(task) or _presets().get(task)
    if p is None:
        return None
    variants = {kind: Preset(p["method"], int(v["steps"]), dict(v.get("hyper_parameters", {})), p.get("prior"),
                             kernel_em=int(v.get("kernel_em", 0)),
                             kernel_em_per_step=bool(v.get("kernel_em_per_step", False)),
                             kernel_em_samples=int(v.get("kernel_em_samples", 1)),
                             kernel_em_prior_rounds=(None if v.get("kernel_em_prior_rounds") is None
                                                     else int(v["kernel_em_prior_rounds"])),
                             kernel_error_tau=float(v.get("kernel_error_tau", 0.0)),
                             kernel_prior=v.get("kernel_prior"), kernel_fast_em=v.get("kernel_fast_em"))
                for kind, v in (p.get("variants") or {}).items()}
    return Preset(p["method"], int(p["steps"]), dict(p.get("hyper_parameters", {})), p.get("prior"), variants,
                  int(p.get("samples", 1)), p.get("select"))


def solve_prior_order() -> list[str]:
    """The priors ``solve`` defaults to, best first: the first one installed is used (``invdiff.zoo.default_prior``)."""
    return list(_spec().get("default_priors", []))


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}")
    return TASKS[name]


def simulate(task: str | Task, x: Tensor, opts: TaskOptions | None = None, *, generator: Generators = None) -> tuple[Operator, Tensor]:
    """Degrade clean images x with the task's operator and noise: returns (operator, y)."""
    t = get_task(task) if isinstance(task, str) else task
    opts = opts or TaskOptions()
    op = t.operator(x.shape, opts, generator=generator).to(x.device)
    with torch.no_grad():
        y = t.noise(opts)(op(x), generator=generator)
    return op, y
