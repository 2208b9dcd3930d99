"""Validation loss of the natural-photo prior, written into its model card (invdiff/weights/natural64.json):
L_simple on 64×64 crops of scikit-image's photos (never trained on).

Restoration figures on the validation photos (deblur, SR ×4, inpainting, ... against the classical baselines,
with measurement / restored / ground-truth grids) come from the benchmark suite instead:

    python scripts/eval_natural.py
    torchrun --nproc_per_node 2 -m invdiff.bench natural      # benchmarks/results/natural
"""

from __future__ import annotations

import argparse
import json

import torch

from invdiff.data import validation_photos
from invdiff.prior import load
from invdiff.zoo import PRIORS


def validation_loss(prior, n_patches: int = 512) -> tuple[float, float]:
    from invdiff.data import PatchSampler
    from invdiff.train import diffusion_loss

    sampler = PatchSampler(list(validation_photos(256)), patch=64, max_scale=1.0)
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
    ap.add_argument("--patches", type=int, default=512)
    a = ap.parse_args()
    m, se = validation_loss(load("natural64"), a.patches)
    print(f"validation L_simple {m:.5f} ± {se:.5f}")
    path = PRIORS["natural64"].config
    cfg = json.loads(path.read_text())
    cfg.setdefault("figures", {}).update({"validation_l_simple": round(m, 5), "validation_l_simple_stderr": round(se, 5)})
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
