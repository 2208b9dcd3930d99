"""Assemble the natural-photo training set: a compact copy (downscaled PNGs) of the photographs listed in
invdiff/data/natural_sources.json, extracted from their Debian packages.

    python scripts/build_natural_data.py [--out data/natural] [--short-side 384]
    python scripts/build_natural_data.py --split tuning      # the solve defaults' tuning photos -> data/tuning

The packages are fetched with `apt-get download` and unpacked with `dpkg -x` into a scratch folder (no
installation, no desktop dependencies). Photos already under /usr/share are used in place.
scikit-image's bundled photos (astronaut, coffee, chelsea, camera, …) are kept out: they are the validation set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

SOURCES = Path(__file__).resolve().parents[1] / "invdiff" / "data" / "natural_sources.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("train", "tuning"), default="train",
                    help="train: the prior's training photos; tuning: the photos benchmarks/tune.py tunes on")
    ap.add_argument("--out", default=None, help="default: data/natural (train) or data/tuning (tuning)")
    ap.add_argument("--short-side", type=int, default=384)
    ap.add_argument("--scratch", default=None, help="folder for the unpacked packages (default: a temporary one)")
    args = ap.parse_args()
    spec = json.loads(SOURCES.read_text())
    files = spec["files"] if args.split == "train" else spec["tuning"]
    out = Path(args.out or ("data/natural" if args.split == "train" else "data/tuning"))
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="invdiff-debs-"))
    root = scratch / "root"
    needed = sorted({f["package"] for f in files if not Path(f["path"]).is_file()})
    if needed:
        scratch.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", *needed], cwd=scratch, check=True)
        for deb in scratch.glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    for f in files:
        src = Path(f["path"])
        if not src.is_file():
            src = root / f["path"].lstrip("/")
        im = Image.open(src).convert("RGB")
        s = args.short_side / min(im.size)
        if s < 1:
            im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
        im.save(out / f"{f['name']}.png")
        print(f"{f['name']}: {im.size[0]}x{im.size[1]}  <- {f['package']}")


if __name__ == "__main__":
    main()
