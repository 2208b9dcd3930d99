"""Short A/B runs of the natural prior's recipe at equal CPU time: every arm continues the same full training state
(online and EMA weights, Adam moments, step counter) for the same process CPU time on one thread, with one change
to the recipe, and the same random streams (step k draws from the same generator in every arm).

    nice -n 19 nohup python scripts/campaign_ab.py --from ckpt/natural/state.pt --cpu-minutes 16 \\
        --arms base,anneal,lognormal,min-snr,data,patch128 --out runs/ab > runs/ab.log 2>&1 &
    python benchmarks/campaign_ab.py --out runs/ab      # scores the arms (validation, tuning split)

Each arm writes OUT/ARM/ema.safetensors (a loadable prior), OUT/ARM/online.safetensors and OUT/ARM/arm.json (its
recipe change, steps, images, CPU and wall minutes). Arms already written are skipped, so a rerun continues.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from invdiff.recipes import RECIPES
from invdiff.train import Trainer

#: the recipe changes under test (over the campaign's recipe "natural"); see benchmarks/RESULTS.md for the outcome
ARMS: dict[str, dict] = {
    "base": {},
    # the learning rate annealed (cosine) to a tenth over about the arm's length (~780 steps of 16 patches)
    "anneal": {"lr_schedule": "cosine", "lr_min": 2e-5, "lr_decay_steps": 780},
    # EDM's log-normal training levels (ln σ ~ N(-1.2, 1.2²)) with a 20 % uniform share, L_simple's ε-MSE
    "lognormal": {"t_sampling": "lognormal", "t_lognormal": (-1.2, 1.2, 0.2)},
    # min-SNR-5 weighting of the ε-MSE (uniform t): the low-noise levels that dominate L_simple turned down
    "min-snr": {"loss_weighting": "min-snr", "min_snr_gamma": 5.0},
    # the photos at short side 1024 instead of 384 (scripts/build_natural_data.py --short-side 1024 --out
    # data/natural1024), crops of 1-5.3 patch sizes (the same largest region as today's 1-2 at 384), colour jitter
    "data": {"data": "folder:data/natural1024", "max_scale": 5.3, "colour_jitter": 0.1},
    # 128×128 patches, 4 per step (the same pixels per step as 16 of 64×64)
    "patch128": {"patch": 128, "batch_size": 4},
}


def run_arm(name: str, change: dict, seed_state: dict, minutes: float, out: Path, threads: int) -> None:
    step0 = int(seed_state["step"])
    cfg = replace(RECIPES["natural"], name=f"natural-ab-{name}", threads=threads, sample_every=0, ckpt_dir=str(out / "_none"),
                  warmup=1, warmup_from=step0, **change)
    tr = Trainer(cfg, quiet=True)
    tr.net.load_state_dict(seed_state["net"])
    tr.ema.load_state_dict(seed_state["ema"])
    tr.opt.load_state_dict(seed_state["opt"])
    tr.step, tr.images_seen = step0, int(seed_state["images_seen"])
    c0, w0, losses = time.process_time(), time.perf_counter(), []
    while time.process_time() - c0 < 60 * minutes:
        losses.append(tr.train_step())
        if tr.step % 100 == 0:
            print(f"{time.strftime('%H:%M:%S')} {name} step {tr.step} loss {sum(losses[-100:]) / len(losses[-100:]):.4f}", flush=True)
    from safetensors.torch import save_file

    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    for which, net in (("online", tr.net), ("ema", tr.ema)):
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(d / f"{which}.safetensors"))
    info = {"arm": name, "change": {k: list(v) if isinstance(v, tuple) else v for k, v in change.items()},
            "from_step": step0, "steps": tr.step - step0, "images": tr.images_seen - int(seed_state["images_seen"]),
            "pixels": (tr.images_seen - int(seed_state["images_seen"])) * cfg.patch ** 2,
            "cpu_minutes": round((time.process_time() - c0) / 60, 2), "wall_minutes": round((time.perf_counter() - w0) / 60, 2),
            "threads": threads, "mean_training_loss": sum(losses) / len(losses), "config": cfg.to_dict()}
    (d / "arm.json").write_text(json.dumps(info, indent=1))
    print(f"{name} done: {info['steps']} steps, {info['images']} patches, {info['cpu_minutes']} CPU-min", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="seed", required=True, help="a full training state (ckpt/natural/state.pt)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--cpu-minutes", type=float, required=True, help="process CPU time of each arm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/ab")
    a = ap.parse_args()
    names = [n.strip() for n in a.arms.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    seed_state = torch.load(a.seed, map_location="cpu", weights_only=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seed.json").write_text(json.dumps({"from": a.seed, "step": int(seed_state["step"]),
                                               "images_seen": int(seed_state["images_seen"])}))
    for n in names:
        if (out / n / "arm.json").is_file():
            print(f"{n}: already done, skipped", flush=True)
            continue
        run_arm(n, ARMS[n], seed_state, a.cpu_minutes, out, a.threads)


if __name__ == "__main__":
    main()
