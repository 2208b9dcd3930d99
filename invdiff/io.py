"""Image files <-> tensors. The only place that converts between file ranges ([0, 255], [0, 65535], [0, 1]) and
the library's [-1, 1]. Writes are atomic (temporary file + rename): no half-written outputs.

Reading applies the EXIF orientation (as ``PIL.ImageOps.exif_transpose``) and keeps 16 bits per sample for 16-bit
files, colour ones included (Pillow itself decodes 16-bit RGB/RGBA to 8 bits). ``read_image_info`` describes a
file from its header; ``output_bits`` picks the depth to write a result in."""

from __future__ import annotations

import math
import os
import struct
import sys
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1) / 2


def from_unit(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2 - 1


def to_uint8(x: Tensor) -> np.ndarray:
    """One image (C, H, W) or (1, C, H, W) in [-1, 1] -> HWC (or HW for grey) uint8."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError("to_uint8 takes one image")
        x = x[0]
    a = to_unit(x.detach().float().cpu()).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def to_uint16(x: Tensor) -> np.ndarray:
    """One image (C, H, W) or (1, C, H, W) in [-1, 1] -> HWC (or HW for grey) uint16 on [0, 65535]."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError("to_uint16 takes one image")
        x = x[0]
    a = to_unit(x.detach().double().cpu()).clamp(0, 1).mul(65535).round().permute(1, 2, 0).numpy().astype(np.uint16)
    return a[..., 0] if a.shape[-1] == 1 else a


@dataclass(frozen=True)
class ImageInfo:
    """What an image file holds, from its header. ``width``/``height``: as returned by ``read_image``, i.e. after
    the EXIF orientation; ``channels``: 1 (grey, grey palette) or 3 (colour), not counting alpha; ``has_alpha``: an
    alpha channel or a transparent colour; ``bit_depth``: 8, or 16 for files with more than 8 bits per sample
    (16-bit integer; 32-bit float files count as 16: the depth to write results of them in); ``format``: Pillow's
    name (PNG, JPEG, TIFF, WEBP, BMP, GIF, ...; multi-picture JPEG counts as JPEG); ``exif_rotated``: an EXIF
    orientation other than 'normal' (a rotation and/or mirroring) was found and is applied on reading; ``frames``: the
    pictures the file holds (an animation or a multi-page TIFF: more than 1; only the first is read; a camera's
    multi-picture JPEG, whose others are previews, counts as 1); ``lossy``: the compression discards detail (JPEG,
    lossy WebP), so what is left at high frequencies is not white noise."""

    width: int
    height: int
    channels: int
    has_alpha: bool
    bit_depth: int
    format: str
    exif_rotated: bool
    frames: int = 1
    lossy: bool = False


_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_ORIENTATION = 0x0112  # EXIF/TIFF tag 274
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _to_unit_array(im, path: Path) -> np.ndarray:
    """The pixel values of a Pillow image as a float32 array in [0, 1], for every depth Pillow reads: 1-bit, 8-bit
    (L, P, RGB, RGBA, CMYK, YCbCr, LAB, HSV, ...), 16-bit integer (I;16*, and I holding 16-bit values) and 32-bit
    float (F, taken as already on [0, 1]). Anything else is refused with a clear message."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"cannot read image {path}: 32-bit integer pixels (range {a.min():.0f}..{a.max():.0f}) have no "
                             "known white level; save it as 8- or 16-bit")
        return (a / 65535.0).astype(np.float32)[..., None]
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"cannot read image {path}: it contains NaN or infinite pixel values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"cannot read image {path}: floating-point pixels must lie in [0, 1], found "
                             f"{lo:.4g}..{hi:.4g}; rescale it (or save it as 8/16-bit)")
        return np.clip(a, 0, 1).astype(np.float32)[..., None]
    if mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"):
        grey = mode in ("1", "L", "LA", "La") or (mode in ("P", "PA") and _palette_is_grey(im))
        a = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
        return a[..., None] if a.ndim == 2 else a
    raise ValueError(f"cannot read image {path}: unsupported pixel format {mode!r}")


def _palette_is_grey(im) -> bool:
    rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def image_channels(path: str | Path) -> int:
    """1 for a grey file (any depth), 3 for colour; reads only the header where it can."""
    return read_image_info(path).channels


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    return path


@contextmanager
def _read_errors(path: Path):
    """Turn whatever a decoder raises on a broken file into a one-line ValueError naming the file."""
    from PIL import Image

    try:
        yield
    except ValueError as e:
        if str(e).startswith("cannot read image"):
            raise
        raise _read_error(path, e) from None
    except (OSError, SyntaxError, EOFError, IndexError, KeyError, struct.error, zlib.error,
            Image.DecompressionBombError) as e:
        raise _read_error(path, e) from None


def _read_error(path: Path, e: BaseException) -> ValueError:
    text = " ".join(str(e).split()) or "no details"
    return ValueError(f"cannot read image {path}: {e.__class__.__name__}: {text}")


def read_image_info(path: str | Path) -> ImageInfo:
    """Describe an image file (size, channels, alpha, depth, format, EXIF orientation) reading only its header where
    Pillow allows it (palette files with colour entries are decoded to see whether the used colours are grey).
    Broken headers raise ValueError; a file whose pixel data is damaged is only found out by ``read_image``."""
    from PIL import Image

    path = _existing_file(path)
    with _read_errors(path), Image.open(path) as im:
        return _header(im, path)[0]


def _header(im, path: Path) -> tuple[ImageInfo, int]:
    """(ImageInfo, EXIF orientation 1..8) of an opened, not necessarily loaded, Pillow image."""
    fmt = "JPEG" if im.format == "MPO" else (im.format or path.suffix.lstrip(".").upper())
    mode, (w, h) = im.mode, im.size
    depth, grey_alpha = 8, False
    if fmt == "PNG":
        chunks = _png_chunks(path, (b"IHDR", b"eXIf"))
        ihdr = chunks.get(b"IHDR", b"")
        depth, grey_alpha = (ihdr[8], ihdr[9] == 4) if len(ihdr) == 13 else (8, False)
        orientation = _exif_orientation(lambda: _exif_from_bytes(chunks.get(b"eXIf")))
    elif fmt == "TIFF":  # Pillow applies a TIFF's orientation itself; the tags give the stored size
        bps = im.tag_v2.get(258, 8)
        depth = max(bps) if isinstance(bps, tuple) and bps else (bps if isinstance(bps, int) else 8)
        orientation = _valid_orientation(im.tag_v2.get(_ORIENTATION))
        w, h = im.tag_v2.get(256, w), im.tag_v2.get(257, h)
    else:
        orientation = _exif_orientation(im.getexif)
    if orientation >= 5:
        w, h = h, w
    grey = grey_alpha or mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16") or (
        mode in ("P", "PA") and _palette_is_grey(im))  # Pillow reads a 16-bit grey+alpha PNG as RGBA
    deep = depth > 8 or mode in ("I", "F") or mode.startswith("I;16")
    info = ImageInfo(width=int(w), height=int(h), channels=1 if grey else 3,
                     has_alpha=mode in _ALPHA_MODES or "transparency" in im.info, bit_depth=16 if deep else 8,
                     format=fmt, exif_rotated=orientation != 1,
                     frames=1 if im.format == "MPO" else max(1, int(getattr(im, "n_frames", 1) or 1)),
                     lossy=fmt == "JPEG" or (fmt == "WEBP" and _webp_lossy(path)))
    return info, orientation


def compression_sigma(path: str | Path, rule: str = "rgb") -> float | None:
    """The error a lossy file's quantisation puts into its pixels, as a noise σ on [-1, 1]; None for other files.

    A JPEG stores each 8×8 block's orthonormal DCT coefficients divided by its quantisation table's steps Q and
    rounded; a coefficient rounded to the nearest multiple of Q is off by at most Q/2, with variance Q²/12 when it
    is large against Q (an upper bound for the ones rounded to zero). By Parseval the pixel error of a component
    has the variance mean(Q²)/12 over the table. ``rule``: ``luma`` counts the luma component's table; ``rgb``
    what reaches an RGB pixel, var_Y + 2·var_C (R, G, B = Y + 1.402 Cr, Y − 0.344 Cb − 0.714 Cr, Y + 1.772 Cb:
    the squared chroma weights average 2.0 per channel); a grey JPEG has only luma. The tables are read from the
    file (Pillow's ``quantization`` and ``layer``). A lossy WebP is read the same way from its VP8 frame header
    (``vp8_quantisers``, ``_vp8_variances``)."""
    from PIL import Image

    if rule not in ("luma", "rgb"):
        raise ValueError(f"unknown compression rule {rule!r}; choose luma or rgb")
    path = _existing_file(path)
    with _read_errors(path), Image.open(path) as im:
        if im.format == "WEBP":
            steps = vp8_quantisers(path)
            if steps is None:
                return None
            luma, chroma, weights = *_vp8_variances(steps), VP8_RGB_WEIGHTS
        elif im.format not in ("JPEG", "MPO") or not getattr(im, "quantization", None):
            return None
        else:
            tables = {k: float(np.mean(np.square(np.asarray(v, dtype=np.float64)))) / 12
                      for k, v in im.quantization.items()}
            layers = getattr(im, "layer", None) or [(0, 1, 1, min(tables))]
            var = [tables.get(layer[3], max(tables.values())) for layer in layers]
            luma, chroma, weights = var[0], (float(np.mean(var[1:])) if len(var) > 1 else 0.0), (1.0, 2.0)
    level = weights[0] * luma if rule == "luma" else weights[0] * luma + weights[1] * chroma
    return 2.0 * math.sqrt(level) / 255.0


#: VP8's quantiser steps by index (RFC 6386, section 14.1): the DC and the AC coefficients' tables
VP8_DC_STEPS = (4, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13, 14, 15, 16, 17, 17, 18, 19, 20, 20, 21, 21, 22, 22, 23, 23, 24,
                25, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 46, 47,
                48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73,
                74, 75, 76, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 93, 95, 96, 98, 100, 101, 102,
                104, 106, 108, 110, 112, 114, 116, 118, 122, 124, 126, 128, 130, 132, 134, 136, 138, 140, 143, 145,
                148, 151, 154, 157)
VP8_AC_STEPS = (*range(4, 59), *range(60, 118, 2), 119, 122, 125, 128, 131, 134, 137, 140, 143, 146, 149, 152,
                155, 158, 161, 164, 167, 170, 173, 177, 181, 185, 189, 193, 197, 201, 205, 209, 213, 217, 221, 225,
                229, 234, 239, 245, 249, 254, 259, 264, 269, 274, 279, 284)
#: a VP8 picture is limited-range Y'CbCr (BT.601): an RGB channel gets (255/219)² of the luma's error variance and,
#: on average over R, G, B, (1.596² + 0.391² + 0.813² + 2.018²)/3 of one chroma plane's
VP8_RGB_WEIGHTS = ((255 / 219) ** 2, (1.596 ** 2 + 0.391 ** 2 + 0.813 ** 2 + 2.018 ** 2) / 3)


class _BoolDecoder:
    """VP8's boolean entropy decoder (RFC 6386, section 7), for the frame header's fields."""

    def __init__(self, data: bytes):
        self.data, self.pos = data + b"\0\0", 2
        self.value, self.range, self.bits = (self.data[0] << 8) | self.data[1], 255, 0

    def bool(self, prob: int) -> int:
        split = 1 + (((self.range - 1) * prob) >> 8)
        bit = int(self.value >= split << 8)
        self.range, self.value = (self.range - split, self.value - (split << 8)) if bit else (split, self.value)
        while self.range < 128:
            self.range, self.value, self.bits = self.range << 1, self.value << 1, self.bits + 1
            if self.bits == 8:
                self.bits, self.value = 0, self.value | (self.data[self.pos] if self.pos < len(self.data) else 0)
                self.pos += 1
        return bit

    def literal(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bool(128)
        return v

    def signed(self, n: int) -> int:
        v = self.literal(n)
        return -v if self.bool(128) else v

    def optional_signed(self, n: int) -> int:
        return self.signed(n) if self.literal(1) else 0


def _webp_image_chunk(path: Path) -> tuple[bytes | None, bytes | None]:
    """(kind, payload) of a WebP file's first image chunk (``VP8 `` lossy, ``VP8L`` lossless, ``ANMF`` an animation's
    frame; the payload is read for ``VP8 `` only); (None, None) for a file that is not a WebP or has none."""
    with open(path, "rb") as f:
        if f.read(12)[8:12] != b"WEBP":
            return None, None
        while len(chunk := f.read(8)) == 8:
            kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if kind in (b"VP8 ", b"VP8L", b"ANMF"):
                return kind, f.read(size) if kind == b"VP8 " else None
            f.seek(size + (size & 1), 1)
    return None, None


def vp8_quantisers(path: str | Path) -> list[dict[str, int]] | None:
    """The quantiser steps of a lossy WebP's key frame, one dict per segment (ydc, yac, y2dc, y2ac, uvdc, uvac, as
    RFC 6386 section 14.1 derives them from the frame header's indices and the segments' quantiser updates); None
    for a file without a VP8 key frame. The header is read up to the quantiser indices only."""
    data = _webp_image_chunk(Path(path))[1]
    if data is None or len(data) < 11 or data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    d = _BoolDecoder(data[10:])
    d.literal(2)  # colour space, clamping
    segment_q, absolute = [0, 0, 0, 0], False
    if d.literal(1):  # segmentation
        update_map, update_data = d.literal(1), d.literal(1)
        if update_data:
            absolute = bool(d.literal(1))
            segment_q = [d.optional_signed(7) for _ in range(4)]
            [d.optional_signed(6) for _ in range(4)]  # the segments' loop-filter levels
        if update_map:
            [d.literal(8) for _ in range(3) if d.literal(1)]
    d.literal(1 + 6 + 3)  # filter type, level, sharpness
    if d.literal(1) and d.literal(1):  # loop-filter deltas
        [d.optional_signed(6) for _ in range(8)]
    d.literal(2)  # token partitions
    base, deltas = d.literal(7), [d.optional_signed(4) for _ in range(5)]  # y dc, y2 dc, y2 ac, uv dc, uv ac
    steps = []
    for q in sorted(set(segment_q)) if absolute or any(segment_q) else [0]:
        qi = q if absolute else base + q

        def at(table, delta=0):
            return table[min(max(qi + delta, 0), 127)]

        steps.append({"ydc": at(VP8_DC_STEPS, deltas[0]), "yac": at(VP8_AC_STEPS), "y2dc": 2 * at(VP8_DC_STEPS, deltas[1]),
                      "y2ac": max(8, at(VP8_AC_STEPS, deltas[2]) * 155 // 100), "uvdc": min(132, at(VP8_DC_STEPS, deltas[3])),
                      "uvac": at(VP8_AC_STEPS, deltas[4])})
    return steps


def _vp8_variances(steps: list[dict[str, int]]) -> tuple[float, float]:
    """(luma, chroma) error variance per sample, in 8-bit levels², of VP8 quantiser steps, averaged over segments.

    VP8's 4×4 inverse DCT (and the Walsh-Hadamard transform of the luma DCs) is half the orthonormal one, so a
    coefficient rounded to steps of Q adds (1/4)·Q²/12 of error energy to its block: a block's per-pixel variance is
    mean(Q²)/48 over its 16 coefficients. A luma block's DC comes from its own step (4×4 prediction) or from the
    macroblock's second-order block (16×16 prediction: 1/4 of the Y2 block's mean(Q²)/12); the header does not
    say which macroblocks use which, so the two are averaged, as are the segments."""
    luma, chroma = [], []
    for s in steps:
        y2 = (s["y2dc"] ** 2 + 15 * s["y2ac"] ** 2) / 16 / 12 / 4
        dc = (s["ydc"] ** 2 / 12 + y2) / 2
        luma.append((dc + 15 * s["yac"] ** 2 / 12) / 16 / 4)
        chroma.append((s["uvdc"] ** 2 + 15 * s["uvac"] ** 2) / 12 / 16 / 4)
    return float(np.mean(luma)), float(np.mean(chroma))


def _webp_lossy(path: Path) -> bool:
    """Whether a WebP file holds a lossy (VP8) picture: its RIFF chunks, up to the first image chunk."""
    return _webp_image_chunk(path)[0] == b"VP8 "


def _valid_orientation(value) -> int:
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _exif_orientation(get_exif) -> int:
    """The orientation in the EXIF data ``get_exif()`` returns; 1 (as stored) if there is none or it is unreadable:
    damaged metadata does not make the picture unreadable."""
    try:
        return _valid_orientation(get_exif().get(_ORIENTATION))
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError, OSError, struct.error):
        return 1


def _exif_from_bytes(data: bytes | None):
    from PIL import Image

    exif = Image.Exif()
    if data:
        exif.load(data)
    return exif


def _png_chunks(path: Path, kinds: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The data of the first chunk of each of ``kinds`` in a PNG file, skipping over all other chunks (the pixel
    data is not read). An eXIf chunk may follow the pixel data, where Pillow finds it only by decoding them."""
    found: dict[bytes, bytes] = {}
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return found
        while len(head := f.read(8)) == 8:
            n, kind = struct.unpack(">I4s", head)
            if kind in kinds and kind not in found and n < 1 << 24:
                found[kind] = f.read(n)
                f.seek(4, os.SEEK_CUR)
            else:
                f.seek(n + 4, os.SEEK_CUR)
            if kind == b"IEND" or len(found) == len(kinds):
                break
    return found


