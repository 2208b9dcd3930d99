"""Choose the per-task defaults of ``invdiff solve`` by measurement, on a declared tuning split.

The tuning split is six photographs from the Debian package ``opencv-doc`` that are neither training photos of the
natural prior nor validation photos of the ``natural`` suite (``invdiff/data/natural_sources.json``, key
``tuning``; ``python scripts/build_natural_data.py --split tuning`` writes them to ``data/tuning``). The natural
suite is for reporting only: nothing here reads it.

    python benchmarks/tune.py run [--tasks deblur,sr,...] [--photos 3]   # the grid, one JSON line per configuration
    python benchmarks/tune.py choose                                     # presets + table + PSNR-vs-NFE plots
    python benchmarks/tune.py suite                                      # the natural-defaults suite from the presets

For each task the grid is: the method at 20 steps from pure noise (start = 1) and warm-started (start < 1) from the
task's classical estimate, then the best start, and the cold start, at 10 and 30 steps. A configuration is chosen
by its mean PSNR over the tuning photos among those with at most ``MAX_NFE`` network evaluations; ties within
0.05 dB go to the cheaper one. Every configuration sees the same photos, degradations and noise (per-image streams
from the seed), so the differences are paired.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "tuning"
PRESETS = ROOT / "invdiff" / "data" / "solve_presets.json"
SUITE = ROOT / "invdiff" / "bench" / "suites" / "natural-defaults.json"
MAX_NFE = 30
STARTS = (1.0, 0.5, 0.35, 0.2)
TIE_DB = 0.05


@dataclass(frozen=True)
class Case:
    """One tuned task: the task, its options (the natural suite's presets), the method, its classical estimate
    (the warm start's x_init) and the classical baselines it has to beat."""

    key: str
    task: str
    method: str
    init: str
    baselines: tuple[str, ...]
    options: dict = field(default_factory=dict)
    #: several cases may share one task (inpainting: box and random masks): the preset is chosen on their mean
    preset_of: str = ""


CASES = [
    Case("deblur", "deblur", "diffpir", "wiener", ("wiener", "tv")),
    Case("motion-deblur", "motion-deblur", "diffpir", "tv", ("wiener", "tv")),
    Case("nonuniform-deblur", "nonuniform-deblur", "diffpir", "tv", ("tv",)),
    Case("sr", "sr", "ddrm", "bicubic", ("bicubic",), {"scale": 4}),
    Case("inpaint-box", "inpaint", "ddrm", "biharmonic", ("biharmonic",), {"mask": "box"}, "inpaint"),
    Case("inpaint-random", "inpaint", "ddrm", "biharmonic", ("biharmonic",), {"mask": "random", "mask_fraction": 0.7},
         "inpaint"),
    Case("denoise", "denoise", "ddrm", "tv-denoise", ("tv-denoise",)),
]


def _photos(n: int) -> torch.Tensor:
    from invdiff.data import load_folder

    folder = ROOT / "data" / "tuning"
    if not folder.is_dir():
        raise SystemExit("no tuning photos: run `python scripts/build_natural_data.py --split tuning` first")
    return load_folder(folder, size=256, limit=n)


def _problem(case: Case, x: torch.Tensor, seed: int):
    from invdiff.rng import make_generators
    from invdiff.tasks import TaskOptions, simulate

    opts = TaskOptions(noise_sigma=0.05).with_(**case.options)
    return simulate(case.task, x, opts, generator=make_generators(seed, len(x), purpose="degrade"))


def _grid(case: Case) -> list[tuple[int, float]]:
    return [(20, s) for s in STARTS]


def _run_config(case: Case, x, op, y, steps: int, start: float, seed: int) -> dict:
    from invdiff.metrics import psnr, ssim
    from invdiff.rng import make_generators
    from invdiff.samplers import restore
    from invdiff.tasks import get_task

    prior = _prior(_run_config.prior)
    hp = dict(get_task(case.task).hyper_parameters.get(case.method, {}))
    if start < 1:
        hp.update(start=start, init=case.init)
    t0 = time.perf_counter()
    res = restore(y, op, 0.05, prior, method=case.method, steps=steps,
                  generator=make_generators(seed, len(x), purpose="sample"), **hp)
    return {"case": case.key, "method": case.method, "steps": steps, "start": start,
            "init": case.init if start < 1 else None, "nfe": int(res.nfe), "seconds": round(time.perf_counter() - t0, 1),
            "psnr": [round(float(v), 3) for v in psnr(res.mean, x)], "ssim": [round(float(v), 4) for v in ssim(res.mean, x)]}


_run_config.prior = "natural64"


@functools.lru_cache(maxsize=2)
def _prior(name: str):
    from invdiff.prior import load

    return load(name)


def _baselines(case: Case, x, op, y) -> list[dict]:
    from invdiff.baselines import run_baseline
    from invdiff.metrics import psnr, ssim

    rows = []
    for b in case.baselines:
        t0 = time.perf_counter()
        xb = run_baseline(b, y, op, 0.05)
        rows.append({"case": case.key, "method": f"baseline:{b}", "nfe": 0, "seconds": round(time.perf_counter() - t0, 1),
                     "psnr": [round(float(v), 3) for v in psnr(xb, x)], "ssim": [round(float(v), 4) for v in ssim(xb, x)]})
    return rows


def _done(path: Path) -> dict:
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[(r["case"], r["method"], r.get("steps"), r.get("start"))] = r
    return rows


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k not in ("psnr", "ssim")}),
          f"psnr {sum(row['psnr']) / len(row['psnr']):.2f}", flush=True)


