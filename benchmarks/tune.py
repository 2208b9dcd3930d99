"""Choose the per-task defaults of ``invdiff solve`` by measurement, on a declared tuning split.

The tuning split is six photographs from the Debian package ``opencv-doc`` that are neither training photos of the
natural prior nor validation photos of the ``natural`` suite (``invdiff/data/natural_sources.json``, key
``tuning``; ``python scripts/build_natural_data.py --split tuning`` writes them to ``data/tuning``). The natural
suite is for reporting only: nothing here reads it.

    python benchmarks/tune.py run [--prior P] [--tasks deblur,sr,...] [--photos 3] [--starts ...] [--variants]
                                  [--methods ddrm,diffpir]   # other methods than the case's, on the same grid
    python benchmarks/tune.py choose [--prior P]     # presets (solve_presets.json) + table + PSNR-vs-NFE plots
    python benchmarks/tune.py suite [--prior P]      # the natural-defaults[-P] suite from the presets
    python benchmarks/tune.py compare DIR DIR        # a table of natural-defaults runs of two priors
    python benchmarks/tune.py check --prior P [--presets-of Q] [--against Q]   # P run at the presets, paired

Presets tuned with the file's own prior (natural64) are the general ones; another prior's (``--prior
ffdnet+natural64``) go under ``by_prior`` and serve that prior only; solve uses the first installed prior of
``default_priors``.

For each task the grid is: the method at 20 steps from pure noise (start = 1) and warm-started (start < 1) from the
task's classical estimate, then the best start, and the cold start, at 10 and 30 steps, and with ``--variants``
the method's hyper-parameter variants (``HP_VARIANTS``) at the best start of 20 steps. A configuration is chosen
by its mean PSNR over the tuning photos among those with at most ``MAX_NFE`` network evaluations; ties within
0.05 dB go to the cheaper one. Every configuration sees the same photos, degradations and noise (per-image streams
from the seed), so the differences are paired.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "tuning"
PRESETS = ROOT / "invdiff" / "data" / "solve_presets.json"
SUITE = ROOT / "invdiff" / "bench" / "suites" / "natural-defaults.json"
MAX_NFE = 30
STARTS = (1.0, 0.5, 0.35, 0.2)
TIE_DB = 0.05
#: hyper-parameter variants tried at the best warm start of 20 steps, after the grid of starts
HP_VARIANTS = {"diffpir": ({"lam": 2.0}, {"lam": 8.0}), "ddrm": ({"eta": 0.5}, {"eta": 1.0})}


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
    #: several cases may share one task (inpainting: box and random masks)
    preset_of: str = ""
    #: the case tunes the preset's variant for this kind of measurement (``invdiff.tasks.measurement_kind``)
    variant: str = ""
    #: hyper-parameters of every configuration (and of the preset)
    hp: dict = field(default_factory=dict)


CASES = [
    Case("deblur", "deblur", "diffpir", "wiener", ("wiener", "tv")),
    Case("motion-deblur", "motion-deblur", "diffpir", "tv", ("wiener", "tv")),
    # the data step's conjugate gradients capped at 20 iterations: to the default tolerance (up to 200) one 20-step
    # configuration of 3 photos ran for more than 12 minutes on this operator
    Case("nonuniform-deblur", "nonuniform-deblur", "diffpir", "tv", ("tv",), hp={"cg_iters": 20}),
    Case("sr", "sr", "ddrm", "bicubic", ("bicubic",), {"scale": 4}),
    Case("inpaint-box", "inpaint", "ddrm", "biharmonic", ("biharmonic",), {"mask": "box"}, "inpaint", "holes"),
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


def _grid(case: Case, starts=STARTS) -> list[tuple[int, float]]:
    return [(20, s) for s in starts]


def _run_config(case: Case, x, op, y, steps: int, start: float, seed: int, extra: dict | None = None) -> dict:
    from invdiff.metrics import psnr, ssim
    from invdiff.rng import make_generators
    from invdiff.samplers import restore
    from invdiff.tasks import get_task

    prior = _prior(_run_config.prior)
    hp = dict(get_task(case.task).hyper_parameters.get(case.method, {}))
    if start < 1:
        hp.update(start=start, init=case.init)
    hp.update({**case.hp, **(extra or {})})
    t0 = time.perf_counter()
    res = restore(y, op, 0.05, prior, method=case.method, steps=steps,
                  generator=make_generators(seed, len(x), purpose="sample"), **hp)
    return {"case": case.key, "method": case.method, "steps": steps, "start": start,
            "init": case.init if start < 1 else None, "nfe": int(res.nfe), "seconds": round(time.perf_counter() - t0, 1),
            "psnr": [round(float(v), 3) for v in psnr(res.mean, x)], "ssim": [round(float(v), 4) for v in ssim(res.mean, x)],
            **({"hp": extra} if extra else {})}


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
            rows[_key(r["case"], r["method"], r.get("steps"), r.get("start"), r.get("hp"))] = r
    return rows


def _key(case: str, method: str, steps, start, hp: dict | None = None) -> tuple:
    """A grid row's key; a row with a hyper-parameter variant has the variant (as JSON) as a fifth element."""
    return (case, method, steps, start) + ((json.dumps(hp, sort_keys=True),) if hp else ())


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k not in ("psnr", "ssim")}),
          f"psnr {sum(row['psnr']) / len(row['psnr']):.2f}", flush=True)