def _orient(a: np.ndarray | None, orientation: int) -> np.ndarray | None:
    """Apply EXIF orientation 1..8 to an (H, W, ...) array, as PIL.ImageOps.exif_transpose does to an image."""
    if a is None or orientation == 1:
        return a
    return {
        2: lambda: a[:, ::-1],  # mirrored
        3: lambda: a[::-1, ::-1],  # rotated 180°
        4: lambda: a[::-1],  # mirrored vertically
        5: lambda: a.swapaxes(0, 1),  # transposed
        6: lambda: np.rot90(a, -1),  # stored rotated 90° counter-clockwise: turn clockwise
        7: lambda: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda: np.rot90(a, 1),
    }[orientation]()


def read_image(path: str | Path, *, channels: int | None = None, with_alpha: bool = False, with_info: bool = False):
    """Read an image file as a (1, C, H, W) float32 tensor in [-1, 1], turned upright by its EXIF orientation.

    Every depth Pillow reads is mapped correctly: 8-bit files by 255, 16-bit by 65535 (16-bit RGB/RGBA/grey+alpha
    PNG and TIFF keep all 16 bits), 32-bit float files are taken as [0, 1] (others are refused). ``channels``: 1
    (grey: luma of a colour file), 3 (RGB: a grey file repeated) or None (keep the file's: grey stays grey, anything
    else RGB). Returns the image; with ``with_alpha`` ``(image, alpha)`` where alpha is (1, 1, H, W) in {0, 1} or
    None; with ``with_info`` the file's ``ImageInfo`` (as ``read_image_info`` gives it) is appended:
    ``(image, info)`` or ``(image, alpha, info)``. Unreadable files raise a one-line ValueError."""
    from PIL import Image

    path = _existing_file(path)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with _read_errors(path), Image.open(path) as im:
        tiles = list(im.tile)
        info, orientation = _header(im, path)
        im.load()
        pillow_turned = info.format == "TIFF" and _ORIENTATION not in getattr(im, "tag_v2", {})  # while loading
        turned = orientation if pillow_turned else 1
        arr, alpha = _pixels(im, path, tiles, info, with_alpha, turned)
    if arr.size == 0:
        raise ValueError(f"cannot read image {path}: it has no pixels")
    if turned == 1:
        arr, alpha = _orient(arr, orientation), _orient(alpha, orientation)
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()
    if channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    elif channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as Pillow's convert("L")
        x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    out = [x * 2.0 - 1.0]
    if with_alpha:
        out.append(None if alpha is None else torch.from_numpy(np.ascontiguousarray(alpha, np.float32))[None, None])
    if with_info:
        out.append(info)
    return out[0] if len(out) == 1 else tuple(out)


