"""Print training throughput (images/s) of one U-Net configuration on this machine.

    python scripts/train_throughput.py --channels 3 --size 64 --base 32 --mult 1,2,2,2 --batch 16 --threads 2
    python scripts/train_throughput.py --recipe natural --threads 1 --steps 40 [--compile | --channels-last]

With ``--recipe`` it times the campaign's own training step (``invdiff.train.Trainer`` on the recipe: its data,
patch size, batch, EMA), in process CPU seconds and wall seconds a step, after 3 steps of warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch

from invdiff.nets.unet import UNet, UNetConfig
from invdiff.schedule import NoiseSchedule
from invdiff.train import diffusion_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--mult", default="1,2,2")
    ap.add_argument("--res-blocks", type=int, default=2)
    ap.add_argument("--attention", default="2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--recipe", default=None, help="time a campaign recipe's training step (invdiff.recipes.RECIPES)")
    ap.add_argument("--compile", action="store_true", help="with --recipe: torch.compile the network")
    ap.add_argument("--channels-last", action="store_true", help="with --recipe: the network in channels_last")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.recipe:
        return recipe_step(a)
    cfg = UNetConfig(in_channels=a.channels, base_channels=a.base, channel_mult=tuple(int(m) for m in a.mult.split(",")),
                     num_res_blocks=a.res_blocks, attention_levels=tuple(int(v) for v in a.attention.split(",") if v))
    net = UNet(cfg).to(a.device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    sched = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, a.channels, a.size, a.size, generator=g, device="cpu").to(a.device) * 2 - 1
    for i in range(a.steps + 2):
        if i == 2:
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = diffusion_loss(net, sched, x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"{params:.2f}M params, {a.channels}x{a.size}x{a.size}, batch {a.batch}, threads {torch.get_num_threads()}: "
          f"{a.steps * a.batch / dt:.1f} images/s")


def recipe_step(a) -> None:
    import tempfile
    from dataclasses import replace

    from invdiff.recipes import RECIPES
    from invdiff.train import Trainer

    if a.recipe not in RECIPES:
        raise SystemExit(f"unknown recipe {a.recipe!r}; known: {', '.join(RECIPES)}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(RECIPES[a.recipe], name=f"throughput-{a.recipe}", threads=torch.get_num_threads(), sample_every=0,
                      ckpt_dir=tmp, compile=a.compile, device=a.device)
        tr = Trainer(cfg, quiet=True)
        if a.channels_last:
            tr.net.to(memory_format=torch.channels_last)
        for _ in range(3):
            tr.train_step()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(a.steps):
            tr.train_step()
        cpu, wall = (time.process_time() - c0) / a.steps, (time.perf_counter() - w0) / a.steps
    mode = "compile" if a.compile else "channels_last" if a.channels_last else "eager"
    print(f"{a.recipe} ({cfg.batch_size} x {cfg.patch}x{cfg.patch}), {mode}, threads {torch.get_num_threads()}: "
          f"{cpu:.3f} CPU-s a step, {wall:.3f} wall-s a step, {cfg.batch_size / wall:.2f} patches/s")


if __name__ == "__main__":
    main()
