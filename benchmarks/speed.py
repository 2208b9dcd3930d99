"""Sampler speed against the bare network: for each prior and method, the time of a restoration and the time of
the network evaluations it needs on their own (forward passes, or forward+backward for methods that
differentiate through the network), their ratio, images/s at the best batch size, and peak memory; with the
optimisations off (fp32, plain module) and on (channels_last, torch.compile; bf16 autocast on GPU).

    python benchmarks/speed.py [--priors fmnist32,natural64] [--methods ...] [--steps 10] [--batches 1,8,32]
                               [--opt off,on] [--out benchmarks/speed.json]

Writes a JSON file and prints a Markdown table (benchmarks/SPEED.md collects the published runs)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from invdiff.prior import load
from invdiff.rng import make_generators
from invdiff.samplers import METHODS, restore
from invdiff.tasks import TASKS, TaskOptions, simulate

#: the task each method is timed on (one it supports) and the image side per prior
METHOD_TASK = {"dps": "deblur", "mcg": "inpaint", "pigdm": "sr", "ddrm": "sr", "ddnm": "inpaint", "diffpir": "deblur",
               "reddiff": "deblur", "daps": "sr", "projection": "inpaint"}
SIDE = {"fmnist32": 32, "natural64": 64}


def _sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mib(dev) -> float:
    if dev.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def optimise(prior, on: bool, dev: str):
    """The fast path: channels_last + torch.compile (+ bf16 autocast on GPU through the prior's dtype)."""
    return prior.accelerate(compile=True) if on else prior


def bare_network_seconds(prior, x, t_count: int, grad: bool, repeats: int, dev) -> float:
    t = torch.full((x.shape[0],), 500, dtype=torch.long, device=x.device)
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(t_count):
            if grad:
                xg = x.detach().requires_grad_(True)
                out = prior.eps(xg, t)
                torch.autograd.grad(out, xg, torch.ones_like(out))
            else:
                with torch.no_grad():
                    prior.eps(x, t)
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def measure(prior_name: str, method: str, batch: int, steps: int, opt: bool, dev: str, repeats: int = 3) -> dict:
    prior = optimise(load(prior_name, device=dev), opt, dev)
    side = SIDE.get(prior_name, 64)
    c = prior.channels or 3
    x = (torch.rand(batch, c, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dev)
    task = METHOD_TASK[method]
    opts = TaskOptions(kernel_size=9, blur_sigma=1.5)
    op, y = simulate(task, x, opts, generator=make_generators(0, batch))
    m = METHODS[method]
    hp = {"ode_steps": 2, "langevin_steps": 10} if method == "daps" else {}
    hp.update(TASKS[task].hyper_parameters.get(method, {}))
    # warm-up (compilation, allocator and autograd caches: a whole restoration and one bare network pass), then the
    # best of ``repeats``; without it the first configuration of a run is measured cold
    restore(y, op, 0.05, prior, method=method, steps=steps, generator=make_generators(1, batch), **hp)
    bare_network_seconds(prior, x, 1, METHODS[method].network_gradient, 1, dev)
    best, res = float("inf"), None
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        res = restore(y, op, 0.05, prior, method=method, steps=steps, generator=make_generators(1, batch), **hp)
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    nfe, vjps = res.nfe, res.vjps
    fwd_only = nfe - vjps
    net = bare_network_seconds(prior, x, vjps, True, repeats, dev) if vjps else 0.0
    net += bare_network_seconds(prior, x, fwd_only, False, repeats, dev) if fwd_only else 0.0
    return {"prior": prior_name, "method": method, "task": task, "batch": batch, "steps": steps, "optimised": opt,
            "nfe": nfe, "vjps": vjps, "sampler_s": best, "network_s": net, "ratio": best / net if net else None,
            "images_per_s": batch / best, "peak_mib": _peak_mib(dev), "requires": m.requires}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", default="fmnist32,natural64")
    ap.add_argument("--methods", default=",".join(METHOD_TASK))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--opt", default="off", help="off, on or off,on")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/speed.json")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for prior_name in a.priors.split(","):
        for method in a.methods.split(","):
            for opt in [v == "on" for v in a.opt.split(",")]:
                best = None
                for b in [int(v) for v in a.batches.split(",")]:
                    r = measure(prior_name, method, b, a.steps, opt, a.device)
                    rows.append(r)
                    if best is None or r["images_per_s"] > best["images_per_s"]:
                        best = r
                    print(json.dumps(r), flush=True)
    machine = {"device": a.device, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "cores": os.cpu_count(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None}
    Path(a.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"\nmachine: {machine}\n")
    print("| prior | method | opt | batch | NFE | VJPs | sampler s | network s | ratio | images/s | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "n/a"
        print(f"| {r['prior']} | {r['method']} | {'on' if r['optimised'] else 'off'} | {r['batch']} | {r['nfe']} | {r['vjps']} | "
              f"{r['sampler_s']:.3f} | {r['network_s']:.3f} | {ratio} | {r['images_per_s']:.1f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
