"""Scores the natural prior's recipe A/B arms (written by scripts/campaign_ab.py): for the state they all started
from ("seed") and for each arm's EMA weights (and, for the losses, its online weights):

* L_simple on the validation patches (the card's 512 64×64 crops of the validation photos, uniform t) and on
  512 crops of the tuning split (data/tuning), both drawn identically for every network, so the per-patch losses
  pair up: each arm's difference from the "base" arm (the unchanged recipe, same CPU time) with its paired
  standard error, overall and per band of t;
* the tuning-split restoration rows (benchmarks/campaign/tuning_suite.json: DiffPIR 40 deblurring, DDRM 30 SR ×4,
  box and random inpainting, the same degradations and sampling streams for every network): PSNR per photo,
  each arm's paired difference from "base".

The decision rule is the tuning split's restoration PSNR (mean over the four rows); the validation figures are the
campaign's own measure and are reported, not tuned on.

    OMP_NUM_THREADS=1 python benchmarks/campaign_ab.py --runs runs/ab --json benchmarks/campaign/recipe_ab.json
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)

from invdiff.bench.runner import psnr_rows, run_suite  # noqa: E402
from invdiff.bench.suite import load_suite  # noqa: E402
from invdiff.campaign import arm_card, patch_losses, validation_patches  # noqa: E402
from invdiff.data import load_folder  # noqa: E402
from invdiff.prior import load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "campaign" / "tuning_suite.json"
BANDS = ((0, 100), (100, 500), (500, 1000))


def tuning_patches(n: int = 512):
    return validation_patches(n, load_folder(str(REPO / "data" / "tuning"), size=256))


def losses(prior) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for split, draw in (("validation", validation_patches), ("tuning", tuning_patches)):
        chunks, g = draw(512)
        out[split] = patch_losses(prior.net.eval(), prior.schedule, chunks, g)
    return out


def paired(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    d = (a - b).double()
    return [round(float(d.mean()), 6), round(float(d.std() / math.sqrt(len(d))), 6)]


def prior_files(run: Path, name: str, which: str) -> Path:
    """A loadable prior (safetensors + JSON card) of an arm's weights, the card taken from the campaign prior's."""
    src = run / name / f"{which}.safetensors"
    arm = run / name / "arm.json"  # an arm's own U-Net (one may have grown); the seed has the campaign's
    unet = (json.loads(arm.read_text())["config"] if arm.is_file()
            else json.loads((REPO / "invdiff" / "weights" / "natural.json").read_text()))["unet"]
    arm_card("natural", f"natural-ab-{name}-{which}", unet, src.with_suffix(".json"))
    return src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/ab")
    ap.add_argument("--json", default="benchmarks/campaign/recipe_ab.json")
    ap.add_argument("--skip-suite", action="store_true", help="only the losses")
    ap.add_argument("--arms", default=None, help="comma-separated subset (base is always scored)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N tuning photos in the suite rows")
    a = ap.parse_args()
    run = Path(a.runs)
    arms = [p.name for p in sorted(run.iterdir()) if (p / "arm.json").is_file()]
    if a.arms:
        arms = [n for n in arms if n in {"base", *a.arms.split(",")}]
    if "base" not in arms:
        raise SystemExit(f"no base arm in {run}")
    if not (run / "seed" / "ema.safetensors").is_file():  # the state every arm started from
        from safetensors.torch import save_file

        st = torch.load(json.loads((run / "seed.json").read_text())["from"], map_location="cpu", weights_only=True)
        (run / "seed").mkdir(exist_ok=True)
        for which in ("ema", "net"):
            save_file({k: v.contiguous() for k, v in st[which].items()},
                      str(run / "seed" / f"{'online' if which == 'net' else 'ema'}.safetensors"))
    result = {"protocol": __doc__.split("\n\n")[0].replace("\n", " "), "arms": {}}
    per_patch = {}
    for name in ["seed", *arms]:
        info = json.loads((run / name / "arm.json").read_text()) if name != "seed" else {"arm": "seed"}
        entry = {k: info.get(k) for k in ("change", "steps", "images", "pixels", "cpu_minutes", "wall_minutes")
                 if k in info}
        for which in ("ema", "online"):
            prior = load(prior_files(run, name, which))
            per_patch[name, which] = losses(prior)
            entry[which] = {split: round(float(l.mean()), 6) for split, (l, t) in per_patch[name, which].items()}
        if not a.skip_suite:
            out = run / name / "bench"
            suite = replace(load_suite(SUITE), prior=str(prior_files(run, name, "ema")))
            run_suite(suite, out, limit=a.limit)
            entry["psnr"] = psnr_rows(out)
        result["arms"][name] = entry
        print(name, json.dumps({k: entry[k] for k in ("ema", "online")}), flush=True)
    base = result["arms"]["base"]
    for name, entry in result["arms"].items():
        if name == "base":
            continue
        vs = {}
        for which in ("ema", "online"):
            for split in ("validation", "tuning"):
                (la, ta), (lb, _) = per_patch[name, which][split], per_patch["base", which][split]
                vs[f"{which} {split}"] = {"all": paired(la, lb), **{f"t{lo}-{hi - 1}": paired(la[(ta >= lo) & (ta < hi)],
                                                                                             lb[(ta >= lo) & (ta < hi)])
                                                                   for lo, hi in BANDS}}
        if "psnr" in entry:
            diffs = {k: [x - y for x, y in zip(v, base["psnr"][k])] for k, v in entry["psnr"].items()}
            allv = torch.tensor([d for v in diffs.values() for d in v])
            vs["psnr"] = {k: [round(sum(d) / len(d), 3), round(float(torch.tensor(d).std() / math.sqrt(len(d))), 3)]
                          for k, d in diffs.items()}
            vs["psnr"]["mean of rows"] = [round(float(allv.mean()), 3), round(float(allv.std() / math.sqrt(len(allv))), 3)]
        entry["minus_base"] = vs
        print(name, "- base:", json.dumps(vs), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
