"""Our ε-network: a U-Net in the style of DDPM/ADM.

Residual blocks with GroupNorm and SiLU, a sinusoidal time embedding fed through an MLP into
every block (scale/shift), self-attention at the chosen low-resolution levels, and optional extra
input channels for Palette-style conditioning. Fully convolutional apart from attention, so a
model trained on patches runs on images of any size whose sides divide by 2**(levels-1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    out_channels: int | None = None  # defaults to in_channels
    cond_channels: int = 0  # extra input channels (Palette): concatenated to x_t
    #: class labels 0..num_classes-1 (a class-conditional model): an embedding added to the time embedding; the
    #: extra label num_classes is the null label of classifier-free guidance
    num_classes: int = 0
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)  # level i has resolution H / 2**i
    num_heads: int = 4
    dropout: float = 0.0
    groups: int = 32
    #: per level, extra residual blocks at the end of the decoder's stage of that level (before its upsampling),
    #: each starting as the identity (its last convolution at zero): a trained network grows deeper with its
    #: function unchanged (``grow_state``); () for none
    extra_res_blocks: tuple[int, ...] = ()

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_levels"] = list(self.attention_levels)
        d["extra_res_blocks"] = list(self.extra_res_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["channel_mult"] = tuple(d.get("channel_mult", (1, 2, 2)))
        d["attention_levels"] = tuple(d.get("attention_levels", ()))
        d["extra_res_blocks"] = tuple(d.get("extra_res_blocks", ()))
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown U-Net config keys: {sorted(unknown)}")
        return cls(**d)

    @property
    def multiple(self) -> int:
        """Image sides must be a multiple of this."""
        return 2 ** (len(self.channel_mult) - 1)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(ch, groups)
    return nn.GroupNorm(g, ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        # contiguous (token, channel) rows: strided ones send the CPU to the math kernel, which holds the whole
        # heads x tokens^2 score matrix (2.9 GB for a 960x540 photo's 8,160 tokens, against 0.65 GB, 10x slower)
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes:
            self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim)
        self.inp = nn.Conv2d(cfg.in_channels + cfg.cond_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        n_levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                blk = nn.ModuleList([ResBlock(cur, mult * ch, emb_dim, cfg.dropout, cfg.groups)])
                cur = mult * ch
                if level in cfg.attention_levels:
                    blk.append(Attention(cur, cfg.num_heads, cfg.groups))
                self.down.append(blk)
                skips.append(cur)
            if level != n_levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
        self.mid = nn.ModuleList([
            ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.groups),
            Attention(cur, cfg.num_heads, cfg.groups) if (n_levels - 1) in cfg.attention_levels else nn.Identity(),
            ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.groups),
        ])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                blk = nn.ModuleList([ResBlock(cur + skips.pop(), mult * ch, emb_dim, cfg.dropout, cfg.groups)])
                cur = mult * ch
                if level in cfg.attention_levels:
                    blk.append(Attention(cur, cfg.num_heads, cfg.groups))
                if level != 0 and i == cfg.num_res_blocks:
                    blk.append(_Upsample(cur))
                self.up.append(blk)
        self.out = nn.Sequential(_norm(cur, cfg.groups), nn.SiLU(), nn.Conv2d(cur, cfg.output_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        if len(cfg.extra_res_blocks) not in (0, n_levels) or any(n < 0 for n in cfg.extra_res_blocks):
            raise ValueError(f"extra_res_blocks needs one count ≥ 0 per level ({n_levels}), got {cfg.extra_res_blocks}")
        # registered last, so that a grown network's parameters extend the original's in order (grow_state)
        self.extra = nn.ModuleDict({str(level): nn.ModuleList([ResBlock(mult * ch, mult * ch, emb_dim, cfg.dropout, cfg.groups)
                                                               for _ in range(n)])
                                    for level, (mult, n) in enumerate(zip(cfg.channel_mult, cfg.extra_res_blocks)) if n})

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """``cond``: the condition channels (B, cond_channels, H, W) of a Palette model, or the class labels (B,)
        of a class-conditional one (``num_classes``, the null label included); None for an unconditional model."""
        cfg = self.config
        if cfg.cond_channels:
            if cond is None:
                raise ValueError(f"this network needs {cfg.cond_channels} conditioning channels")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cfg.num_classes:
            if cond is None or cond.ndim != 1 or cond.dtype != torch.long:
                raise ValueError(f"this network needs class labels (B,) in 0..{cfg.num_classes} (the last: null)")
        elif cond is not None:
            raise ValueError("this network takes no conditioning input")
        m = cfg.multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"image sides must be multiples of {m}, got {tuple(x.shape[-2:])}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels).to(x.dtype))
        if cfg.num_classes:
            emb = emb + self.label_emb(cond).to(emb.dtype)
        h = self.inp(x)
        hs = [h]
        for blk in self.down:
            for layer in blk:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        per_level = cfg.num_res_blocks + 1
        for b, blk in enumerate(self.up):
            h = torch.cat([h, hs.pop()], dim=1)
            level, last = len(cfg.channel_mult) - 1 - b // per_level, b % per_level == per_level - 1
            for layer in blk:
                if last and isinstance(layer, _Upsample):
                    h = self._extra(h, emb, level)
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.out(self._extra(h, emb, 0))

    def _extra(self, h: Tensor, emb: Tensor, level: int) -> Tensor:
        for block in self.extra[str(level)] if str(level) in self.extra else ():
            h = block(h, emb)
        return h


class _Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def grow_state(net: UNet, state: dict[str, Tensor]) -> list[str]:
    """Load the state dict of the same network without (some of) its ``extra_res_blocks`` into ``net``: every
    parameter it has is copied, and the new blocks keep their identity start, so ``net`` computes exactly what the
    smaller network did. Returns the names of the new parameters; anything else missing or unexpected is an error."""
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape that differs
        raise ValueError(f"not the same network grown deeper: {str(e).splitlines()[-1].strip()}") from None
    wrong = [k for k in missing if not k.startswith("extra.")] + list(unexpected)
    if wrong:
        raise ValueError(f"not the same network grown deeper: {wrong[:4]} do not match")
    return list(missing)
