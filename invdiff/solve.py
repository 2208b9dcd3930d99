"""One restoration from files to files: what ``invdiff solve`` does, usable from Python too.

Measured mode: the image is the measurement y; the operator comes from the options (kernel file, mask file or
the PNG's alpha channel, scale, oversampling). Simulate mode: the image is clean; it is degraded with the task's
operator and noise (seeded), restored, and scored. Outputs (restored image, figure, JSON report, and with K>1 the
posterior mean, std map and samples) are rendered first and moved into place together at the end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io import read_image, write_image


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
    samples: int = 1
    noise_sigma: str | float | None = None
    kernel: Path | None = None
    kernel_size: int | None = None
    blur_sigma: float | None = None
    padding: str = "reflect"
    scale: int = 4
    mask: str = "box"
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

#: the largest seed accepted (streams are derived from it by numpy's SeedSequence, see invdiff.rng.stream_seed)
MAX_SEED = 2**62
STAGING_PREFIX = ".invdiff-staging-"


def load_kernel_file(path: Path) -> Tensor:
    """A blur kernel from .npy or an image file: non-negative, normalised to sum 1, odd sides."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"kernel file not found: {path}")
    if path.suffix.lower() == ".npy":
        k = torch.from_numpy(_load_npy(path, "kernel").astype(np.float64))
    else:
        k = (read_image(path, channels=1)[0, 0].double() + 1) / 2
    if k.ndim != 2:
        raise ValueError(f"kernel {path} must be 2-D, got shape {tuple(k.shape)}")
    if not torch.isfinite(k).all() or (k < 0).any() or float(k.sum()) <= 0:
        raise ValueError(f"kernel {path} must be finite, non-negative and not all zero")
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"kernel {path} must have odd sides, got {tuple(k.shape)}")
    return (k / k.sum()).float()


def _load_npy(path: Path, what: str) -> np.ndarray:
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


def load_mask_file(path: Path) -> Tensor:
    m = read_image(path, channels=1)
    return (m > 0).float()


MASK_PRESETS = ("box", "random", "freeform")


def _noise_sigma(value, y: Tensor) -> float:
    if value is None:
        return 0.05
    if isinstance(value, str) and value.strip().lower() == "auto":
        from .io import estimate_noise_sigma

        return estimate_noise_sigma(y[:1])  # already on the [-1, 1] scale
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--noise-sigma must be a number or 'auto', got {value!r}") from None
    if not v >= 0 or not np.isfinite(v):
        raise ValueError(f"--noise-sigma: noise sigma must be a finite non-negative number, got {value!r}")
    return v


def _crop_to_multiple(x: Tensor, m: int) -> Tensor:
    h, w = x.shape[-2] // m * m, x.shape[-1] // m * m
    if h == 0 or w == 0:
        raise ValueError(f"image of size {tuple(x.shape[-2:])} is smaller than the prior's minimum {m}x{m}")
    return x[..., :h, :w]


def _check_request(req: SolveRequest) -> None:
    """Every option that can be checked without reading anything: one ValueError naming the option."""
    from .samplers.validate import finite_positive

    def positive_int(v, opt, allow_none=True):
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{opt} must be a positive integer, got {v!r}")

    positive_int(req.steps, "--steps")
    positive_int(req.samples, "--samples", allow_none=False)
    positive_int(req.kernel_size, "--kernel-size")
    positive_int(req.scale, "--scale", allow_none=False)
    finite_positive(req.blur_sigma, "--blur-sigma")
    finite_positive(req.oversampling, "--oversampling")
    if req.oversampling is not None and float(req.oversampling) < 1:
        raise ValueError(f"--oversampling must be at least 1, got {req.oversampling!r}")
    if isinstance(req.batch_size, str):
        if req.batch_size != "auto":
            raise ValueError(f"--batch-size expects a positive integer or 'auto', got {req.batch_size!r}")
    else:
        positive_int(req.batch_size, "--batch-size")
    if isinstance(req.seed, bool) or not isinstance(req.seed, (int, np.integer)) or not 0 <= req.seed < MAX_SEED:
        raise ValueError(f"--seed must be an integer from 0 to 2**62 - 1, got {req.seed!r}")
    if req.padding not in ("zeros", "reflect", "replicate", "circular"):
        raise ValueError(f"--padding must be one of zeros, reflect, replicate, circular, got {req.padding!r}")
    img = Path(req.image)
    if img.is_dir():
        raise ValueError(f"IMAGE {img} is a folder: give one image file")
    if not img.is_file():
        raise ValueError(f"image not found: {img}")


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
        d = defaults[k]
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


