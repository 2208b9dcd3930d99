"""Blind motion kernels estimated from a window of a large photo instead of the whole of it.

A blur that is the same over the photo is pinned down by a part of it, and the estimate and the kernel EM cost the
area they work on (on a 2-core CPU about 2.5 minutes for a 256×256 photo, ten for 512×512). For each photo, motion
kernel and noise σ (the motion-deblur task's own 61×61 kernels 0-2 and noise streams, as benchmarks/blind_motion.py
draws them, on the photo at its own size), the kernel is estimated from the whole photo and from windows of side
``--sizes`` placed by each rule of ``invdiff.blind.REGION_RULES`` (``invdiff.blind.estimate_region``):

- ``--stage classical``: the first (classical) estimate only: kernel error (``kernel_error``) and seconds;
- ``--stage em``: what solve runs: the estimate, the blind preset's kernel EM on the same window (E-step: the blind
  variant's restoration of the window), then the final restoration of the whole photo with the refined kernel
  (aligned to the true one by the best integer shift, as the suite aligns), scored plainly and shift-aligned.

Splits: ``large``, the declared tuning split of this choice: eight of the prior's training photos (the six of the
blind estimator's hard split and two ordinary ones) at a short side of 768 (data/natural768, built by
``scripts/build_natural_data.py --out data/natural768 --short-side 768``; two opencv-doc photos are 512 px), the
centre square cut; ``validation``, the natural suite's photos (scikit-image) at their own size (cut to multiples of 8), for the report.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/blind_region.py --split large --stage classical \\
        --json benchmarks/blind/region_classical_large.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from blind_motion import HARD_PHOTOS, aligned, blurred, final_restoration, _diffpir

#: the declared tuning split: the hard split's six training photos and two ordinary ones, named before any run
LARGE_PHOTOS = (*HARD_PHOTOS, "lomiri-Bridge", "mate-Garden")
LARGE_SIDE = 768


def photos(split: str) -> list[tuple[str, torch.Tensor]]:
    from invdiff.data import VALIDATION_PHOTOS, center_crop_resize
    from invdiff.io import read_image

    if split == "validation":
        import skimage.data

        out = []
        for n in VALIDATION_PHOTOS:
            a = np.asarray(getattr(skimage.data, n)(), dtype=np.float32)
            a = np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3]
            x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None] / 127.5 - 1
            out.append((n, x[..., : x.shape[-2] // 8 * 8, : x.shape[-1] // 8 * 8]))  # the prior's multiple
        return out
    folder = Path(__file__).resolve().parents[1] / "data" / "natural768"
    if not folder.is_dir():
        raise SystemExit("no large training photos: run `python scripts/build_natural_data.py --out data/natural768 "
                         "--short-side 768` first")
    out = []
    for n in LARGE_PHOTOS:
        x = read_image(folder / f"{n}.png", channels=3)
        out.append((n, center_crop_resize(x, min(LARGE_SIDE, *x.shape[-2:]))))
    return out


def window(y: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
    t, l, h, w = region
    return y[..., t: t + h, l: l + w]


def classical_row(y, k_true, s: float, kp, region) -> dict:
    from invdiff.blind import estimate_motion_kernel, kernel_error

    t0 = time.perf_counter()
    k = estimate_motion_kernel(window(y, region), None, s, kernel_size=61, kernel_prior=kp).kernel
    return {"kernel_error": round(kernel_error(k, k_true), 4), "seconds": round(time.perf_counter() - t0, 2)}, k


def em_row(x, y, k_true, s: float, i: int, prior, kp, region, final: bool = True) -> dict:
    """solve's blind pipeline with the estimate and the EM on ``region``, the final restoration on the whole y
    (``final``; without it only the refined kernel's error)."""
    from invdiff.blind import refine_kernel_em, kernel_error
    from invdiff.tasks import solve_preset

    row, k = classical_row(y, k_true, s, kp, region)
    row["kernel_error_classical"] = row.pop("kernel_error")
    pre = solve_preset("motion-deblur").variants["blind"]
    yw = window(y, region)

    def e_step(kk, refit=None):
        return _diffpir(yw, kk, s, i, prior, pre, None, purpose="kernel-em", refit=refit,
                        samples=pre.kernel_em_samples)

    t0 = time.perf_counter()
    k, _ = refine_kernel_em(yw, k, e_step, pre.kernel_em, prior=kp, per_step=pre.kernel_em_per_step,
                            prior_rounds=pre.kernel_em_prior_rounds)
    row["em_seconds"] = round(time.perf_counter() - t0, 2)
    row["kernel_error"] = round(kernel_error(k, k_true), 4)
    if final:
        row.update(final_restoration(x, y, aligned(k, k_true), s, i, prior, pre.kernel_em, None))
    return row


def regions(y, sizes, rules, multiple: int) -> dict[str, tuple[int, int, int, int]]:
    from invdiff.blind import estimate_region

    H, W = y.shape[-2:]
    out = {"whole": (0, 0, H, W)}
    for size in sizes:
        for rule in rules:
            r = estimate_region(y, size, multiple=multiple, rule=rule)
            if r[2:] != (H, W):
                out[f"{rule}-{size}"] = r
    return out


def main() -> None:
    from invdiff.measured import kernel_prior_for
    from invdiff.prior import load
    from invdiff.tasks import get_task, solve_preset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("large", "validation"), default="large")
    ap.add_argument("--stage", choices=("classical", "em"), default="classical")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 384])
    ap.add_argument("--rules", nargs="+", default=["edges", "centre"])
    ap.add_argument("--arms", nargs="+", default=None, help="only these arms (whole, <rule>-<size>)")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.02])
    ap.add_argument("--kernels", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--photos", type=int, nargs=2, default=(0, None), metavar=("FIRST", "END"),
                    help="photos FIRST..END-1 of the split (for parts run side by side)")
    ap.add_argument("--kernel-of-photo", action="store_true",
                    help="photo i gets only kernel i mod 3 (the three kernels over the photos at a third of the cost)")
    ap.add_argument("--min-side", type=int, default=0, help="only photos whose shorter side is at least this")
    ap.add_argument("--no-final", action="store_true", help="--stage em: the refined kernel's error only")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--against", default="whole", help="the arm the summary pairs the others with")
    a = ap.parse_args()
    kp, _ = kernel_prior_for(get_task("motion-deblur"), solve_preset("motion-deblur"))
    prior = load("natural64") if a.stage == "em" else None
    rows = json.loads(a.json.read_text()) if a.json.is_file() else []
    done = {(r["photo"], r["kernel"], r["noise_sigma"], r["arm"]) for r in rows}
    for i, (name, x) in list(enumerate(photos(a.split)))[a.photos[0]: a.photos[1]]:
        if min(x.shape[-2:]) < a.min_side:
            continue
        for j in ([i % 3] if a.kernel_of_photo else a.kernels):
            for s in a.noise:
                _, y, k_true = blurred(x, i, j, s)
                for arm, region in regions(y, a.sizes, a.rules, 8).items():
                    if (a.arms and arm not in a.arms) or (name, j, s, arm) in done:
                        continue
                    row = ({"photo": name, "kernel": j, "noise_sigma": s, "arm": arm, "region": list(region),
                            "size": list(y.shape[-2:])})
                    if a.stage == "classical":
                        row.update(classical_row(y, k_true, s, kp, region)[0])
                    else:
                        row.update(em_row(x, y, k_true, s, i, prior, kp, region, not a.no_final))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    a.json.write_text(json.dumps(rows, indent=1) + "\n")
    summary(rows, a.against)


