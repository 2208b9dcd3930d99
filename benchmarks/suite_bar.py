"""The natural prior's suite bar (issue: the natural-photo prior): the campaign prior against `natural64` on the
natural suite's restoration rows with today's methods and settings held fixed (DiffPIR 40 Gaussian deblurring, DDRM
30 SR ×4, box and 70 % random inpainting), the same code, seeds and degradations; PSNR per photo, the paired gain
(mean ± standard error over the 6 photos) and on how many photos the campaign prior is better.

    OMP_NUM_THREADS=1 python benchmarks/suite_bar.py --weights invdiff/weights/natural.safetensors \\
        --baseline-from benchmarks/campaign/suite_ab_658k.json --json benchmarks/campaign/suite_ab_NNNk.json

The weights are copied (with their card) under ``--work`` first, because the suite keys its resumable results to the
prior's files. ``--baseline-from`` takes natural64's rows from an earlier JSON of this protocol (fixed seeds
reproduce them: checked at 627k and 658k); without it natural64 runs too.

``--samples K`` (a diagnostic, not the bar): K posterior samples of each photo and row instead of one, from the
suite's degradations and per-image sampling streams, with both priors; per photo the PSNR of every sample and of
their mean. A sharper prior draws fills that stray further from the photo, one draw at a time, while its mean can be
closer: this separates the two.

    OMP_NUM_THREADS=1 python benchmarks/suite_bar.py --samples 4 --rows box,random \
        --weights invdiff/weights/natural.safetensors --json benchmarks/campaign/suite_samples_legNN.json
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


def sample_rows(prior: str, rows: list[str], k: int) -> dict[str, dict]:
    """Per row of ROWS (its key): the PSNR of each of K posterior samples per photo, and of their mean, with the natural
    suite's photos, degradations and per-image sampling streams (the runner's), in its batches."""
    from invdiff.bench.suite import load_suite
    from invdiff.data import validation_photos
    from invdiff.metrics import psnr
    from invdiff.prior import load
    from invdiff.rng import make_generators
    from invdiff.samplers import restore
    from invdiff.tasks import TaskOptions, get_task, simulate

    suite = load_suite("natural")
    net = load(prior)
    x_all = validation_photos(suite.dataset["size"])[: suite.count]
    out = {}
    for key in rows:
        task, method = ROWS[key]
        spec = next(t for t in suite.tasks if f"{t.label} {method}" == key)
        opts = TaskOptions(noise_sigma=suite.noise_sigma).with_(**spec.options)
        per_sample, of_mean = [], []
        for lo in range(0, suite.count, suite.batch_size):
            ids = list(range(lo, min(lo + suite.batch_size, suite.count)))
            x = x_all[ids]
            op, y = simulate(get_task(task), x, opts, generator=make_generators(suite.seed, len(ids), purpose="degrade", start=lo))
            r = restore(y, op, get_task(task).noise(opts), net, method=method, steps=suite.steps[method], samples=k,
                        generator=make_generators(suite.seed, len(ids), purpose="sample", start=lo))
            per_sample += [[round(float(v), 3) for v in psnr(r.samples[b], x[b: b + 1].expand_as(r.samples[b]))]
                           for b in range(len(ids))]
            of_mean += [round(float(v), 3) for v in psnr(r.mean, x)]
            print(key, prior, ids, per_sample[-len(ids):], of_mean[-len(ids):], flush=True)
        out[key] = {"samples": per_sample, "mean_of_k": of_mean}
    return out


def samples_main(a) -> None:
    pick = {"deblur": "deblur diffpir", "sr": "sr[scale=4] ddrm", "box": "inpaint[mask=box] ddrm",
            "random": "inpaint[mask=random,mask_fraction=0.7] ddrm"}
    rows = [pick[r] for r in a.rows.split(",")]
    card = json.loads(a.weights.with_suffix(".json").read_text())
    res = {"protocol": f"the natural suite's rows {rows}: {a.samples} posterior samples per photo from the suite's "
                       "degradations and per-image sampling streams, PSNR (dB) of each sample and of their mean "
                       "(benchmarks/suite_bar.py --samples)",
           "natural_images_seen": int(card["training"]["images_seen"]), "natural_leg": card["campaign"]["legs"][-1]["leg"],
           "samples": a.samples, "priors": {}}
    for name, prior in (("natural64", "natural64"), ("natural", str(a.weights))):
        res["priors"][name] = sample_rows(prior, rows, a.samples)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1) + "\n")
    for key in rows:
        one = {n: torch.tensor(res["priors"][n][key]["samples"], dtype=torch.float64) for n in res["priors"]}
        mean = {n: torch.tensor(res["priors"][n][key]["mean_of_k"], dtype=torch.float64) for n in res["priors"]}
        for what, d in (("one sample", one["natural"].mean(1) - one["natural64"].mean(1)),
                        (f"mean of {a.samples}", mean["natural"] - mean["natural64"])):
            print(f"{key}, {what}: natural − natural64 {float(d.mean()):+.3f} ± {float(d.std() / math.sqrt(len(d))):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=Path("invdiff/weights/natural.safetensors"))
    ap.add_argument("--baseline-from", type=Path, default=None, help="natural64's rows from an earlier JSON of this protocol")
    ap.add_argument("--work", type=Path, default=Path("runs/suite_bar"))
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=None, help="a diagnostic: K samples per photo with both priors")
    ap.add_argument("--rows", default="box,random", help="with --samples: of deblur, sr, box, random")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results agree to float32 rounding across thread counts)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.samples:
        return samples_main(a)
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
