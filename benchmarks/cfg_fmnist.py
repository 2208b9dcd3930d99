"""Classifier-free guidance on Fashion-MNIST: does guidance make the class-conditional prior's samples more
recognisable, and less diverse?

    python benchmarks/cfg_fmnist.py classifier          # train the judge on the train split, test it on the test split
    python benchmarks/cfg_fmnist.py guidance [--n 100]  # sample fmnist32-cond per class and weight, judge, tabulate
    python benchmarks/cfg_fmnist.py labels              # how much the label lowers the ε loss, per noise level

``classifier`` trains a small CNN (two conv blocks and a linear layer) on the 60,000 training images with flips
and one-pixel shifts, and writes ``benchmarks/cfg/fmnist_classifier.safetensors`` with its test accuracy on the
10,000 test images in ``fmnist_classifier.json``. It never sees a generated image.

``guidance`` draws ``--n`` samples per class for each guidance weight w (DDIM, η = 0, ``--steps`` steps; two
network evaluations per step when w ≠ 0, batched in one call), from the same initial noises for every w, and writes

* ``benchmarks/cfg/guidance.json`` and ``guidance.md``: per w, the classifier's accuracy on the samples (the
  fraction classified as the label they were drawn for, with its binomial standard error), the mean classifier
  confidence, and the diversity: the mean pairwise L2 distance between samples of the same class (in [-1, 1]
  units, per pixel RMS), averaged over classes;
* ``benchmarks/cfg/guidance_grid.png``: classes (rows) × w (column groups), the same noises in every group.

``labels`` measures how much the model uses its label: on ``--n`` test images, at several t, the ε-MSE with the
true label, the null label and a wrong one ((label + 3) mod 10), the same x_t for all three
(``benchmarks/cfg/labels.json``). A model that follows its labels has a clear gap between true and null.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

OUT = Path(__file__).resolve().parent / "cfg"
WEIGHTS = OUT / "fmnist_classifier.safetensors"


class Classifier(nn.Module):
    """32×32 grey images in [-1, 1] → 10 logits."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * width * 16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    net.eval()
    pred = torch.cat([net(x[i: i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


def train_classifier(epochs: int, seed: int = 0) -> None:
    from safetensors.torch import save_file

    from invdiff.data import FMNIST_CLASSES, fashion_mnist

    x, y = fashion_mnist("train")
    xt, yt = fashion_mnist("test")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = Classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            idx = perm[i: i + 128]
            loss = F.cross_entropy(net(_augment(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {ep + 1}/{epochs}: test accuracy {accuracy(net, xt, yt):.4f} ({time.time() - t0:.0f} s)", flush=True)
    acc = accuracy(net, xt, yt)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(WEIGHTS))
    card = {"what": "the judge of benchmarks/cfg_fmnist.py: a 3-block CNN trained on the Fashion-MNIST train split "
                    "(60,000 images, flips and 1-pixel shifts); never trained on generated images",
            "classes": list(FMNIST_CLASSES), "epochs": epochs, "seed": seed, "test_images": len(xt),
            "test_accuracy": round(acc, 4), "test_accuracy_stderr": round(math.sqrt(acc * (1 - acc) / len(xt)), 4),
            "train_seconds": round(time.time() - t0, 1), "params": sum(p.numel() for p in net.parameters())}
    WEIGHTS.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(card, indent=1))


def load_classifier() -> Classifier:
    from safetensors.torch import load_file

    if not WEIGHTS.is_file():
        sys.exit(f"{WEIGHTS} is missing: run `python benchmarks/cfg_fmnist.py classifier` first")
    net = Classifier()
    net.load_state_dict(load_file(str(WEIGHTS)))
    return net.eval()


def diversity(x: torch.Tensor) -> float:
    """Mean pairwise distance between the images of x (N, C, H, W): per-pixel RMS of the difference."""
    f = x.flatten(1).double()
    d = torch.cdist(f, f) / math.sqrt(f.shape[1])
    n = f.shape[0]
    return float(d.sum() / (n * (n - 1)))


def run_guidance(prior_name: str, weights: list[float], n: int, steps: int, seed: int) -> None:
    from invdiff.io import save_grid
    from invdiff.prior import load
    from invdiff.samplers.core import sample

    prior = load(prior_name)
    judge = load_classifier()
    names = prior.class_names
    rows, grid = [], []
    for w in weights:
        t0 = time.time()
        xs, correct, conf, div = [], 0, 0.0, []
        for c in range(prior.num_classes):
            g = torch.Generator().manual_seed(seed + c)  # the same noises for every w
            labels = torch.full((n,), c, dtype=torch.long)
            with torch.no_grad():
                x = sample(prior, (n, 1, 32, 32), steps=steps, eta=0.0, generator=g, cond=labels, cfg_weight=w)
                p = judge(x.clamp(-1, 1)).softmax(1)
            correct += int((p.argmax(1) == c).sum())
            conf += float(p[:, c].sum())
            div.append(diversity(x.clamp(-1, 1)))
            xs.append(x[:8])
        total = n * prior.num_classes
        acc = correct / total
        rows.append({"w": w, "accuracy": round(acc, 4), "accuracy_stderr": round(math.sqrt(acc * (1 - acc) / total), 4),
                     "confidence": round(conf / total, 4), "diversity": round(sum(div) / len(div), 4),
                     "diversity_per_class": [round(v, 4) for v in div], "samples": total,
                     "nfe_per_sample": steps * (2 if w else 1), "seconds": round(time.time() - t0, 1)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "diversity_per_class"}), flush=True)
        grid.append(torch.cat(xs))
    OUT.mkdir(parents=True, exist_ok=True)
    # rows: classes; columns: 8 samples for each w, side by side
    per_w = [g.view(prior.num_classes, 8, 1, 32, 32) for g in grid]
    tiles = torch.cat(per_w, 1).flatten(0, 1)
    save_grid(OUT / "guidance_grid.png", tiles, nrow=8 * len(weights))
    judge_card = json.loads(WEIGHTS.with_suffix(".json").read_text())
    res = {"prior": prior_name, "sampler": f"DDIM eta=0, {steps} steps", "samples_per_class": n, "seed": seed,
           "classifier_test_accuracy": judge_card["test_accuracy"], "classes": names, "rows": rows}
    (OUT / "guidance.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# Classifier-free guidance on {prior_name}", "",
             f"{n} samples per class ({n * prior.num_classes} per row), DDIM η=0 with {steps} steps, the same initial "
             f"noises for every w (seed {seed}). Judge: benchmarks/cfg/fmnist_classifier (test accuracy "
             f"{judge_card['test_accuracy']:.4f} on the 10,000 test images). Diversity: mean pairwise RMS distance "
             "between samples of one class, averaged over the classes.", "",
             "| w | accuracy | mean confidence | diversity | NFE / sample |", "|---|---|---|---|---|"]
    lines += [f"| {r['w']:g} | {r['accuracy']:.3f} ± {r['accuracy_stderr']:.3f} | {r['confidence']:.3f} | "
              f"{r['diversity']:.4f} | {r['nfe_per_sample']} |" for r in rows]
    lines += ["", "![classes x w](guidance_grid.png)", "",
              "Rows: " + ", ".join(names) + f". Column groups: w = {', '.join(f'{w:g}' for w in weights)} (8 samples each).", ""]
    (OUT / "guidance.md").write_text("\n".join(lines))


def label_losses(prior_name: str, n: int, seed: int, ts=(100, 300, 500, 700, 900)) -> list[dict]:
    from invdiff.data import fashion_mnist
    from invdiff.prior import load

    p = load(prior_name)
    x, lab = fashion_mnist("test")
    x, lab = x[:n], torch.as_tensor(lab[:n]).long()
    g = torch.Generator().manual_seed(seed)
    ab = p.schedule.alphas_cumprod
    rows = []
    for t in ts:
        e = torch.randn(x.shape, generator=g)
        xt = ab[t].sqrt() * x + (1 - ab[t]).sqrt() * e
        with torch.no_grad():
            loss = {name: float((p.eps(xt, t, c) - e).square().mean()) for name, c in
                    (("true", lab), ("null", torch.full_like(lab, p.num_classes)), ("wrong", (lab + 3) % 10))}
        rows.append({"t": t, **{k: round(v, 6) for k, v in loss.items()},
                     "gain_true_vs_null": round(1 - loss["true"] / loss["null"], 4)})
        print(json.dumps(rows[-1]), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "labels.json").write_text(json.dumps({"prior": prior_name, "images": n, "seed": seed, "rows": rows}, indent=1) + "\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("classifier")
    c.add_argument("--epochs", type=int, default=6)
    gd = sub.add_parser("guidance")
    gd.add_argument("--prior", default="fmnist32-cond")
    gd.add_argument("--w", default="0,1,3,7", help="comma-separated guidance weights")
    gd.add_argument("--n", type=int, default=100, help="samples per class")
    gd.add_argument("--steps", type=int, default=50)
    gd.add_argument("--seed", type=int, default=0)
    lb = sub.add_parser("labels")
    lb.add_argument("--prior", default="fmnist32-cond")
    lb.add_argument("--n", type=int, default=1000, help="test images")
    lb.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "classifier":
        train_classifier(a.epochs)
    elif a.cmd == "labels":
        label_losses(a.prior, a.n, a.seed)
    else:
        run_guidance(a.prior, [float(v) for v in a.w.split(",")], a.n, a.steps, a.seed)


if __name__ == "__main__":
    main()