def _pixels(im, path: Path, tiles: list, info: ImageInfo, with_alpha: bool, turned: int):
    """Pixels of a loaded image as (H, W, C) float32 on [0, 1] and, if asked for and present, alpha as (H, W) bool.
    ``turned``: the EXIF orientation Pillow has applied while loading (1: none)."""
    deep_colour = info.bit_depth == 16 and im.mode in ("RGB", "RGBA", "LA")
    exact = _exact16(im, path, tiles, turned) if deep_colour else None
    if exact is None:
        alpha = None
        if with_alpha and info.has_alpha:
            alpha = np.asarray(im.convert("RGBA"))[..., 3] > 127
        arr = _to_unit_array(im, path)
        return (arr[..., :1] if info.channels == 1 else arr), alpha
    colour = exact[..., : 3 if exact.shape[2] >= 3 else 1]
    alpha, key = None, im.info.get("transparency")
    if with_alpha and info.has_alpha and exact.shape[2] in (2, 4):
        alpha = exact[..., -1] > 32767
    elif with_alpha and isinstance(key, tuple) and len(key) == colour.shape[2]:
        alpha = (colour != np.asarray(key, dtype=np.uint16)).any(-1)
    return (colour / 65535.0).astype(np.float32), alpha


def _exact16(im, path: Path, tiles: list, turned: int) -> np.ndarray | None:
    """All 16 bits of a 16-bit-per-sample RGB/RGBA/grey+alpha file as (H, W, C) uint16, or None where this is not
    possible (the caller then keeps Pillow's 8 bits). Pillow decodes such files to 8 bits by keeping the high byte
    of each sample; decoding the same stream again with the byte order swapped keeps the low bytes instead. (A PNG's
    grey+alpha, which Pillow reads as RGBA, is decoded again as 8-bit RGBA: the same 4 bytes a pixel, all kept.)"""
    raws = {_rawmode(t) for t in tiles}
    if getattr(im, "tag_v2", {}).get(284) == 2:  # planar TIFF: Pillow's reading of 16-bit samples is unreliable
        uncompressed = raws <= {"R", "G", "B", "A", "X"}  # these Pillow even reads wrongly, as 8-bit samples
        return _orient(_tiff_planes16(path, required=uncompressed), turned)
    if raws == {"LA;16B"}:
        both = _decode_again(im, path, [_with_rawmode(t, "RGBA") for t in tiles])
        return None if both is None else (both[..., 0::2].astype(np.uint16) << 8) | both[..., 1::2]
    if not raws or not all(isinstance(r, str) and r.split(";")[0] in ("RGB", "RGBA", "RGBX") and r[-4:-1] == ";16"
                           and r[-1] in _OTHER_BYTE for r in raws):
        return None  # premultiplied or CMYK samples are not unpacked byte by byte: left to Pillow
    low = _decode_again(im, path, [_with_rawmode(t, _rawmode(t)[:-1] + _OTHER_BYTE[_rawmode(t)[-1]]) for t in tiles])
    high = np.asarray(im)
    if low is None or low.shape != high.shape or high.dtype != np.uint8:
        return None
    return (high.astype(np.uint16) << 8) | low


