"""Figures of the shipped Fashion-MNIST priors, written into their model cards (invdiff/weights/*.json) and
benchmarks/fmnist_priors.md:

- fmnist32: L_simple and the variational bound (bits/dim) on N test images; sample grids (DDPM 1000 steps and
  DDIM 50 steps, 64 samples each) in benchmarks/.
- fmnist32-palette-sr4 / -inpaint: PSNR on N test images against bicubic upsampling / biharmonic inpainting.

    python scripts/eval_fmnist.py [--n 1000] [--skip-samples] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from invdiff.data import fashion_mnist
from invdiff.evaluate import variational_bound
from invdiff.io import save_grid
from invdiff.metrics import psnr
from invdiff.prior import load
from invdiff.rng import make_generators
from invdiff.samplers import restore, sample
from invdiff.tasks import PALETTE_CONDITIONS, TASKS, simulate
from invdiff.zoo import PRIORS

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def update_card(name: str, figures: dict) -> None:
    path = PRIORS[name].config
    cfg = json.loads(path.read_text())
    cfg.setdefault("figures", {}).update(figures)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def eval_unconditional(n: int, skip_samples: bool) -> dict:
    prior = load("fmnist32")
    x, _ = fashion_mnist("test")
    x = x[:n]
    t0 = time.perf_counter()
    est = variational_bound(prior, x, samples_per_image=16, generator=torch.Generator().manual_seed(0))
    figs = {"test_images": est.images, "l_simple": round(est.l_simple, 5), "l_simple_stderr": round(est.l_simple_stderr, 5),
            "bits_per_dim": {k: round(v, 4) for k, v in est.bits_per_dim.items()},
            "bits_per_dim_stderr": {k: round(v, 4) for k, v in est.stderr.items()},
            "bound_terms_bits_per_dim": {k: round(v, 4) for k, v in est.terms.items()},
            "bound_estimator": "stratified over t, 16 strata per image", "eval_seconds": round(time.perf_counter() - t0, 1)}
    print("fmnist32", figs)
    if not skip_samples:
        for label, steps, eta in (("ddpm1000", 1000, 1.0), ("ddim50", 50, 0.0)):
            t0 = time.perf_counter()
            s = sample(prior, (64, 1, 32, 32), steps=steps, eta=eta, generator=make_generators(0, 64))
            save_grid(BENCH / f"fmnist32_samples_{label}.png", s, nrow=8)
            figs[f"samples_{label}_seconds"] = round(time.perf_counter() - t0, 1)
    update_card("fmnist32", figs)
    return figs


def eval_palette(name: str, n: int, batch: int = 100, samples: int = 1) -> dict:
    from invdiff.baselines import BASELINES

    prior = load(name)
    cond_name = prior.config["data"]["condition"]
    task, opts = PALETTE_CONDITIONS[cond_name]
    x, _ = fashion_mnist("test")
    x = x[:n]
    ours, base = [], []
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        xb = x[lo: lo + batch]
        gens = make_generators(lo, xb.shape[0])
        op, y = simulate(task, xb, opts, generator=gens)
        res = restore(y, op, TASKS[task].noise(opts), prior, method="palette", steps=100, samples=samples,
                      generator=make_generators(10_000 + lo, xb.shape[0]))
        ours.append(psnr(res.mean, xb))
        if task == "sr":
            b = BASELINES["bicubic"](y, op, opts.noise_sigma)
        else:
            b = BASELINES["biharmonic"](y, op, opts.noise_sigma)
        base.append(psnr(b, xb))
    ours_t, base_t = torch.cat(ours), torch.cat(base)
    baseline_name = "bicubic upsampling" if task == "sr" else "biharmonic inpainting (scikit-image)"
    figs = {"test_images": n, "task": task, "noise_sigma": opts.noise_sigma, "steps": 50, "sampler": "DDPM-like (eta=1), 50 steps from t=500 started at the noised condition (palette defaults)",
            **({"psnr": round(float(ours_t.mean()), 3), "psnr_std": round(float(ours_t.std()), 3)} if samples == 1 else
               {f"psnr_mean_of_{samples}_samples": round(float(ours_t.mean()), 3),
                f"psnr_mean_of_{samples}_samples_std": round(float(ours_t.std()), 3)}),
            "baseline": baseline_name, "baseline_psnr": round(float(base_t.mean()), 3),
            ("eval_seconds" if samples == 1 else f"eval_seconds_{samples}_samples"): round(time.perf_counter() - t0, 1)}
    print(name, figs)
    update_card(name, figs)
    return figs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--skip-samples", action="store_true")
    ap.add_argument("--only", default=None)
    ap.add_argument("--samples", type=int, default=1, help="Palette: score the mean of K posterior samples")
    a = ap.parse_args()
    out = {}
    names = [a.only] if a.only else ["fmnist32", "fmnist32-palette-sr4", "fmnist32-palette-inpaint"]
    for name in names:
        if not PRIORS[name].available:
            print(f"{name}: not shipped yet, skipped")
            continue
        out[name] = eval_unconditional(a.n, a.skip_samples) if name == "fmnist32" else eval_palette(name, a.n, samples=a.samples)
    path = BENCH / "fmnist_priors.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    for name, figs in out.items():  # K=1 and K>1 evaluations live side by side
        merged.setdefault(name, {}).update(figs)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
