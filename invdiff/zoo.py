"""Registry of bundled priors: name -> weights file (safetensors) + JSON config in ``invdiff/weights``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    @property
    def config(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.json"

    @property
    def available(self) -> bool:
        return self.weights.is_file() and self.config.is_file()

    def info(self) -> dict:
        return json.loads(self.config.read_text()) if self.config.is_file() else {}


PRIORS: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("natural64", "natural photographs, RGB, trained on 64x64 patches; any image size (default)"),
        ZooEntry("fmnist32", "Fashion-MNIST, grey 32x32, unconditional"),
        ZooEntry("fmnist32-palette-sr4", "Fashion-MNIST, Palette conditional model for x4 super-resolution (8x8 -> 32x32)"),
        ZooEntry("fmnist32-palette-inpaint", "Fashion-MNIST, Palette conditional model for box inpainting"),
    ]
}
DEFAULT_PRIOR = "natural64"


def resolve(name_or_path: str | Path, *, dtype: torch.dtype = torch.float32):
    """Load a prior from a registry name or a path (see ``invdiff.prior.load``)."""
    from .denoisers import resolve_denoiser
    from .prior import EpsPrior

    key = str(name_or_path)
    found = None if key in PRIORS else resolve_denoiser(key, dtype=dtype)  # 'ffdnet', 'ffdnet+natural64', KAIR .pth
    if found is not None:
        return found
    if key in PRIORS:
        entry = PRIORS[key]
        if not entry.available:
            raise ValueError(f"bundled prior {key!r} is registered but its weights are missing ({entry.weights})")
        prior = EpsPrior.from_files(entry.weights, entry.config, dtype=dtype)
        prior.config.setdefault("name", key)
        return prior
    path = Path(key).expanduser()
    if not path.exists():
        raise ValueError(f"unknown prior {key!r}: not a bundled name ({', '.join(PRIORS)}) and no such file")
    if path.is_dir():
        return _foreign_diffusers(path, dtype)
    if path.suffix in {".pt", ".pth", ".ckpt", ".bin"}:
        return _foreign_checkpoint(path, dtype)
    if path.suffix in {".safetensors", ".json"}:
        prior = EpsPrior.from_files(path.with_suffix(".safetensors"), path.with_suffix(".json"), dtype=dtype)
        prior.config.setdefault("name", path.stem)
        return prior
    raise ValueError(f"cannot load a prior from {path}: expected .safetensors(+.json), .pt/.pth or a diffusers folder")


def _foreign_checkpoint(path: Path, dtype: torch.dtype):
    from .nets.checkpoints import EpsOutput, load_foreign_checkpoint
    from .prior import EpsPrior
    from .schedule import NoiseSchedule

    net, info = load_foreign_checkpoint(path)
    wrapped = EpsOutput(net, info.get("learn_sigma", False)).to(dtype).eval().requires_grad_(False)
    cfg = {"name": path.stem, "arch": info.get("arch", "adm"), "source": str(path),
           "data": {"channels": info.get("in_channels", 3), "image_size": info.get("image_size"),
                    "multiple": info.get("multiple", 1)},
           "schedule": {"kind": "linear", "num_timesteps": 1000}}
    return EpsPrior(wrapped, NoiseSchedule.linear(1000), config=cfg)


def _foreign_diffusers(path: Path, dtype: torch.dtype):
    from .nets.diffusers_net import load_diffusers
    from .prior import EpsPrior
    from .schedule import NoiseSchedule

    net, info = load_diffusers(str(path))
    net = net.to(dtype).eval().requires_grad_(False)
    sched = info.get("schedule", {"kind": "linear", "num_timesteps": 1000})
    cfg = {"name": path.name, "arch": "diffusers", "source": str(path),
           "data": {"channels": info.get("in_channels"), "image_size": info.get("image_size"), "multiple": info.get("multiple", 1)},
           "schedule": sched}
    return EpsPrior(net, NoiseSchedule.from_config(sched), config=cfg)
