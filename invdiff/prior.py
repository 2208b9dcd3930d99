"""Loading priors: a bundled name (``invdiff.zoo``), a ``.safetensors`` file with its ``.json`` config, a
pretrained denoiser or a composite (``invdiff.denoisers``), a foreign guided-diffusion (ADM) checkpoint, or a
diffusers model folder. ``EpsPrior`` itself is defined in ``invdiff.eps``."""

from __future__ import annotations

from pathlib import Path

import torch

from .denoisers import resolve_denoiser
from .eps import FORMAT_VERSION, Denoised, EpsPrior
from .schedule import NoiseSchedule
from .zoo import PRIORS


def load(name_or_path: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> EpsPrior:
    """A bundled prior by name (see ``invdiff.zoo``), a ``.safetensors`` file with its ``.json`` config,
    a foreign ``.pt``/``.pth`` checkpoint (guided-diffusion/ADM), or a diffusers model folder."""
    if device is not None:  # a device this machine has, else one clear ValueError (not a driver error)
        from .samplers.validate import check_device_name

        device = check_device_name(device)
    prior = resolve(name_or_path, dtype=dtype)
    return prior.to(device) if device is not None else prior


def resolve(name_or_path: str | Path, *, dtype: torch.dtype = torch.float32):
    """A prior from a registry name, a denoiser name or composite, or a path (see ``load``)."""
    key = str(name_or_path)
    found = None if key in PRIORS else resolve_denoiser(key, dtype=dtype, load_diffusion=resolve)  # 'ffdnet', 'ffdnet+natural64', KAIR .pth
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

    net, info = load_foreign_checkpoint(path)
    wrapped = EpsOutput(net, info.get("learn_sigma", False)).to(dtype).eval().requires_grad_(False)
    cfg = {"name": path.stem, "arch": info.get("arch", "adm"), "source": str(path),
           "data": {"channels": info.get("in_channels", 3), "image_size": info.get("image_size"),
                    "multiple": info.get("multiple", 1)},
           "schedule": {"kind": "linear", "num_timesteps": 1000}}
    return EpsPrior(wrapped, NoiseSchedule.linear(1000), config=cfg)


def _foreign_diffusers(path: Path, dtype: torch.dtype):
    from .nets.diffusers_net import load_diffusers

    net, info = load_diffusers(str(path))
    net = net.to(dtype).eval().requires_grad_(False)
    sched = info.get("schedule", {"kind": "linear", "num_timesteps": 1000})
    cfg = {"name": path.name, "arch": "diffusers", "source": str(path),
           "data": {"channels": info.get("in_channels"), "image_size": info.get("image_size"), "multiple": info.get("multiple", 1)},
           "schedule": sched}
    return EpsPrior(net, NoiseSchedule.from_config(sched), config=cfg)


__all__ = ["Denoised", "EpsPrior", "FORMAT_VERSION", "load", "resolve"]