def _mean(r: dict) -> float:
    return sum(r["psnr"]) / len(r["psnr"])


def run(args) -> None:
    torch.set_num_threads(args.threads)
    for case in _selected(args):
        for method in args.methods.split(",") if args.methods else (case.method,):
            _run_case(args, replace(case, method=method))


def _selected(args) -> list[Case]:
    keys = args.tasks.split(",") if args.tasks else [c.key for c in CASES]
    return [c for c in CASES if c.key in keys]


def _run_case(args, case: Case) -> None:
    """The case's grid for its method: the starts at 20 steps, the best start and the cold start at 10 and 30 steps,
    the method's variants at the best start."""
    _run_config.prior = args.prior
    x = _photos(args.photos)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"grid-{args.prior}.jsonl"
    op, y = _problem(case, x, args.seed)
    done = _done(path)
    if not any(k[0] == case.key and k[1].startswith("baseline:") for k in done):
        for r in _baselines(case, x, op, y):
            _append(path, r)
    configs = _grid(case, tuple(float(v) for v in args.starts.split(",")))
    for steps, start in configs:
        if (case.key, case.method, steps, start) not in done:
            _append(path, _run_config(case, x, op, y, steps, start, args.seed))
    done = _done(path)
    warm = [r for k, r in done.items() if len(k) == 4 and k[:2] == (case.key, case.method) and k[2] == 20
            and (k[3] or 1) < 1]
    best = max(warm, key=_mean)["start"]
    for steps, start in ((10, best), (30, best)) + (((10, 1.0), (30, 1.0)) if args.cold else ()):
        if (case.key, case.method, steps, start) not in _done(path):
            _append(path, _run_config(case, x, op, y, steps, start, args.seed))
    for extra in HP_VARIANTS.get(case.method, ()) if args.variants else ():
        if _key(case.key, case.method, 20, best, extra) not in _done(path):
            _append(path, _run_config(case, x, op, y, 20, best, args.seed, extra))


def _choose(rows: list[dict], cases: list[Case]) -> dict:
    """The configuration (method, steps, start, hyper-parameters) with the best mean PSNR over the cases (within
    MAX_NFE; within TIE_DB the cheaper, then the case's own method)."""
    by = {}
    for c in cases:
        for r in rows:
            if r["case"] == c.key and not r["method"].startswith("baseline:") and r["nfe"] <= MAX_NFE:
                k = (r["method"], r["steps"], r["start"], json.dumps(r.get("hp") or {}, sort_keys=True))
                by.setdefault(k, []).append(_mean(r))
    full = {k: sum(v) / len(v) for k, v in by.items() if len(v) == len(cases)}
    top = max(full.values())
    near = [k for k, v in full.items() if v >= top - TIE_DB]
    method, steps, start, extra = min(near, key=lambda k: (k[1], -k[2], k[0] != cases[0].method, k[3] != "{}"))
    return {"method": method, "steps": steps, "start": start, "hp": json.loads(extra),
            "psnr": round(full[(method, steps, start, extra)], 3)}


