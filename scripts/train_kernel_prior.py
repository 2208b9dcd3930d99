"""Train the motion-kernel prior (``invdiff.kernel_prior``): a leg of ``--minutes`` wall minutes, resumable.

    nice -n 19 nohup .venv/bin/python scripts/train_kernel_prior.py --minutes 30 --threads 1 >> runs/kernel_prior.log 2>&1 &

The full state (network, Adam, step, kernels seen, the generator) is ``ckpt/kernel-prior/state.pt``; a leg
resumes from it, or from the committed weights (Adam re-warmed) when it is missing. Every ``--every`` minutes,
at the end and on SIGTERM, the state is saved and the weights (fp32, 47k parameters) and the card's ledger are
written to ``invdiff/weights/motion-kernel-prior.{safetensors,json}``."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invdiff import rng  # noqa: E402
from invdiff.kernel_prior import (CANVAS, SCALE_RANGE, SIGMA_RANGE, WEIGHTS, KernelDenoiser, noisy,  # noqa: E402
                                  training_kernels, validation_loss, validation_set)

#: the plug-and-play settings written into the card (chosen on the tuning split, benchmarks/RESULTS.md)
USE = {"sigma": 0.02, "weight": 20.0, "rounds": 4}


def export(net, state: dict, card: dict, weights: Path) -> None:
    from safetensors.torch import save_file

    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    card_tmp = weights.with_suffix(".json.tmp")
    card_tmp.write_text(json.dumps(card, indent=1) + "\n")
    card_tmp.replace(weights.with_suffix(".json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--decay", action="store_true",
                    help="cosine decay of the learning rate to 5 %% over the leg's minutes (a closing leg)")
    ap.add_argument("--every", type=float, default=5.0, help="minutes between checkpoints")
    ap.add_argument("--state", type=Path, default=ROOT / "ckpt" / "kernel-prior" / "state.pt")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    net = KernelDenoiser()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    gen = rng.make_generators(0, 1, purpose="kernel-prior-train")[0]
    card_path = a.weights.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else {
        "name": "motion-kernel-prior", "kind": "kernel denoiser (invdiff.kernel_prior.KernelDenoiser)",
        "config": net.config(), "use": USE,
        "training": {"data": "kernels drawn on the fly from the motion-deblur task's models: motionblur (3 in 4) and "
                             "boracchi-foi, intensity U(0.3, 0.7), 61x61, stretched by a factor log-uniform in "
                             f"{list(SCALE_RANGE)} onto a {CANVAS}x{CANVAS} canvas, random flips and transposes, "
                             "scaled to max 1; stream 'kernel-prior-train' (the benchmarks' kernels come from "
                             "'blind-motion-kernel')",
                     "noise": f"Gaussian, level log-uniform in {list(SIGMA_RANGE)} on the max-1 scale, clipped at 0 "
                              "for half of the kernels; the level is the second input channel",
                     "loss": "mean squared error on the max-1 scale", "optimiser": f"Adam, lr {a.lr}",
                     "batch": a.batch},
        "validation": "256 kernels of the stream 'kernel-prior-validation', the same noise model, fixed draws",
        "ledger": []}
    step = seen = 0
    cpu_total = 0.0
    if a.state.is_file():
        s = torch.load(a.state, map_location="cpu", weights_only=False)
        net.load_state_dict(s["net"])
        opt.load_state_dict(s["opt"])
        gen.set_state(s["gen"])
        step, seen, cpu_total = s["step"], s["seen"], s["cpu_seconds"]
        print(f"resumed at step {step}, {seen} kernels", flush=True)
    elif a.weights.is_file():
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(a.weights)))
        last = card["ledger"][-1] if card["ledger"] else {}
        step, seen, cpu_total = last.get("step", 0), last.get("kernels_seen", 0), 60 * last.get("cpu_minutes", 0.0)
        gen = rng.make_generators(step, 1, purpose="kernel-prior-train")[0]  # a fresh stream for the new leg
        print(f"from the committed weights (step {step}); Adam re-warmed", flush=True)

    val = validation_set()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    t0, cpu0 = time.time(), time.process_time()
    leg_start_step, leg_start_seen = step, seen
    last_ck = t0

    def checkpoint(final: bool) -> None:
        nonlocal last_ck
        net.eval()
        v = validation_loss(net, val)
        net.train()
        a.state.parent.mkdir(parents=True, exist_ok=True)
        cpu = cpu_total + time.process_time() - cpu0
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                    "seen": seen, "cpu_seconds": cpu}, a.state.with_suffix(".tmp"))
        a.state.with_suffix(".tmp").replace(a.state)
        entry = {"step": step, "kernels_seen": seen, "cpu_minutes": round(cpu / 60, 2), "lr": a.lr,
                 "lr_decay": "cosine to 5 % over the leg" if a.decay else None,
                 "leg_steps": step - leg_start_step, "leg_kernels": seen - leg_start_seen,
                 "leg_wall_minutes": round((time.time() - t0) / 60, 2), "validation": {k: round(x, 7) for k, x in v.items()},
                 "final": final}
        ledger = card["ledger"]
        if ledger and not ledger[-1].get("final", True):
            ledger.pop()  # the leg's previous checkpoint entry is replaced by this one
        ledger.append(entry)
        export(net, {}, card, a.weights)
        print(f"checkpoint step {step}: validation {v['mse']:.6f} (input {v['input_mse']:.6f})", flush=True)
        last_ck = time.time()

    net.train()
    while not stop["now"] and time.time() - t0 < a.minutes * 60:
        k = training_kernels(a.batch, gen)
        z, s = noisy(k, gen)
        lr = a.lr * min(1.0, (step - leg_start_step + 1) / 100)  # Adam re-warmed at the start of every leg
        if a.decay:
            frac = min(1.0, (time.time() - t0) / (a.minutes * 60))
            lr *= 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = (net(z, s) - k).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += a.batch
        if step % 50 == 0:
            print(f"{time.strftime('%H:%M:%S')} step {step} loss {float(loss.detach()):.6f}", flush=True)
        if time.time() - last_ck > a.every * 60:
            checkpoint(False)
    checkpoint(True)
    if not math.isfinite(float(loss.detach())):
        raise SystemExit("training diverged (non-finite loss)")


if __name__ == "__main__":
    main()