def _mean(r: dict) -> float:
    return sum(r["psnr"]) / len(r["psnr"])


def run(args) -> None:
    torch.set_num_threads(args.threads)
    _run_config.prior = args.prior
    x = _photos(args.photos)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"grid-{args.prior}.jsonl"
    keys = args.tasks.split(",") if args.tasks else [c.key for c in CASES]
    for case in (c for c in CASES if c.key in keys):
        op, y = _problem(case, x, args.seed)
        done = _done(path)
        if not any(k[0] == case.key and k[1].startswith("baseline:") for k in done):
            for r in _baselines(case, x, op, y):
                _append(path, r)
        configs = _grid(case)
        for steps, start in configs:
            if (case.key, case.method, steps, start) not in done:
                _append(path, _run_config(case, x, op, y, steps, start, args.seed))
        done = _done(path)
        warm = [r for k, r in done.items() if k[0] == case.key and k[2] == 20 and (k[3] or 1) < 1]
        best = max(warm, key=_mean)["start"]
        for steps, start in ((10, best), (30, best), (10, 1.0), (30, 1.0)):
            if (case.key, case.method, steps, start) not in _done(path):
                _append(path, _run_config(case, x, op, y, steps, start, args.seed))


def _choose(rows: list[dict], cases: list[Case]) -> dict:
    """The configuration with the best mean PSNR over the cases (within MAX_NFE; the cheaper within TIE_DB)."""
    by = {}
    for c in cases:
        for r in rows:
            if r["case"] == c.key and not r["method"].startswith("baseline:") and r["nfe"] <= MAX_NFE:
                by.setdefault((r["steps"], r["start"]), []).append(_mean(r))
    full = {k: sum(v) / len(v) for k, v in by.items() if len(v) == len(cases)}
    top = max(full.values())
    near = [k for k, v in full.items() if v >= top - TIE_DB]
    steps, start = min(near, key=lambda k: (k[0], -k[1]))
    return {"steps": steps, "start": start, "psnr": round(full[(steps, start)], 3)}


def choose(args) -> None:
    path = OUT / f"grid-{args.prior}.jsonl"
    rows = list(_done(path).values())
    presets, lines = {}, []
    groups: dict[str, list[Case]] = {}
    for c in CASES:
        if any(r["case"] == c.key for r in rows):
            groups.setdefault(c.preset_of or c.key, []).append(c)
    for task, cases in groups.items():
        ch = _choose(rows, cases)
        hp = {"start": ch["start"], "init": cases[0].init} if ch["start"] < 1 else {}
        presets[task] = {"method": cases[0].method, "steps": ch["steps"], "hyper_parameters": hp,
                         "tuning_psnr": ch["psnr"]}
    PRESETS.write_text(json.dumps({"description": "the defaults of `invdiff solve` per task, chosen by benchmarks/tune.py "
                                   f"on the tuning split (data/tuning, prior {args.prior}); see benchmarks/tuning.md",
                                   "prior": args.prior, "presets": presets}, indent=1) + "\n")
    _table(rows, presets, args.prior)
    _plots(rows, args.prior)