def choose(args) -> None:
    path = OUT / f"grid-{args.prior}.jsonl"
    rows = list(_done(path).values())
    presets = {}
    groups: dict[str, list[Case]] = {}
    for c in CASES:
        if any(r["case"] == c.key and not r["method"].startswith("baseline:") for r in rows):
            groups.setdefault(c.preset_of or c.key, []).append(c)
    for task, cases in groups.items():
        main = [c for c in cases if not c.variant] or cases
        ch = _choose(rows, main)
        presets[task] = {"method": ch["method"], **_entry(ch, main[0])}
        for c in cases:
            if c.variant and c not in main:
                presets[task].setdefault("variants", {})[c.variant] = _entry(_choose(rows, [c]), c)
    _write_presets(args.prior, presets)
    _table(rows, presets, args.prior)
    _plots(rows, args.prior)


def _entry(ch: dict, case: Case) -> dict:
    hp = {**({"start": ch["start"], "init": case.init} if ch["start"] < 1 else {}), **case.hp, **ch["hp"]}
    return {"steps": ch["steps"], "hyper_parameters": hp, "tuning_psnr": ch["psnr"]}


def _write_presets(prior: str, presets: dict) -> None:
    """Merge into solve_presets.json: the general table when ``prior`` is the one it was tuned with (a task's preset
    with its own prior, colourisation's, stays), else the table of that prior under ``by_prior``. Presets and
    variants that carry ``chosen_by`` were chosen by another benchmark and stay unless this one tunes them."""
    spec = json.loads(PRESETS.read_text()) if PRESETS.is_file() else {"prior": prior, "presets": {}}
    table = spec.get("presets", {}) if spec.get("prior") == prior else spec.get("by_prior", {}).get(prior, {}).get("presets", {})
    for task, p in presets.items():  # variants chosen elsewhere (the blind one: benchmarks/blind_motion.py) stay
        kept = {k: v for k, v in (table.get(task, {}).get("variants") or {}).items() if "chosen_by" in v}
        if kept:
            p["variants"] = {**kept, **p.get("variants", {})}
    # and so do the presets of tasks that another benchmark tunes (phase retrieval: benchmarks/phase_retrieval.py)
    presets = {**{t: p for t, p in table.items() if "chosen_by" in p and t not in presets}, **presets}
    desc = (f"the defaults of `invdiff solve` per task with the prior {prior}, chosen by benchmarks/tune.py on the "
            f"tuning split (data/tuning); see {_suffixed('benchmarks/tuning', prior, spec)}.md")
    if spec.get("prior") == prior:
        spec["description"] = desc
        spec["presets"].update(presets)
    else:
        spec.setdefault("by_prior", {})[prior] = {"description": desc, "presets": presets}
    PRESETS.write_text(json.dumps(spec, indent=1) + "\n")


def _suffixed(stem: str, prior: str, spec: dict | None = None) -> str:
    """Outputs of the general table's prior keep their names; another prior's get it as a suffix."""
    spec = spec if spec is not None else (json.loads(PRESETS.read_text()) if PRESETS.is_file() else {})
    return stem if spec.get("prior", prior) == prior else f"{stem}-{prior}"


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
        out += [f"## {c.key} (warm start from `{c.init}`)", "", "| configuration | NFE | PSNR | SSIM | s |",
                "|---|---|---|---|---|"]
        for r in sorted(rs, key=lambda r: (r["method"].startswith("baseline:"), r["method"] != c.method, r["method"],
                                           r.get("steps") or 0, -(r.get("start") or 0))):
            name = r["method"] if r["method"].startswith("baseline:") else f"{r['method']}, {r['steps']} steps, start {r['start']}" + (
                "".join(f", {k} {v}" for k, v in r["hp"].items()) if r.get("hp") else "")
            out.append(f"| {name} | {r['nfe']} | {_mean(r):.2f} | {sum(r['ssim']) / n:.3f} | {r['seconds']} |")
        p = presets.get(c.preset_of or c.key)
        p = {**p, **p["variants"][c.variant]} if p and c.variant and c.variant in p.get("variants", {}) else p
        if p:
            hp = p["hyper_parameters"]
            out += ["", f"Preset: {p['method']}, {p['steps']} steps, " + (
                f"start {hp['start']} from `{hp['init']}`" if "start" in hp else "from pure noise")
                + "".join(f", {k} {v}" for k, v in hp.items() if k not in ("start", "init"))]
        out.append("")
    (ROOT / f"{_suffixed('benchmarks/tuning', prior)}.md").write_text("\n".join(out))