_OTHER_BYTE = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def _decode_again(im, path: Path, tiles: list) -> np.ndarray | None:
    """Decode ``path`` once more with these tiles: (H, W, C) uint8, or None if Pillow cannot."""
    from PIL import Image

    try:
        with Image.open(path) as other:
            if other.mode != im.mode or len(other.tile) != len(tiles):
                return None
            other.tile = tiles
            other.load()
            a = np.asarray(other)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, struct.error, zlib.error):
        return None
    return a if a.dtype == np.uint8 and a.ndim == 3 else None


def _tiff_planes16(path: Path, required: bool) -> np.ndarray | None:
    """(H, W, C) uint16 of a planar 16-bit TIFF, read with tifffile (stored orientation); None if that fails and is
    not ``required``."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            a, axes = page.asarray(), page.axes
    except Exception as e:  # noqa: BLE001 - missing package or codec, damaged file: keep or refuse Pillow's reading
        if required:
            raise ValueError(f"cannot read image {path}: Pillow misreads uncompressed planar 16-bit TIFF, and tifffile "
                             f"could not read it: {e.__class__.__name__}: {' '.join(str(e).split())}") from None
        return None
    a = np.moveaxis(a, 0, -1) if axes == "SYX" else a
    if a.dtype == np.uint16 and a.ndim == 3 and axes in ("SYX", "YXS"):
        return a
    if required:
        raise ValueError(f"cannot read image {path}: unexpected planar TIFF layout {axes} {a.dtype}")
    return None


def _rawmode(tile) -> str | None:
    args = tile[3]
    raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
    return raw if isinstance(raw, str) else None


def _with_rawmode(tile, raw: str):
    args = raw if isinstance(tile[3], str) else (raw, *tile[3][1:])
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


#: how ``estimate_noise_sigma`` estimates: "auto" (patch PCA on a colour image, on weakly textured patches on a grey
#: one), "pca" (Chen, Zhu & Heng 2015), "weak" (the same on weakly textured patches, Liu et al. 2013's selection)
#: or "mad" (Donoho's wavelet rule)
NOISE_ESTIMATORS = ("auto", "pca", "weak", "mad")
#: ... as the report names them
NOISE_ESTIMATOR_NAMES = {"pca": "patch PCA (Chen et al. 2015)", "weak": "patch PCA on weakly textured patches (Liu et al. "
                         "2013)", "mad": "wavelet MAD (Donoho)"}
#: the side of the PCA estimator's patches (chosen on the tuning split, benchmarks/noise_estimate.py)
NOISE_PATCH = 7
#: ... and at most this many patches (a stride over large images)
NOISE_MAX_PATCHES = 20000
#: patches per dimension of their covariance that the patch side must leave, plain PCA / weakly textured patches
#: (the selection keeps only some; at 64×64 a grey photo takes 5-px patches: benchmarks/RESULTS.md); where no side
#: leaves the selection its number, the side that leaves plain PCA its number
NOISE_PATCHES_PER_DIM = {"pca": 20, "weak": 100}


def _channels(x: Tensor) -> Tensor:
    """(C, H, W) of one image, float64 on the CPU; a grey image repeated to RGB (all channels equal) as one channel."""
    a = x.detach().double().cpu()
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError("estimate_noise_sigma takes one image")
        a = a[0]
    a = a.reshape(-1, *a.shape[-2:])
    return a[:1] if bool((a == a[:1]).all()) else a


def noise_estimator(x: Tensor) -> str:
    """The estimator ``estimate_noise_sigma(x)`` uses by default: "pca" for a colour image, "weak" for a grey one."""
    return "pca" if _channels(x).shape[0] > 1 else "weak"


def estimate_noise_sigma(x: Tensor, method: str = "auto", *, patch: int = NOISE_PATCH) -> float:
    """Gaussian noise σ of one image (1|C, H, W or 1, C, H, W; on the [-1, 1] scale).

    ``pca``: Chen, Zhu & Heng (ICCV 2015), "An efficient statistical method for image noise level estimation": the
    eigenvalues of the covariance of the image's patch × patch × C patches (strided to at most
    ``NOISE_MAX_PATCHES``); image structure lives in a few large ones, the noise variance is the mean of the
    smallest, taken over the largest tail of them whose mean is also its median. A small image takes smaller
    patches, so that there are at least 20 per dimension of their covariance (fewer bias the smallest eigenvalues
    low; the weak-texture selection keeps only some, so it asks for 100 per dimension where it can, 5-px patches for
    a 64×64 grey photo); one too small for 3 × 3 patches at 20 per dimension (an RGB image under about 27 px) is
    refused. ``mad``:
    Donoho's rule, the median absolute finest-scale diagonal Haar wavelet coefficient / 0.6745, averaged over
    channels; accurate where the fine detail is weaker than the noise (blurred photos), an upper bound otherwise.
    ``weak``: PCA on the weakly textured patches only (``_weak_texture_noise_sigma``, Liu, Tanaka & Okutomi 2013's
    selection). ``auto`` (the default, ``noise_estimator``): ``pca`` on a colour photo, whose channels share its
    structure so that it stays in few of the colour patches' dimensions; ``weak`` on a grey one (one channel, or a
    grey photo repeated to RGB), where grey patches leave plain PCA no such room. Mean error on the tuning split,
    sharp, blurred or downsampled photos: colour 0.0016 against the wavelet rule's 0.0097, grey 0.0024 against 0.012
    (benchmarks/RESULTS.md, "The noise level of a measured photo")."""
    if method not in NOISE_ESTIMATORS:
        raise ValueError(f"unknown noise estimator {method!r}; choose one of {', '.join(NOISE_ESTIMATORS)}")
    a = _channels(x)
    h, w = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    if h < 2 or w < 2:
        raise ValueError(f"image of size {tuple(a.shape[-2:])} is too small to estimate its noise: give --noise-sigma")
    if method == "auto":
        method = noise_estimator(a)
    if method in ("pca", "weak"):
        c, hh, ww = a.shape  # patches small enough that there are enough per dimension of their covariance
        sides = [q for per in (NOISE_PATCHES_PER_DIM[method], NOISE_PATCHES_PER_DIM["pca"]) for q in range(patch, 2, -1)
                 if (hh - q + 1) * (ww - q + 1) >= per * c * q * q]
        p = sides[0] if sides else None
        if p is None:
            raise ValueError(f"image of size {tuple(a.shape[-2:])} is too small to estimate its noise: give --noise-sigma")
        return _pca_noise_sigma(a, p) if method == "pca" else _weak_texture_noise_sigma(a, p)
    a = a[..., :h, :w]
    hh = (a[..., 0::2, 0::2] - a[..., 0::2, 1::2] - a[..., 1::2, 0::2] + a[..., 1::2, 1::2]) / 2
    return float(torch.stack([c.abs().flatten().median() for c in hh]).mean() / 0.6745)


def _patches(a: Tensor, p: int) -> Tensor:
    """The p × p patches of the (C, H, W) image a as columns (C·p·p, N), strided to at most ``NOISE_MAX_PATCHES``."""
    import torch.nn.functional as F

    n_all = (a.shape[-2] - p + 1) * (a.shape[-1] - p + 1)
    return F.unfold(a[None], p, stride=max(1, int((n_all / NOISE_MAX_PATCHES) ** 0.5)))[0]


def _chen_variance(X: Tensor) -> float:
    """Chen et al.'s noise variance from patches X (d, N): the mean of the covariance's smallest eigenvalues, over
    the largest tail (all but the largest down) whose mean is also its median."""
    X = X - X.mean(1, keepdim=True)
    ev = torch.linalg.eigvalsh(X @ X.T / X.shape[1])  # ascending
    for i in range(len(ev) - 1, 0, -1):
        tail = ev[:i]
        tau = tail.mean()
        if int((tail > tau).sum()) == int((tail < tau).sum()):
            return float(tau.clamp_min(0))
    return float(ev[0].clamp_min(0))


def _pca_noise_sigma(a: Tensor, p: int) -> float:
    """Chen et al.'s estimate on the (C, H, W) image a with p × p patches (see ``estimate_noise_sigma``)."""
    return _chen_variance(_patches(a, p)) ** 0.5