def _table(rows: list[dict], presets: dict, prior: str) -> None:
    n = len(rows[0]["psnr"])
    out = [f"# Tuning the solve defaults (prior `{prior}`, {n} tuning photos at 256×256, σ = 0.05)", "",
           "Mean PSNR (dB) over the tuning photos (`data/tuning`, never trained on, not in any suite); "
           "written by `python benchmarks/tune.py choose` from `benchmarks/tuning/grid-*.jsonl`. "
           f"Chosen: the best mean with at most {MAX_NFE} network evaluations (the cheaper within {TIE_DB} dB).", ""]
    for c in CASES:
        rs = [r for r in rows if r["case"] == c.key]
        if not rs:
            continue
        out += [f"## {c.key} ({c.method}, warm start from `{c.init}`)", "", "| configuration | NFE | PSNR | SSIM | s |",
                "|---|---|---|---|---|"]
        for r in sorted(rs, key=lambda r: (r["method"].startswith("baseline:"), r.get("steps") or 0, -(r.get("start") or 0))):
            name = r["method"] if r["method"].startswith("baseline:") else f"{r['steps']} steps, start {r['start']}"
            out.append(f"| {name} | {r['nfe']} | {_mean(r):.2f} | {sum(r['ssim']) / n:.3f} | {r['seconds']} |")
        p = presets.get(c.preset_of or c.key)
        if p:
            out += ["", f"Preset: {p['method']}, {p['steps']} steps, " + (
                f"start {p['hyper_parameters']['start']} from `{p['hyper_parameters']['init']}`" if p["hyper_parameters"]
                else "from pure noise")]
        out.append("")
    (ROOT / "benchmarks" / "tuning.md").write_text("\n".join(out))


def _plots(rows: list[dict], prior: str) -> None:
    from matplotlib.figure import Figure

    cases = [c for c in CASES if any(r["case"] == c.key and r.get("start", 1) < 1 for r in rows)]
    fig = Figure(figsize=(3.2 * len(cases), 3.0), layout="constrained")
    for ax, c in zip(fig.subplots(1, len(cases), squeeze=False)[0], cases):
        rs = [r for r in rows if r["case"] == c.key and not r["method"].startswith("baseline:")]
        cold = sorted((r["nfe"], _mean(r)) for r in rs if r["start"] == 1.0)
        warm_start = max((r for r in rs if r["steps"] == 20 and r["start"] < 1), key=_mean)["start"]
        warm = sorted((r["nfe"], _mean(r)) for r in rs if r["start"] == warm_start)
        ax.plot(*zip(*cold), "o-", label="from pure noise")
        ax.plot(*zip(*warm), "s-", label=f"warm, start {warm_start}")
        for r in rows:
            if r["case"] == c.key and r["method"].startswith("baseline:"):
                ax.axhline(_mean(r), ls="--", lw=0.8, color="grey")
                ax.annotate(r["method"][9:], (ax.get_xlim()[0], _mean(r)), fontsize=7, color="grey", va="bottom")
        ax.set_title(f"{c.key} ({c.method})", fontsize=9)
        ax.set_xlabel("network evaluations")
        ax.set_ylabel("PSNR (dB)")
        ax.legend(fontsize=7)
    fig.savefig(ROOT / "benchmarks" / "tuning_psnr_vs_nfe.png", dpi=90)


def suite(args) -> None:
    """The natural suite's photos and degradations, each task run with its solve preset, and the baselines."""
    spec = json.loads(PRESETS.read_text())
    base = json.loads((SUITE.parent / "natural.json").read_text())
    tasks = []
    for c in CASES:
        p = spec["presets"].get(c.preset_of or c.key)
        if p is None:
            continue
        t = {"task": c.task, "methods": [p["method"]], "baselines": list(c.baselines),
             "steps": {p["method"]: p["steps"]}, "hyper_parameters": {p["method"]: p["hyper_parameters"]}}
        if c.options:
            t["options"] = c.options
        tasks.append(t)
    out = {"name": "natural-defaults", "description": "the natural suite's photos and degradations, each task restored "
           "with the defaults of `invdiff solve` (invdiff/data/solve_presets.json, chosen on the tuning split by "
           "benchmarks/tune.py), against the classical baselines",
           "dataset": base["dataset"], "count": base["count"], "prior": spec["prior"], "batch_size": base["batch_size"],
           "noise_sigma": base["noise_sigma"], "tasks": tasks}
    SUITE.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {SUITE}")


def run_parser(sub) -> argparse.ArgumentParser:
    """The ``run`` subcommand with its ``--tasks`` and ``--threads`` options (shared with nfe_curves.py)."""
    r = sub.add_parser("run")
    r.add_argument("--tasks", default=None, help=f"comma-separated, of: {', '.join(c.key for c in CASES)}")
    r.add_argument("--threads", type=int, default=1)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = run_parser(sub)
    r.add_argument("--photos", type=int, default=3)
    r.add_argument("--seed", type=int, default=0)
    for p in (r, sub.add_parser("choose"), sub.add_parser("suite")):
        p.add_argument("--prior", default="natural64")
    args = ap.parse_args()
    {"run": run, "choose": choose, "suite": suite}[args.cmd](args)


if __name__ == "__main__":
    main()
