"""The natural prior's suite bar (issue: the natural-photo prior): the campaign prior against `natural64` on the
natural suite's restoration rows with today's methods and settings held fixed (DiffPIR 40 Gaussian deblurring, DDRM
30 SR ×4, box and 70 % random inpainting), the same code, seeds and degradations; PSNR per photo, the paired gain
(mean ± standard error over the 6 photos) and on how many photos the campaign prior is better.

    OMP_NUM_THREADS=1 python benchmarks/suite_bar.py --weights invdiff/weights/natural.safetensors \\
        --baseline-from benchmarks/campaign/suite_ab_658k.json --json benchmarks/campaign/suite_ab_NNNk.json

The weights are copied (with their card) under ``--work`` first, because the suite keys its resumable results to the
prior's files. ``--baseline-from`` takes natural64's rows from an earlier JSON of this protocol (fixed seeds
reproduce them: checked at 627k and 658k); without it natural64 runs too.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import torch

ROWS = {"deblur diffpir": ("deblur", "diffpir"), "sr[scale=4] ddrm": ("sr", "ddrm"),
        "inpaint[mask=box] ddrm": ("inpaint", "ddrm"), "inpaint[mask=random,mask_fraction=0.7] ddrm": ("inpaint", "ddrm")}


def suite_rows(prior: str, out: Path) -> dict[str, list[float]]:
    """PSNR per image of the natural suite's restoration rows (ROWS) with ``prior`` (a bundled name or a path)."""
    from invdiff.bench.runner import psnr_rows, run_suite
    from invdiff.bench.suite import load_suite

    suite = replace(load_suite("natural"), prior=prior)
    run_suite(suite, out, tasks=["deblur", "sr", "inpaint"], methods=["diffpir", "ddrm"])
    return {k: v for k, v in psnr_rows(out).items() if k in ROWS}


def compare(base: dict[str, list[float]], new: dict[str, list[float]]) -> dict:
    out = {}
    for key in ROWS:
        a, b = base[key], new[key]
        d = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)
        out[key] = {"natural64": a, "natural": b, "mean_natural64": round(sum(a) / len(a), 3),
                    "mean_natural": round(sum(b) / len(b), 3),
                    "gain": [round(float(d.mean()), 3), round(float(d.std() / math.sqrt(len(d))), 3)],
                    "better_on": int((d > 0).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=Path("invdiff/weights/natural.safetensors"))
    ap.add_argument("--baseline-from", type=Path, default=None, help="natural64's rows from an earlier JSON of this protocol")
    ap.add_argument("--work", type=Path, default=Path("runs/suite_bar"))
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results agree to float32 rounding across thread counts)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    card = json.loads(a.weights.with_suffix(".json").read_text())
    seen = int(card["training"]["images_seen"])
    prior_dir = a.work / f"natural-{seen}"
    prior_dir.mkdir(parents=True, exist_ok=True)
    copy = prior_dir / "natural.safetensors"
    for src, dst in ((a.weights, copy), (a.weights.with_suffix(".json"), copy.with_suffix(".json"))):
        if not dst.is_file():
            shutil.copyfile(src, dst)
    if a.baseline_from:
        rows = json.loads(a.baseline_from.read_text())["rows"]
        base = {k: rows[k]["natural64"] for k in ROWS}
    else:
        base = suite_rows("natural64", a.work / "natural64")
    new = suite_rows(str(copy), prior_dir / "bench")
    legs = card["campaign"]["legs"]
    res = {"protocol": "invdiff bench natural --tasks deblur,sr,inpaint --methods diffpir,ddrm, with natural64 and with "
                       "the campaign prior's weights, same code, seeds and degradations; PSNR (dB) per image "
                       "of the suite's 6 photos; inpainting with DDRM 30 steps (benchmarks/suite_bar.py)"
                       + (f"; natural64's rows from {a.baseline_from.name}" if a.baseline_from else ""),
           "natural_images_seen": seen, "natural_leg": legs[-1]["leg"], "rows": compare(base, new)}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1) + "\n")
    for k, r in res["rows"].items():
        print(f"{k}: natural64 {r['mean_natural64']:.2f}, natural {r['mean_natural']:.2f}, gain {r['gain'][0]:+.3f} ± "
              f"{r['gain'][1]:.3f}, better on {r['better_on']}/6")


if __name__ == "__main__":
    main()
