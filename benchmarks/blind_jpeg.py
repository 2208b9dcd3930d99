"""Blind Gaussian deblurring of photos that arrive as JPEGs (``invdiff.blind.estimate_gaussian_blur``), and the
noise level that lossy files (JPEG, lossy WebP: ``--codec``) need.

A measured photo is most often a JPEG. Its quantisation removes most of the noise above the blur's cut-off and
leaves a residual that falls off with frequency, so the spectral estimator's white-noise floor does not hold.

1. ``estimates``: the split's photos at 256×256, blurred (Gaussian σ_b ∈ {0, 1, 1.5, 2, 3}, reflect), noisy (σ ∈
   {0.01, 0.03} on [-1, 1], seeded), saved as PNG or JPEG (quality 95, 85, 75; Pillow's defaults otherwise) and
   read back as solve reads them (``--codec WEBP``: lossy WebP); the spectral estimate (noise level from the file, as solve estimates it) and
   the edge estimate for a grid of its re-blur σ₀ and share of edges; the absolute error in σ_b.
2. ``noise``: deblurring lossy files (quality 75, 90, 95; σ_b = 2, noise 0.02) with the true blur given, the
   noise level as the file's white-noise estimate alone, with the quantisation's error added
   (``compression_sigma``'s two rules), the true noise, or the file's actual RMS error against the blurred photo
   (``oracle``): which level the restoration needs.
3. ``tasks``: SR ×4 and denoising of lossy files (quality 90, noise 0.02) through ``solve``, the noise level
   before (the white estimate) and now (with the quantisation's error). ``inpaint``: inpainting them (box and 70 %
   random masks given as files) with the noise level given as each rule, and as the file's actual error.
   ``motion``: blind motion deblurring through ``solve`` of the same photo as PNG and as a lossy file;
   ``true-noise --task T``: lossy files of motion deblurring (``motion-noise``), non-uniform deblurring or
   colourisation, restored with the true degradation given, the noise level as each rule.
4. ``restore``: end to end through ``solve`` (measured mode, the default prior and the deblurring preset) on lossy
   files of quality 90 (σ_b ∈ {1.5, 3}, noise 0.02): the blur given as each estimate, or as the truth, the noise
   level as solve now sets it (the white estimate and the quantisation's error); ``before``: the spectral estimate
   and the white estimate alone, as solve ran a lossy file before; PSNR against the clean photo.

    OMP_NUM_THREADS=1 python benchmarks/blind_jpeg.py estimates --split tuning --json benchmarks/blind/jpeg_tuning.json
    OMP_NUM_THREADS=1 python benchmarks/blind_jpeg.py restore --split suite --json benchmarks/blind/jpeg_restore_suite.json
    OMP_NUM_THREADS=1 python benchmarks/blind_jpeg.py noise --codec WEBP --split tuning --json benchmarks/blind/webp_noise_tuning.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

BLURS = (0.0, 1.0, 1.5, 2.0, 3.0)
NOISES = (0.01, 0.03)
QUALITIES = (None, 95, 85, 75)  # None: PNG
SUFFIXES = {"JPEG": "jpg", "WEBP": "webp"}
GRID = [(r, s) for r in (1.0, 2.0, 3.0) for s in (0.05, 0.1, 0.3)]


def measured_file(x: torch.Tensor, blur: float, noise: float, seed: int, quality: int | None,
                  codec: str = "JPEG") -> bytes:
    """The bytes of the photo x (1, 3, H, W) blurred, noised and saved as PNG (quality None) or ``codec`` (JPEG,
    WEBP: lossy) at that quality."""
    y = _blurred(x, blur)
    return _encoded(y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)), quality, codec)


def _blurred(x: torch.Tensor, blur: float) -> torch.Tensor:
    from invdiff import operators as ops

    return ops.Blur(ops.gaussian_kernel(2 * math.ceil(3 * blur) + 1, blur), padding="reflect")(x) if blur > 0 else x


def _true_case(x, i: int, task: str, kernel: int, tmp: str):
    """(y before saving, the solve keywords that give the true degradation) of photo i for ``task``, noise 0.02:
    motion: ``blind_motion.py``'s kernel; nonuniform: the task's camera shake from the stream of (i, kernel), given
    as a kernel field file (G·G, kh, kw); colorize: the grey image, nothing to give."""
    from blind_motion import blurred

    from invdiff.rng import make_generators
    from invdiff.tasks import TaskOptions, get_task

    if task == "motion-deblur":
        _, y, k = blurred(x, i, kernel, 0.02)
    else:
        t, opts = get_task(task), TaskOptions(noise_sigma=0.02)
        op = t.operator(x.shape, opts, generator=make_generators(0, 1, purpose=f"lossy-{task}", start=3 * i + kernel))
        with torch.no_grad():
            y = t.noise(opts)(op(x), generator=make_generators(0, 1, purpose=f"lossy-{task}-noise", start=3 * i + kernel))
        if task == "colorize":
            return y, {}
        k = op.kernels[0]
    np.save(Path(tmp) / "k.npy", k.numpy())
    return y, {"kernel": Path(tmp) / "k.npy"}


def true_noise_rows(xs, names, quality: int = 90, codec: str = "JPEG", kernel: int = 0,
                    task: str = "motion-deblur", only: tuple[str, ...] = ()) -> list[dict]:
    """A task's lossy files restored with the true degradation given (``_true_case``; noise 0.02 before saving):
    the noise level as the white estimate alone (what the ``reported`` rule uses), the true noise, or with the
    quantisation's error (both rules); ``only``: these of the arms."""
    from invdiff.io import compression_sigma
    from invdiff.metrics import psnr
    from noise_estimate import score_arms

    rows = []
    for i, name in enumerate(names):
        x = xs[i: i + 1]
        with tempfile.TemporaryDirectory() as tmp:
            y0, given = _true_case(x, i, task, kernel, tmp)
            path, y, s = _jpeg(tmp, name, _encoded(y0, quality, codec), codec)
            arms = {"white": s, "truth": 0.02, **{r: math.hypot(s, compression_sigma(path, r)) for r in ("luma", "rgb")}}
            arms = {a: v for a, v in arms.items() if not only or a in only}
            scores = score_arms(path, x, task, {a: {**given, "noise_sigma": v} for a, v in arms.items()})
            blurry = psnr(y.expand_as(x), x)[0]
            rows.append(_row({"photo": name, "task": task, "kernel": kernel, "noise": 0.02, "quality": quality,
                              "blurry": round(float(blurry), 3)}, scores, arms))
    return rows


