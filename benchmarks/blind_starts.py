"""Restarts of the classical motion-kernel estimate from several starting kernels, on the declared tuning split.

For every case (tuning photo i, motion-deblur kernel j of the stream ``blind-motion-kernel``, noise σ, as in
``blind_em_tuning.py --classical``) the estimate ``estimate_motion_kernel`` is run from each starting kernel of
``invdiff.blind.STARTS`` and recorded with: its kernel error (normalised L2 after alignment), the PSNR of TV
deconvolution with it, and no-reference scores a selection rule could use: the data residual of its L0 image
‖k * x − y‖²/N, the fraction of non-zero gradients of that image, and the agreement with the other starts (mean
kernel error between this estimate and each other one). Selection rules are then scored on the same rows
(``--rules``): the mean TV PSNR and kernel error of the start each rule picks, against the fixed start and the
oracle. Writes JSON:

    python benchmarks/blind_starts.py --out benchmarks/blind/tuning_starts.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from blind_motion import _photos, aligned, blurred

RULES = {
    "horizontal (the default)": lambda rs: next(r for r in rs if r["start"] == "horizontal"),
    "least residual": lambda rs: min(rs, key=lambda r: r["residual"]),
    "least L0 energy": lambda rs: min(rs, key=lambda r: r["energy"]),
    "medoid (most agreement)": lambda rs: min(rs, key=lambda r: r["disagreement"]),
    "oracle (best TV PSNR)": lambda rs: max(rs, key=lambda r: r["psnr_tv"]),
}


def _case(x, y, k_true, s: float, kernel_size: int, options: dict) -> list[dict]:
    from invdiff import operators as ops
    from invdiff.baselines import run_baseline
    from invdiff.blind import STARTS, _gradients, estimate_motion_kernel, kernel_error
    from invdiff.metrics import psnr

    out, ks = [], []
    lam = options.get("lam", 0.008)
    for start in STARTS:
        est = estimate_motion_kernel(y, None, s, kernel_size=kernel_size, starts=(start,), **options)
        k = est.kernel
        ks.append(k)
        res = est.history[-1]["residuals"][start]
        nnz = float((_gradients(est.x).abs() > 1e-3).float().mean())
        x_tv = run_baseline("tv", y, ops.Blur(aligned(k, k_true), padding="reflect"), s)
        out.append({"start": start, "kernel_error": round(kernel_error(k, k_true), 4),
                    "psnr_tv": round(float(psnr(x_tv, x)[0]), 3), "residual": res, "nnz": round(nnz, 5),
                    "energy": res + lam * nnz})
    for a, r in enumerate(out):
        r["disagreement"] = round(sum(kernel_error(ks[a], ks[b]) for b in range(len(ks)) if b != a) / (len(ks) - 1), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="indices into data/tuning")
    ap.add_argument("--kernels", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.05])
    ap.add_argument("--kernel-size", type=int, default=61)
    ap.add_argument("--options", type=json.loads, default={}, help="estimate_motion_kernel's other options, JSON")
    ap.add_argument("--transpose", action="store_true",
                    help="the kernels transposed (rotated by 90° and mirrored): the photo is transposed, blurred as "
                         "usual and transposed back")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    xs, names = _photos("tuning", max(a.photos) + 1)
    cases = []
    for j in a.kernels:
        for i in a.photos:
            for s in a.noise:
                if a.transpose:
                    _, y, k_true = blurred(xs[i: i + 1].transpose(-1, -2), i, j, s)
                    y, k_true = y.transpose(-1, -2).contiguous(), k_true.T.contiguous()
                else:
                    _, y, k_true = blurred(xs[i: i + 1], i, j, s)
                cases.append({"photo": names[i], "kernel": j, "noise_sigma": s,
                              "starts": _case(xs[i: i + 1], y, k_true, s, a.kernel_size, a.options)})
                print(json.dumps(cases[-1]), flush=True)
                _write(a, cases)


def _write(a, cases: list[dict]) -> None:
    rules = {}
    for name, rule in RULES.items():
        picked = [rule(c["starts"]) for c in cases]
        rules[name] = {"psnr_tv": round(sum(r["psnr_tv"] for r in picked) / len(picked), 3),
                       "kernel_error": round(sum(r["kernel_error"] for r in picked) / len(picked), 4)}
    a.out.write_text(json.dumps({"protocol": "classical estimate from each starting kernel of invdiff.blind.STARTS, "
                                             "every photo x kernel x noise of the tuning split"
                                             + (", the kernels transposed" if a.transpose else ""),
                                 "options": a.options, "cases": len(cases), "rules": rules, "rows": cases},
                                indent=1) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