def output_names(req: SolveRequest) -> dict[str, str]:
    stem, task = Path(req.image).stem, req.task
    names = {"restored": f"{stem}_{task}_restored.png", "figure": f"{stem}_{task}_figure.png",
             "report": f"{stem}_{task}_report.json"}
    if req.samples > 1:
        names["std"] = f"{stem}_{task}_std.png"
        names["samples"] = f"{stem}_{task}_samples.png"
    if req.save_measurement:
        names["measurement"] = f"{stem}_{task}_measurement.png"
        names["measurement_array"] = f"{stem}_{task}_measurement.npy"
    return names


def check_output(req: SolveRequest, names: dict[str, str] | None = None) -> None:
    """Before any work: ``out`` is (or can be made) a writable folder, and no output there would be overwritten
    unless ``overwrite`` (two images with the same stem, photo.png and photo.jpg, would write the same names)."""
    from .io import check_out_folder

    out = Path(req.out)
    check_out_folder(out)
    if out.is_dir() and not req.overwrite:
        for v in (names or output_names(req)).values():
            f = out / v
            if f.exists():
                src = ""
                rep = out / f"{Path(req.image).stem}_{req.task}_report.json"
                try:
                    prev = json.loads(rep.read_text()).get("image")
                    if prev and Path(prev).name != Path(req.image).name:
                        src = f" (written for {prev}, another image with the same name stem)"
                except (OSError, ValueError, AttributeError):
                    pass
                raise ValueError(f"{f} already exists{src}: pass --overwrite to replace it, or choose another --out")


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders left by a run that was killed while writing (its process is gone); returns them."""

    out = Path(out)
    removed = []
    if not out.is_dir():
        return removed
    for d in out.iterdir():
        if not d.is_dir() or not d.name.startswith("."):
            continue
        stale = False
        if d.name.startswith(STAGING_PREFIX):
            pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
            stale = not pid.isdigit() or not _alive(int(pid))
        else:  # the older naming, .STEM-xxxxxxxx holding only STEM_TASK_* outputs
            stem, _, tail = d.name[1:].rpartition("-")
            files = list(d.iterdir())
            stale = bool(stem) and len(tail) == 8 and all(f.is_file() and f.name.startswith(f"{stem}_") for f in files)
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    import os

    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_palette_task(prior, prior_name: str, task, req: SolveRequest) -> None:
    """A conditional (Palette) prior solves the one degradation it was trained on."""
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
    if ctask == "sr" and req.scale != copts.scale:
        raise ValueError(f"prior {prior_name!r} was trained for --scale {copts.scale}, got --scale {req.scale}")
    if ctask == "inpaint" and req.mask in MASK_PRESETS and req.mask != copts.mask:
        raise ValueError(f"prior {prior_name!r} was trained for --mask {copts.mask}, got --mask {req.mask}")


def _check_method_fits(method: str, op, prior, task) -> None:
    """The method can run with this task's operator; otherwise say which --method values can."""
    from .samplers.registry import METHODS, check_method

    try:
        check_method(method, op, prior)
    except ValueError:
        from .operators.base import Capability

        need = {Capability.SVD: "an operator with an exact SVD", Capability.LINEAR: "a linear operator (adjoint and pseudo-inverse)"}
        ok = []
        for name, m in METHODS.items():
            try:
                check_method(name, op, prior)
                ok.append(name)
            except ValueError:
                pass
        req = need.get(METHODS[method].requires, "another operator")
        raise ValueError(f"--method {method} needs {req}, which --task {task.name} does not give here; methods that "
                         f"can: {', '.join(ok) or 'none'} (choose one with --method)") from None


def _peak_memory_mib(device: str) -> tuple[float | None, str]:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "GPU memory allocated by torch"
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak resident memory (CPU)"
    except (ImportError, OSError):  # pragma: no cover - not on Linux/macOS
        return None, "unavailable"


def _measurement_metrics(y: Tensor, x_true: Tensor, task_name: str) -> dict | None:
    """PSNR/SSIM of the measurement itself against the truth, where it is an image of the truth's size (SR:
    bicubic upsampling; colourisation: the grey image repeated); None for phase retrieval."""
    import torch.nn.functional as F

    from .metrics import psnr, ssim

    yy = y.detach().float().to(x_true.device)
    if tuple(yy.shape[-2:]) != tuple(x_true.shape[-2:]):
        if task_name != "sr":
            return None
        yy = F.interpolate(yy, size=tuple(x_true.shape[-2:]), mode="bicubic", align_corners=False).clamp(-1, 1)
    if yy.shape[1] != x_true.shape[1]:
        if yy.shape[1] != 1:
            return None
        yy = yy.expand(-1, x_true.shape[1], -1, -1)
    yy = yy.clamp(-1, 1)
    return {"psnr": float(psnr(yy, x_true)[0]), "ssim": float(ssim(yy, x_true)[0])}


