"""Image files <-> tensors. The only place that converts between file ranges ([0, 255], [0, 1]) and the
library's [-1, 1]. Writes are atomic (temporary file + rename): no half-written outputs."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
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
    x = read_image(path)
    return int(x.shape[1])


def read_image(path: str | Path, *, channels: int | None = None, with_alpha: bool = False):
    """Read an image file as a (1, C, H, W) float32 tensor in [-1, 1].

    Every depth Pillow reads is mapped correctly: 8-bit files by 255, 16-bit by 65535, 32-bit float files are taken
    as [0, 1] (others are refused). ``channels``: 1 (grey: luma of a colour file), 3 (RGB: a grey file repeated) or
    None (keep the file's: grey stays grey, anything else RGB). With ``with_alpha`` returns ``(image, alpha)``
    where alpha is (1, 1, H, W) in {0, 1} or None."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as im:
            im.load()
            alpha = None
            if with_alpha and (im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info):
                a = np.asarray(im.convert("RGBA"))[..., 3]
                alpha = torch.from_numpy((a > 127).astype(np.float32))[None, None]
            arr = _to_unit_array(im, path)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e.__class__.__name__}: {e}") from None
    if arr.size == 0:
        raise ValueError(f"cannot read image {path}: it has no pixels")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()
    if channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    elif channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as Pillow's convert("L")
        x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = x * 2.0 - 1.0
    return (x, alpha) if with_alpha else x


def estimate_noise_sigma(x: Tensor) -> float:
    """Gaussian noise σ of one image (1|C, H, W or 1, C, H, W; on the [-1, 1] scale) by Donoho's rule: the median
    absolute finest-scale diagonal Haar wavelet coefficient / 0.6745, averaged over channels. Accurate for
    images whose fine detail is weaker than the noise; an upper bound otherwise."""
    a = x.detach().double().cpu()
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError("estimate_noise_sigma takes one image")
        a = a[0]
    h, w = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    if h < 2 or w < 2:
        raise ValueError(f"image of size {tuple(a.shape[-2:])} is too small to estimate its noise")
    a = a[..., :h, :w]
    hh = (a[..., 0::2, 0::2] - a[..., 0::2, 1::2] - a[..., 1::2, 0::2] + a[..., 1::2, 1::2]) / 2
    return float(torch.stack([c.abs().flatten().median() for c in hh]).mean() / 0.6745)


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


def write_image(path: str | Path, x: Tensor) -> Path:
    """Write one [-1, 1] image (C, H, W) or (1, C, H, W) as PNG/JPEG (atomically)."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(x)).save(tmp, format=_format(path))
    return path


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
