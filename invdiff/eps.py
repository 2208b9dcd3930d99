"""The ε-network prior: a network plus its noise schedule (``invdiff.prior.load`` finds one by name or path).

``EpsPrior`` gives ε_θ(x_t, t), the denoised estimate x̂0 and the score ∇log p_t(x_t) = −ε/√(1−ᾱ_t).
The network protocol is ``net(x_t, t, cond=None) -> ε`` with x_t NCHW on the [-1, 1] scale and t a
LongTensor (B,) of timestep indices 0..T-1; ``cond`` is a Palette model's condition channels or a
class-conditional model's labels. Priors save to safetensors plus a JSON config (``save``, ``from_files``).

Classifier-free guidance (Ho & Salimans 2022) for conditional models trained with condition dropout:
ε̂ = (1 + w)·ε_θ(x_t, c) − w·ε_θ(x_t, ∅), the two evaluations batched into one network call (2 network
evaluations per image); w = 0 is the plain conditional model. The null condition ∅ is the extra label
``num_classes`` for class labels and zeros for condition channels (``null_condition``), the same in training
(``drop_condition``) and sampling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .schedule import NoiseSchedule

FORMAT_VERSION = 1


def null_condition(cond: Tensor, num_classes: int = 0) -> Tensor:
    """∅ for a batch of conditions: the null label ``num_classes`` for labels (a LongTensor (B,)), zeros for
    condition channels."""
    if cond.dtype == torch.long:
        return torch.full_like(cond, int(num_classes))
    return torch.zeros_like(cond)


def drop_condition(cond: Tensor, p: float, generator: torch.Generator, num_classes: int = 0) -> Tensor:
    """Condition dropout for classifier-free guidance: each image's condition becomes ∅ with probability p (one
    uniform draw per image from ``generator``)."""
    drop = torch.rand(cond.shape[0], generator=generator).to(cond.device) < p
    null = null_condition(cond, num_classes)
    return torch.where(drop.view(-1, *([1] * (cond.ndim - 1))), null, cond)


@dataclass(frozen=True)
class Denoised:
    """The prior's prediction at one step: clean-image estimate and the matching noise."""

    x0: Tensor
    eps: Tensor


