"""The training photos' list and the reader of the Qt resource bundles some of them come from."""

from __future__ import annotations

import importlib.util
import json
import struct
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("build_natural_data", ROOT / "scripts" / "build_natural_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bundle(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """A Qt .rcc written from the format's description: header, tree (breadth first, children of a directory
    contiguous), names (u16 length, u32 hash, UTF-16BE), data (u32 size, bytes; compressed: u32 length + zlib)."""
    tree: dict = {}
    for path, payload in files.items():
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = payload
    names, data, nodes = b"", b"", []
    name_at: dict[str, int] = {}

    def name_off(n: str) -> int:
        nonlocal names
        if n not in name_at:
            name_at[n] = len(names)
            names += struct.pack(">HI", len(n), 0) + n.encode("utf-16-be")
        return name_at[n]

    queue = [("", tree)]
    nodes.append(None)  # the root, filled in below
    slots = {id(tree): 0}
    while queue:
        _, node = queue.pop(0)
        first = len(nodes)
        items = sorted(node.items())
        nodes.extend([None] * len(items))
        me = slots[id(node)]
        nodes[me] = ("dir", nodes[me][1] if nodes[me] else 0, len(items), first)
        for k, (child_name, child) in enumerate(items):
            if isinstance(child, dict):
                slots[id(child)] = first + k
                nodes[first + k] = ("dir", name_off(child_name), 0, 0)
                queue.append((child_name, child))
            else:
                payload, compress = child
                blob = struct.pack(">I", len(payload)) + zlib.compress(payload) if compress else payload
                nodes[first + k] = ("file", name_off(child_name), int(compress), len(data))
                data += struct.pack(">I", len(blob)) + blob
    size = 22 if version >= 2 else 14
    body = b""
    for kind, noff, a, b in nodes:
        if kind == "dir":
            body += struct.pack(">IHII", noff, 2, a, b)
        else:
            body += struct.pack(">IHHHI", noff, a, 0, 0, b)
        body += b"\0" * (size - 14)
    header = 24 if version >= 3 else 20
    tree_off = header
    data_off = tree_off + len(body)
    names_off = data_off + len(data)
    head = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        head += struct.pack(">I", 0)
    return head + body + data + names


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_members_reads_plain_and_compressed_files_at_any_depth(tmp_path, version):
    files = {"a/b/photo.webp": (b"RIFF....WEBP" * 50, True), "a/raw.png": (b"\x89PNG data", False),
             "top.txt": (b"hello", False)}
    (tmp_path / "x.rcc").write_bytes(_bundle(files, version))
    got = _builder().rcc_members(tmp_path / "x.rcc")
    assert got == {k: v for k, (v, _) in files.items()}


def test_rcc_members_refuses_what_is_not_a_bundle(tmp_path):
    (tmp_path / "x.rcc").write_bytes(b"PK\x03\x04 not qres")
    with pytest.raises(ValueError, match="not a Qt resource bundle"):
        _builder().rcc_members(tmp_path / "x.rcc")


def test_the_training_list_keeps_out_the_validation_and_tuning_photos():
    spec = json.loads((ROOT / "invdiff" / "data" / "natural_sources.json").read_text())
    train = spec["files"]
    names = [f["name"] for f in train]
    assert len(set(names)) == len(names)
    sources = {(f["path"], f.get("member")) for f in train}
    assert len(sources) == len(train)  # no file listed twice under two names
    assert not sources & {(f["path"], f.get("member")) for f in spec["tuning"]}
    from invdiff.data import VALIDATION_PHOTOS

    assert not any("skimage" in f["path"] or f["name"] in VALIDATION_PHOTOS for f in train)
    assert all(f["path"].endswith(".rcc") for f in train if "member" in f)