def _encoded(y: torch.Tensor, quality: int | None, codec: str) -> bytes:
    """The bytes of the image y (1, 3, H, W) in 8 bits as PNG (quality None) or ``codec`` at that quality."""
    from PIL import Image

    a = ((y.clamp(-1, 1) + 1) / 2 * 255).round().byte()[0].permute(1, 2, 0).numpy()
    a = a[..., 0] if a.shape[-1] == 1 else a
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG" if quality is None else codec, **({} if quality is None else {"quality": quality}))
    return buf.getvalue()


def _read(data: bytes, suffix: str) -> torch.Tensor:
    from invdiff.io import read_image

    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        return read_image(f.name)


def estimates(xs, names, codec: str = "JPEG") -> dict:
    from invdiff.blind import edge_blur_sigma, estimate_gaussian_blur
    from invdiff.io import estimate_noise_sigma

    rows = []
    for i, name in enumerate(names):
        for b, blur in enumerate(BLURS):
            for n, noise in enumerate(NOISES):
                for q in QUALITIES:
                    data = measured_file(xs[i: i + 1], blur, noise, 1000 * i + 10 * b + n, q, codec)
                    y = _read(data, ".png" if q is None else "." + SUFFIXES[codec])
                    s = estimate_noise_sigma(y)
                    row = {"photo": name, "blur": blur, "noise": noise, "quality": q, "noise_estimate": round(s, 5),
                           "spectrum": estimate_gaussian_blur(y, s).blur_sigma}
                    for r, share in GRID:
                        row[f"edges_{r}_{share}"] = round(edge_blur_sigma(y, r, share)[0], 4)
                    rows.append(row)
        print(name, flush=True)
    keys = ["spectrum", *[f"edges_{r}_{s}" for r, s in GRID]]
    summary = {}
    for q in (*QUALITIES, "lossy"):
        sel = [r for r in rows if r["quality"] == q or (q == "lossy" and r["quality"] is not None)]
        summary[str(q)] = {k: {"mae": round(float(np.mean([abs(r[k] - r["blur"]) for r in sel])), 4),
                               "by_blur": [round(float(np.mean([r[k] for r in sel if r["blur"] == bl])), 3) for bl in BLURS]}
                           for k in keys}
        print(q, {k: v["mae"] for k, v in summary[str(q)].items()}, flush=True)
    return {"rows": rows, "summary": summary}


