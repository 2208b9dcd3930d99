"""Wall time of the README's main command, as a user runs it: ``invdiff solve --simulate --task deblur IMAGE``
with the defaults, three runs per image size, the median reported (with the network evaluations and the PSNR
from the run's report).

    python benchmarks/solve_speed.py [--runs 3] [--sizes 256,512] [--extra "--method diffpir --steps 100"]

256×256: examples/astronaut.png; 512×512: examples/chelsea512.png. Run it on an otherwise idle machine: the
numbers are wall seconds of the whole process (start-up, reading, the classical warm start, sampling, writing).
Results are appended to benchmarks/solve_speed.json."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {256: ROOT / "examples" / "astronaut.png", 512: ROOT / "examples" / "chelsea512.png"}


def one_run(image: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [str(Path(sys.executable).parent / "invdiff"), "solve", "--simulate", "--task", "deblur", str(image), "--out", out,
               "--quiet", "--json", *extra]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{shlex.join(cmd)} failed:\n{r.stderr}")
        rep = json.loads(r.stdout)
    return {"wall_s": round(wall, 2), "nfe": rep["nfe"], "method": rep["method"], "steps": rep["steps"],
            "start": rep["hyper_parameters"].get("start"), "psnr": round(rep["metrics"]["psnr"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--extra", default="", help="extra solve options, e.g. '--method diffpir --steps 100'")
    args = ap.parse_args()
    extra = shlex.split(args.extra)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        runs = [one_run(IMAGES[size], extra) for _ in range(args.runs)]
        med = statistics.median(r["wall_s"] for r in runs)
        row = {"size": size, "options": args.extra or "(defaults)", "median_wall_s": med,
               "walls": [r["wall_s"] for r in runs], **{k: runs[0][k] for k in ("method", "steps", "start", "nfe", "psnr")},
               "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
        rows.append(row)
        print(f"| {size}×{size} | {row['options']} | {row['method']}, {row['steps']} steps, start {row['start']} | "
              f"{row['nfe']} | {med:.1f} s ({', '.join(f'{w:.1f}' for w in row['walls'])}) | {row['psnr']:.2f} |",
              flush=True)
    path = ROOT / "benchmarks" / "solve_speed.json"
    old = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(old + rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