def _operator_parameters(op, opts, task, req: SolveRequest) -> dict:
    d = {"operator": type(op).__name__, "repr": repr(op).splitlines()[0][:300]}
    for k in ("kernel_size", "blur_sigma", "motion_intensity", "padding", "scale", "sr_mode", "mask_fraction",
              "oversampling"):
        d[k] = getattr(opts, k)
    d["mask"] = req.mask if not isinstance(opts.mask, Tensor) else f"image {tuple(opts.mask.shape[-2:])}"
    d["kernel"] = str(req.kernel) if req.kernel is not None else None
    k = getattr(op, "kernel", None)
    if isinstance(k, Tensor):
        d["kernel_shape"] = list(k.shape[-2:])
    m = getattr(op, "mask", None)
    if isinstance(m, Tensor):
        d["observed_fraction"] = round(float((m > 0).float().mean()), 6)
    return d


def _versions() -> dict:
    import platform

    from . import __version__

    v = {"invdiff": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        from importlib.metadata import version

        v["pillow"] = version("pillow")
    except Exception:  # pragma: no cover - metadata missing
        pass
    return v


class _Grey:
    """A restoration seen in grey: the channel mean of every RGB output (for a grey input restored by an RGB prior)."""

    def __init__(self, res):
        self._res = res
        self.mean = res.mean.mean(1, keepdim=True)
        self.samples = res.samples.mean(2, keepdim=True)
        self.std = self.samples.std(1, unbiased=False) if self.samples.shape[1] > 1 else torch.zeros_like(self.mean)

    def __getattr__(self, name):
        return getattr(self._res, name)


def solve(req: SolveRequest, *, callback=None) -> dict:
    import warnings

    from .metrics import score
    from .prior import load as load_prior
    from .rng import make_generators
    from .samplers import restore
    from .samplers.registry import METHODS
    from .tasks import TaskOptions, get_task
    from .zoo import DEFAULT_PRIOR

    task = get_task(req.task)
    _check_request(req)
    names = output_names(req)
    check_output(req, names)
    if req.lpips_backbone is not None and not Path(req.lpips_backbone).is_file():
        raise ValueError(f"--lpips-backbone {req.lpips_backbone}: file not found")
    mask = req.mask
    if task.name == "inpaint" and mask not in MASK_PRESETS:
        if Path(mask).is_dir():
            raise ValueError(f"--mask {mask} is a folder: give box, random, freeform or a mask image file")
        if not Path(mask).is_file():
            raise ValueError(f"--mask {mask!r}: expected box, random, freeform or the path of a mask image (white = "
                             "observed); no such file")
    if req.method is not None and req.method not in METHODS:
        raise ValueError(f"unknown method {req.method!r}; choose from: {', '.join(METHODS)}")
    prior_name = req.prior or DEFAULT_PRIOR
    palette = False
    prior = load_prior(prior_name, device=req.device)
    if req.fast:
        prior.accelerate(compile=True)
    if prior.cond_channels:
        palette = True
        method = "palette"
        if req.method not in (None, "palette"):
            raise ValueError(f"prior {prior_name!r} is a conditional (Palette) model: it only runs with --method palette")
        _check_palette_task(prior, prior_name, task, req)
    else:
        method = req.method or task.default_method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    check_hyper_parameters(method, req.hyper_parameters)
    C = prior.channels or 3
    m = max(prior.multiple, req.scale if task.name == "sr" else 1)

    # ---- the images and the operator ----
    kernel = load_kernel_file(req.kernel) if req.kernel is not None else None
    grey_input = False
    image = Path(req.image)
    if image.suffix.lower() == ".npy":
        if task.name != "phase-retrieval":
            raise ValueError(".npy measurements are Fourier magnitudes for --task phase-retrieval; give an image file")
        if req.simulate:
            raise ValueError("--simulate needs a clean image, not a magnitude file")
        a = _load_npy(image, "measurement")
        if a.ndim not in (2, 3):
            raise ValueError(f"measurement {image} must be (H, W) or (C, H, W), got shape {a.shape}")
        y = torch.from_numpy(a.astype(np.float32))
        y = y[None, None] if y.ndim == 2 else y[None]
        alpha = None
    else:
        want = 1 if (task.name == "colorize" and not req.simulate) else None
        y, alpha = read_image(image, channels=want, with_alpha=True)
        if want is None:
            grey_input = y.shape[1] == 1 and C == 3 and task.name != "colorize"
            if y.shape[1] != C:
                y = read_image(image, channels=C)
    if not torch.isfinite(y).all():
        raise ValueError(f"{image} contains NaN or infinite values")
    if task.name == "sr" and req.simulate and req.scale > min(y.shape[-2:]):
        raise ValueError(f"--scale {req.scale} is larger than the image ({y.shape[-2]}x{y.shape[-1]}): the low-resolution "
                         "measurement would be empty; use a smaller --scale")
    gens = make_generators(req.seed, 1, purpose="degrade")
    warn: list[str] = []
    if task.name == "inpaint":
        if mask not in MASK_PRESETS:
            mask = load_mask_file(Path(mask))
        elif alpha is not None and not req.simulate:
            mask = alpha
    x_true = None
    if req.simulate:
        x_true = _crop_to_multiple(y, m)
        if isinstance(mask, Tensor):
            mask = _crop_to_multiple(mask, m)
        sigma = _noise_sigma(req.noise_sigma, x_true)
        opts = TaskOptions(noise_sigma=sigma, kernel=kernel, kernel_size=req.kernel_size, blur_sigma=req.blur_sigma,
                           padding=req.padding, scale=req.scale, mask=mask, oversampling=req.oversampling)
        prior.check_image(x_true)
        op = task.operator(x_true.shape, opts, generator=gens)
        with torch.no_grad():
            y = task.noise(opts)(op(x_true), generator=gens)
        x_true = x_true.to(req.device)
    else:
        if task.name not in ("sr", "phase-retrieval"):
            y = _crop_to_multiple(y, m)
            if isinstance(mask, Tensor):
                if mask.shape[-2:] != y.shape[-2:] and tuple(mask.shape[-2:]) != tuple(read_image(image).shape[-2:]):
                    raise ValueError(f"mask of size {tuple(mask.shape[-2:])} does not match the image {tuple(y.shape[-2:])}")
                mask = _crop_to_multiple(mask, m)
        sigma = _noise_sigma(req.noise_sigma, y)
        opts = TaskOptions(noise_sigma=sigma, kernel=kernel, kernel_size=req.kernel_size, blur_sigma=req.blur_sigma,
                           padding=req.padding, scale=req.scale, mask=mask, oversampling=req.oversampling)
        xs = task.x_shape(tuple(y.shape), opts)
        if xs[1] != C:
            raise ValueError(f"prior {prior_name!r} works on {C}-channel images but the task needs {xs[1]} for this measurement")
        prior.check_image(torch.empty(xs, device="meta"))
        op = task.operator(xs, opts, generator=gens)
        expected = tuple(op.out_shape(xs))
        if tuple(y.shape) != expected:
            raise ValueError(f"measurement of shape {tuple(y.shape)} does not match the operator's output {expected}")
    if isinstance(getattr(op, "mask", None), Tensor) and not bool((op.mask > 0).any()):
        warn.append("the mask observes no pixel (all zero): the result is a sample of the prior, not a restoration")
    _check_method_fits(method, op, prior, task)
    op = op.to(req.device)
    y = y.to(req.device)
    for w in warn:
        warnings.warn(w, stacklevel=2)

    # ---- restore ----
    hp = {**task.hyper_parameters.get(method, {}), **req.hyper_parameters}
    if str(req.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = restore(y, op, task.noise(opts), prior, method=method, steps=req.steps, samples=req.samples,
                  generator=make_generators(req.seed, 1, req.device, purpose="sample"), callback=callback, batch_size=req.batch_size, **hp)
    seconds = time.perf_counter() - t0
    peak, peak_kind = _peak_memory_mib(req.device)
    if grey_input:
        res = _Grey(res)
        if x_true is not None:
            x_true = x_true.mean(1, keepdim=True)
    used_hp = dict(getattr(res, "hyper_parameters", hp))
    steps = int(used_hp.get("steps", req.steps or METHODS[method].defaults["steps"]))
    report = {"task": task.name, "method": method, "prior": prior_name, "palette": palette, "image": str(image),
              "simulate": req.simulate, "seed": req.seed, "samples": req.samples, "noise_sigma": sigma, "noise_scale": "[-1, 1]",
              "steps": steps, "hyper_parameters": used_hp, "nfe": int(res.nfe), "nfe_per_sample": int(res.nfe),
              "nfe_total": int(res.nfe) * req.samples, "vjps": int(getattr(res, "vjps", 0)),
              "vjps_total": int(getattr(res, "vjps", 0)) * req.samples, "seconds": round(seconds, 3), "device": req.device,
              "peak_memory_mib": None if peak is None else round(peak, 1), "peak_memory_kind": peak_kind,
              "image_shape": list(res.mean.shape[1:]), "measurement_shape": list(y.shape[1:]),
              "output_channels": int(res.mean.shape[1]), "grey_input": grey_input,
              "operator": _operator_parameters(op, opts, task, req), "versions": _versions(), "warnings": warn}
    if x_true is not None:
        from .metrics import lpips_or_none

        lp = lpips_or_none(req.lpips_backbone, device=req.device)
        sc = score(res.mean, x_true, lpips_model=lp)
        report["metrics"] = {k: (float(v[0]) if v is not None else "unavailable") for k, v in sc.items()}
        if lp is None:
            report["metrics"]["lpips"] = "unavailable (AlexNet backbone not found; see invdiff.metrics or --lpips-backbone)"
        yt = y if not grey_input or y.shape[1] == 1 else y.mean(1, keepdim=True)
        report["measurement_metrics"] = _measurement_metrics(yt, x_true, task.name)
    report["files"] = _write_outputs(req, report, y, res, x_true, op, names)
    return report


def _write_outputs(req: SolveRequest, report: dict, y: Tensor, res, x_true: Tensor | None, op=None,
                   names: dict | None = None) -> dict:
    import os

    from .figures import display, error_map, kernel_display, magnitude_display, panels, std_display
    from .io import save_grid

    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out)
    check_output(req, names)  # again: another run may have written these names meanwhile
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    names = dict(names or output_names(req))
    grey = res.mean.shape[1] == 1
    try:
        write_image(stage / names["restored"], res.mean[0])
        yshow = magnitude_display(y[0]) if req.task == "phase-retrieval" else y[0]
        if grey and yshow.shape[0] == 3:
            yshow = yshow.mean(0, keepdim=True)
        meas = display(yshow, res.mean[0] if req.task != "phase-retrieval" else None)
        items = []
        if x_true is not None:
            items.append(("ground truth", display(x_true[0]), None))
        items.append(("measurement", meas, None))
        mask = getattr(op, "mask", None) if op is not None else None
        kernel = getattr(op, "kernel", None) if op is not None else None
        if isinstance(mask, Tensor):
            items.append(("mask (white = observed)", display(mask[0, :1].float() * 2 - 1, res.mean[0]), None))
        elif isinstance(kernel, Tensor):
            items.append((f"kernel {kernel.shape[-2]}x{kernel.shape[-1]}", kernel_display(kernel), "gray"))
        label = "restored" if req.samples == 1 else f"posterior mean (K={req.samples})"
        if x_true is not None and "metrics" in report:
            label += f"\nPSNR {report['metrics']['psnr']:.2f} dB"
        items.append((label, display(res.mean[0]), None))
        if x_true is not None:
            items.append(("|error|", error_map(res.mean[0], x_true[0]), "magma"))
        if req.samples > 1:
            items.append(("posterior std", std_display(res.std[0]), "viridis"))
            s = res.std[0]
            write_image(stage / names["std"], (s / s.max().clamp_min(1e-8)) * 2 - 1)
            save_grid(stage / names["samples"], res.samples[0], nrow=min(8, req.samples))
        if req.save_measurement:
            ym = y[0].detach().cpu()
            np.save(stage / names["measurement_array"], ym.numpy())
            write_image(stage / names["measurement"], magnitude_display(ym) if req.task == "phase-retrieval" else ym.clamp(-1, 1))
            if isinstance(mask, Tensor):
                names["mask"] = f"{Path(req.image).stem}_{req.task}_mask.png"
                write_image(stage / names["mask"], mask[0, :1].detach().cpu().float() * 2 - 1)
            if isinstance(kernel, Tensor):
                names["kernel"] = f"{Path(req.image).stem}_{req.task}_kernel.npy"
                np.save(stage / names["kernel"], kernel.detach().cpu().reshape(-1, *kernel.shape[-2:])[0].numpy())
        panels(stage / names["figure"], items, title=f"{req.task} · {report['method']} · {report['prior']}")
        report["files"] = {k: str(out / v) for k, v in names.items()}
        (stage / names["report"]).write_text(json.dumps(report, indent=2, default=str) + "\n")
        for v in names.values():
            (stage / v).replace(out / v)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {k: str(out / v) for k, v in names.items()}


__all__ = ["SolveRequest", "solve", "load_kernel_file", "load_mask_file", "check_output", "clean_stale_staging", "asdict"]
