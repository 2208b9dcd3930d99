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


def read_image(path: str | Path, *, channels: int | None = None, with_alpha: bool = False):
    """Read an image file as a (1, C, H, W) float32 tensor in [-1, 1].

    ``channels``: 1 (grey), 3 (RGB) or None (keep the file's: grey stays grey, anything else RGB). With
    ``with_alpha`` returns ``(image, alpha)`` where alpha is (1, 1, H, W) in {0, 1} or None."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            alpha = None
            if with_alpha and (im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info):
                a = np.asarray(im.convert("RGBA"))[..., 3]
                alpha = torch.from_numpy((a > 127).astype(np.float32))[None, None]
            if channels is None:
                channels = 1 if im.mode in ("L", "I", "I;16", "F", "1", "LA") else 3
            if channels not in (1, 3):
                raise ValueError(f"channels must be 1 or 3, got {channels}")
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e.__class__.__name__}: {e}") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5 - 1.0
    return (x, alpha) if with_alpha else x


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
