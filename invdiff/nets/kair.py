"""Classic CNN denoisers in the parameter layout of the published KAIR checkpoints (Zhang et al.).

- ``FFDNet`` (Zhang, Zuo, Zhang 2018): a 2×2 pixel-unshuffle, the noise level as one extra input channel, a plain
  stack of 3×3 convolutions with ReLU, a 2×2 pixel-shuffle back; predicts the clean image. Odd sides are padded by
  edge replication and cropped back.
- ``DnCNN`` (Zhang et al. 2017): 3×3 convolutions with ReLU (batch norm in the middle layers of the unmerged
  models); predicts the noise, the output is x − n. Not conditioned on the noise level.
- ``DRUNet`` (Zhang et al. 2021, DPIR): a four-level residual U-Net without biases, noise level as one extra input
  channel, stride-2 2×2 convolutions down, 2×2 transposed convolutions up, additive skips; predicts the clean image.
  Sides that are not multiples of 8 are padded by edge replication and cropped back.

Every network is called as ``net(x, sigma)`` with x NCHW on the checkpoint's [0, 1] scale and sigma (B,) the
noise standard deviation on that scale (ignored by DnCNN). Parameter names are those of KAIR's
``models/network_ffdnet.py``, ``network_dncnn.py`` and ``network_unet.py`` (``UNetRes``), so the released state
dicts load with ``strict=True``; ``infer_kair_config`` reads the architecture back from the names and shapes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Arch = Literal["ffdnet", "dncnn", "drunet"]


@dataclass(frozen=True)
class KairConfig:
    arch: Arch
    #: image channels (1 grey, 3 colour)
    channels: int = 3
    #: FFDNet/DnCNN: features per layer; DRUNet: features of the first level (the others are read from ``widths``)
    features: int = 64
    #: FFDNet/DnCNN: number of 3×3 convolutions; DRUNet: residual blocks per level
    layers: int = 17
    #: DnCNN: batch norm after the middle convolutions (unmerged checkpoints)
    batch_norm: bool = False
    #: DRUNet: features per level
    widths: tuple[int, ...] = field(default_factory=tuple)
    #: DRUNet: convolutions with biases (the released models have none)
    bias: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _conv(i: int, o: int, *, k: int = 3, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, k, stride=stride, padding=(k // 2 if stride == 1 else 0), bias=bias)


def _plain_stack(i: int, o: int, *, features: int, layers: int, batch_norm: bool = False) -> nn.Sequential:
    """conv-ReLU, (conv-[BN]-ReLU) × (layers − 2), conv: the ``model`` sequence of FFDNet and DnCNN."""
    if layers < 2:
        raise ValueError(f"a plain denoiser needs at least 2 convolutions, got {layers}")
    mods: list[nn.Module] = [_conv(i, features), nn.ReLU()]
    for _ in range(layers - 2):
        mods.append(_conv(features, features))
        if batch_norm:
            mods.append(nn.BatchNorm2d(features, eps=1e-4))
        mods.append(nn.ReLU())
    mods.append(_conv(features, o))
    return nn.Sequential(*mods)


def _pad_to(x: Tensor, m: int) -> tuple[Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, h, w


def _sigma_map(sigma: Tensor | float, x: Tensor) -> Tensor:
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
    s = s.expand(x.shape[0]) if s.numel() == 1 else s
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma must be a scalar or one value per image, got {s.numel()} for a batch of {x.shape[0]}")
    return s.reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])


class FFDNet(nn.Module):
    def __init__(self, config: KairConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.model = _plain_stack(4 * c + 1, 4 * c, features=config.features, layers=config.layers)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        x, h, w = _pad_to(x, 2)
        z = F.pixel_unshuffle(x, 2)
        z = self.model(torch.cat([z, _sigma_map(sigma, z)], 1))
        return F.pixel_shuffle(z, 2)[..., :h, :w]


class DnCNN(nn.Module):
    def __init__(self, config: KairConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.model = _plain_stack(c, c, features=config.features, layers=config.layers, batch_norm=config.batch_norm)

    def forward(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        return x - self.model(x)


class _ResBlock(nn.Module):
    """x + conv(ReLU(conv(x))); KAIR names the inner sequence ``res`` (convolutions at 0 and 2)."""

    def __init__(self, c: int, bias: bool):
        super().__init__()
        self.res = nn.Sequential(_conv(c, c, bias=bias), nn.ReLU(), _conv(c, c, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res(x)


class DRUNet(nn.Module):
    def __init__(self, config: KairConfig):
        super().__init__()
        self.config = config
        w, nb, b = config.widths, config.layers, config.bias
        if len(w) != 4:
            raise ValueError(f"DRUNet has four levels, got widths {w}")
        self.m_head = _conv(config.channels + 1, w[0], bias=b)
        for lv in range(3):  # blocks at the level's width, then a stride-2 2x2 convolution to the next width
            down = [_ResBlock(w[lv], b) for _ in range(nb)] + [_conv(w[lv], w[lv + 1], k=2, stride=2, bias=b)]
            setattr(self, f"m_down{lv + 1}", nn.Sequential(*down))
        self.m_body = nn.Sequential(*[_ResBlock(w[3], b) for _ in range(nb)])
        for lv in (3, 2, 1):  # a 2x2 transposed convolution to the level's width, then blocks
            up = [nn.ConvTranspose2d(w[lv], w[lv - 1], 2, stride=2, bias=b)] + [_ResBlock(w[lv - 1], b) for _ in range(nb)]
            setattr(self, f"m_up{lv}", nn.Sequential(*up))
        self.m_tail = _conv(w[0], config.channels, bias=b)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        x, h, w = _pad_to(x, 8)
        x1 = self.m_head(torch.cat([x, _sigma_map(sigma, x)], 1))
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        z = self.m_body(x4)
        z = self.m_up3(z + x4)
        z = self.m_up2(z + x3)
        z = self.m_up1(z + x2)
        return self.m_tail(z + x1)[..., :h, :w]


ARCHS: dict[str, type[nn.Module]] = {"ffdnet": FFDNet, "dncnn": DnCNN, "drunet": DRUNet}


def build(config: KairConfig) -> nn.Module:
    return ARCHS[config.arch](config)


# ---- reading the architecture back from a state dict ------------------------------------------------------

def _conv_weights(sd: dict[str, Tensor], prefix: str) -> list[tuple[int, Tensor]]:
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.weight$")
    found = [(int(m.group(1)), v) for k, v in sd.items() if (m := pat.match(k)) and v.ndim == 4]
    return sorted(found, key=lambda kv: kv[0])


def from_deepinv_dncnn(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """deepinv's DnCNN (``in_conv``, ``conv_list.i``, ``out_conv``; output x + out) in KAIR's layout (``model.2i``;
    output x − out): the keys renamed and the last convolution negated."""
    n = 1 + len({k.split(".")[1] for k in sd if k.startswith("conv_list.")})
    out = {}
    for k, v in sd.items():
        head, _, leaf = k.rpartition(".")
        if head == "in_conv":
            idx = 0
        elif head.startswith("conv_list.") and head.split(".")[1].isdigit():
            idx = 2 * (int(head.split(".")[1]) + 1)
        elif head == "out_conv":
            idx, v = 2 * n, -v
        else:
            raise ValueError(f"unexpected key {k!r} in a deepinv DnCNN state dict")
        out[f"model.{idx}.{leaf}"] = v
    return out


def infer_kair_config(sd: dict[str, Tensor]) -> KairConfig:
    """The architecture of a KAIR-layout state dict, from its parameter names and shapes; ValueError when the
    names are not those of FFDNet, DnCNN or DRUNet."""
    w = sd.get("m_head.weight")
    if isinstance(w, Tensor) and w.ndim == 4:
        nb = len({k.split(".")[1] for k in sd if re.match(r"^m_body\.\d+\.res\.0\.weight$", k)})
        widths = [w.shape[0]]
        for lv in (1, 2, 3):
            convs = _conv_weights(sd, f"m_down{lv}")
            if not convs:
                raise ValueError(f"DRUNet state dict without m_down{lv} convolutions")
            widths.append(int(convs[-1][1].shape[0]))
        return KairConfig("drunet", channels=int(w.shape[1]) - 1, features=int(w.shape[0]), layers=nb,
                          widths=tuple(int(v) for v in widths), bias="m_head.bias" in sd)
    convs = _conv_weights(sd, "model")
    if convs:
        first, last = convs[0][1], convs[-1][1]
        i, o = int(first.shape[1]), int(last.shape[0])
        bn = any(k.startswith("model.") and k.endswith(".running_mean") for k in sd)
        if o % 4 == 0 and i == o + 1 and not bn:
            return KairConfig("ffdnet", channels=o // 4, features=int(first.shape[0]), layers=len(convs))
        if i == o:
            return KairConfig("dncnn", channels=o, features=int(first.shape[0]), layers=len(convs), batch_norm=bn)
        raise ValueError(f"a 'model.N' stack with {i} input and {o} output channels is neither FFDNet (4C+1 -> 4C) "
                         "nor DnCNN (C -> C)")
    raise ValueError("the parameter names are not those of a KAIR FFDNet ('model.N'), DnCNN ('model.N', or deepinv's "
                     "'in_conv'/'conv_list'/'out_conv') or DRUNet ('m_head', 'm_down1', ...)")


__all__ = ["ARCHS", "DRUNet", "DnCNN", "FFDNet", "KairConfig", "build", "from_deepinv_dncnn", "infer_kair_config"]
