"""PSNR against network evaluations on the natural suite, per task: the default method of ``invdiff solve`` from
pure noise and from its warm start, next to the classical baselines.

    python benchmarks/nfe_curves.py run [--prior P] [--tasks deblur,sr] [--steps 10,20,30]   # resumable, JSON lines
    python benchmarks/nfe_curves.py plot [--prior P]        # benchmarks/nfe_curves.png (-P.png for another prior)

The photos, degradations, noise and sampling streams are those of ``invdiff bench natural`` (the suite's six
validation photos, seed 0, per-image streams), the methods and warm starts those of the solve presets
of the prior (``invdiff/data/solve_presets.json``, chosen on the tuning split by ``benchmarks/tune.py``; default
prior natural64, the suite's); only the number of steps changes along a curve. This is a report: nothing is chosen
from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tune import CASES, _append, _baselines, _done, _key, _mean, _problem, _run_config, _suffixed, run_parser

ROOT = Path(__file__).resolve().parents[1]


def _paths(prior: str) -> tuple[Path, Path]:
    stem = _suffixed("benchmarks/nfe_curves", prior)
    return ROOT / f"{stem}.jsonl", ROOT / f"{stem}.png"


def _preset(case, prior: str) -> tuple[float, dict]:
    """The preset's start and its other hyper-parameters (λ, η, ...) for the case, on this prior."""
    from invdiff.tasks import solve_preset

    p = solve_preset(case.preset_of or case.key, prior)
    if p is None or p.method != case.method:
        return 0.35, {}
    hp = dict(p.variants[case.variant].hyper_parameters if case.variant in p.variants else p.hyper_parameters)
    start = float(hp.pop("start", 1.0))
    hp.pop("init", None)
    return start, hp


def run(args) -> None:
    from invdiff.bench.suite import load_suite

    torch.set_num_threads(args.threads)
    suite = load_suite("natural")
    _run_config.prior = args.prior
    PATH = _paths(args.prior)[0]
    x = suite.images()
    keys = args.tasks.split(",") if args.tasks else [c.key for c in CASES]
    steps = [int(s) for s in args.steps.split(",")]
    for case in (c for c in CASES if c.key in keys):
        op, y = _problem(case, x, suite.seed)
        if not any(k[0] == case.key and k[1].startswith("baseline:") for k in _done(PATH)):
            for r in _baselines(case, x, op, y):
                _append(PATH, r)
        warm, hp = _preset(case, args.prior)
        for start in (warm, 1.0):
            for n in steps:
                if _key(case.key, case.method, n, start, hp) not in _done(PATH):
                    _append(PATH, _run_config(case, x, op, y, n, start, suite.seed, hp))


def plot(args) -> None:
    from matplotlib.figure import Figure

    PATH, FIGURE = _paths(args.prior)
    rows = list(_done(PATH).values())
    cases = [c for c in CASES if any(r["case"] == c.key and not r["method"].startswith("baseline:") for r in rows)]
    cols = min(4, len(cases))
    nrows = -(-len(cases) // cols)
    fig = Figure(figsize=(3.3 * cols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, c in zip(axes, cases):
        rs = [r for r in rows if r["case"] == c.key and not r["method"].startswith("baseline:")]
        for start, mark in sorted({(r["start"], "o-" if r["start"] == 1.0 else "s-") for r in rs}, reverse=True):
            pts = sorted((r["nfe"], _mean(r)) for r in rs if r["start"] == start)
            ax.plot(*zip(*pts), mark, label="from pure noise" if start == 1.0 else f"warm start {start}")
        for r in rows:
            if r["case"] == c.key and r["method"].startswith("baseline:"):
                ax.axhline(_mean(r), ls="--", lw=0.8, color="grey")
                ax.annotate(r["method"][9:], (0.02, _mean(r)), xycoords=("axes fraction", "data"), fontsize=7,
                            color="grey", va="bottom")
        ax.set_title(f"{c.key} ({c.method})", fontsize=9)
        ax.set_xlabel("network evaluations")
        ax.set_ylabel("PSNR (dB), mean of 6")
        ax.legend(fontsize=7)
    for ax in axes[len(cases):]:
        ax.set_axis_off()
    fig.suptitle(f"natural suite (6 validation photos, 256×256, σ = 0.05), prior {args.prior}", fontsize=10)
    fig.savefig(FIGURE, dpi=90)
    print(f"wrote {FIGURE}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = run_parser(sub)
    r.add_argument("--steps", default="10,20,30")
    for p in (r, sub.add_parser("plot")):
        p.add_argument("--prior", default="natural64")
    a = ap.parse_args()
    (run if a.cmd == "run" else plot)(a)


if __name__ == "__main__":
    main()
