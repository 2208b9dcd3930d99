"""Loading foreign ``.pt``/``.pth`` checkpoints (guided-diffusion / ADM, e.g. DPS's ``ffhq_10m.pt`` or
OpenAI's ``256x256_diffusion_uncond.pt``) as ε-networks.

Only plain state dicts are read (``torch.load(..., weights_only=True)``): a checkpoint that needs arbitrary
objects unpickled is refused rather than executed. The architecture and its flags are recovered from the
parameter names and shapes (``invdiff.nets.adm.infer_adm_config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from .adm import ADM, infer_adm_config, looks_like_adm

#: container keys under which training scripts commonly nest the weights
_CONTAINER_KEYS = ("state_dict", "model", "ema", "model_state_dict", "ema_model", "net")


def _unwrap(obj, path) -> dict[str, Tensor]:
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} holds no state dict (found {type(obj).__name__})")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise ValueError(f"{path} holds no tensors (keys: {', '.join(list(map(str, obj))[:8])})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_foreign_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Read a foreign checkpoint and return (network in float32 on the CPU, info).

    info: ``arch`` ("adm"), ``learn_sigma``, ``in_channels``, ``image_size`` (None: not stored in a
    state dict), ``multiple`` (image sides must divide by it) and ``config`` (the ``ADMConfig``)."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors, truncated files, zip errors, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a loadable checkpoint (only plain state_dicts are read, "
                         f"weights_only=True): {msg}") from None
    sd = _unwrap(obj, path)
    if looks_like_adm(sd):
        cfg = infer_adm_config(sd)
        net = ADM(cfg)
        try:
            net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: the weights do not fit the inferred ADM architecture: {e}") from None
        info = {"arch": "adm", "learn_sigma": cfg.learn_sigma, "in_channels": cfg.in_channels,
                "image_size": None, "multiple": cfg.multiple, "config": cfg}
        return net, info
    some = ", ".join(list(sd)[:6])
    raise ValueError(f"unknown architecture in {path}: expected a guided-diffusion/ADM state dict "
                     f"(keys like input_blocks.0.0.weight and out.2.weight), found keys {some}")


class EpsOutput(nn.Module):
    """Adapts a network to the ε protocol ``net(x_t, t, cond=None) -> ε``: with ``learn_sigma`` only the first
    ``in_channels`` output channels (ε) are returned; the learned variance (ignored by our samplers) is
    available from ``variance_output``. For class-conditional ADMs ``cond`` is the class label tensor."""

    def __init__(self, net: nn.Module, learn_sigma: bool):
        super().__init__()
        self.net = net
        self.learn_sigma = bool(learn_sigma)
        cfg = getattr(net, "config", None)
        self.in_channels: int = int(getattr(cfg, "in_channels", 3))
        self.multiple: int = int(getattr(cfg, "multiple", 1))

    def _raw(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            return self.net(x, t)
        if getattr(self.net, "num_classes", None) is None:
            raise ValueError("this network is unconditional: it takes no cond")
        return self.net(x, t, cond)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        out = self._raw(x, t, cond)
        return out[:, : self.in_channels] if self.learn_sigma else out

    def variance_output(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """The learned-variance channels (guided-diffusion's interpolation values v in [-1, 1])."""
        if not self.learn_sigma:
            raise ValueError("this network does not learn the variance (learn_sigma=False)")
        return self._raw(x, t, cond)[:, self.in_channels:]
