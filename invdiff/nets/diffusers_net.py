"""Loading a 🤗 diffusers ``UNet2DModel`` (a pipeline folder with ``unet/`` and ``scheduler/``, or a bare
model folder, optionally with ``scheduler_config.json``) as an ε-network. ``diffusers`` is an optional
dependency (``pip install 'invdiff[diffusers]'``) imported only here."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

_MISSING = "loading diffusers models needs the optional dependency: pip install 'invdiff[diffusers]'"


class DiffusersEps(nn.Module):
    """``forward(x, t, cond=None) -> unet(x, t).sample`` (its first ``in_channels`` channels when the model
    also predicts the variance)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        cfg = unet.config
        self.in_channels: int = int(cfg.in_channels)
        self.out_channels: int = int(cfg.out_channels)
        self.learn_sigma = self.out_channels == 2 * self.in_channels
        self.multiple: int = 2 ** (len(cfg.block_out_channels) - 1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            raise ValueError("this diffusers UNet2DModel is used unconditionally: it takes no cond")
        out = self.unet(x, t).sample
        return out[:, : self.in_channels] if self.learn_sigma else out


def _read_scheduler_config(path: Path) -> dict | None:
    for cand in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"):
        if cand.is_file():
            try:
                return json.loads(cand.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{cand} is not valid JSON: {e}") from None
    return None


def schedule_from_scheduler_config(sc: dict, where: str = "scheduler config") -> dict:
    """A diffusers scheduler config -> an ``invdiff.schedule.NoiseSchedule.from_config`` dict."""
    pred = sc.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise ValueError(f"{where}: prediction_type {pred!r} is not supported (only 'epsilon' models)")
    if sc.get("trained_betas") is not None:
        raise ValueError(f"{where}: trained_betas schedules are not supported")
    T = int(sc.get("num_train_timesteps", 1000))
    kind = sc.get("beta_schedule", "linear")
    if kind == "linear":
        # NoiseSchedule.linear takes β for T=1000 and rescales by 1000/T; diffusers takes them as they are
        scale = T / 1000.0
        return {"kind": "linear", "num_timesteps": T,
                "beta_start": float(sc.get("beta_start", 1e-4)) * scale, "beta_end": float(sc.get("beta_end", 0.02)) * scale}
    if kind == "squaredcos_cap_v2":
        return {"kind": "cosine", "num_timesteps": T}
    raise ValueError(f"{where}: beta_schedule {kind!r} is not supported (only 'linear' and 'squaredcos_cap_v2')")


def _square_size(size) -> int | None:
    if isinstance(size, int):
        return size
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    return None


def load_diffusers(path_or_hub_id: str) -> tuple[nn.Module, dict]:
    """(ε-network, info) from a diffusers folder. info: ``arch``, ``in_channels``, ``image_size``
    (``sample_size``), ``multiple``, ``learn_sigma`` and ``schedule`` (a ``NoiseSchedule.from_config``
    dict; the linear 1000-step default when there is no scheduler config)."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ValueError(_MISSING) from None

    path = Path(path_or_hub_id).expanduser()
    local = path.is_dir()
    if local:
        subfolders = ["unet"] if (path / "unet" / "config.json").is_file() else [None]
    else:
        subfolders = ["unet", None]
    unet, err = None, None
    for sub in subfolders:
        try:
            unet = UNet2DModel.from_pretrained(str(path) if local else path_or_hub_id, subfolder=sub)
            break
        except Exception as e:  # missing files, wrong model class, no network, ...
            err = e
    if unet is None:
        raise ValueError(f"cannot load a diffusers UNet2DModel from {path_or_hub_id}: {err}") from None

    sc = _read_scheduler_config(path) if local else None
    if sc is not None:
        schedule = schedule_from_scheduler_config(sc, f"scheduler config of {path_or_hub_id}")
    else:
        schedule = {"kind": "linear", "num_timesteps": 1000}
    net = DiffusersEps(unet)
    if net.out_channels not in (net.in_channels, 2 * net.in_channels):
        raise ValueError(f"{path_or_hub_id}: a UNet2DModel with {net.in_channels} input and {net.out_channels} "
                         "output channels is not an ε-network")
    size = unet.config.sample_size
    info = {"arch": "diffusers", "in_channels": net.in_channels,
            "image_size": _square_size(size),
            "multiple": net.multiple, "learn_sigma": net.learn_sigma, "schedule": schedule,
            "schedule_source": "scheduler_config" if sc is not None else "default"}
    return net, info