def _weak_texture_noise_sigma(a: Tensor, p: int, rounds: int = 5, confidence: float = 0.99) -> float:
    """Chen et al.'s estimate on the weakly textured patches only, selected as Liu, Tanaka & Okutomi (2013) do: a
    patch is kept when its gradient energy ‖D_h x‖² + ‖D_v x‖² is below what noise alone of the current σ stays
    under with probability ``confidence`` (σ²·tr(DᵀD) times the gamma quantile of shape d/2, scale 2/d); σ from
    all patches first, then from the kept ones, ``rounds`` times or until it settles."""
    from scipy.stats import gamma

    X = _patches(a, p)
    P = X.reshape(a.shape[0], p, p, -1)
    energy = (P[:, :, 1:] - P[:, :, :-1]).square().sum((0, 1, 2)) + (P[:, 1:] - P[:, :-1]).square().sum((0, 1, 2))
    d = X.shape[0]
    bound = 4 * a.shape[0] * p * (p - 1) * float(gamma.ppf(confidence, d / 2, scale=2 / d))
    var = _chen_variance(X)
    for _ in range(rounds):
        keep = energy < var * bound
        if int(keep.sum()) < 2 * d:
            break
        new, var = var, _chen_variance(X[:, keep])
        if abs(new - var) <= 1e-4 * max(var, 1e-12):
            break
    return var ** 0.5


