"""L_simple on the whole validation photos (256×256), not on the card's 64×64 patches, for several weights of one
architecture, paired draw by draw.

The card's figure (512 crops of 64×64, ``invdiff.campaign.validation_loss``) is the campaign's acceptance measure.
The restorations run on 256×256 photos, where a network trained on larger patches sees more context; this
diagnostic asks whether a recipe change that raised the figure on 64×64 crops (the 128×128 patches) also raised the
loss at the size the suite restores. Every weights file sees the same photos, levels t (uniform) and noises ε
(``invdiff.campaign.patch_losses``, one generator seeded with 0), so the per-draw losses pair up. A Palette model
(its card names a ``condition``) is scored with its condition, drawn as the card's figure draws it (the task's
degradation from a generator of its own, seeded with 1), so its weights pair up the same way.

    python benchmarks/full_size_validation.py WEIGHTS [...] [--labels A,B,...] [--draws 16] [--json out.json]

A weights file is a bundled prior's name or a .safetensors file with its .json config.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch


def losses(prior_name: str, photos: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-draw ε-MSE and t of one prior: each photo ``draws`` times, in the validation protocol's order."""
    from invdiff.campaign import patch_losses
    from invdiff.prior import load
    from invdiff.train import palette_condition_fn

    prior = load(prior_name)
    g = torch.Generator().manual_seed(0)
    name = prior.config.get("data", {}).get("condition")
    cond = {} if name is None else {"condition": palette_condition_fn(name), "g_cond": torch.Generator().manual_seed(1)}
    return patch_losses(prior.net, prior.schedule, [photos.repeat(draws, 1, 1, 1)], g, **cond)


def summary(loss: torch.Tensor, t: torch.Tensor, buckets: int, num_timesteps: int, refs: dict[str, torch.Tensor]) -> dict:
    """The mean, and the paired differences to ``refs`` (name: the per-draw losses of another weights file), overall
    and per bucket of t, each ± its standard error over the draws."""

    def stat(v: torch.Tensor) -> list[float]:
        return [round(float(v.mean()), 6), round(float(v.std() / math.sqrt(len(v))), 6) if len(v) > 1 else None]

    from invdiff.campaign import t_buckets

    out = {"l_simple": stat(loss), "buckets": []}
    out.update({f"minus_{k}": stat(loss - r) for k, r in refs.items()})
    for span, sel in t_buckets(t, buckets, num_timesteps):
        row = {"t": span, "n": int(sel.sum()), "l_simple": stat(loss[sel])}
        row.update({f"minus_{k}": stat(loss[sel] - r[sel]) for k, r in refs.items()})
        out["buckets"].append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+", help="bundled prior names or .safetensors files (the first is the reference)")
    ap.add_argument("--draws", type=int, default=16, help="levels and noises per photo")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--buckets", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--labels", default=None, help="comma-separated names of the weights in the output (default: as given)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from invdiff.data import validation_photos

    photos = validation_photos(a.size)
    result = {"size": a.size, "photos": len(photos), "draws": a.draws, "weights": {}}
    labels = a.labels.split(",") if a.labels else a.weights
    if len(labels) != len(a.weights):
        raise SystemExit(f"--labels names {len(labels)} weights, {len(a.weights)} were given")
    first = prev = None
    for w, label in zip(a.weights, labels):
        loss, t = losses(w, photos, a.draws)
        refs = {} if first is None else {"first": first} if prev is first else {"first": first, "previous": prev}
        s = summary(loss, t, a.buckets, 1000, refs)
        first, prev = (loss if first is None else first), loss
        result["weights"][label] = {"weights": w, **s}

        def diffs(row: dict) -> str:
            return "".join(f"  {k.replace('_', ' ')} {row[k][0]:+.6f} ± {row[k][1]:.6f}" for k in row if k.startswith("minus_"))

        print(f"{label}: {s['l_simple'][0]:.6f} ± {s['l_simple'][1]:.6f}{diffs(s)}", flush=True)
        for b in s["buckets"]:
            print(f"   t {b['t'][0]:>3}-{b['t'][1]:<3} n {b['n']:>3}  {b['l_simple'][0]:.6f}{diffs(b)}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