def summary(rows: list[dict], against: str = "whole") -> None:
    """Per arm: cases, mean kernel error (and the first estimate's, after EM), seconds, and the paired change of
    the kernel error from arm ``against`` (mean ± standard error over the cases both have)."""
    arms = sorted({r["arm"] for r in rows}, key=lambda a: (a != against, a))
    base = {(r["photo"], r["kernel"], r["noise_sigma"]): r for r in rows if r["arm"] == against}
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        d = [r["kernel_error"] - base[(r["photo"], r["kernel"], r["noise_sigma"])]["kernel_error"]
             for r in rs if (r["photo"], r["kernel"], r["noise_sigma"]) in base]
        line = f"{arm:12s} n={len(rs):3d} error {np.mean([r['kernel_error'] for r in rs]):.3f}"
        if "kernel_error_classical" in rs[0]:
            line += (f" (first estimate {np.mean([r['kernel_error_classical'] for r in rs]):.3f}, EM seconds "
                     f"{np.mean([r['em_seconds'] for r in rs]):.0f})")
        line += f" seconds {np.mean([r['seconds'] for r in rs]):.1f}"
        if len(d) > 1 and arm != against:
            line += f"  vs {against} {np.mean(d):+.3f} ± {np.std(d, ddof=1) / np.sqrt(len(d)):.3f}"
        print(line)


if __name__ == "__main__":
    main()
