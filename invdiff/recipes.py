"""The training recipes of the bundled priors (``scripts/train_zoo.py NAME`` / ``invdiff train NAME``).

Sized for a 2-core CPU (see the model cards in invdiff/weights/*.json for what each run actually did)."""

from __future__ import annotations

from .nets.unet import UNetConfig
from .train import TrainConfig

RECIPES: dict[str, TrainConfig] = {
    "fmnist32": TrainConfig(
        name="fmnist32", data="fmnist", batch_size=64, lr=3e-4, warmup=300, ema_decay=0.9995, steps=200_000,
        unet=UNetConfig(in_channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(2,)),
        sample_every=1000, ckpt_every=250),
    "natural64": TrainConfig(
        name="natural64", data="natural", patch=64, batch_size=16, lr=2e-4, warmup=200, ema_decay=0.999, steps=200_000,
        unet=UNetConfig(in_channels=3, base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(3,)),
        sample_every=1000, ckpt_every=250),
    # the natural-photo prior's training campaign (invdiff.campaign): natural64's architecture and data, continued in legs;
    # from leg 11 on, EDM's log-normal training levels with a 20 % uniform share; from leg 14 on, 128×128 patches, 4 a
    # step (the same pixels per step as 16 of 64×64); each chosen by a round of the recipe A/B of benchmarks/RESULTS.md
    # (scripts/campaign_ab.py). The validation figure stays on the 512 64×64 patches.
    "natural": TrainConfig(
        # from leg 58 on (A/B round 5, arm 'no-webp'): the listed photos without the 140 that exist only as lossy
        # WebPs (random inpainting on the tuning split +0.08 ± 0.02 dB at equal CPU time)
        name="natural", data="natural-no-webp", patch=128, batch_size=4, lr=2e-4, warmup=200, ema_decay=0.999,
        steps=10_000_000, t_sampling="lognormal", t_lognormal=(-1.2, 1.2, 0.2),
        # from leg 20 on (A/B round 4, arm 'deeper'): two identity-initialised residual blocks more at the end of
        # each decoder stage, grown from leg 19's network (invdiff.nets.unet.grow_state)
        unet=UNetConfig(in_channels=3, base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(3,),
                        extra_res_blocks=(2, 2, 2, 2)),
        sample_every=2000, ckpt_every=250, ckpt_minutes=10.0),
    # class-conditional Fashion-MNIST with classifier-free guidance: fmnist32's network plus a label embedding, the
    # label dropped to the null label for 10 % of the images (Ho & Salimans 2022 use 10-20 %)
    "fmnist32-cond": TrainConfig(
        name="fmnist32-cond", data="fmnist", batch_size=64, lr=3e-4, warmup=300, ema_decay=0.9995, steps=200_000,
        cond_dropout=0.1, sample_every=0, ckpt_every=250,
        unet=UNetConfig(in_channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(2,),
                        num_classes=10)),
    # Palette colourisation of photos (condition: the grey image), the natural prior's network with one condition
    # channel, started from the campaign's weights (the condition's input weights at zero: Trainer.load_weights)
    # and trained with condition dropout for classifier-free guidance; from leg 5 on, 128×128 patches, 4 a step (the
    # prior's change of leg 14: context at the photo's size, where one region took another hue than the next)
    "natural-palette-colorize": TrainConfig(
        name="natural-palette-colorize", data="natural", patch=128, batch_size=4, lr=2e-4, warmup=200, ema_decay=0.999,
        steps=10_000_000, condition="colorize", cond_dropout=0.1, sample_every=0, ckpt_every=250, ckpt_minutes=10.0,
        # from leg 10 on (its recipe A/B, arm 'colourful'): each patch the more colourful of two candidates
        colour_pick=2,
        unet=UNetConfig(in_channels=3, cond_channels=1, base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                        attention_levels=(3,))),
    # Palette SR x4 of photos (condition: the bicubic-upsampled measurement, 3 channels), started the same way
    "natural-palette-sr4": TrainConfig(
        name="natural-palette-sr4", data="natural", patch=64, batch_size=16, lr=2e-4, warmup=200, ema_decay=0.999,
        steps=10_000_000, condition="sr4", cond_dropout=0.1, sample_every=0, ckpt_every=250, ckpt_minutes=10.0,
        unet=UNetConfig(in_channels=3, cond_channels=3, base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                        attention_levels=(3,))),
    "fmnist32-palette-sr4": TrainConfig(
        name="fmnist32-palette-sr4", data="fmnist", batch_size=64, lr=3e-4, warmup=200, ema_decay=0.999, steps=200_000,
        condition="sr4", sample_every=0, ckpt_every=250,
        unet=UNetConfig(in_channels=1, cond_channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,))),
    "fmnist32-palette-inpaint": TrainConfig(
        name="fmnist32-palette-inpaint", data="fmnist", batch_size=64, lr=3e-4, warmup=200, ema_decay=0.999, steps=200_000,
        condition="inpaint-box", sample_every=0, ckpt_every=250,
        unet=UNetConfig(in_channels=1, cond_channels=2, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,))),
}
