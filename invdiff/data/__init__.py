"""Training and evaluation data: Fashion-MNIST (Debian ``dataset-fashion-mnist``), image folders, and a
natural-photo patch sampler (random crops with random rescaling, flips and 90° rotations).

Images come out as float32 NCHW on the [-1, 1] scale.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FMNIST_DIRS = [os.environ.get("INVDIFF_FMNIST", ""), "/usr/share/datasets/fashion-mnist", "data/fashion-mnist"]
NATURAL_SOURCES = Path(__file__).parent / "natural_sources.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _find_fmnist() -> Path:
    for d in FMNIST_DIRS:
        if d and (Path(d) / "train-images-idx3-ubyte.gz").is_file():
            return Path(d)
    raise FileNotFoundError(
        "Fashion-MNIST not found: install the Debian package `dataset-fashion-mnist` "
        "(files under /usr/share/datasets/fashion-mnist) or set INVDIFF_FMNIST to a folder with the idx .gz files")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[data[2]]
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


#: Fashion-MNIST's ten classes, in label order
FMNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def fashion_mnist(split: str = "train", *, pad_to: int = 32, root: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """(images, labels): images float32 (N, 1, pad_to, pad_to) in [-1, 1] (zero padding = black = -1)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else _find_fmnist()
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(read_idx(root / f"{prefix}-images-idx3-ubyte.gz").copy())
    y = torch.from_numpy(read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    x = x.float().div(127.5).sub(1.0).unsqueeze(1)
    p = (pad_to - x.shape[-1]) // 2
    if p > 0:
        x = F.pad(x, (p, pad_to - x.shape[-1] - p, p, pad_to - x.shape[-2] - p), value=-1.0)
    return x, y


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(folder: str | Path, *, channels: int = 3, size: int | None = None, limit: int | None = None) -> Tensor:
    """Every image of a folder as one [-1, 1] batch; with ``size``, centre-cropped and resized to size×size."""
    from ..io import read_image

    out = []
    for p in list_images(folder)[:limit]:
        x = read_image(p, channels=channels)
        if size is not None:
            x = center_crop_resize(x, size)
        out.append(x)
    if not out:
        raise FileNotFoundError(f"no images in {folder}")
    return torch.cat(out) if size is not None else out  # type: ignore[return-value]


def center_crop_resize(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[..., top: top + s, left: left + s]
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    return x


class PatchSampler:
    """Random training patches from a list of photos held in memory as uint8.

    Each patch: pick a photo (probability ∝ area), a scale s ~ logU[1, max_scale] (a region of s·patch pixels
    is taken and resized to the patch size: multi-scale statistics), a random crop, a random flip and a random
    multiple of 90° rotation; with ``colour_jitter`` = j > 0, also the saturation and the contrast (about the patch's
    mean) each scaled by a factor drawn uniformly from [1 − j, 1 + j]. With ``colour_pick`` = k > 1, k candidate
    patches are drawn for each patch and the most colourful (Hasler-Süsstrunk M) is kept: the same photos, with the
    colourful regions more often (for a colouriser, whose colours come from what it sees). Deterministic given the
    generator; with k = 1 the stream is the plain one. ``device``: where the photos are held and the patches are cut
    (a GPU keeps the training step fed); the random draws stay on the CPU generator, so the stream is the same."""

    def __init__(self, images: list[Tensor], *, patch: int = 64, max_scale: float = 2.0, colour_jitter: float = 0.0,
                 colour_pick: int = 1, device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.images = [(im if im.dtype == torch.uint8 else im.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)).to(self.device)
                       for im in images]
        self.patch = patch
        self.max_scale = max_scale
        if not 0 <= colour_jitter < 1:
            raise ValueError(f"colour_jitter must be in [0, 1), got {colour_jitter}")
        self.colour_jitter = colour_jitter
        if int(colour_pick) != colour_pick or colour_pick < 1:
            raise ValueError(f"colour_pick must be a whole number ≥ 1, got {colour_pick}")
        self.colour_pick = int(colour_pick)
        areas = torch.tensor([float(im.shape[-1] * im.shape[-2]) for im in self.images])
        self.weights = areas / areas.sum()
        if min(min(im.shape[-2:]) for im in self.images) < patch:
            raise ValueError("every photo must be at least as large as the patch")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = self.colour_pick
        if k == 1:
            return self._sample(n, generator)
        from ..metrics import colourfulness

        cand = self._sample(n * k, generator).reshape(n, k, *self.images[0].shape[:1], self.patch, self.patch)
        best = colourfulness(cand.flatten(0, 1)).reshape(n, k).argmax(1)
        return cand[torch.arange(n), best]

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        p = self.patch
        out = torch.empty(n, self.images[0].shape[0], p, p, device=self.device)
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        u = torch.rand(n, 5, generator=generator)
        for i in range(n):
            im = self.images[int(idx[i])]
            h, w = im.shape[-2:]
            smax = min(self.max_scale, h / p, w / p)
            s = float(torch.exp(u[i, 0] * np.log(max(smax, 1.0))))
            c = max(p, int(round(p * s)))
            top = int(u[i, 1] * (h - c + 1))
            left = int(u[i, 2] * (w - c + 1))
            crop = im[:, top: top + c, left: left + c].float().div(127.5).sub(1)[None]
            if c != p:
                crop = F.interpolate(crop, size=(p, p), mode="bicubic", antialias=True, align_corners=False)
            crop = crop[0]
            if u[i, 3] < 0.5:
                crop = crop.flip(-1)
            crop = torch.rot90(crop, int(u[i, 4] * 4) % 4, dims=(-2, -1))
            out[i] = crop
        if self.colour_jitter > 0:  # drawn after the crops: without jitter the stream is unchanged
            j = (1 + self.colour_jitter * (2 * torch.rand(n, 2, 1, 1, 1, generator=generator) - 1)).to(self.device)
            grey = out.mean(dim=1, keepdim=True)
            out = grey + j[:, 0] * (out - grey)  # saturation
            out = out.mean(dim=(1, 2, 3), keepdim=True) + j[:, 1] * (out - out.mean(dim=(1, 2, 3), keepdim=True))
        return out.clamp(-1, 1)


def natural_photos(root: str | Path = "data/natural", *, listed: bool = False,
                   names: list[str] | None = None) -> list[Tensor]:
    """The compact training copy written by ``scripts/build_natural_data.py``: uint8 (3, H, W) tensors.
    ``listed``: exactly the photos of ``natural_sources.json``; a copy that lacks any of them (built
    before the list grew) is an error, not a smaller training set. ``names``: these listed names, in this order."""
    from PIL import Image

    files = sorted(Path(root).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no training photos in {root}: run `python scripts/build_natural_data.py` first")
    if listed or names is not None:
        want = list(names) if names is not None else natural_names()
        missing = [n for n in want if not (Path(root) / f"{n}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{root} lacks {len(missing)} of the {len(want)} training photos listed in "
                                    f"{NATURAL_SOURCES.name} (e.g. {missing[0]}): run `python scripts/build_natural_data.py`")
        files = [Path(root) / f"{n}.png" for n in want]
        if names is None:
            files = sorted(files)  # the order of the glob above: the same stream
    return [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1).contiguous() for f in files]


def downscale_uint8(image: Tensor, factor: int) -> Tensor:
    """A uint8 (C, H, W) photo shrunk by a whole ``factor`` (antialiased bicubic, as the patches are resized;
    kornia's ``rescale``), rounded back to uint8."""
    from kornia.geometry.transform import rescale

    x = rescale(image[None].float(), 1 / factor, interpolation="bicubic", antialias=True)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def natural_sources() -> list[dict]:
    """The exact list of training photographs and the Debian packages they come from."""
    return json.loads(NATURAL_SOURCES.read_text())["files"]


def natural_names(*, skip_format: str | None = None) -> list[str]:
    """The listed training photos' names, sorted; ``skip_format`` (a suffix such as ``webp``): without the photos
    whose source file (the bundle's member, or the file) is of that format."""
    def fmt(entry: dict) -> str:
        return (entry.get("member") or entry["path"]).rsplit(".", 1)[-1].lower()

    return sorted(e["name"] for e in natural_sources() if skip_format is None or fmt(e) != skip_format.lower())


#: scikit-image's bundled photographs: the validation set of the natural-photo prior (never trained on)
VALIDATION_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass")


def validation_photos(size: int = 256, names: tuple[str, ...] = VALIDATION_PHOTOS) -> Tensor:
    """The validation photos as one RGB batch (N, 3, size, size) in [-1, 1]: centre square, resized.
    Grey ones (camera, grass) are replicated to three channels."""
    import skimage.data

    out = []
    for n in names:
        a = np.asarray(getattr(skimage.data, n)(), dtype=np.float32)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        x = torch.from_numpy(a[..., :3].copy()).permute(2, 0, 1)[None] / 127.5 - 1
        out.append(center_crop_resize(x, size))
    return torch.cat(out)
