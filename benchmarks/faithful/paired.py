"""Paired before/after rows from two bench result folders (``invdiff bench ... --out DIR``).

    python benchmarks/faithful/paired.py BEFORE_DIR[:METHOD] AFTER_DIR[:METHOD] [--task TASK]

For every task both folders hold (and the method given, else every method they share), the mean PSNR/SSIM of each
side over the images both hold, and the paired PSNR difference (after − before) with its standard error (the
standard deviation of the per-image differences over √n). Prints markdown table rows.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path


def _rows(spec: str) -> tuple[dict, str | None]:
    folder, _, method = spec.partition(":")
    table: dict[tuple[str, str], dict[int, tuple[float, float, int]]] = defaultdict(dict)
    for part in sorted(Path(folder).glob("results.rank*.jsonl")):  # every row written so far, of every rank
        for r in map(json.loads, part.read_text().splitlines()):
            if method and r["method"] != method:
                continue
            table[(r["task"], r["method"])][int(r["image"])] = (float(r["psnr"]), float(r["ssim"]), int(r["nfe"] or 0))
    return table, method or None


def _pairs(before: dict, mb: str | None, after: dict, ma: str | None, task: str | None):
    for (t, m), rows in sorted(after.items()):
        if task and t != task:
            continue
        other = before.get((t, mb or m))
        if other is None:
            continue
        common = sorted(set(rows) & set(other))
        if common:
            yield t, (mb or m, ma or m), [other[i] for i in common], [rows[i] for i in common]


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--task")
    args = ap.parse_args()
    (before, mb), (after, ma) = _rows(args.before), _rows(args.after)
    print("| task | method (before → after) | images | NFE | before PSNR / SSIM | after PSNR / SSIM | paired Δ PSNR (dB) |")
    print("|---|---|---|---|---|---|---|")
    for task, (m0, m1), b, a in _pairs(before, mb, after, ma, args.task):
        d = [y[0] - x[0] for x, y in zip(b, a)]
        n, md = len(d), _mean(d)
        se = math.sqrt(sum((v - md) ** 2 for v in d) / (n - 1) / n) if n > 1 else float("nan")
        name = m0 if m0 == m1 else f"{m0} → {m1}"
        nfe = f"{b[0][2]} / {a[0][2]}" if b[0][2] != a[0][2] else str(a[0][2])
        print(f"| {task} | {name} | {n} | {nfe} | {_mean([x[0] for x in b]):.2f} / {_mean([x[1] for x in b]):.3f} "
              f"| {_mean([x[0] for x in a]):.2f} / {_mean([x[1] for x in a]):.3f} | {md:+.2f} ± {se:.2f} |")


if __name__ == "__main__":
    main()