def _jpeg(tmp: str, name: str, data: bytes, codec: str = "JPEG"):
    """The file's path in the folder tmp, and its pixels and white-noise estimate as solve reads them."""
    from invdiff.io import estimate_noise_sigma, read_image

    path = Path(tmp) / f"{name}.{SUFFIXES[codec]}"
    path.write_bytes(data)
    y = read_image(path)
    return path, y, estimate_noise_sigma(y)


def _row(row: dict, scores: dict, sigmas: dict) -> dict:
    row.update(noise_level={a: v[0] for a, v in scores.items()}, psnr={a: v[1] for a, v in scores.items()},
               sigma={a: round(v, 5) for a, v in sigmas.items()})
    print(json.dumps(row), flush=True)
    return row


def restore_rows(xs, names, quality: int = 90, codec: str = "JPEG", shrinks: tuple[float, ...] = ()) -> list[dict]:
    """``restore`` mode; ``shrinks``: the edge estimate's arms times each factor (``edges_F``) beside it and the
    truth, instead of the spectral ones."""
    from invdiff.blind import estimate_gaussian_blur
    from invdiff.metrics import psnr
    from noise_estimate import score_arms

    rows = []
    for i, name in enumerate(names):
        for b, blur in enumerate((1.5, 3.0)):
            with tempfile.TemporaryDirectory() as tmp:
                path, y, s = _jpeg(tmp, name, measured_file(xs[i: i + 1], blur, 0.02, 1000 * i + b, quality, codec), codec)
                spectrum = estimate_gaussian_blur(y, s).blur_sigma
                arms = {"before": (spectrum, s), "spectrum": (spectrum, None),
                        "edges": (estimate_gaussian_blur(y, s, method="edges").blur_sigma, None), "truth": (blur, None)}
                arms.update({f"edges_{f:g}": (arms["edges"][0] * f, None) for f in shrinks})
                if shrinks:  # the shrink comparison: the edge estimate's arms and the truth only
                    arms = {a: v for a, v in arms.items() if a.startswith("edges") or a == "truth"}
                scores = score_arms(path, xs[i: i + 1], "deblur", {a: {"blur_sigma": max(sig, 0.05), "noise_sigma": n}
                                                                   for a, (sig, n) in arms.items()})
                rows.append(_row({"photo": name, "blur": blur, "noise": 0.02, "quality": quality, "noise_estimate": round(s, 5),
                                  "blurry": round(float(psnr(y, xs[i: i + 1])[0]), 3)}, scores,
                                 {a: v[0] for a, v in arms.items()}))
    return rows


