"""guided-diffusion ("ADM") model flags: ``ADMConfig``, the presets of the public checkpoints, and
``infer_adm_config``, which recovers the flags from a state dict's names and shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from torch import Tensor

NUM_CLASSES = 1000

#: script_util.create_model's channel_mult for channel_mult="" by image size
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def _num(s: str) -> float:
    v = float(s)
    return int(v) if v.is_integer() else v


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass(frozen=True)
class ADMConfig:
    """guided-diffusion's ``model_and_diffusion_defaults`` model flags (plus ``in_channels``/``num_classes``).

    ``channel_mult``: "" (the default for ``image_size``), a string "1,1,2,2,4,4" or a tuple.
    ``attention_resolutions``: comma-separated feature-map resolutions ("32,16,8") where attention is used;
    a resolution r means the level with downsampling factor ds = image_size // r.
    ``num_head_channels`` (when not -1) overrides ``num_heads``. ``use_checkpoint`` (gradient
    checkpointing) is accepted for compatibility and not read: ``EpsPrior.accelerate(checkpoint=True)`` does it."""

    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: str | tuple = ""
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: str = "16,8"
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    dropout: float = 0.0
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    in_channels: int = 3
    num_classes: int = NUM_CLASSES
    conv_resample: bool = True

    @property
    def mults(self) -> tuple[float, ...]:
        cm = self.channel_mult
        if isinstance(cm, str):
            if cm.strip() == "":
                if self.image_size not in DEFAULT_CHANNEL_MULT:
                    raise ValueError(f"no default channel_mult for image_size {self.image_size}; "
                                     f"give channel_mult explicitly (known sizes: {sorted(DEFAULT_CHANNEL_MULT)})")
                return DEFAULT_CHANNEL_MULT[self.image_size]
            return tuple(_num(c) for c in cm.split(","))
        return tuple(_num(str(c)) for c in cm)

    @property
    def attention_ds(self) -> frozenset[int]:
        """The downsampling factors (1, 2, 4, ...) of the levels that have attention."""
        res = [r for r in str(self.attention_resolutions).split(",") if r.strip()]
        return frozenset(self.image_size // int(r) for r in res)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def levels(self) -> int:
        return len(self.mults)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return 2 ** (self.levels - 1)

    @property
    def cond_channels(self) -> int:  # the EpsPrior protocol: no image conditioning
        return 0


#: DPS (Chung et al. 2023) FFHQ 256 model, ``ffhq_10m.pt``
FFHQ_DPS = ADMConfig(image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True,
                     class_cond=False, use_checkpoint=False, attention_resolutions="16", num_heads=4,
                     num_head_channels=64, num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
                     resblock_updown=True, use_fp16=False, use_new_attention_order=False)

#: OpenAI's unconditional ImageNet 256 model, ``256x256_diffusion_uncond.pt`` (OpenAI sampled it with
#: use_fp16=True; the weights are stored in float32 and run in float32 here unless asked otherwise)
IMAGENET256_UNCOND = ADMConfig(image_size=256, num_channels=256, num_res_blocks=2, channel_mult="",
                               learn_sigma=True, class_cond=False, use_checkpoint=False,
                               attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
                               num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
                               resblock_updown=True, use_fp16=False, use_new_attention_order=False)


def looks_like_adm(sd: Mapping[str, Tensor]) -> bool:
    return all(k in sd for k in ("input_blocks.0.0.weight", "out.2.weight", "time_embed.0.weight",
                                 "middle_block.0.in_layers.2.weight"))


def infer_adm_config(state_dict: Mapping[str, Tensor], *, image_size: int | None = None,
                     num_head_channels: int | None = None, num_heads: int | None = None,
                     use_new_attention_order: bool = False) -> ADMConfig:
    """The ``ADMConfig`` whose ``ADM`` has exactly this state dict's names and shapes.

    Recovered from the shapes: ``in_channels``, ``num_channels``, ``channel_mult``, ``num_res_blocks``,
    ``learn_sigma``, ``class_cond`` (and ``num_classes``), ``use_scale_shift_norm``, ``resblock_updown``,
    ``conv_resample`` and the attention levels. Not recoverable, since they change no shape:
    ``dropout`` (irrelevant at inference, 0), ``use_new_attention_order`` (default legacy, as all public
    guided-diffusion/DPS models), and the number of attention heads. The head count matters for the output;
    pass ``num_head_channels``/``num_heads`` if known. By default 64 channels per head is assumed — what the
    DPS FFHQ and OpenAI ImageNet-256 models use — or, where the attention channels are not multiples of 64,
    a single head. ``image_size`` (default 256, or the smallest size that fits the depth) only serves to
    express the attention levels as resolutions: they are stored as ds = image_size // resolution.
    """
    sd = dict(state_dict)
    if not looks_like_adm(sd):
        some = ", ".join(list(sd)[:5])
        raise ValueError(f"this state dict is not an ADM / guided-diffusion checkpoint (keys start {some})")
    try:
        mc = _shape(sd, "time_embed.0.weight")[1]
        in_ch = _shape(sd, "input_blocks.0.0.weight")[1]
        out_ch = _shape(sd, "out.2.weight")[0]
        if out_ch not in (in_ch, 2 * in_ch):
            raise ValueError(f"output has {out_ch} channels for {in_ch} input channels")
        mid_ch = _shape(sd, "middle_block.0.out_layers.3.weight")[0]
        scale_shift = _shape(sd, "middle_block.0.emb_layers.1.weight")[0] == 2 * mid_ch
        nrb, updown, conv_resample, levels = _levels(sd)
        mults = [_shape(sd, f"output_blocks.{(levels - 1 - level) * (nrb + 1)}.0.out_layers.3.weight")[0] / mc
                 for level in range(levels)]  # the first output block of each level
        attn_ds, attn_ch = _attention(sd, levels, nrb)
        num_classes = _shape(sd, "label_emb.weight")[0] if "label_emb.weight" in sd else None
    except KeyError as e:
        raise ValueError(f"this state dict is not an ADM / guided-diffusion checkpoint: missing {e}") from None
    if image_size is None:
        image_size = max(256, 2 ** (levels - 1))
    num_head_channels, num_heads = _heads(attn_ch, num_head_channels, num_heads)
    cfg = ADMConfig(
        image_size=image_size, num_channels=mc, num_res_blocks=nrb, channel_mult=",".join(_fmt(m) for m in mults),
        learn_sigma=out_ch == 2 * in_ch, class_cond=num_classes is not None,
        attention_resolutions=",".join(str(image_size // d) for d in sorted(attn_ds)),
        num_heads=num_heads, num_head_channels=num_head_channels,
        use_scale_shift_norm=scale_shift, resblock_updown=updown, use_new_attention_order=use_new_attention_order,
        in_channels=in_ch, num_classes=num_classes or NUM_CLASSES, conv_resample=conv_resample)
    if cfg.attention_ds != frozenset(attn_ds):
        raise ValueError(f"image_size {image_size} cannot express the attention levels ds={sorted(attn_ds)}")
    return cfg


def _shape(sd: Mapping[str, Tensor], k: str) -> tuple[int, ...]:
    return tuple(sd[k].shape)


def _count(sd: Mapping[str, Tensor], prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def _upsampler(sd: Mapping[str, Tensor], i: int) -> str | None:
    """How output block i upsamples: a ResBlock (up=True), an Upsample conv after the first layer, or not."""
    for j in (1, 2):
        if f"output_blocks.{i}.{j}.in_layers.2.weight" in sd:
            return "resblock"
        if f"output_blocks.{i}.{j}.conv.weight" in sd:
            return "conv"
    return None


def _levels(sd: Mapping[str, Tensor]) -> tuple[int, bool, bool, int]:
    """(num_res_blocks, resblock_updown, conv_resample, number of levels) from the block layout."""
    n_in, n_out = _count(sd, "input_blocks."), _count(sd, "output_blocks.")
    ups = [i for i in range(n_out) if _upsampler(sd, i)]
    missing_in = [i for i in range(n_in) if not any(k.startswith(f"input_blocks.{i}.") for k in sd)]
    if ups:
        nrb, updown, conv_resample = ups[0], _upsampler(sd, ups[0]) == "resblock", True
    elif missing_in:  # parameter-free down/upsampling (conv_resample=False)
        nrb, updown, conv_resample = missing_in[0] - 1, False, False
    else:  # a single level
        nrb, updown, conv_resample = n_out - 1, False, True
    if nrb < 0 or n_out % (nrb + 1):
        raise ValueError("the output blocks do not form whole levels")
    levels = n_out // (nrb + 1)
    if n_in != levels * (nrb + 1) or len(ups) not in (0, levels - 1):
        raise ValueError(f"{n_in} input and {n_out} output blocks do not match {levels} levels of {nrb} blocks")
    return nrb, updown, conv_resample, levels


def _attention(sd: Mapping[str, Tensor], levels: int, nrb: int) -> tuple[set[int], set[int]]:
    """The downsampling factors of the levels with attention, and the attention layers' channel counts."""
    attn_ds, attn_ch = set(), set()
    for level in range(levels):
        first = (levels - 1 - level) * (nrb + 1)
        for i in range(first, first + nrb + 1):
            if f"output_blocks.{i}.1.qkv.weight" in sd:
                attn_ds.add(2 ** level)
                attn_ch.add(_shape(sd, f"output_blocks.{i}.1.qkv.weight")[1])
    attn_ch.add(_shape(sd, "middle_block.1.qkv.weight")[1])
    return attn_ds, attn_ch


def _heads(attn_ch: set[int], num_head_channels: int | None, num_heads: int | None) -> tuple[int, int]:
    """(num_head_channels, num_heads): as given, else 64 channels per head where every attention layer's channels
    are multiples of 64 (the public models), else a single head."""
    if num_head_channels is None and num_heads is None:
        num_head_channels = 64 if all(c % 64 == 0 for c in attn_ch) else -1
        num_heads = 1 if num_head_channels == -1 else 4
    elif num_head_channels is None:
        num_head_channels = -1
    return num_head_channels, num_heads if num_heads is not None else 4


__all__ = ["ADMConfig", "FFHQ_DPS", "IMAGENET256_UNCOND", "infer_adm_config", "looks_like_adm"]
