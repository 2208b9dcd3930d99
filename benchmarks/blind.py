"""Blind Gaussian deblurring against the non-blind result with the true kernel, on the natural suite's photos.

For each photo, blur σ_b and noise σ: y = g_{σ_b} * x + n (61×61 kernel, reflect padding, seeded noise); the
non-blind run restores with the true kernel, the blind run with the kernel of the estimated σ
(``invdiff.blind.estimate_gaussian_blur``), both with the defaults of ``invdiff solve --task deblur`` (the default
prior and its preset; ``--steps N``: the task's default method with N steps instead; the same sampling streams).
Writes a JSON.

    python benchmarks/blind.py --photos 2 --out benchmarks/blind
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _solver(prior_name: str | None, steps: int | None):
    """(prior name, method, steps, hyper-parameters): solve's deblurring defaults, or the task's method at ``steps``."""
    from invdiff.tasks import get_task, solve_preset
    from invdiff.zoo import default_prior

    task, name = get_task("deblur"), prior_name or default_prior()
    pre = solve_preset("deblur", name) if steps is None else None
    if pre is None:
        return name, task.default_method, steps or 40, dict(task.hyper_parameters.get(task.default_method, {}))
    return name, pre.method, pre.steps, pre.run_hyper_parameters(task)


def run(photos: int, noises: list[float], sigmas: list[float], steps: int | None, out: Path,
        prior_name: str | None = None) -> list[dict]:
    from invdiff import operators as ops
    from invdiff.blind import estimate_gaussian_blur, kernel_error
    from invdiff.data import validation_photos
    from invdiff.metrics import psnr
    from invdiff.prior import load
    from invdiff.rng import make_generators
    from invdiff.samplers import restore

    prior_name, method, steps, hp = _solver(prior_name, steps)
    prior = load(prior_name)
    print(f"prior {prior_name}: {method}, {steps} steps, {hp}", flush=True)
    xs = validation_photos(256)[:photos]
    rows = []
    for i, x in enumerate(xs):
        x = x[None]
        for sb in sigmas:
            k_true = ops.gaussian_kernel(61, sb)
            for ns in noises:
                g = make_generators(0, 1, purpose=f"blind-noise-{sb}-{ns}", start=i)
                y = ops.Blur(k_true)(x) + ns * torch.randn(x.shape, generator=g[0])
                t0 = time.perf_counter()
                est = estimate_gaussian_blur(y, ns)
                t_est = time.perf_counter() - t0
                res = {}
                for name, k in (("true kernel", k_true), ("blind", est.kernel)):
                    r = restore(y, ops.Blur(k), ops.GaussianNoise(ns), prior, method=method, steps=steps,
                                generator=make_generators(0, 1, purpose="sample", start=i), **hp)
                    res[name] = float(psnr(r.mean, x)[0])
                rows.append({"photo": i, "blur_sigma": sb, "noise_sigma": ns, "estimated_sigma": round(est.blur_sigma, 3),
                             "kernel_error": round(kernel_error(est.kernel, k_true), 4),
                             "psnr_blurry": float(psnr(y.clamp(-1, 1), x)[0]), "psnr_true_kernel": res["true kernel"],
                             "psnr_blind": res["blind"], "estimate_seconds": round(t_est, 2), "prior": prior_name,
                             "method": method, "steps": steps, "hyper_parameters": hp})
                print(json.dumps(rows[-1]), flush=True)
                out.mkdir(parents=True, exist_ok=True)
                (out / "blind_gaussian.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.05])
    ap.add_argument("--blur", type=float, nargs="+", default=[1.5, 3.0])
    ap.add_argument("--steps", type=int, default=None, help="the deblur task's method at this many steps (default: "
                    "solve's preset)")
    ap.add_argument("--prior", default=None, help="default: solve's default prior")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/blind"))
    a = ap.parse_args()
    run(a.photos, a.noise, a.blur, a.steps, a.out, a.prior)


if __name__ == "__main__":
    main()
