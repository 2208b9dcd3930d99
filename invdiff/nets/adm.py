"""A U-Net compatible with OpenAI's guided-diffusion ("ADM", Dhariwal & Nichol 2021) checkpoints.

``ADM(config).state_dict()`` has exactly the parameter names and shapes of guided-diffusion's
``UNetModel`` built by ``script_util.create_model`` with the same flags, so public checkpoints such as
DPS's ``ffhq_10m.pt`` (preset ``FFHQ_DPS``) or OpenAI's ``256x256_diffusion_uncond.pt`` (preset
``IMAGENET256_UNCOND``) load with ``load_state_dict(strict=True)``. The code is our own; only the module
layout (which decides the parameter names) follows guided-diffusion. 2-D images only.

``forward(x, timesteps, y=None)`` returns the raw network output: ε in the first ``in_channels`` channels
and, with ``learn_sigma``, the variance interpolation values in the rest. ``timesteps`` are the training
step indices 0..T-1 (guided-diffusion's models are trained without timestep rescaling).

The flags (``ADMConfig``, the public presets) and their recovery from a checkpoint's names and shapes
(``infer_adm_config``) live in ``invdiff.nets.adm_config``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adm_config import FFHQ_DPS, IMAGENET256_UNCOND, ADMConfig, infer_adm_config, looks_like_adm


# ---- building blocks (module names follow guided-diffusion's unet.py) ------------------------------

class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C) computed in float32 whatever the input dtype."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """guided-diffusion's sinusoidal embedding: [cos(t·f), sin(t·f)] with f = max_period^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """A block whose forward also takes the time embedding."""


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 conv (``conv``) when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """A stride-2 3×3 conv (``op``) when ``use_conv``, else 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.op: nn.Module
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None, *,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out if use_scale_shift_norm else out))
        last = nn.Conv2d(out, out, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.out_layers = nn.Sequential(GroupNorm32(out), nn.SiLU(), nn.Dropout(p=dropout), last)
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions. ``legacy`` (use_new_attention_order=False) splits qkv per head
    first (QKVAttentionLegacy); the new order splits into q, k, v first, then heads (QKVAttention)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by num_head_channels={num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.new_order = use_new_attention_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def attention(self, qkv: Tensor) -> Tensor:
        b, width, length = qkv.shape
        H = self.num_heads
        ch = width // (3 * H)
        if self.new_order:
            q, k, v = (z.reshape(b * H, ch, length) for z in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * H, 3 * ch, length).split(ch, dim=1)
        # softmax(qᵀk/√ch) v, as in guided-diffusion (which scales q and k by ch^-1/4 each)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return a.transpose(1, 2).reshape(b, H * ch, length)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


# ---- the network ----------------------------------------------------------------------------------

class ADM(nn.Module):
    """guided-diffusion's ``UNetModel`` (2-D) for an ``ADMConfig``."""

    def __init__(self, config: ADMConfig = FFHQ_DPS):
        super().__init__()
        self.config = cfg = config
        mults = cfg.mults
        attn_ds = cfg.attention_ds
        mc = cfg.num_channels
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        emb_dim = mc * 4
        self.model_channels = mc
        self.num_classes = cfg.num_classes if cfg.class_cond else None

        def res(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(cin, emb_dim, cfg.dropout, cout, use_scale_shift_norm=cfg.use_scale_shift_norm, **kw)

        def attn(c: int, heads: int) -> AttentionBlock:
            return AttentionBlock(c, heads, cfg.num_head_channels, cfg.use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb_dim)

        ch = input_ch = int(mults[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skips = [ch]
        ds = 1
        for level, mult in enumerate(mults):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attn_ds:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != len(mults) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skips.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, cfg.num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in attn_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        last = nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), last)
        if cfg.use_fp16:
            self.convert_to_fp16()

    # guided-diffusion's convert_to_fp16/fp32: only the convolutions of the torso change dtype
    def _torso_convs(self) -> Iterable[nn.Module]:
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    yield m

    def convert_to_fp16(self) -> "ADM":
        for m in self._torso_convs():
            m.half()
        return self

    def convert_to_fp32(self) -> "ADM":
        for m in self._torso_convs():
            m.float()
        return self

    @property
    def torso_dtype(self) -> torch.dtype:
        return self.input_blocks[0][0].weight.dtype

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        m = self.config.multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"ADM needs image sides that are multiples of {m}, got {tuple(x.shape[-2:])}")
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("class labels y must be given if and only if the model is class-conditional")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        temb = timestep_embedding(timesteps, self.model_channels)
        emb = self.time_embed(temb.to(self.time_embed[0].weight.dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        h = x.to(self.torso_dtype)
        hs = []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.to(self.out[2].weight.dtype))


# ---- recovering the flags from a state dict ---------------------------------------------------------


__all__ = ["ADM", "ADMConfig", "FFHQ_DPS", "IMAGENET256_UNCOND", "infer_adm_config", "looks_like_adm"]