def check_out_folder(out: Path) -> None:
    """``out`` is a folder, or can be created as one, and is writable (checked before any work)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: no permission to write in {parent}")


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_image(path: str | Path, x: Tensor, *, bits: int = 8) -> Path:
    """Write one [-1, 1] image (C, H, W) or (1, C, H, W) atomically; the format follows the extension (.png, .jpg,
    .jpeg, .bmp, .tif, .tiff, .webp). ``bits``: 8 (default), or 16 for PNG and TIFF only: 16 bits per sample for
    grey, RGB and RGBA (PNG also grey+alpha; 16-bit TIFF is written with tifffile). JPEG, WebP and BMP hold 8 bits,
    so ``bits=16`` there raises ValueError; ``output_bits`` picks the depth a format can hold."""
    from PIL import Image

    path = Path(path)
    fmt = _format(path)
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if bits == 16 and fmt not in ("PNG", "TIFF"):
        raise ValueError(f"{fmt} files hold 8 bits per sample; write {path.name} with bits=8, or as .png/.tif for 16")
    with atomic_path(path) as tmp:
        if bits == 8:
            Image.fromarray(to_uint8(x)).save(tmp, format=fmt)
        elif fmt == "PNG":
            _write_png16(tmp, to_uint16(x))
        else:
            _write_tiff16(tmp, to_uint16(x))
    return path


def output_bits(info: ImageInfo, out_path: str | Path) -> int:
    """The depth to write a result of an input described by ``info`` to ``out_path`` in: 16 for a 16-bit (or
    floating-point) input written as PNG or TIFF, else 8."""
    return 16 if info.bit_depth == 16 and _format(Path(out_path)) in ("PNG", "TIFF") else 8


def _write_png16(path: Path, a: np.ndarray, *, filter_type: int | None = None, rows_per_block: int = 64) -> None:
    """Write (H, W) or (H, W, C) uint16, C = 1..4 (grey, grey+alpha, RGB, RGBA), as a 16-bit PNG: Pillow writes
    16-bit grey only. Rows are filtered as libpng does by default (per row the filter with the smallest sum of
    absolute differences) or all with ``filter_type`` 0..4, and compressed block by block."""
    a = a[..., None] if a.ndim == 2 else a
    h, w, c = a.shape
    if a.dtype != np.uint16 or not 1 <= c <= 4 or h == 0 or w == 0:
        raise ValueError(f"a 16-bit PNG takes (H, W, 1..4) uint16 pixels, got {a.shape} {a.dtype}")
    rows = np.ascontiguousarray(a, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, (0, 4, 2, 6)[c - 1], 0, 0, 0)
    z, above = zlib.compressobj(6), np.zeros(rows.shape[1], np.uint8)
    with open(path, "wb") as f:
        f.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr))
        for y in range(0, h, rows_per_block):
            block = rows[y: y + rows_per_block]
            data = z.compress(_png_filter(block, above, 2 * c, filter_type).tobytes())
            if data:
                f.write(_png_chunk(b"IDAT", data))
            above = block[-1]
        f.write(_png_chunk(b"IDAT", z.flush()) + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_filter(block: np.ndarray, above: np.ndarray, bpp: int, only: int | None = None) -> np.ndarray:
    """PNG-filter the byte rows ``block`` (n, stride) that follow the row ``above``: (n, 1 + stride) with each row's
    filter type first (0 none, 1 sub, 2 up, 3 average, 4 Paeth)."""
    b = block.astype(np.int16)
    up = np.vstack([above[None].astype(np.int16), b[:-1]])
    left, upleft = np.zeros_like(b), np.zeros_like(b)
    left[:, bpp:], upleft[:, bpp:] = b[:, :-bpp], up[:, :-bpp]
    pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    predictions = (0, left, up, (left + up) >> 1, paeth)
    out = np.empty((b.shape[0], b.shape[1] + 1), np.uint8)
    best = np.full(b.shape[0], np.iinfo(np.int64).max)
    for k in range(5) if only is None else (only,):
        d = (b - predictions[k]) & 0xFF
        cost = np.minimum(d, 256 - d).sum(1, dtype=np.int64)  # the bytes' absolute values as signed bytes
        better = cost < best
        out[better, 0], out[better, 1:], best[better] = k, d[better], cost[better]
    return out


def _write_tiff16(path: Path, a: np.ndarray) -> None:
    """Write (H, W) or (H, W, C) uint16, C = 1, 3 or 4, as a deflate-compressed 16-bit TIFF (tifffile: Pillow writes
    16-bit grey only)."""
    c = 1 if a.ndim == 2 else a.shape[2]
    if c not in (1, 3, 4):
        raise ValueError(f"a 16-bit TIFF takes grey, RGB or RGBA pixels, got {c} channels; write a .png instead")
    try:
        import tifffile
    except ImportError:
        raise ValueError("writing a 16-bit TIFF needs the tifffile package (installed with scikit-image); "
                         "write a .png instead") from None
    tifffile.imwrite(path, a, photometric="rgb" if c >= 3 else "minisblack", compression="zlib", predictor=True,
                     extrasamples=("unassalpha",) if c == 4 else None, metadata=None)


def _format(path: Path) -> str:
    ext = path.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
    if ext not in formats:
        raise ValueError(f"unsupported image format {ext!r} for {path}")
    return formats[ext]


def image_grid(x: Tensor, *, nrow: int = 8, pad: int = 2, value: float = 1.0) -> Tensor:
    """Tile a batch (B, C, H, W) into one image (1, C, H', W') with ``pad`` pixels of ``value`` between."""
    from torchvision.utils import make_grid

    return make_grid(x.detach().float().cpu(), nrow=nrow, padding=pad, pad_value=value)[None, : x.shape[1]]


def save_grid(path: str | Path, x: Tensor, *, nrow: int = 8) -> Path:
    return write_image(path, image_grid(x, nrow=nrow))
