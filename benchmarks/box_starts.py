"""Box inpainting's warm start, between the grid's starts: the holes preset of ``invdiff solve`` on the whole tuning split.

``tune.py``'s grid tries the starts 1, 0.5, 0.35 and 0.2 at the default η, and η only at the best of them, on 3
tuning photos. Box inpainting (holes) chose 0.5 with η = 1 there. This runs DDRM at the given (steps, start) with
η = 1 for each prior, on the first ``--photos`` photos of the declared tuning split (``data/tuning``; never trained
on, not in any suite), with the same degradations and per-image streams for every configuration (``tune._problem``
and ``tune._run_config``, seed 0), and writes the PSNR per photo.

    OMP_NUM_THREADS=1 python benchmarks/box_starts.py --priors ffdnet+natural64,ffdnet+natural \\
        --configs 20:0.5 20:0.6 20:0.7 20:0.8 --photos 6 --json benchmarks/tuning/box_starts.json
    python benchmarks/box_starts.py --json benchmarks/tuning/box_starts.json --write-preset ffdnet+natural64

``--draws D`` runs each configuration with the sampling streams of seeds 0..D-1 (the degradations stay seed 0's); a
photo's PSNR is then the mean of its draws. ``--write-preset P`` writes the best configuration of prior P (the mean
PSNR over the photos, among the configurations with the most draws; within ``tune.TIE_DB`` the earlier start) as
the holes variant of P's inpainting preset in ``invdiff/data/solve_presets.json``, marked ``chosen_by`` this script
so ``tune.py choose`` keeps it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tune  # noqa: E402

CHOSEN_BY = "benchmarks/box_starts.py"


def run(priors: list[str], configs: list[tuple[int, float]], photos: int, path: Path, draws: int = 1) -> dict:
    case = next(c for c in tune.CASES if c.key == "inpaint-box")
    x = tune._photos(photos)
    op, y = tune._problem(case, x, 0)
    res = json.loads(path.read_text()) if path.is_file() else {"photos": photos, "eta": 1.0, "rows": []}
    if res["photos"] != photos:
        raise SystemExit(f"{path} holds rows of {res['photos']} photos, not {photos}: use another --json")
    done = {(r["prior"], r["steps"], r["start"], r.get("seed", 0)) for r in res["rows"]}
    for prior in priors:
        tune._run_config.prior = prior
        for steps, start in configs:
            for seed in range(draws):  # draw d: the sampling streams of seed d, the same degradations
                if (prior, steps, start, seed) in done:
                    continue
                r = tune._run_config(case, x, op, y, steps, start, seed, {"eta": 1.0})
                res["rows"].append({"prior": prior, "steps": steps, "start": start, "seed": seed, "nfe": r["nfe"],
                                    "psnr": r["psnr"], "ssim": r["ssim"], "seconds": r["seconds"]})
                path.write_text(json.dumps(res, indent=1) + "\n")
                print(prior, steps, start, seed, r["psnr"], f"{sum(r['psnr']) / photos:.3f}", flush=True)
    return res


def configs_of(res: dict, prior: str) -> list[dict]:
    """The prior's configurations with each photo's PSNR averaged over the draws that ran (``draws``: how many)."""
    by: dict[tuple, list[dict]] = {}
    for r in res["rows"]:
        if r["prior"] == prior:
            by.setdefault((r["steps"], r["start"]), []).append(r)
    return [{"prior": prior, "steps": k[0], "start": k[1], "draws": len(rs),
             "psnr": [sum(v) / len(rs) for v in zip(*(r["psnr"] for r in rs))]} for k, rs in by.items()]


def best(res: dict, prior: str) -> dict:
    """The best mean PSNR (over photos, each the mean of its draws) among the configurations with the most draws;
    within ``tune.TIE_DB`` the earlier start."""
    rows = configs_of(res, prior)
    if not rows:
        raise SystemExit(f"no rows of the prior {prior}")
    most = max(r["draws"] for r in rows)
    rows = [r for r in rows if r["draws"] == most]
    top = max(tune._mean(r) for r in rows)
    return min((r for r in rows if tune._mean(r) >= top - tune.TIE_DB), key=lambda r: (r["steps"], r["start"]))


def write_preset(res: dict, prior: str) -> dict:
    b = best(res, prior)
    spec = json.loads(tune.PRESETS.read_text())
    table = spec["presets"] if spec.get("prior") == prior else spec["by_prior"][prior]["presets"]
    tried = ", ".join(f"{r['steps']} steps from {r['start']} {tune._mean(r):.2f}"
                      + (f" ({r['draws']} draws)" if r["draws"] > 1 else "") for r in configs_of(res, prior))
    table["inpaint"].setdefault("variants", {})["holes"] = {
        "steps": b["steps"], "hyper_parameters": {"start": b["start"], "init": "biharmonic", "eta": 1.0},
        "tuning_psnr": round(tune._mean(b), 3),
        "chosen_by": f"{CHOSEN_BY}: DDRM with eta 1 from the biharmonic fill on the tuning split's {res['photos']} photos "
                     f"(box, sigma 0.05, the degradations of seed 0, a draw per seed 0..D-1), mean PSNR: {tried} (benchmarks/tuning/box_starts.json)"}
    tune.PRESETS.write_text(json.dumps(spec, indent=1) + "\n")
    return b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", default="")
    ap.add_argument("--configs", nargs="*", default=[], help="steps:start, e.g. 20:0.7")
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draws", type=int, default=1, help="sampling draws per photo and configuration (seeds 0..D-1); "
                    "a box fill's PSNR moves by 1-2 dB from draw to draw, so the choice takes each photo's mean")
    ap.add_argument("--write-preset", default=None, metavar="PRIOR")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    configs = [(int(c.split(":")[0]), float(c.split(":")[1])) for c in a.configs]
    res = (run([p for p in a.priors.split(",") if p], configs, a.photos, a.json, a.draws) if configs
           else json.loads(a.json.read_text()))
    for prior in dict.fromkeys(r["prior"] for r in res["rows"]):
        print(prior, " ".join(f"{r['steps']}:{r['start']} {tune._mean(r):.2f} ({r['draws']})" for r in configs_of(res, prior)))
    if a.write_preset:
        b = write_preset(res, a.write_preset)
        print(f"holes preset of {a.write_preset}: DDRM {b['steps']} steps from {b['start']}, eta 1: {tune._mean(b):.3f} dB")


if __name__ == "__main__":
    main()
