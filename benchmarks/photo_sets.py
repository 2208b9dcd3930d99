"""L_simple of several prior weights on several sets of photos, paired: the validation figure's protocol (512 64×64
crops of 256×256 centre crops, uniform t, generator seeded with 0) on the validation photos, the tuning split, and
the training photos in the groups the training set grew by (`invdiff/data/natural_sources.json` lists them in that
order). Every network sees the same crops, t and ε on a set, so the losses pair up patch by patch; each weights file
after the first gets its paired change from the first (mean ± standard error over the 512 patches).

    OMP_NUM_THREADS=1 python benchmarks/photo_sets.py --json benchmarks/campaign/more_photos.json \\
        --label leg32=<weights> --label leg35=<weights> ...

A weights file is a prior's `.safetensors` with its `.json` card (a committed version: `git show REV:path`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

#: the groups of the training list, in the order the list grew (the leg from which each was trained on)
GROUPS = (("the first 38 (trained on from leg 0)", 0, 38), ("15 from lomiri-wallpapers (from leg 34)", 38, 53),
          ("13 more from opencv-doc (from leg 36)", 53, 66), ("140 from gcompris-qt-data (from leg 56)", 66, 206))


def photo_sets(root: str = "data/natural", tuning: str = "data/tuning") -> dict[str, torch.Tensor | None]:
    """The sets as (N, 3, 256, 256) batches in [-1, 1]; None is the validation photos (the card's own draw)."""
    from invdiff.data import center_crop_resize, load_folder, natural_photos, natural_sources

    names = [f["name"] for f in natural_sources()]

    def load(ns: list[str]) -> torch.Tensor:
        return torch.cat([center_crop_resize(im[None].float() / 127.5 - 1, 256) for im in natural_photos(root, names=ns)])

    sets: dict[str, torch.Tensor | None] = {"validation (the card's figure)": None,
                                            "tuning split (never trained on)": load_folder(tuning, size=256)}
    for label, a, b in GROUPS:
        if len(names) >= b:
            sets[label] = load(names[a:b])
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", action="append", required=True, help="NAME=WEIGHTS (the first is the reference)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from invdiff.campaign import patch_losses, validation_patches
    from invdiff.prior import load

    labels = [s.split("=", 1) for s in a.label]
    sets = photo_sets()
    losses = {}
    for name, path in labels:
        prior = load(path)
        for k, photos in sets.items():
            chunks, g = validation_patches(512, photos=photos)
            losses[name, k] = patch_losses(prior.net.eval(), prior.schedule, chunks, g)[0]
    out = {"protocol": __doc__.split("\n\n")[0].replace("\n", " "), "weights": dict(labels), "sets": {}}
    ref = labels[0][0]
    for k in sets:
        row = {}
        for name, _ in labels:
            l = losses[name, k]
            row[name] = [round(float(l.mean()), 5), round(float(l.std() / math.sqrt(len(l))), 5)]
        for name, _ in labels[1:]:
            d = losses[name, k] - losses[ref, k]
            row[f"{name} - {ref}"] = [round(float(d.mean()), 6), round(float(d.std() / math.sqrt(len(d))), 6)]
        out["sets"][k] = row
        print(k, json.dumps(row), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
