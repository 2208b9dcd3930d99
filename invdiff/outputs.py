"""The files one restoration writes: their names, the refusal to overwrite, and the atomic write of all of them.

Outputs (restored image, figure, JSON report, with K>1 the std map and samples, an estimated kernel, and on
request the measurement) are rendered into a staging folder inside ``out`` and moved into place together at the
end, so an interrupted run leaves nothing half-written; a staging folder whose process is gone is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from torch import Tensor

from .io import write_image

STAGING_PREFIX = ".invdiff-staging-"


def output_names(image: Path, task: str, *, samples: int = 1, save_measurement: bool = False,
                 kernel: bool = False) -> dict[str, str]:
    stem = Path(image).stem
    names = {"restored": f"{stem}_{task}_restored.png", "figure": f"{stem}_{task}_figure.png",
             "report": f"{stem}_{task}_report.json"}
    if samples > 1:
        names["std"] = f"{stem}_{task}_std.png"
        names["samples"] = f"{stem}_{task}_samples.png"
    if save_measurement:
        names["measurement"] = f"{stem}_{task}_measurement.png"
        names["measurement_array"] = f"{stem}_{task}_measurement.npy"
    if kernel:
        names["kernel"] = f"{stem}_{task}_kernel.npy"
        names["kernel_image"] = f"{stem}_{task}_kernel.png"
    return names


def existing_output(out: Path, names: dict[str, str], image: Path, task: str) -> str | None:
    """The first output already in ``out``, described (and whose image it was written for, when another), or None."""
    for v in names.values():
        f = Path(out) / v
        if f.exists():
            src = ""
            try:
                prev = json.loads((Path(out) / names["report"]).read_text()).get("image")
                if prev and Path(prev).name != Path(image).name:
                    src = f" (written for {prev}, another image with the same name stem)"
            except (OSError, ValueError, AttributeError):
                pass
            return f"{f} already exists{src}"
    return None


def finished(out: Path, names: dict[str, str], image: Path) -> bool:
    """Every output of this image is in ``out`` and its report names this image: a rerun skips it."""
    if not all((Path(out) / v).is_file() for v in names.values()):
        return False
    try:
        prev = json.loads((Path(out) / names["report"]).read_text()).get("image")
    except (OSError, ValueError, AttributeError):
        return False
    return prev is not None and Path(prev).resolve() == Path(image).resolve()


def check_output(out: Path, names: dict[str, str], image: Path, task: str, *, overwrite: bool) -> None:
    """Before any work: ``out`` is (or can be made) a writable folder, and no output there would be overwritten
    unless ``overwrite`` (two images with the same stem, photo.png and photo.jpg, would write the same names)."""
    from .io import check_out_folder

    out = Path(out)
    check_out_folder(out)
    if out.is_dir() and not overwrite:
        msg = existing_output(out, names, image, task)
        if msg:
            raise ValueError(f"{msg}: pass --overwrite to replace it, or choose another --out")


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
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _figure_items(report: dict, y_show: Tensor, res, x_true, mask, kernel, samples: int, true_kernel=None) -> list:
    from .figures import display, error_map, kernel_display, outlined, std_display

    items = []
    if x_true is not None:
        items.append(("ground truth", display(x_true[0]), None))
    shown = display(y_show, res.mean[0] if report.get("measurement_kind") == "image" else None)
    region = report.get("degradation", {}).get("kernel", {}).get("region")
    if region is not None and tuple(region[2:]) != shown.shape[:2]:  # the window the kernel was estimated from
        items.append(("measurement (kernel estimated in the box)", outlined(shown, region), None))
    else:
        items.append(("measurement", shown, None))
    if isinstance(mask, Tensor):
        items.append((f"mask (white = observed, {report['degradation']['mask']['source']})",
                      display(mask[0, :1].float() * 2 - 1, res.mean[0]), None))
    elif isinstance(kernel, Tensor):
        src = report["degradation"].get("kernel", {}).get("source", "")
        kk = kernel.reshape(-1, *kernel.shape[-2:])
        label = f"kernel {kk.shape[-2]}x{kk.shape[-1]}" + (f" ({src})" if src else "")
        items.append((label, kernel_display(kk[kk.shape[0] // 2]), "gray"))
        if isinstance(true_kernel, Tensor):  # simulate --blind: the kernel the estimate was hidden from
            items.append(("true kernel (hidden from the solver)", kernel_display(true_kernel), "gray"))
    label = "restored" if samples == 1 else f"posterior mean (K={samples})"
    if samples > 1 and "selection" in report:  # one of the K samples, not their mean
        sel = report["selection"]
        label = f"sample {sel['chosen'] + 1} of {samples}, " + ("nearest their mean" if "distances" in sel else "least residual")
    if "metrics" in report:
        label += f"\nPSNR {report['metrics']['psnr']:.2f} dB"
    items.append((label, display(res.mean[0]), None))
    if x_true is not None:
        items.append(("|error|", error_map(res.mean[0], x_true[0]), "magma"))
    if samples > 1:
        items.append(("posterior std", std_display(res.std[0]), "viridis"))
    return items


def _write_files(stage: Path, names: dict, report: dict, y: Tensor, y_show: Tensor, res, mask, kernel, bits: int) -> None:
    from .io import save_grid

    write_image(stage / names["restored"], res.mean[0], bits=bits)
    if "std" in names:
        s = res.std[0]
        write_image(stage / names["std"], (s / s.max().clamp_min(1e-8)) * 2 - 1)
        save_grid(stage / names["samples"], res.samples[0], nrow=min(8, res.samples.shape[1]))
    if "measurement" in names:
        np.save(stage / names["measurement_array"], y[0].detach().cpu().numpy())
        write_image(stage / names["measurement"], y_show.clamp(-1, 1))
        if isinstance(mask, Tensor):
            names["mask"] = names["measurement"].replace("_measurement.png", "_mask.png")
            write_image(stage / names["mask"], mask[0, :1].detach().cpu().float() * 2 - 1)
        if isinstance(kernel, Tensor) and "kernel" not in names:
            names["kernel"] = names["measurement"].replace("_measurement.png", "_kernel.npy")
    if isinstance(kernel, Tensor) and "kernel" in names:
        k = kernel.detach().cpu().float()
        k = k[0] if k.ndim >= 3 else k  # the first image's kernel (a field: its G·G kernels)
        np.save(stage / names["kernel"], k.numpy())
        if "kernel_image" in names:
            k2 = k.reshape(-1, *k.shape[-2:])[0]
            write_image(stage / names["kernel_image"], (k2 / k2.max().clamp_min(1e-12))[None] * 2 - 1)


def write_outputs(out: Path, names: dict, report: dict, *, y: Tensor, y_show: Tensor, res, x_true: Tensor | None,
                  mask=None, kernel=None, bits: int = 8, overwrite: bool = False, title: str = "",
                  true_kernel=None) -> dict:
    """Render every output into a staging folder, then move them all into ``out``; returns {kind: path}."""
    from .figures import panels

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out)
    check_output(out, names, Path(report["image"]), report["task"], overwrite=overwrite)  # again: another run may
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))  # have written them meanwhile
    names = dict(names)
    try:
        _write_files(stage, names, report, y, y_show, res, mask, kernel, bits)
        items = _figure_items(report, y_show, res, x_true, mask, kernel, res.samples.shape[1], true_kernel)
        panels(stage / names["figure"], items, title=title)
        report["files"] = {k: str(out / v) for k, v in names.items()}
        (stage / names["report"]).write_text(json.dumps(report, indent=2, default=str) + "\n")
        for v in names.values():
            (stage / v).replace(out / v)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {k: str(out / v) for k, v in names.items()}


__all__ = ["STAGING_PREFIX", "check_output", "clean_stale_staging", "existing_output", "finished", "output_names",
           "write_outputs"]
