"""Image files: every format and depth reads and round-trips within its quantisation error, EXIF orientation is
applied, 16-bit colour keeps all 16 bits (read and write), ``read_image_info`` agrees with what ``read_image`` returns,
and broken files give one clear line."""

from __future__ import annotations

import dataclasses
import io as bytes_io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, features

from invdiff.io import (
    ImageInfo,
    _orient,
    _png_filter,
    _write_png16,
    image_channels,
    output_bits,
    read_image,
    read_image_info,
    to_uint16,
    write_image,
)

Q8, Q16 = 0.5 / 255 + 1e-6, 0.5 / 65535 + 1e-6  # rounding to the file's levels, plus float32 slack
WEBP = features.check("webp")


def unit(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) on [-1, 1] -> (H, W, C) float64 on [0, 1]."""
    return ((x[0].double() + 1) / 2).permute(1, 2, 0).numpy()


def random_image(c: int, h: int = 19, w: int = 27, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    u = np.random.default_rng(seed).random((h, w, c))
    return u, torch.from_numpy(u.transpose(2, 0, 1) * 2 - 1).float()


def pattern(h: int = 48, w: int = 32) -> np.ndarray:
    """An asymmetric 8-bit RGB picture of flat 16x16 blocks (survives JPEG): every rotation/mirror differs."""
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 256, (h // 16, w // 16, 3)).astype(np.uint8)
    return blocks.repeat(16, 0).repeat(16, 1)


def exif(orientation: int) -> Image.Exif:
    e = Image.Exif()
    e[0x0112] = orientation
    return e


def png_decode16(path: Path) -> np.ndarray:
    """Reference decoder, independent of Pillow, for the non-interlaced 16-bit PNGs written here: (H, W, C) uint16."""
    data, chunks, pos = path.read_bytes(), {}, 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos: pos + 8])
        body = data[pos + 8: pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n: pos + 12 + n])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 16 and interlace == 0
    c = {0: 1, 4: 2, 2: 3, 6: 4}[ctype]
    stride, bpp = w * c * 2, c * 2
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, stride + 1)
    out = np.zeros((h, stride), np.int64)
    for y in range(h):
        up = out[y - 1] if y else np.zeros(stride, np.int64)
        for i in range(stride):
            a = out[y, i - bpp] if i >= bpp else 0
            b, cc = up[i], (up[i - bpp] if i >= bpp else 0)
            p = a + b - cc
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
            paeth = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            out[y, i] = (int(raw[y, i + 1]) + (0, a, b, (a + b) // 2, paeth)[raw[y, 0]]) % 256
    return out.astype(np.uint8).view(">u2").reshape(h, w, c).astype(np.uint16)


def insert_png_chunk(path: Path, kind: bytes, data: bytes, *, after_idat: bool) -> None:
    """Add a chunk to a PNG, before the first IDAT or just before IEND."""
    raw = path.read_bytes()
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    at = raw.rindex(b"IEND") - 4 if after_idat else raw.index(b"IDAT") - 4
    path.write_bytes(raw[:at] + chunk + raw[at:])


def exif_bytes(orientation: int) -> bytes:
    return exif(orientation).tobytes()


# ---- round trips -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["png", "tif", "bmp"])
@pytest.mark.parametrize("c", [1, 3])
def test_8bit_round_trip(tmp_path, ext, c):
    u, x = random_image(c)
    p = write_image(tmp_path / f"a.{ext}", x)
    y, info = read_image(p, with_info=True)
    assert y.shape == x[None].shape and y.dtype == torch.float32
    assert np.abs(unit(y) - u).max() <= Q8
    assert info == ImageInfo(27, 19, c, False, 8, {"tif": "TIFF"}.get(ext, ext.upper()), False)


@pytest.mark.parametrize("ext", ["png", "tif"])
@pytest.mark.parametrize("c", [1, 3, 4])
def test_16bit_round_trip(tmp_path, ext, c):
    u, x = random_image(c)
    p = write_image(tmp_path / f"a.{ext}", x, bits=16)
    y, alpha, info = read_image(p, with_alpha=True, with_info=True)
    colours = 1 if c == 1 else 3
    assert np.abs(unit(y) - u[..., :colours]).max() <= Q16
    assert info == ImageInfo(27, 19, colours, c == 4, 16, "PNG" if ext == "png" else "TIFF", False)
    if c == 4:
        assert torch.equal(alpha[0, 0], torch.from_numpy(u[..., 3] > 0.5).float())
    else:
        assert alpha is None
    with Image.open(p) as im:  # a real 16-bit file: Pillow sees 16-bit grey, or colour whose 8 bits are the high bytes
        assert im.mode == {1: "I;16", 3: "RGB", 4: "RGBA"}[c]
        high = np.asarray(im)
        want = to_uint16(x)
        assert np.array_equal(high, want if c == 1 else (want >> 8).astype(np.uint8))


def test_16bit_grey_alpha_png(tmp_path):
    u, x = random_image(2)
    p = write_image(tmp_path / "la.png", x, bits=16)
    y, alpha, info = read_image(p, with_alpha=True, with_info=True)
    assert y.shape == (1, 1, 19, 27) and np.abs(unit(y) - u[..., :1]).max() <= Q16
    assert torch.equal(alpha[0, 0], torch.from_numpy(u[..., 1] > 0.5).float())
    assert info.channels == 1 and info.has_alpha and info.bit_depth == 16
    assert np.array_equal(png_decode16(p), to_uint16(x))


@pytest.mark.parametrize("only", [None, 0, 1, 2, 3, 4])
def test_png16_writer_is_a_correct_png(tmp_path, only):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    a[3:6] = np.linspace(0, 65535, 11 * 3).reshape(11, 3).astype(np.uint16)  # smooth rows: other filters win there
    p = tmp_path / "f.png"
    _write_png16(p, a, filter_type=only, rows_per_block=4)  # several blocks: the row above crosses blocks
    assert np.array_equal(png_decode16(p), a)
    with Image.open(p) as im:
        assert np.array_equal(np.asarray(im), (a >> 8).astype(np.uint8))
    assert np.abs(unit(read_image(p)) - a / 65535).max() <= Q16


def test_png_filter_picks_per_row():
    rows = np.zeros((2, 12), np.uint8)
    rows[0] = np.arange(12) * 20  # a ramp: Sub leaves constants
    f = _png_filter(rows, np.zeros(12, np.uint8), 2)
    assert f.shape == (2, 13) and list(f[:, 0]) == [1, 0]  # a ramp: 'sub' leaves constants; zeros: 'none' is free
    assert list(f[0, 1:]) == [0, 20, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40]


def test_16bit_bits_only_for_png_and_tiff(tmp_path):
    _, x = random_image(3)
    for ext in ("jpg", "webp", "bmp"):
        with pytest.raises(ValueError, match="8 bits"):
            write_image(tmp_path / f"a.{ext}", x, bits=16)
    with pytest.raises(ValueError, match="bits must be 8 or 16"):
        write_image(tmp_path / "a.png", x, bits=12)
    with pytest.raises(ValueError, match="unsupported image format"):
        write_image(tmp_path / "a.xyz", x, bits=16)
    with pytest.raises(ValueError, match="RGBA"):
        write_image(tmp_path / "a.tif", random_image(2)[1], bits=16)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_jpeg_and_webp_write_stay_8bit_lossy(tmp_path):
    u, x = random_image(3, 32, 32)
    for ext in ["jpg"] + (["webp"] if WEBP else []):
        y, info = read_image(write_image(tmp_path / f"a.{ext}", x), with_info=True)
        assert info.bit_depth == 8 and y.shape == (1, 3, 32, 32)
        assert np.abs(unit(y) - u).mean() < 0.2


def test_output_bits():
    deep = ImageInfo(4, 3, 3, False, 16, "PNG", False)
    shallow = ImageInfo(4, 3, 3, False, 8, "TIFF", False)
    assert [output_bits(deep, p) for p in ("o.png", "o.TIF", "o.tiff", "o.jpg", "o.webp", "o.bmp")] == [16, 16, 16, 8, 8, 8]
    assert {output_bits(shallow, p) for p in ("o.png", "o.tif", "o.jpg")} == {8}
    with pytest.raises(ValueError, match="unsupported"):
        output_bits(deep, "o.gif")


# ---- reading what other programs write ----------------------------------------------------------------------------
def test_pillow_written_files(tmp_path):
    rgb = pattern()
    grey = rgb[..., 0]
    cases = {
        "rgb.png": (Image.fromarray(rgb), {}, rgb / 255, (3, False, 8)),
        "grey.png": (Image.fromarray(grey), {}, grey[..., None] / 255, (1, False, 8)),
        "grey16.png": (Image.fromarray(grey.astype(np.uint16) * 257), {}, grey[..., None] / 255, (1, False, 16)),
        "rgb.tif": (Image.fromarray(rgb), {"compression": "tiff_lzw"}, rgb / 255, (3, False, 8)),
        "grey16.tif": (Image.fromarray(grey.astype(np.uint16) * 257), {}, grey[..., None] / 255, (1, False, 16)),
        "rgb.bmp": (Image.fromarray(rgb), {}, rgb / 255, (3, False, 8)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, grey])), {}, rgb / 255, (3, True, 8)),
        "la.png": (Image.fromarray(np.dstack([grey, grey])).convert("LA"), {}, grey[..., None] / 255, (1, True, 8)),
        "pal.png": (Image.fromarray(rgb).quantize(8), {}, None, (3, False, 8)),
        "pal_grey.gif": (Image.fromarray(grey).convert("P"), {}, grey[..., None] / 255, (1, False, 8)),
    }
    if WEBP:
        cases["rgb.webp"] = (Image.fromarray(rgb), {"lossless": True}, rgb / 255, (3, False, 8))
    for name, (im, kw, want, (c, has_alpha, bits)) in cases.items():
        im.save(tmp_path / name, **kw)
        y, info = read_image(tmp_path / name, with_info=True)
        if want is None:  # palette: whatever colours Pillow chose
            want = np.asarray(Image.open(tmp_path / name).convert("RGB")) / 255
        assert np.abs(unit(y) - want).max() <= Q8, name
        assert (info.width, info.height, info.channels, info.has_alpha, info.bit_depth) == (32, 48, c, has_alpha, bits)
        assert info == read_image_info(tmp_path / name) and image_channels(tmp_path / name) == c, name


def test_jpeg_reads_as_pillow_decodes(tmp_path):
    Image.fromarray(pattern()).save(tmp_path / "a.jpg", quality=90)
    y, info = read_image(tmp_path / "a.jpg", with_info=True)
    assert np.abs(unit(y) - np.asarray(Image.open(tmp_path / "a.jpg")) / 255).max() <= Q8
    assert info == ImageInfo(32, 48, 3, False, 8, "JPEG", False, lossy=True)
    assert read_image(tmp_path / "a.jpg", channels=1).shape == (1, 1, 48, 32)


def test_multi_picture_jpeg_counts_as_jpeg(tmp_path):
    im = Image.fromarray(pattern())
    im.save(tmp_path / "a.jpg", format="MPO", save_all=True, append_images=[im])
    assert read_image_info(tmp_path / "a.jpg").format == "JPEG"


def test_alpha_and_transparency(tmp_path):
    rgb, a = pattern(), np.zeros((48, 32), np.uint8)
    a[:, 16:] = 255
    Image.fromarray(np.dstack([rgb, a])).save(tmp_path / "rgba.png")
    x, alpha = read_image(tmp_path / "rgba.png", with_alpha=True)
    assert x.shape == (1, 3, 48, 32) and torch.equal(alpha[0, 0], torch.from_numpy(a > 127).float())
    pal = Image.fromarray(rgb).quantize(8)
    pal.save(tmp_path / "t.png", transparency=0)
    _, alpha, info = read_image(tmp_path / "t.png", with_alpha=True, with_info=True)
    assert info.has_alpha and torch.equal(alpha[0, 0], torch.from_numpy(np.asarray(pal) != 0).float())
    assert read_image(tmp_path / "t.png", with_alpha=False).shape == (1, 3, 48, 32)
    Image.fromarray(rgb).save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png", with_alpha=True)[1] is None


def test_16bit_rgb_png_transparent_colour(tmp_path):
    a = np.random.default_rng(5).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    a[2, 3] = (1000, 2000, 3000)
    _write_png16(tmp_path / "t.png", a)
    insert_png_chunk(tmp_path / "t.png", b"tRNS", struct.pack(">HHH", 1000, 2000, 3000), after_idat=False)
    _, alpha, info = read_image(tmp_path / "t.png", with_alpha=True, with_info=True)
    want = np.ones((6, 7))
    want[2, 3] = 0
    assert info.has_alpha and np.array_equal(alpha[0, 0].numpy(), want)


def test_return_conventions(tmp_path):
    _, x = random_image(3)
    p = write_image(tmp_path / "a.png", x)
    assert isinstance(read_image(p), torch.Tensor)
    image, alpha = read_image(p, with_alpha=True)
    assert isinstance(image, torch.Tensor) and alpha is None
    image, info = read_image(p, with_info=True)
    assert isinstance(image, torch.Tensor) and isinstance(info, ImageInfo)
    image, alpha, info = read_image(p, channels=1, with_alpha=True, with_info=True)
    assert image.shape == (1, 1, 19, 27) and alpha is None and info.channels == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.width = 3


# ---- EXIF orientation -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation, turn", [(6, -1), (8, 1)])
def test_exif_rotated_jpeg(tmp_path, orientation, turn):
    stored = pattern()
    Image.fromarray(stored).save(tmp_path / "r.jpg", quality=95, exif=exif(orientation))
    y, info = read_image(tmp_path / "r.jpg", with_info=True)
    assert y.shape == (1, 3, 32, 48)  # width and height swapped
    upright = np.rot90(stored, turn)  # 6: stored turned counter-clockwise, shown turned clockwise; 8: the other way
    assert np.abs(unit(y) - upright / 255).mean() < 6 / 255
    assert np.abs(unit(y) - stored.transpose(1, 0, 2) / 255).mean() > 20 / 255
    assert info == ImageInfo(48, 32, 3, False, 8, "JPEG", True, lossy=True) == read_image_info(tmp_path / "r.jpg")
    assert np.abs(unit(y) * 255 - np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "r.jpg")))).max() <= 0.5


@pytest.mark.parametrize("ext", ["png", "tif", "webp"])
def test_every_orientation_as_pillow(tmp_path, ext):
    if ext == "webp" and not WEBP:
        pytest.skip("Pillow without WebP")
    stored = pattern(48, 32)
    for o in range(1, 9):
        p = tmp_path / f"o{o}.{ext}"
        Image.fromarray(stored).save(p, exif=exif(o), **({"lossless": True} if ext == "webp" else {}))
        y, info = read_image(p, with_info=True)
        with Image.open(p) as im:
            want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        assert np.abs(unit(y) * 255 - want).max() <= 0.5 + 1e-3, (ext, o)
        assert np.array_equal(want, _orient(stored, o))
        assert info.exif_rotated == (o != 1) and (info.width, info.height) == want.shape[1::-1]
        assert info == read_image_info(p)


@pytest.mark.parametrize("after_idat", [False, True])
def test_16bit_png_with_exif(tmp_path, after_idat):
    a = np.random.default_rng(2).integers(0, 65536, (5, 8, 3), dtype=np.uint16)
    p = tmp_path / "e.png"
    _write_png16(p, a)
    insert_png_chunk(p, b"eXIf", exif_bytes(6), after_idat=after_idat)
    y, info = read_image(p, with_info=True)
    assert info == ImageInfo(5, 8, 3, False, 16, "PNG", True) == read_image_info(p)
    assert np.abs(unit(y) - np.rot90(a, -1) / 65535).max() <= Q16


def test_16bit_tiff_layouts(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    a = np.random.default_rng(4).integers(0, 65536, (13, 10, 3), dtype=np.uint16)
    layouts = {"plain": {}, "deflate": {"compression": "zlib"}, "big_endian": {"byteorder": ">"},
               "tiled": {"tile": (16, 16)}, "strips": {"rowsperstrip": 4},
               "planar": {"planarconfig": "separate"}, "planar_deflate": {"planarconfig": "separate", "compression": "zlib"}}
    for name, kw in layouts.items():
        for o in (1, 6):
            p = tmp_path / f"{name}{o}.tif"
            data = a.transpose(2, 0, 1) if "planarconfig" in kw else a
            tifffile.imwrite(p, data, photometric="rgb", metadata=None, extratags=[(274, 3, 1, o, True)], **kw)
            y, info = read_image(p, with_info=True)
            assert np.abs(unit(y) - _orient(a, o) / 65535).max() <= Q16, (name, o)
            assert info == ImageInfo(*((13, 10) if o == 6 else (10, 13)), 3, False, 16, "TIFF", o == 6), (name, o)
            assert info == read_image_info(p)


@pytest.mark.parametrize("planar", [False, True])
@pytest.mark.parametrize("extra", ["unassalpha", "unspecified"])
def test_16bit_tiff_fourth_sample(tmp_path, planar, extra):
    tifffile = pytest.importorskip("tifffile")
    a = np.random.default_rng(6).integers(0, 65536, (7, 9, 4), dtype=np.uint16)
    p = tmp_path / "x.tif"
    tifffile.imwrite(p, a.transpose(2, 0, 1) if planar else a, photometric="rgb", extrasamples=(extra,),
                     planarconfig="separate" if planar else "contig", metadata=None)
    if planar and extra == "unspecified":  # Pillow has no reader for these: refused in one line
        one_line_error(p)
        return
    y, alpha, info = read_image(p, with_alpha=True, with_info=True)
    assert np.abs(unit(y) - a[..., :3] / 65535).max() <= Q16
    assert info.has_alpha == (extra == "unassalpha") and info == read_image_info(p)
    if info.has_alpha:
        assert torch.equal(alpha[0, 0], torch.from_numpy(a[..., 3] > 32767).float())
    else:
        assert alpha is None


def test_float_tiff_counts_as_16bit(tmp_path):
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)).save(tmp_path / "f.tif")
    info = read_image_info(tmp_path / "f.tif")
    assert info.bit_depth == 16 and info.channels == 1
    assert output_bits(info, "out.png") == 16


# ---- broken files -----------------------------------------------------------------------------------------------------
def one_line_error(path: Path, reader=read_image) -> str:
    with pytest.raises(ValueError) as e:
        reader(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_files(tmp_path):
    _, x = random_image(3, 64, 64)
    buf = bytes_io.BytesIO()
    Image.fromarray(pattern()).save(buf, format="JPEG")
    sources = {"a.png": write_image(tmp_path / "src.png", x).read_bytes(), "a.jpg": buf.getvalue(),
               "a16.png": write_image(tmp_path / "src16.png", x, bits=16).read_bytes(),
               "a.tif": write_image(tmp_path / "src.tif", x).read_bytes(),
               "a16.tif": write_image(tmp_path / "src16.tif", x, bits=16).read_bytes()}
    for name, data in sources.items():
        (tmp_path / f"half_{name}").write_bytes(data[: len(data) // 2])
        assert "cannot read image" in one_line_error(tmp_path / f"half_{name}")
        (tmp_path / f"head_{name}").write_bytes(data[:10])
        for reader in (read_image, read_image_info):
            assert "cannot read image" in one_line_error(tmp_path / f"head_{name}", reader)
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("noise.png", "empty.jpg"):
        for reader in (read_image, read_image_info):
            assert "cannot read image" in one_line_error(tmp_path / name, reader)
    assert "not found" in one_line_error(tmp_path / "missing.png", read_image_info)
    assert "folder" in one_line_error(tmp_path, read_image_info)


def test_info_reads_only_the_header(tmp_path):
    _, x = random_image(3, 64, 64)
    data = write_image(tmp_path / "a.png", x, bits=16).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 2 // 3])
    assert read_image_info(tmp_path / "cut.png") == ImageInfo(64, 64, 3, False, 16, "PNG", False)
    one_line_error(tmp_path / "cut.png")


def test_damaged_exif_is_ignored(tmp_path):
    p = write_image(tmp_path / "a.png", random_image(3)[1])
    insert_png_chunk(p, b"eXIf", b"not exif", after_idat=False)
    assert read_image_info(p).exif_rotated is False and read_image(p).shape == (1, 3, 19, 27)


def test_damaged_png_checksum(tmp_path):
    _, x = random_image(3)
    data = bytearray(write_image(tmp_path / "a.png", x).read_bytes())
    data[40] ^= 0xFF  # inside the first IDAT chunk
    (tmp_path / "bad.png").write_bytes(bytes(data))
    one_line_error(tmp_path / "bad.png")