def noise_rows(xs, names, qualities=(75, 90, 95), blur: float = 2.0, codec: str = "JPEG") -> list[dict]:
    """Deblurring JPEGs with the true blur given: the noise level as the white-noise estimate alone, or with the
    quantisation's error added in quadrature (``invdiff.io.compression_sigma``, both rules), or the true noise."""
    from invdiff.io import compression_sigma
    from invdiff.metrics import psnr
    from noise_estimate import score_arms

    rows = []
    for i, name in enumerate(names):
        for q in qualities:
            with tempfile.TemporaryDirectory() as tmp:
                path, y, s = _jpeg(tmp, name, measured_file(xs[i: i + 1], blur, 0.02, 1000 * i + q, q, codec), codec)
                arms = {"white": s, "truth": 0.02, **{r: math.hypot(s, compression_sigma(path, r)) for r in ("luma", "rgb")},
                        "oracle": float((y - _blurred(xs[i: i + 1], blur)).pow(2).mean().sqrt())}
                scores = score_arms(path, xs[i: i + 1], "deblur", {a: {"blur_sigma": blur, "noise_sigma": v}
                                                                   for a, v in arms.items()})
                rows.append(_row({"photo": name, "blur": blur, "noise": 0.02, "quality": q,
                                  "blurry": round(float(psnr(y, xs[i: i + 1])[0]), 3)}, scores, arms))
    return rows


def task_rows(xs, names, quality: int = 90, codec: str = "JPEG") -> list[dict]:
    """SR ×4 and denoising of lossy files (noise 0.02 before saving) through ``solve``: the noise level as the white
    estimate alone (``before``) or as solve now sets it (with the quantisation's error, ``now``)."""
    from invdiff.rng import make_generators
    from invdiff.tasks import TaskOptions, get_task
    from noise_estimate import score_arms

    rows = []
    for task in ("sr", "denoise"):
        for i, name in enumerate(names):
            x = xs[i: i + 1]
            y0 = get_task("sr").operator(x.shape, TaskOptions(), generator=make_generators(0, 1))(x) if task == "sr" else x
            with tempfile.TemporaryDirectory() as tmp:
                path, _, white = _jpeg(tmp, name, measured_file(y0, 0.0, 0.02, 2000 * i + len(task), quality, codec), codec)
                scores = score_arms(path, x, task, {"before": {"noise_sigma": white}, "now": {"noise_sigma": None}})
                rows.append(_row({"photo": name, "task": task, "quality": quality}, scores,
                                 {a: v[0] for a, v in scores.items()}))
    return rows


def _mask_file(tmp: str, shape, kind: str, seed: int) -> str:
    """The task's simulated mask of this kind (box, random) written as a mask image (white = observed)."""
    from invdiff.io import write_image
    from invdiff.rng import make_generators
    from invdiff.tasks import TaskOptions, get_task

    op = get_task("inpaint").operator(shape, TaskOptions(mask=kind), generator=make_generators(seed, 1))
    path = Path(tmp) / f"mask_{kind}.png"
    write_image(path, op.mask[:, :1] * 2 - 1)
    return str(path)


def inpaint_rows(xs, names, quality: int = 90, codec: str = "JPEG") -> list[dict]:
    """Inpainting lossy files (the photo whole in the file, noise 0.02 before saving, as a photo with something to
    remove arrives; a 70 % random mask and a box given as files) through ``solve``, the noise level given as: the
    white estimate, 0.01, 0.02, the white estimate with the quantisation's error (both rules), or the file's actual
    RMS error against the clean photo (``oracle``)."""
    from invdiff.io import compression_sigma
    from noise_estimate import score_arms

    rows = []
    for kind in ("random", "box"):
        for i, name in enumerate(names):
            x = xs[i: i + 1]
            with tempfile.TemporaryDirectory() as tmp:
                data = measured_file(x, 0.0, 0.02, 2000 * i + len("inpaint-" + kind), quality, codec)
                path, y, white = _jpeg(tmp, name, data, codec)
                arms = {"white": white, "0.01": 0.01, "0.02": 0.02, "oracle": float((y - x).pow(2).mean().sqrt()),
                        **{r: math.hypot(white, compression_sigma(path, r)) for r in ("luma", "rgb")}}
                mask = _mask_file(tmp, x.shape, kind, i)
                scores = score_arms(path, x, "inpaint", {a: {"noise_sigma": v, "mask": mask} for a, v in arms.items()})
                rows.append(_row({"photo": name, "mask": kind, "quality": quality}, scores, arms))
    return rows


