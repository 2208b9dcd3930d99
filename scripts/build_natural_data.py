"""Assemble the natural-photo training set: a compact copy (downscaled PNGs) of the photographs listed in
invdiff/data/natural_sources.json, extracted from their Debian packages.

    python scripts/build_natural_data.py [--out data/natural] [--short-side 384]
    python scripts/build_natural_data.py --split tuning      # the solve defaults' tuning photos -> data/tuning

The packages are fetched with `apt-get download` and unpacked with `dpkg -x` into a scratch folder (no
installation, no desktop dependencies). Photos already under /usr/share are used in place. An entry with a
``member`` is a file inside a Qt resource bundle (`.rcc`, as gcompris-qt-data ships its pictures), read by
``rcc_members``.
scikit-image's bundled photos (astronaut, coffee, chelsea, camera, …) are kept out: they are the validation set.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from PIL import Image

SOURCES = Path(__file__).resolve().parents[1] / "invdiff" / "data" / "natural_sources.json"


def rcc_members(path: Path) -> dict[str, bytes]:
    """The files of a Qt binary resource bundle (.rcc, format versions 1-3), by their path inside it.

    The layout: the magic "qres", then big-endian uint32 version, tree, data and names offsets. Tree nodes are 14
    bytes (22 from version 2, which adds a modification time): name offset (u32), flags (u16), then for a
    directory the child count and first child index (u32, u32), for a file country and language (u16, u16) and its
    data offset (u32). A name is u16 length, u32 hash, UTF-16BE text; a file's data is a u32 size and the bytes,
    zlib-compressed after a u32 length when flag 1 is set (flag 4, zstd, is refused: the reader needs no extra
    dependency for the bundles used)."""
    b = path.read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{path} is not a Qt resource bundle")
    version, tree, data, names = struct.unpack(">IIII", b[4:20])
    node = 22 if version >= 2 else 14

    def name(off: int) -> str:
        (n,) = struct.unpack(">H", b[names + off: names + off + 2])
        return b[names + off + 6: names + off + 6 + 2 * n].decode("utf-16-be")

    out, stack = {}, [(0, "")]
    while stack:
        i, prefix = stack.pop()
        o = tree + i * node
        name_off, flags = struct.unpack(">IH", b[o: o + 6])
        here = prefix + (name(name_off) if i else "")
        if flags & 2:
            count, first = struct.unpack(">II", b[o + 6: o + 14])
            stack.extend((c, here + "/" if here else "") for c in range(first, first + count))
            continue
        (off,) = struct.unpack(">I", b[o + 10: o + 14])
        (size,) = struct.unpack(">I", b[data + off: data + off + 4])
        raw = b[data + off + 4: data + off + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: {here} is zstd-compressed, which this reader does not decode")
        out[here] = zlib.decompress(raw[4:]) if flags & 1 else raw
    return out


def open_photo(f: dict, root: Path, bundles: dict) -> Image.Image:
    """The photo of one entry of natural_sources.json: a file of the system or of the unpacked packages, or a member
    of a resource bundle there."""
    src = Path(f["path"])
    if not src.is_file():
        src = root / f["path"].lstrip("/")
    if "member" not in f:
        return Image.open(src)
    if src not in bundles:
        bundles[src] = rcc_members(src)
    return Image.open(io.BytesIO(bundles[src][f["member"]]))


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
    bundles: dict = {}
    for f in files:
        im = open_photo(f, root, bundles).convert("RGB")
        s = args.short_side / min(im.size)
        if s < 1:
            im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
        im.save(out / f"{f['name']}.png")
        print(f"{f['name']}: {im.size[0]}x{im.size[1]}  <- {f['package']}")


if __name__ == "__main__":
    main()
