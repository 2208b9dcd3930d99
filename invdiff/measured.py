"""From a file to a restoration problem: the measurement, the operator and the noise, and where each came from.

A measured photo never gets an invented degradation. A kernel comes from ``--kernel``, from ``--blur-sigma`` or
from a blind estimate (reported); a mask from ``--mask FILE`` or the file's alpha channel; the noise level from
``--noise-sigma`` or an estimate (reported). Anything else stops with one line that names the option to give.
Images of any size are padded (reflect) to the prior's multiple and cropped back after the restoration, so no
pixel is lost. In simulate mode the clean image is degraded first and the degradation's own parameters are then
given to the same path (``Problem.degradation`` says "simulated").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import read_image
from .tasks import Task, TaskOptions, kernel_field_grid

MASK_PRESETS = ("box", "random", "freeform")


def load_npy(path: Path, what: str) -> np.ndarray:
    """A numeric array from a real .npy file (never unpickled); a clear error for anything else."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError(f"{what} {path} is not a NumPy .npy file (save it with numpy.save, or give a PNG)")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} {path} must hold real numbers, got dtype {a.dtype}")
    return a


def check_kernel(k: Tensor, name: str) -> Tensor:
    """A kernel (kh, kw), or a field of them (..., kh, kw): finite, non-negative, odd sides; each normalised."""
    from .operators.blur import normalise_kernels

    if k.ndim < 2 or k.ndim > 4:
        raise ValueError(f"kernel {name} must be 2-D (a field: 3-D or 4-D), got shape {tuple(k.shape)}")
    return normalise_kernels(k, f"kernel {name}")