def motion_rows(xs, names, quality: int = 90, codec: str = "JPEG", kernels=(0,), png: bool = True) -> list[dict]:
    """Blind motion deblurring through ``solve`` of the same blurred photo saved as PNG and as a lossy file
    (``blind_motion.py``'s kernels, hidden from the solver; noise 0.02), against the true kernel given: PSNR plainly
    and after the best sub-pixel shift (a blind kernel is known up to a translation)."""
    from blind_motion import blurred

    from invdiff.io import read_image, write_image
    from invdiff.metrics import psnr, psnr_upto_shift
    from invdiff.solve import SolveRequest, solve

    rows = []
    for j in kernels:
        for i, name in enumerate(names):
            x = xs[i: i + 1]
            _, y, k_true = blurred(x, i, j, 0.02)
            row = {"photo": name, "kernel": j, "noise": 0.02, "quality": quality, "psnr": {}, "psnr_shift": {}}
            with tempfile.TemporaryDirectory() as tmp:
                np.save(Path(tmp) / "k.npy", k_true.numpy())
                files = {"png": write_image(Path(tmp) / f"{name}.png", y)}
                files["lossy"] = Path(tmp) / f"{name}.{SUFFIXES[codec]}"
                files["lossy"].write_bytes(_encoded(read_image(files["png"]), quality, codec))
                if not png:  # the lossy file only (the PNG's restorations do not depend on the lossy files' rules)
                    files.pop("png")
                for f, path in files.items():
                    for arm, kw in (("blind", {}), ("true", {"kernel": Path(tmp) / "k.npy"})):
                        rep = solve(SolveRequest(image=path, task="motion-deblur", out=Path(tmp) / f"{f}_{arm}", **kw))
                        x_hat = read_image(rep["files"]["restored"], channels=3)
                        row["psnr"][f"{f}_{arm}"] = round(float(psnr(x_hat, x)[0]), 3)
                        row["psnr_shift"][f"{f}_{arm}"] = round(float(psnr_upto_shift(x_hat, x)[0]), 3)
                row["blurry"] = {f: round(float(psnr(read_image(p, channels=3), x)[0]), 3) for f, p in files.items()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from blind_motion import _photos

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("estimates", "restore", "noise", "tasks", "inpaint", "motion", "motion-noise", "true-noise"))
    ap.add_argument("--task", choices=("motion-deblur", "nonuniform-deblur", "colorize"), default="motion-deblur",
                    help="true-noise: the task whose lossy files are restored with the true degradation")
    ap.add_argument("--split", choices=("tuning", "suite"), default="tuning")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--codec", choices=tuple(SUFFIXES), default="JPEG", help="the lossy files' format")
    ap.add_argument("--arms", nargs="*", default=[], help="true-noise: run only these arms (white, truth, luma, rgb)")
    ap.add_argument("--shrink", type=float, nargs="*", default=[], help="restore: arms with the edge estimate times F")
    ap.add_argument("--lossy-only", action="store_true", help="motion: restore only the lossy file")
    a = ap.parse_args()
    torch.set_num_threads(1)
    xs, names = _photos(a.split, 6)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    if a.mode == "estimates":
        body = estimates(xs, names, a.codec)
    else:
        modes = {"restore": restore_rows, "noise": noise_rows, "tasks": task_rows, "inpaint": inpaint_rows,
                 "motion": motion_rows, "motion-noise": true_noise_rows, "true-noise": true_noise_rows}
        extra = {"motion": {"png": not a.lossy_only}, "true-noise": {"task": a.task, "only": tuple(a.arms)},
                 "restore": {"shrinks": tuple(a.shrink)}}.get(a.mode, {})
        body = {"rows": modes[a.mode](xs, names, codec=a.codec, **extra)}
    a.json.write_text(json.dumps({"split": a.split, "codec": a.codec, "names": names, **body}, indent=1) + "\n")


if __name__ == "__main__":
    main()
