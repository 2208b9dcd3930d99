"""The blind motion estimate's crop spread, and a kernel-error τ chosen by it.

``invdiff.blind.crop_spread`` estimates the kernel again from the photo's four corner crops (0.75 of each side) and
takes the mean symmetrised kernel error between them and the whole photo's estimate: where the photo pins the blur
down, the crops agree. ``spread`` records it for the declared tuning split's 8 EM cases (butterfly, house, plant,
robin × kernels 0-1, σ 0.02 where photo + kernel is even, else 0.05: the cases of blind/tuning_em_tau.json) and for
the natural suite's 36 cases, with the estimate as solve makes it (its kernel prior), and its rank correlation with
the estimate's error. ``rule`` scores a τ chosen by the spread (``--tau`` where the spread is above ``--threshold``,
else the blind variant's 0.02) on the suite, from ``blind_motion.py --final-only <run> --final-tau T`` outputs paired
with that run's rows (the same refined kernels, streams and photos).

    python benchmarks/blind_spread.py spread --out benchmarks/blind/crop_spread.json
    python benchmarks/blind_spread.py rule --spread benchmarks/blind/crop_spread.json \\
        --base benchmarks/blind/blind_motion_shift.json --final benchmarks/blind/final_tau_0.05.json \
        benchmarks/blind/final_tau_0.08.json

``switch`` scores a choice between the two kernels of a ``blind_select.py`` record by the spread alone: Fast
Diffusion EM's kernel where the first estimate's spread is above ``--threshold`` (the estimate is unreliable there,
and the EM refines the kernel it starts from), solve's EM's kernel elsewhere. The spread of each case is taken from
``--spread`` where it holds the case, else computed (as ``spread`` does) and added to ``--out``.

    python benchmarks/blind_spread.py switch --select benchmarks/blind/select_tuning.json --split tuning \\
        --spread benchmarks/blind/crop_spread.json --out benchmarks/blind/crop_spread_select.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch


def spread(out: Path) -> None:
    from blind_motion import _photos
    from scipy.stats import spearmanr

    from invdiff.kernel_prior import from_spec

    kp = from_spec({"sigma": 0.02, "weight": 20})  # solve's kernel prior, as blind_em_tuning.py loads it
    cases = [("tuning", i, j, 0.02 if (i + j) % 2 == 0 else 0.05) for i in range(4) for j in range(2)]
    cases += [("suite", i, j, s) for j in range(3) for i in range(6) for s in (0.02, 0.05)]
    photos = {split: _photos(split, 6) for split in ("tuning", "suite")}
    rows = []
    for split, i, j, s in cases:
        rows.append(_spread_row(split, i, j, s, *photos[split], kp))
        print(json.dumps(rows[-1]), flush=True)
        out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    corr = {sp: round(float(spearmanr([r["crop_spread"] for r in rows if r["split"] == sp],
                                      [r["kernel_error_classical"] for r in rows if r["split"] == sp]).statistic), 3)
            for sp in ("tuning", "suite")}
    out.write_text(json.dumps({"protocol": __doc__.split("\n\n")[1].replace("\n", " "),
                               "spearman_spread_vs_kernel_error": corr, "rows": rows}, indent=1) + "\n")
    print(corr)


def rule(spread_path: Path, base_path: Path, finals: list[Path], threshold: float) -> None:
    sp = {(r["photo"], r["kernel"], r["noise_sigma"]): r["crop_spread"]
          for r in json.loads(spread_path.read_text())["rows"] if r["split"] == "suite"}
    base = json.loads(base_path.read_text())
    for f in finals:
        alt = {(r["photo"], r["kernel"], r["noise_sigma"]): r for r in json.loads(f.read_text())}
        tau = next(iter(alt.values()))["kernel_error_tau"]
        for thr, name in ((None, "every case"), (threshold, f"spread > {threshold}")):
            for sfx in ("", "_shift"):
                d = []
                for r in base:
                    key = (r["photo"], r["kernel"], r["noise_sigma"])
                    use = thr is None or sp[key] > thr
                    col = f"psnr_diffusion_estimated{sfx}"
                    d.append(alt[key][col] - r[col] if use else 0.0)
                se = statistics.stdev(d) / len(d) ** 0.5
                print(f"τ {tau} on {name}, {'shift-aligned' if sfx else 'plain'}: {statistics.mean(d):+.3f} ± {se:.3f} dB "
                      f"(better {sum(x > 0.005 for x in d)}, worse {sum(x < -0.005 for x in d)} of {len(d)})")


def _spread_row(split: str, i: int, j: int, s: float, xs, names, kp) -> dict:
    from blind_motion import blurred

    from invdiff.blind import crop_spread, estimate_motion_kernel, kernel_error

    _, y, k_true = blurred(xs[i: i + 1], i, j, s)
    k = estimate_motion_kernel(y, None, s, kernel_prior=kp).kernel
    return {"split": split, "photo": i, "name": names[i], "kernel": j, "noise_sigma": s,
            "crop_spread": round(crop_spread(y, k, s, kernel_prior=kp), 4),
            "kernel_error_classical": round(kernel_error(k, k_true), 4)}


def switch(select: Path, split: str, known: list[Path], out: Path, threshold: float) -> None:
    from blind_motion import _photos

    from invdiff.kernel_prior import from_spec

    def key(r: dict, sp: str | None = None) -> tuple:
        return sp or r["split"], r["photo"], r["kernel"], r["noise_sigma"]

    rows = json.loads(select.read_text())["rows"]
    added = json.loads(out.read_text())["rows"] if out.exists() else []
    have = {key(r): r for f in known if f.exists() for r in json.loads(f.read_text())["rows"]}
    have.update({key(r): r for r in added})
    missing = [r for r in rows if key(r, split) not in have]
    if missing:
        kp = from_spec({"sigma": 0.02, "weight": 20})
        xs, names = _photos(split, 1 + max(r["photo"] for r in rows))
        for r in missing:
            added.append(_spread_row(split, r["photo"], r["kernel"], r["noise_sigma"], xs, names, kp))
            have[key(r, split)] = added[-1]
            print(json.dumps(added[-1]), flush=True)
            out.write_text(json.dumps({"rows": added}, indent=1) + "\n")
    d, right, switched = [], 0, 0
    for r in rows:
        c = r["candidates"]
        use = "fastem" if have[key(r, split)]["crop_spread"] > threshold else "em"
        switched += use == "fastem"
        right += use == r["oracle"]
        d.append(c[use]["psnr"] - c["em"]["psnr"])
    se = statistics.stdev(d) / len(d) ** 0.5
    print(f"{select.name}: Fast Diffusion EM where the spread > {threshold}: switched {switched} of {len(d)}, "
          f"{statistics.mean(d):+.3f} ± {se:.3f} dB over solve's EM (better {sum(x > 0.005 for x in d)}, "
          f"worse {sum(x < -0.005 for x in d)}), the better kernel in {right}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("spread")
    a.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("rule")
    b.add_argument("--spread", type=Path, required=True)
    b.add_argument("--base", type=Path, required=True)
    b.add_argument("--final", type=Path, nargs="+", required=True)
    b.add_argument("--threshold", type=float, default=0.5)
    c = sub.add_parser("switch")
    c.add_argument("--select", type=Path, required=True)
    c.add_argument("--split", choices=("tuning", "suite"), required=True)
    c.add_argument("--spread", type=Path, nargs="*", default=[])
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "spread":
        spread(args.out)
    elif args.cmd == "switch":
        switch(args.select, args.split, args.spread, args.out, args.threshold)
    else:
        rule(args.spread, args.base, args.final, args.threshold)


if __name__ == "__main__":
    main()