def load_kernel_file(path: Path, *, field: bool = False) -> Tensor:
    """A blur kernel from .npy or an image file (normalised to sum 1, odd sides); with ``field``, a kernel field
    (G, G, kh, kw) or (G·G, kh, kw) from .npy, each kernel normalised."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"kernel file not found: {path}")
    if path.suffix.lower() == ".npy":
        k = torch.from_numpy(load_npy(path, "kernel").astype(np.float64))
    elif field:
        raise ValueError(f"a kernel field is a .npy array (G, G, kh, kw), got {path}")
    else:
        k = (read_image(path, channels=1)[0, 0].double() + 1) / 2
    if field:
        kernel_field_grid(k)
    elif k.ndim != 2:
        raise ValueError(f"kernel {path} must be 2-D, got shape {tuple(k.shape)}")
    return check_kernel(k, str(path))


def load_mask_file(path: Path) -> Tensor:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--mask {path} is a folder: give box, random, freeform or a mask image file")
    if not path.is_file():
        raise ValueError(f"--mask {str(path)!r}: expected box, random, freeform or the path of a mask image (white = "
                         "observed); no such file")
    return (read_image(path, channels=1) > 0).float()


#: the largest noise σ a photo's pixels can carry on [-1, 1] (half the range); a larger one is a σ in grey levels
SIGMA_LIMIT = 1.0


def noise_sigma(value, y: Tensor, *, default: float | None, pixels: bool = True) -> tuple[float, str]:
    """(σ, where it came from): the given number, or the estimate ("auto", or no value and no default). ``pixels``: y
    is an image on [-1, 1], where a σ above ``SIGMA_LIMIT`` is refused as a value given in grey levels."""
    if value is None and default is not None:
        return default, "default"
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        from .io import estimate_noise_sigma

        return estimate_noise_sigma(y[:1]), "estimated"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--noise-sigma must be a number or 'auto', got {value!r}") from None
    if not v >= 0 or not np.isfinite(v):
        raise ValueError(f"--noise-sigma: noise sigma must be a finite non-negative number, got {value!r}")
    if pixels and v > SIGMA_LIMIT:
        raise ValueError(f"--noise-sigma {value} is larger than the pixels' range allows: it is on the [-1, 1] scale "
                         f"(σ of {v:g} grey levels of 255 is {2 * v / 255:.4f})")
    return v, "given"


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom and right (reflect; replicate where the image is too small to reflect) to sides that are
    multiples of ``multiple``; ``x[..., :h, :w]`` undoes it."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


@dataclass
class Problem:
    """What ``restore`` needs, on the padded grid, and what the report says about it."""

    op: object
    y: Tensor
    opts: TaskOptions
    #: the restored image's size before padding (crop the result to it)
    size: tuple[int, int]
    #: the measurement's shape before padding
    input_shape: tuple[int, ...] = ()
    degradation: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: the tiles the network was evaluated on (``invdiff.tiling``), when it was
    tiles: dict | None = None
    #: simulate mode with --blind: the kernel that was hidden from the solver (shown beside the estimate)
    true_kernel: Tensor | None = None


def _kernel_entry(source: str, k: Tensor, **extra) -> dict:
    shape = list(k.shape[-2:])
    return {"source": source, "shape": shape, **{k_: v for k_, v in extra.items() if v is not None}}


def kernel_prior_for(task: Task, preset, choice: str | None = None) -> tuple[object | None, dict | None]:
    """The learned kernel prior of a blind motion estimate and its report entry: ``choice`` (--kernel-prior)
    "none" (off) or a file (with the preset's settings), else the preset's blind variant's settings with the
    bundled weights; (None, None) when there is none."""
    from .kernel_prior import WEIGHTS, load_kernel_prior

    if task.blind != "motion" or choice == "none":
        return None, None
    variant = (preset.variants.get("blind") if preset is not None else None) or preset
    settings = dict(getattr(variant, "kernel_prior", None) or {})
    path = choice
    if path is None and not settings:
        return None, None
    kp = load_kernel_prior(path or WEIGHTS, **settings)
    return kp, {"weights": str(path) if path else WEIGHTS.name, "sigma": kp.sigma, "weight": kp.weight,
                "rounds": kp.rounds}


def kernel_for(task: Task, req, y: Tensor, sigma: float, prior, gens, callback=None,
               preset=None, lossy: bool = False) -> tuple[Tensor | None, dict | None]:
    """The measured photo's kernel: given (--kernel, --blur-sigma), or a blind estimate, or a clear error.
    ``lossy``: the photo came from a lossy file, so a blind Gaussian blur is read from its edges, not its spectrum."""
    from . import operators as ops

    if task.needs not in ("kernel", "kernel-field"):
        return None, None
    if req.kernel is not None:
        k = load_kernel_file(req.kernel, field=task.needs == "kernel-field")
        return k, _kernel_entry("given", k, file=str(req.kernel))
    if task.needs == "kernel-field":
        raise ValueError(f"--task {task.name} on a measured photo needs its kernel field: give --kernel FIELD.npy, an "
                         "array (G, G, kh, kw) of G×G kernels at the nodes of a regular grid over the image")
    if task.blind == "gaussian" and req.blur_sigma is not None and not req.simulate:  # simulate: it made the blur
        size = req.kernel_size or 2 * int(np.ceil(3 * float(req.blur_sigma))) + 1
        k = ops.gaussian_kernel(size, float(req.blur_sigma))
        return k, _kernel_entry("given (--blur-sigma)", k, blur_sigma=float(req.blur_sigma))
    if task.blind is None:
        raise ValueError(f"--task {task.name} on a measured photo needs its kernel: give --kernel FILE")
    return _blind_kernel(task, req, y, sigma, prior, gens, callback, preset, lossy)


#: what the report calls each Gaussian blur estimator
GAUSSIAN_ESTIMATOR_NAMES = {"spectrum": "power spectrum (type-II maximum likelihood)",
                            "edges": "re-blur ratio at the strongest edges (Zhuo & Sim 2011): a lossy file"}


def _blind_kernel(task: Task, req, y: Tensor, sigma: float, prior, gens, callback, preset=None,
                  lossy: bool = False) -> tuple[Tensor, dict]:
    from . import blind

    kp_entry, extra = None, {}
    if task.blind == "gaussian":
        method = "edges" if lossy else "spectrum"
        est = blind.estimate_gaussian_blur(y, sigma, kernel_size=req.kernel_size, padding=req.padding, callback=callback,
                                           method=method)
        extra = {"estimator": GAUSSIAN_ESTIMATOR_NAMES[method]}
    else:
        region = estimate_window(y, req, prior)
        t, left, h, w = region
        y = y[..., t: t + h, left: left + w]
        size = req.kernel_size or blind.default_motion_kernel_size(h, w)
        kp, kp_entry = kernel_prior_for(task, preset, req.kernel_prior)
        est = blind.estimate_motion_kernel(y, prior, sigma, kernel_size=size, kernel_prior=kp, generator=gens,
                                           callback=callback)
        extra = {"region": list(region), **_spread_entry(blind.crop_spread(y, est.kernel, sigma, kernel_prior=kp))}
    k = est.kernel.detach().float().cpu()
    choice = est.history[-1] if est.history and "chosen" in est.history[-1] else {}
    return k, _kernel_entry(f"estimated (blind, {est.kind})", k, blur_sigma=getattr(est, "blur_sigma", None),
                            seconds=round(float(est.seconds), 2), start=choice.get("chosen"),
                            start_residuals=choice.get("residuals"),
                            kernel_prior=kp_entry, **extra)


def estimate_window(y: Tensor, req, prior) -> tuple[int, int, int, int]:
    """The window (top, left, height, width) of the measured photo y that a blind motion kernel is estimated and
    refined from (``invdiff.blind.estimate_region``): at most --estimate-size on a side (0: the whole photo), and
    at least ``ESTIMATE_KERNELS`` kernel sides; its sides a multiple of the prior's so that the kernel EM restores
    it unpadded."""
    from . import blind

    size = blind.ESTIMATE_SIZE if req.estimate_size is None else req.estimate_size
    H, W = y.shape[-2:]
    if size == 0:
        return 0, 0, H, W
    size = max(size, blind.ESTIMATE_KERNELS * (req.kernel_size or blind.DEFAULT_MOTION_KERNEL_SIZE))
    return blind.estimate_region(y, size, multiple=getattr(prior, "multiple", 1) or 1)


def _spread_entry(spread: float | None) -> dict:
    """The report's words on a blind motion estimate's crop spread (``invdiff.blind.crop_spread``)."""
    from .blind import UNRELIABLE_SPREAD

    if spread is None:
        return {"crop_spread": "not measured (the photo's crops are smaller than the kernel)"}
    return {"crop_spread": round(spread, 4), "reliable": spread <= UNRELIABLE_SPREAD}


def unreliable_kernel(entry: dict) -> str:
    """The warning for a blind motion kernel whose crop spread (its report ``entry``) is above the threshold."""
    from .blind import UNRELIABLE_SPREAD

    return (f"the blind motion kernel may be wrong: estimated again from four crops of the photo it changes by "
            f"{entry['crop_spread']:.2f} (kernel error; above {UNRELIABLE_SPREAD}), so the restoration may carry a "
            "wrong blur; give --kernel if you know it")


def mask_for(task: Task, req, alpha: Tensor | None, simulate: bool) -> tuple[str | Tensor | None, dict | None]:
    """The inpainting mask: a file, the measurement's alpha channel, or (simulate mode only) a preset."""
    if task.needs != "mask":
        return None, None
    m = req.mask
    if m is not None and m not in MASK_PRESETS:
        return load_mask_file(Path(m)), {"source": "given", "file": str(m)}
    if simulate:
        return m or "box", {"source": "simulated", "preset": m or "box"}
    if alpha is not None:
        return alpha, {"source": "alpha channel"}
    if m is not None:
        raise ValueError(f"--mask {m} is a preset for --simulate; a measured photo needs its own mask: give --mask FILE "
                         "(white = observed) or a PNG whose alpha channel marks the observed pixels")
    raise ValueError(f"--task {task.name} on a measured photo needs a mask: give --mask FILE (white = observed) or a PNG "
                     "whose alpha channel marks the observed pixels")


def probe_operator(task: Task, xs: tuple, opts: TaskOptions):
    """The task's operator on a placeholder kernel/mask: what it can do does not depend on their values."""
    probe = {"kernel": torch.ones(1, 1)} if task.needs == "kernel" else {}
    if task.needs == "kernel-field":
        probe = {"kernel": torch.ones(1, 1, 1)}
    if task.needs == "mask":
        probe = {"mask": torch.ones(1, 1, *xs[-2:])}
    return task.operator(xs, opts.with_(**probe))


def memory_plan(prior, xs: tuple, samples: int, device: str, *, gradient: bool, tile: int | None = None) -> int | None:
    """None when one restoration of this size fits in memory (CPU or GPU); else the side of the tiles that the
    network is evaluated on (``EpsPrior.tiled``, ``invdiff.tiling``): the largest multiple of 64 and of the prior's
    multiple whose forward pass takes at most half the free memory, with the image-sized state of the sampler in
    what is left. ``tile`` (--tile) asks for tiles of that side whatever the memory. A method that differentiates
    through the network (its graph would hold every tile) or an image whose state alone does not fit stops with
    the estimate."""
    from .accel import available_memory, per_image_bytes
    from .tiling import TILE_OVERLAP

    c, h, w = xs[1:]
    side = max(prior.multiple, 16)
    small = [per_image_bytes(prior, (c, side * k, side * k), gradient=gradient, device=torch.device(device)) for k in (1, 2)]
    alpha = max(1.0, np.log(max(small[1], 1) / max(small[0], 1)) / np.log(4.0))  # bytes ~ pixels^alpha

    def need(a: int, b: int) -> float:
        return small[0] * ((a * b) / (side * side)) ** alpha * samples

    free = available_memory(torch.device(device))
    if tile is not None:
        return tile if tile < max(h, w) else None
    if need(h, w) > 0.8 * free:
        q = int(np.lcm(64, max(prior.multiple, 1)))
        state = 24 * 4 * c * h * w * samples  # x_t, x̂0, ε, y and the method's other image-sized buffers, float32
        fits = [t for t in range(q, max(h, w), q) if t > TILE_OVERLAP and need(t, t) <= 0.5 * free]
        if not gradient and fits and state <= 0.3 * free:
            return fits[-1]
        why = " (a method that differentiates through the network cannot be tiled)" if gradient else ""
        raise ValueError(f"a {h}x{w} image needs about {_size(need(h, w))} for one restoration (K={samples}) but "
                         f"{_size(free)} are free on {device}{why}: restore a crop, downscale it, or use a larger "
                         "device")
    return None


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def build_problem(task: Task, req, prior, y: Tensor, opts: TaskOptions, given: dict) -> Problem:
    """The operator on the padded grid, from options whose kernel/mask/field are given (not invented)."""
    m = prior.multiple
    size = tuple(task.x_shape(tuple(y.shape), opts)[-2:])
    if task.measurement == "image":
        q = task.pad_multiple(m, opts)
        yp = pad_to_multiple(y, q)
        if isinstance(given.get("mask"), Tensor):
            if tuple(given["mask"].shape[-2:]) != tuple(y.shape[-2:]):
                raise ValueError(f"mask of size {tuple(given['mask'].shape[-2:])} does not match the image "
                                 f"{tuple(y.shape[-2:])}")
            if not bool((given["mask"] > 0).any()):  # nothing of the photo would be used: a sample, not a restoration
                raise ValueError("the mask marks no pixel as observed (white or opaque = observed): is it inverted?")
            given = {**given, "mask": pad_to_multiple(given["mask"], q)}
    else:
        yp = y
    opts = opts.with_(**given)
    xs = tuple(task.x_shape(tuple(yp.shape), opts))
    if xs[1] != (prior.channels or xs[1]):
        raise ValueError(f"prior {prior.name!r} works on {prior.channels}-channel images but the task needs {xs[1]} for "
                         "this measurement")
    if task.measurement != "image" and (xs[-1] % m or xs[-2] % m):
        raise ValueError(f"--task {task.name}: the image behind this measurement is {xs[-2]}x{xs[-1]}, not a multiple of "
                         f"the prior's {m}; a Fourier measurement cannot be padded")
    prior.check_image(torch.empty(xs, device="meta"))
    op = task.operator(xs, opts)
    expected = tuple(op.out_shape(xs))
    if tuple(yp.shape) != expected:
        raise ValueError(f"measurement of shape {tuple(yp.shape)} does not match the operator's output {expected}")
    return Problem(op=op, y=yp, opts=opts, size=size, input_shape=tuple(y.shape))


__all__ = ["MASK_PRESETS", "Problem", "build_problem", "check_kernel", "kernel_for", "load_kernel_file", "load_mask_file",
           "load_npy", "mask_for", "memory_plan", "noise_sigma", "pad_to_multiple", "probe_operator", "unreliable_kernel"]