class EpsPrior(nn.Module):
    def __init__(self, net: nn.Module, schedule: NoiseSchedule, *, config: dict | None = None):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.config = dict(config or {})
        data = self.config.get("data", {})
        self.channels: int | None = data.get("channels", getattr(getattr(net, "config", None), "in_channels", None))
        self.cond_channels: int = int(getattr(getattr(net, "config", None), "cond_channels", 0) or data.get("cond_channels", 0))
        self.image_size: int | None = data.get("image_size")
        #: image sides must be multiples of this (1 when unknown)
        self.multiple: int = int(getattr(getattr(net, "config", None), "multiple", data.get("multiple", 1)))
        #: class labels of a class-conditional model (0: none) and their names
        self.num_classes: int = int(getattr(getattr(net, "config", None), "num_classes", 0) or data.get("num_classes", 0))
        self.class_names: list[str] = list(data.get("classes", []))
        #: the condition dropout it was trained with (classifier-free guidance needs > 0)
        self.cond_dropout: float = float(data.get("cond_dropout", 0.0))

    @property
    def conditional(self) -> bool:
        return bool(self.cond_channels or self.num_classes)

    def check_guidance(self, guidance: float) -> None:
        """A clear error where classifier-free guidance cannot apply: an unconditional prior, or a conditional one
        trained without condition dropout (its ε(x_t, ∅) was never learnt)."""
        if not guidance:
            return
        if not self.conditional:
            raise ValueError(f"guidance needs a conditional prior (a Palette or class-conditional model); {self.name!r} "
                             "is unconditional")
        if self.cond_dropout <= 0:
            raise ValueError(f"prior {self.name!r} was trained without condition dropout: classifier-free guidance "
                             "needs its unconditional ε, which it never learnt (use guidance 0)")

    @property
    def name(self) -> str:
        return str(self.config.get("name", "custom"))

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.net.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def _t(self, t: Tensor | int, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.long, device=x.device)
        return t.expand(x.shape[0]) if t.ndim == 0 else t

    def eps(self, x_t: Tensor, t: Tensor | int, cond: Tensor | None = None, *, guidance: float = 0.0) -> Tensor:
        """ε_θ(x_t, t[, cond]) in the input's dtype (the network itself under bf16 autocast when ``accelerate``
        turned it on; schedules, operators and FFTs stay in float32/64). ``guidance`` w ≠ 0: the classifier-free
        guided ε̂ = (1 + w)·ε(x_t, c) − w·ε(x_t, ∅), both halves in one network call."""
        if not guidance:
            return self._eps(x_t, t, cond)
        self.check_guidance(guidance)
        if cond is None:
            raise ValueError("guidance needs the condition")
        tt = self._t(t, x_t)
        both = self._eps(torch.cat([x_t, x_t]), torch.cat([tt, tt]),
                         torch.cat([cond, null_condition(cond, self.num_classes)]))
        e_c, e_u = both.chunk(2)
        return (1 + guidance) * e_c - guidance * e_u

    def tiled(self, tile: int | None, overlap: int | None = None) -> "EpsPrior":
        """Evaluate the network on overlapping tiles of at most ``tile`` × ``tile`` pixels from now on
        (``invdiff.tiling.tiled_map``; None: the whole image again). ``tile`` and ``overlap`` (default
        ``TILE_OVERLAP``) must be multiples of the prior's ``multiple``. Returns self."""
        from .tiling import TILE_OVERLAP

        if tile is None:
            self._tile = None
            return self
        overlap = TILE_OVERLAP if overlap is None else overlap
        m = max(self.multiple, 1)
        if tile < 1 or tile % m or overlap < 0 or overlap % m or overlap >= tile:
            raise ValueError(f"tiles of {tile} px overlapping by {overlap} px: both must be multiples of the prior's "
                             f"{m}, and the overlap smaller than the tile")
        self._tile = (int(tile), int(overlap))
        return self

    def _eps(self, x_t: Tensor, t: Tensor | int, cond: Tensor | None) -> Tensor:
        tile = getattr(self, "_tile", None)
        if tile is not None and max(x_t.shape[-2:]) > tile[0]:
            from .tiling import tiled_map

            tt = self._t(t, x_t)
            return tiled_map(lambda x, c: self._eps_whole(x, tt, c), x_t, cond, *tile)
        return self._eps_whole(x_t, t, cond)

    def _eps_whole(self, x_t: Tensor, t: Tensor | int, cond: Tensor | None) -> Tensor:
        x = x_t.to(self.dtype)
        if getattr(self, "_channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        # the weight-cast cache is off: each autocast region is one forward pass (nothing to reuse), and a
        # cache filled during CUDA-graph capture would be freed under the graph
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=getattr(self, "_bf16", False), cache_enabled=False):
            out = self.net(x, self._t(t, x_t), cond) if cond is not None else self.net(x, self._t(t, x_t))
        return out.to(x_t.dtype)

    def accelerate(self, *, channels_last: bool = True, compile: bool = False, bf16: bool | None = None,
                   checkpoint: bool = False, cuda_graphs: bool = False) -> "EpsPrior":
        """Speed and memory options; none changes what is computed beyond floating-point rounding. Returns self.

        - ``channels_last``: NHWC memory format for the convolutions.
        - ``compile``: ``torch.compile`` of the network (CPU and GPU; with ``cuda_graphs`` the compiler's own
          CUDA-graph mode, ``reduce-overhead``).
        - ``bf16``: bf16 autocast of the network only (default: on CUDA); schedules, operators, FFTs and the
          guidance arithmetic stay float32/64.
        - ``checkpoint``: activation checkpointing of every residual/attention block while a gradient is recorded
          (DPS, MCG, ΠGDM): the backward pass recomputes them, trading about one extra forward for memory.
        - ``cuda_graphs``: replay forward-only evaluations from CUDA graphs captured per input shape (CUDA only;
          gradient evaluations stay eager)."""
        from .accel import CUDAGraphNet, checkpoint_blocks

        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
            self._channels_last = True
        self._bf16 = (self.device.type == "cuda") if bf16 is None else bool(bf16)
        if checkpoint:
            checkpoint_blocks(self.net)
        graphs = cuda_graphs and self.device.type == "cuda"
        if compile:
            self.net = torch.compile(self.net, dynamic=False, mode="reduce-overhead" if graphs else None)
        elif graphs:
            self.net = CUDAGraphNet(self.net)
        return self

    def x0_from_eps(self, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        ac = self.schedule.at("alphas_cumprod", self._t(t, x_t), x_t)
        return (x_t - (1 - ac).sqrt() * eps) / ac.sqrt()

    def eps_from_x0(self, x_t: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
        ac = self.schedule.at("alphas_cumprod", self._t(t, x_t), x_t)
        return (x_t - ac.sqrt() * x0) / (1 - ac).sqrt()

    def denoise(self, x_t: Tensor, t: Tensor | int, cond: Tensor | None = None, *, clip: bool = False,
                guidance: float = 0.0) -> Denoised:
        """x̂0 = (x_t − √(1−ᾱ)ε)/√ᾱ; with ``clip`` x̂0 is clamped to [-1, 1] and ε re-derived; ``guidance``: see
        ``eps``."""
        eps = self.eps(x_t, t, cond, guidance=guidance)
        x0 = self.x0_from_eps(x_t, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = self.eps_from_x0(x_t, t, x0)
        return Denoised(x0=x0, eps=eps)

    def x0(self, x_t: Tensor, t: Tensor | int, cond: Tensor | None = None) -> Tensor:
        return self.denoise(x_t, t, cond).x0

    def score(self, x_t: Tensor, t: Tensor | int, cond: Tensor | None = None) -> Tensor:
        ac = self.schedule.at("alphas_cumprod", self._t(t, x_t), x_t)
        return -self.eps(x_t, t, cond) / (1 - ac).sqrt()

    def check_image(self, x: Tensor) -> None:
        """Raise a clear ValueError if x cannot go through this prior."""
        if x.ndim != 4:
            raise ValueError(f"expected an NCHW batch, got shape {tuple(x.shape)}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise ValueError(f"prior {self.name!r} works on {self.channels}-channel images, got {x.shape[1]} channels")
        m = self.multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"prior {self.name!r} needs image sides that are multiples of {m}, got {tuple(x.shape[-2:])}")

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path, *, dtype: torch.dtype | None = None, extra: dict | None = None) -> Path:
        """Write ``path`` (.safetensors) and ``path`` with suffix .json. ``dtype=torch.float16`` halves the size."""
        from safetensors.torch import save_file

        from .nets.unet import UNet

        if not isinstance(self.net, UNet):
            raise ValueError("only invdiff U-Net priors can be saved in the bundled format")
        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
              for k, v in self.net.state_dict().items()}
        cfg = dict(self.config)
        cfg.update(extra or {})
        cfg["format_version"] = FORMAT_VERSION
        cfg["arch"] = "unet"
        cfg["unet"] = self.net.config.to_dict()
        cfg["schedule"] = self.schedule.to_config()
        cfg.setdefault("data", {})
        cfg["data"] = {"range": [-1, 1], "channels": self.net.config.in_channels, **cfg["data"]}
        cfg["weights_dtype"] = str(dtype or next(iter(sd.values())).dtype).replace("torch.", "")
        tmp = path.with_suffix(".safetensors.tmp")
        save_file(sd, str(tmp), metadata={"format": "invdiff", "version": str(FORMAT_VERSION)})
        tmp.chmod(0o644)  # safetensors writes 0600 files; weights are meant to be shared
        tmp.replace(path)
        jtmp = path.with_suffix(".json.tmp")
        jtmp.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        jtmp.replace(path.with_suffix(".json"))
        self.config = cfg
        return path

    @classmethod
    def from_files(cls, weights: str | Path, config: str | Path | None = None, *, dtype: torch.dtype = torch.float32) -> "EpsPrior":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .nets.unet import UNet, UNetConfig

        weights = Path(weights)
        config = Path(config) if config is not None else weights.with_suffix(".json")
        if not weights.is_file():
            raise ValueError(f"prior weights not found: {weights}")
        if not config.is_file():
            raise ValueError(f"prior config not found: {config} (expected next to the weights)")
        try:
            cfg = json.loads(config.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"prior config {config} is not valid JSON: {e}") from None
        if cfg.get("arch", "unet") != "unet":
            raise ValueError(f"unknown architecture {cfg.get('arch')!r} in {config}")
        net = UNet(UNetConfig.from_dict(cfg["unet"]))
        try:
            sd = load_file(str(weights))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"cannot read prior weights {weights}: {e}") from None
        net.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True)
        net.eval().requires_grad_(False)
        return cls(net, NoiseSchedule.from_config(cfg["schedule"]), config=cfg)


__all__ = ["Denoised", "EpsPrior", "FORMAT_VERSION"]