def _plots(rows: list[dict], prior: str) -> None:
    from matplotlib.figure import Figure

    cases = [c for c in CASES if any(r["case"] == c.key and r.get("start", 1) < 1 for r in rows)]
    fig = Figure(figsize=(3.2 * len(cases), 3.0), layout="constrained")
    for ax, c in zip(fig.subplots(1, len(cases), squeeze=False)[0], cases):
        rs = [r for r in rows if r["case"] == c.key and r["method"] == c.method and not r.get("hp")]
        cold = sorted((r["nfe"], _mean(r)) for r in rs if r["start"] == 1.0)
        warm_start = max((r for r in rs if r["steps"] == 20 and r["start"] < 1), key=_mean)["start"]
        warm = sorted((r["nfe"], _mean(r)) for r in rs if r["start"] == warm_start)
        if cold:
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
    fig.savefig(ROOT / f"{_suffixed('benchmarks/tuning_psnr_vs_nfe', prior)}.png", dpi=90)


def suite(args) -> None:
    """The natural suite's photos and degradations, each task run with its solve preset, and the baselines."""
    spec = json.loads(PRESETS.read_text())
    table = preset_table(args.prior)
    base = json.loads((SUITE.parent / "natural.json").read_text())
    tasks = []
    for c in CASES:
        p = case_preset(table, c)
        if p is None:
            continue
        t = {"task": c.task, "methods": [p["method"]], "baselines": list(c.baselines),
             "steps": {p["method"]: p["steps"]}, "hyper_parameters": {p["method"]: p["hyper_parameters"]}}
        if c.options:
            t["options"] = c.options
        tasks.append(t)
    name = Path(_suffixed("natural-defaults", args.prior, spec))
    out = {"name": str(name), "description": "the natural suite's photos and degradations, each task restored with "
           f"the defaults of `invdiff solve` with the prior {args.prior} (invdiff/data/solve_presets.json, chosen on "
           "the tuning split by benchmarks/tune.py), against the classical baselines",
           "dataset": base["dataset"], "count": base["count"], "prior": args.prior, "batch_size": base["batch_size"],
           "noise_sigma": base["noise_sigma"], "tasks": tasks}
    path = SUITE.parent / f"{name}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


