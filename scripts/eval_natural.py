"""Figures of the natural-photo prior, written into its model card (invdiff/weights/natural64.json) and
benchmarks/natural64.md / natural64_restorations.png:

- L_simple on validation patches (64×64 crops of scikit-image's photos, never trained on);
- on the validation photos at 256×256 with σ=0.05: Gaussian deblur (61×61, σ=3), ×4 super-resolution and box
  inpainting restored by each task's default method, against the classical baselines (PSNR and SSIM);
- a figure measurement / restored / ground truth per task.

    python scripts/eval_natural.py [--size 256] [--photos 6] [--steps N] [--tasks deblur,sr,inpaint]   (--tasks "": the loss only)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from invdiff.baselines import BASELINES
from invdiff.data import validation_photos
from invdiff.figures import display, panels
from invdiff.metrics import psnr, ssim
from invdiff.prior import load
from invdiff.rng import make_generators
from invdiff.samplers import restore
from invdiff.tasks import TASKS, TaskOptions, simulate
from invdiff.zoo import PRIORS

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

#: task -> (options, baselines to compare with)
PROTOCOL = {
    "deblur": (TaskOptions(kernel_size=61, blur_sigma=3.0), ["wiener", "tv"]),
    "sr": (TaskOptions(scale=4), ["bicubic"]),
    "inpaint": (TaskOptions(mask="box"), ["biharmonic"]),
}


def baseline(name: str, task: str, y, op, opts: TaskOptions):
    return BASELINES[name](y, op, opts.noise_sigma)


def validation_loss(prior, n_patches: int = 512) -> tuple[float, float]:
    from invdiff.data import PatchSampler
    from invdiff.train import diffusion_loss

    photos = [p for p in validation_photos(256)]
    sampler = PatchSampler(photos, patch=64, max_scale=1.0)
    g = torch.Generator().manual_seed(0)
    losses = []
    with torch.no_grad():
        for _ in range(n_patches // 64):
            x = sampler.sample(64, g)
            for i in range(0, 64, 8):
                losses.append(float(diffusion_loss(prior.net, prior.schedule, x[i: i + 8], g)))
    t = torch.tensor(losses)
    return float(t.mean()), float(t.std() / len(losses) ** 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--tasks", default="deblur,sr,inpaint")
    ap.add_argument("--skip-loss", action="store_true")
    a = ap.parse_args()
    prior = load("natural64")
    card = {}
    if not a.skip_loss:
        m, se = validation_loss(prior)
        card["validation_l_simple"] = round(m, 5)
        card["validation_l_simple_stderr"] = round(se, 5)
        print("validation L_simple", m, "+-", se)
    x = validation_photos(a.size)[: a.photos]
    rows, fig_rows = [], []
    for task in filter(None, a.tasks.split(",")):
        opts, bases = PROTOCOL[task]
        t = TASKS[task]
        op, y = simulate(task, x, opts, generator=make_generators(0, x.shape[0]))
        t0 = time.perf_counter()
        res = restore(y, op, t.noise(opts), prior, method=t.default_method, steps=a.steps, generator=make_generators(100, x.shape[0]))
        sec = (time.perf_counter() - t0) / x.shape[0]
        row = {"task": task, "method": t.default_method, "psnr": float(psnr(res.mean, x).mean()), "ssim": float(ssim(res.mean, x).mean()),
               "nfe": int(res.nfe), "seconds_per_image": round(sec, 1)}
        for b in bases:
            xb = baseline(b, task, y, op, opts)
            row[f"{b}_psnr"] = float(psnr(xb, x).mean())
            row[f"{b}_ssim"] = float(ssim(xb, x).mean())
        rows.append(row)
        print(row)
        fig_rows.append((task, y[0], res.mean[0], x[0]))
    for task, y0, r0, x0 in fig_rows:
        panels(BENCH / f"natural64_{task}.png", [("measurement", display(y0, x0), None), ("restored", display(r0), None),
                                                 ("ground truth", display(x0), None)], title=f"natural64 · {task}")
    if rows:
        card["restoration"] = {"photos": a.photos, "size": a.size, "noise_sigma": 0.05, "rows": rows}
    path = PRIORS["natural64"].config
    cfg = json.loads(path.read_text())
    cfg.setdefault("figures", {}).update(card)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if not rows:
        return
    lines = ["| task | method | PSNR | SSIM | baselines (PSNR / SSIM) | NFE | s/image |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        bl = "; ".join(f"{k[:-5]} {r[k]:.2f} / {r[k[:-5] + '_ssim']:.3f}" for k in r if k.endswith("_psnr"))
        lines.append(f"| {r['task']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {bl} | {r['nfe']} | {r['seconds_per_image']} |")
    (BENCH / "natural64.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
