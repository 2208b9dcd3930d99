"""The prior's network on overlapping tiles against the whole image (``invdiff.tiling``, ``EpsPrior.tiled``).

1. ε: on the natural suite's photos at 512×512, x_t = √ᾱ x + √(1−ᾱ) n at several t (noise from a seeded stream),
   the tiled ε against the whole image's: relative L2 difference, and the PSNR between the two x̂0.
2. End to end: ``invdiff solve --simulate`` (solve's default prior and the task's preset) on the same photos, with
   and without ``--tile``: PSNR against the truth, seconds.

    OMP_NUM_THREADS=1 python benchmarks/tiles.py --json benchmarks/tiles.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def eps_rows(prior, xs, names, tile: int, overlap: int, ts) -> list[dict]:
    from invdiff.metrics import psnr

    rows = []
    for i, name in enumerate(names):
        x = xs[i: i + 1]
        for t in ts:
            ac = prior.schedule.alphas_cumprod[t].to(x)
            n = torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 * i + t))
            x_t = ac.sqrt() * x + (1 - ac).sqrt() * n
            with torch.no_grad():
                whole = prior.tiled(None).eps(x_t, t)
                tiled = prior.tiled(tile, overlap).eps(x_t, t)
            prior.tiled(None)
            x0w, x0t = prior.x0_from_eps(x_t, t, whole), prior.x0_from_eps(x_t, t, tiled)
            rows.append({"photo": name, "t": t, "tile": tile, "overlap": overlap,
                         "eps_relative_difference": float((tiled - whole).norm() / whole.norm()),
                         "x0_psnr_tiled_vs_whole": float(psnr(x0t.clamp(-1, 1), x0w.clamp(-1, 1))[0])})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def solve_rows(paths, task: str, tile: int) -> list[dict]:
    rows = []
    for p in paths:
        for arm in (None, tile):
            with tempfile.TemporaryDirectory() as out:
                cmd = [str(Path(sys.executable).parent / "invdiff"), "solve", "--simulate", "--task", task, str(p), "--out", out,
                       "--quiet", "--json"] + (["--tile", str(arm)] if arm else [])
                t0 = time.perf_counter()
                rep = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            rows.append({"photo": p.stem, "task": task, "tile": arm, "psnr": rep["metrics"]["psnr"],
                         "ssim": rep["metrics"]["ssim"], "seconds": round(time.perf_counter() - t0, 1),
                         "tiles": rep.get("tiles")})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    from invdiff.data import VALIDATION_PHOTOS, validation_photos
    from invdiff.io import write_image
    from invdiff.prior import load
    from invdiff.zoo import default_prior

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlaps", type=int, nargs="*", default=[32, 64])
    ap.add_argument("--t", type=int, nargs="+", default=[50, 200, 500, 900])
    ap.add_argument("--tasks", nargs="+", default=["deblur"])
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    names = list(VALIDATION_PHOTOS[: a.photos])
    xs = validation_photos(a.size, tuple(names))
    prior = load(default_prior())
    out = json.loads(a.json.read_text()) if a.json.is_file() else {"prior": default_prior(), "size": a.size, "eps": [],
                                                                   "solve": []}
    for o in a.overlaps:
        out["eps"] += eps_rows(prior, xs, names, a.tile, o, a.t)
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, n in enumerate(names):
            paths.append(Path(d) / f"{n}.png")
            write_image(paths[-1], xs[i: i + 1])
        for task in a.tasks:
            out["solve"] += solve_rows(paths, task, a.tile)
            a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