def compare(args) -> None:
    """A markdown table of natural-defaults runs of several priors (the ``invdiff bench`` output folders, on the same
    photos, degradations and streams): per task each run's preset PSNR / SSIM, the best classical baseline, the
    gain over it, and the paired difference of the first two runs (mean ± standard error over photos)."""
    import csv
    import statistics

    runs = [(Path(d), list(csv.DictReader((Path(d) / "results.csv").open()))) for d in args.runs]
    tasks = list(dict.fromkeys(r["task"] for _, rows in runs for r in rows))
    head = ["task"] + [f"{d.name}: method (NFE), PSNR / SSIM" for d, _ in runs] + ["best classical", "gains (dB)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks:
        cells, means, per = [t], [], []
        base = {}
        for d, rows in runs:
            rs = [r for r in rows if r["task"] == t]
            for r in rs:
                if r["method"].startswith("baseline:"):
                    base.setdefault(r["method"][9:], {})[r["image"]] = (float(r["psnr"]), float(r["ssim"]))
            ours = [r for r in rs if not r["method"].startswith("baseline:")]
            if not ours:
                cells.append("—")
                means.append(None)
                per.append({})
                continue
            p = statistics.mean(float(r["psnr"]) for r in ours)
            cells.append(f"{ours[0]['method']} ({ours[0]['nfe']}), {p:.2f} / "
                         f"{statistics.mean(float(r['ssim']) for r in ours):.3f}")
            means.append(p)
            per.append({r["image"]: float(r["psnr"]) for r in ours})
        name, b = max(base.items(), key=lambda kv: statistics.mean(v[0] for v in kv[1].values()))
        bp = statistics.mean(v[0] for v in b.values())
        cells.append(f"{name} {bp:.2f} / {statistics.mean(v[1] for v in b.values()):.3f}")
        gains = ", ".join(f"{m - bp:+.2f}" if m is not None else "—" for m in means)
        if len(per) > 1 and per[0] and per[1]:
            dif = [per[0][i] - per[1][i] for i in per[0] if i in per[1]]
            se = statistics.stdev(dif) / len(dif) ** 0.5 if len(dif) > 1 else float("nan")
            gains += f"; first − second {statistics.mean(dif):+.2f} ± {se:.2f}"
        cells.append(gains)
        out.append("| " + " | ".join(cells) + " |")
    print("\n".join(out))


def preset_table(prior: str) -> dict:
    """The presets that ``invdiff solve`` runs with ``prior``: its ``by_prior`` table over the general one."""
    spec = json.loads(PRESETS.read_text())
    return {**spec["presets"], **spec.get("by_prior", {}).get(prior, {}).get("presets", {})}


def case_preset(table: dict, case: Case) -> dict | None:
    """A case's preset in a preset table: its task's, with the case's variant (e.g. holes for the box) over it."""
    p = table.get(case.preset_of or case.key)
    return None if p is None else {**p, **p.get("variants", {}).get(case.variant, {})}


def check(args) -> None:
    """Each tuned task's preset (of ``--presets-of``, default the prior's own) run with ``--prior`` and, with
    ``--against``, with that prior too, on the same tuning photos, degradations and streams as the grid (the first
    ``--photos``): the mean PSNR of each and their paired difference per photo. The rows go to
    ``benchmarks/tuning/check-<prior>.json``. This is the check a new leg of a prior needs before it serves solve's
    presets, without re-tuning them."""
    torch.set_num_threads(args.threads)
    table = preset_table(args.presets_of or args.prior)
    x = _photos(args.photos)
    priors = [args.prior] + ([args.against] if args.against else [])
    rows = []
    for case in _selected(args):
        p = case_preset(table, case)
        if p is None:
            continue
        hp = dict(p["hyper_parameters"])
        start = hp.pop("start", 1.0)
        hp.pop("init", None)
        op, y = _problem(case, x, args.seed)
        row = {"case": case.key, "method": p["method"], "steps": p["steps"], "start": start, "hp": hp}
        for prior in priors:
            _run_config.prior = prior
            r = _run_config(replace(case, method=p["method"]), x, op, y, p["steps"], start, args.seed, hp or None)
            row[prior] = {"psnr": r["psnr"], "mean": round(_mean(r), 3), "seconds": r["seconds"]}
        rows.append(row)
        print(_check_line(row, priors), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    out = {"prior": args.prior, "against": args.against, "presets_of": args.presets_of or args.prior,
           "photos": args.photos, "seed": args.seed, "rows": rows}
    (OUT / f"check-{args.prior}.json").write_text(json.dumps(out, indent=1) + "\n")


def _check_line(row: dict, priors: list[str]) -> str:
    import statistics

    line = f"{row['case']}: {row['method']} {row['steps']} from {row['start']}, " + ", ".join(
        f"{p} {row[p]['mean']:.3f}" for p in priors)
    if len(priors) == 2:
        d = [a - b for a, b in zip(row[priors[0]]["psnr"], row[priors[1]]["psnr"])]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        line += f"; difference {statistics.mean(d):+.3f} +- {se:.3f}"
    return line


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
    r.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold starts at 10 and 30 steps "
                   "(slow operators: non-uniform blur)")
    r.add_argument("--methods", default=None, help="comma-separated methods to tune instead of each case's own "
                   "(rows carry their method; choose takes the best of all that ran)")
    r.add_argument("--variants", action="store_true", help=f"also the hyper-parameter variants {HP_VARIANTS}")
    r.add_argument("--starts", default=",".join(map(str, STARTS)),
                   help="the starts tried at 20 steps (1 = pure noise); a denoiser prior covers start <= 0.167")
    for p in (r, sub.add_parser("choose"), sub.add_parser("suite")):
        p.add_argument("--prior", default="natural64")
    c = sub.add_parser("compare")
    c.add_argument("runs", nargs="+", help="output folders of `invdiff bench natural-defaults...` runs")
    k = sub.add_parser("check")
    k.add_argument("--prior", required=True)
    k.add_argument("--presets-of", default=None, help="whose presets to run (default: the prior's own)")
    k.add_argument("--against", default=None, help="a second prior run at the same presets, for paired differences")
    k.add_argument("--tasks", default=None, help=f"comma-separated, of: {', '.join(c.key for c in CASES)}")
    k.add_argument("--photos", type=int, default=3)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    {"run": run, "choose": choose, "suite": suite, "compare": compare, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
