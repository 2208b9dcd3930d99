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


def load_kernel_file(path: Path) -> Tensor:
    """A blur kernel from .npy or an image file: non-negative, normalised to sum 1, odd sides."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"kernel file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            k = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float64))
        except (ValueError, OSError) as e:
            raise ValueError(f"cannot read kernel {path}: {e}") from None
    else:
        k = (read_image(path, channels=1)[0, 0].double() + 1) / 2
    if k.ndim != 2:
        raise ValueError(f"kernel {path} must be 2-D, got shape {tuple(k.shape)}")
    if not torch.isfinite(k).all() or (k < 0).any() or float(k.sum()) <= 0:
        raise ValueError(f"kernel {path} must be finite, non-negative and not all zero")
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"kernel {path} must have odd sides, got {tuple(k.shape)}")
    return (k / k.sum()).float()


def load_mask_file(path: Path) -> Tensor:
    m = read_image(path, channels=1)
    return (m > 0).float()


def _noise_sigma(value, y: Tensor) -> float:
    if value is None:
        return 0.05
    if isinstance(value, str) and value.strip().lower() == "auto":
        from skimage.restoration import estimate_sigma

        a = ((y[0].detach().cpu().float() + 1) / 2).permute(1, 2, 0).numpy()
        s = estimate_sigma(a, channel_axis=-1, average_sigmas=True)
        return float(2 * s)  # [0, 1] -> [-1, 1] scale
    try:
        v = float(value)
    except ValueError:
        raise ValueError(f"--noise-sigma must be a number or 'auto', got {value!r}") from None
    if not v >= 0 or not np.isfinite(v):
        raise ValueError(f"noise sigma must be a non-negative number, got {value!r}")
    return v


def _crop_to_multiple(x: Tensor, m: int) -> Tensor:
    h, w = x.shape[-2] // m * m, x.shape[-1] // m * m
    if h == 0 or w == 0:
        raise ValueError(f"image of size {tuple(x.shape[-2:])} is smaller than the prior's minimum {m}x{m}")
    return x[..., :h, :w]


def solve(req: SolveRequest, *, callback=None) -> dict:
    from .metrics import score
    from .prior import load as load_prior
    from .rng import make_generators
    from .samplers import restore
    from .samplers.registry import METHODS
    from .tasks import TaskOptions, get_task
    from .zoo import DEFAULT_PRIOR

    task = get_task(req.task)
    if not Path(req.image).is_file():
        raise ValueError(f"image not found: {req.image}")
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
    else:
        method = req.method or task.default_method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    if req.samples < 1:
        raise ValueError("--samples must be at least 1")
    if req.scale < 1:
        raise ValueError("--scale must be a positive integer")
    C = prior.channels or 3
    m = max(prior.multiple, req.scale if task.name == "sr" else 1)

    # ---- the images and the operator ----
    kernel = load_kernel_file(req.kernel) if req.kernel is not None else None
    if req.image.suffix.lower() == ".npy":
        if task.name != "phase-retrieval":
            raise ValueError(".npy measurements are Fourier magnitudes for --task phase-retrieval; give an image file")
        try:
            y = torch.from_numpy(np.load(req.image, allow_pickle=False).astype(np.float32))
        except (ValueError, OSError) as e:
            raise ValueError(f"cannot read {req.image}: {e}") from None
        y = y[None, None] if y.ndim == 2 else y[None]
        if not torch.isfinite(y).all():
            raise ValueError(f"{req.image} contains NaN or infinite values")
        alpha = None
    else:
        channels = 1 if (task.name == "colorize" and not req.simulate) else C
        y, alpha = read_image(req.image, channels=channels, with_alpha=True)
    if not torch.isfinite(y).all():
        raise ValueError(f"{req.image} contains NaN or infinite values")
    gens = make_generators(req.seed, 1)
    mask = req.mask
    if task.name == "inpaint":
        if mask not in ("box", "random", "freeform"):
            mask = load_mask_file(Path(mask))
        elif alpha is not None and not req.simulate:
            mask = alpha
    x_true = None
    if req.simulate:
        if task.name == "phase-retrieval" and req.image.suffix.lower() == ".npy":
            raise ValueError("--simulate needs a clean image, not a magnitude file")
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
                if mask.shape[-2:] != y.shape[-2:] and tuple(mask.shape[-2:]) != tuple(read_image(req.image).shape[-2:]):
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
    op = op.to(req.device)
    y = y.to(req.device)

    # ---- restore ----
    hp = {**task.hyper_parameters.get(method, {}), **req.hyper_parameters}
    t0 = time.perf_counter()
    res = restore(y, op, task.noise(opts), prior, method=method, steps=req.steps, samples=req.samples,
                  generator=make_generators(req.seed + 1, 1, req.device), callback=callback, batch_size=req.batch_size, **hp)
    seconds = time.perf_counter() - t0

    report = {"task": task.name, "method": method, "prior": prior_name, "palette": palette, "image": str(req.image),
              "simulate": req.simulate, "seed": req.seed, "samples": req.samples, "noise_sigma": sigma, "noise_scale": "[-1, 1]",
              "steps": req.steps, "hyper_parameters": getattr(res, "hyper_parameters", hp), "nfe": int(res.nfe),
              "vjps": int(getattr(res, "vjps", 0)), "seconds": round(seconds, 3), "device": req.device,
              "image_shape": list(res.mean.shape[1:]), "measurement_shape": list(y.shape[1:])}
    if x_true is not None:
        from .metrics import lpips_or_none

        lp = lpips_or_none(device=req.device)
        sc = score(res.mean, x_true, lpips_model=lp)
        report["metrics"] = {k: (float(v[0]) if v is not None else "unavailable") for k, v in sc.items()}
        if lp is None:
            report["metrics"]["lpips"] = "unavailable (AlexNet backbone not found; see invdiff.metrics)"
    report["files"] = _write_outputs(req, report, y, res, x_true)
    return report


def _write_outputs(req: SolveRequest, report: dict, y: Tensor, res, x_true: Tensor | None) -> dict:
    from .figures import display, error_map, magnitude_display, panels, std_display
    from .io import save_grid

    stem = req.image.stem
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=out))
    names = {"restored": f"{stem}_{req.task}_restored.png", "figure": f"{stem}_{req.task}_figure.png",
             "report": f"{stem}_{req.task}_report.json"}
    try:
        write_image(stage / names["restored"], res.mean[0])
        yshow = magnitude_display(y[0]) if req.task == "phase-retrieval" else y[0]
        meas = display(yshow, res.mean[0] if req.task != "phase-retrieval" else None)
        items = []
        if x_true is not None:
            items.append(("ground truth", display(x_true[0]), None))
        items.append(("measurement", meas, None))
        label = "restored" if req.samples == 1 else f"posterior mean (K={req.samples})"
        if x_true is not None and "metrics" in report:
            label += f"\nPSNR {report['metrics']['psnr']:.2f} dB"
        items.append((label, display(res.mean[0]), None))
        if x_true is not None:
            items.append(("|error|", error_map(res.mean[0], x_true[0]), "magma"))
        if req.samples > 1:
            items.append(("posterior std", std_display(res.std[0]), "viridis"))
            names["std"] = f"{stem}_{req.task}_std.png"
            names["samples"] = f"{stem}_{req.task}_samples.png"
            s = res.std[0]
            write_image(stage / names["std"], (s / s.max().clamp_min(1e-8)) * 2 - 1)
            save_grid(stage / names["samples"], res.samples[0], nrow=min(8, req.samples))
        panels(stage / names["figure"], items, title=f"{req.task} · {report['method']} · {report['prior']}")
        report["files"] = {k: str(out / v) for k, v in names.items()}
        (stage / names["report"]).write_text(json.dumps(report, indent=2, default=str) + "\n")
        for v in names.values():
            (stage / v).replace(out / v)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {k: str(out / v) for k, v in names.items()}


__all__ = ["SolveRequest", "solve", "load_kernel_file", "load_mask_file", "asdict"]
