"""Sampler speed against the bare network: for each prior and method, the time of a restoration and the time of
the network evaluations it needs on their own (forward passes, or forward+backward for methods that
differentiate through the network), their ratio, the time of everything else measured directly (the same
restoration with a network that costs nothing), images/s at the best batch size, peak memory (each configuration
runs in its own process: GPU allocator peak, or on the CPU the peak resident memory above the bare process), the
activations a VJP keeps, and PSNR on real images (so the fast path can be checked to give the same
quality); with the optimisations off (fp32, plain module), on (channels_last, torch.compile; on GPU also bf16
autocast and CUDA graphs) and, for gradient methods, with activation checkpointing.

    python benchmarks/speed.py [--priors fmnist32,natural64] [--methods ...] [--steps 10] [--batches 1,8,32]
                               [--opt off,on,ckpt] [--out benchmarks/speed.json]

Writes a JSON file and prints a Markdown table (benchmarks/SPEED.md collects the published runs)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from invdiff.prior import load
from invdiff.rng import make_generators
from invdiff.samplers import METHODS, restore
from invdiff.tasks import TASKS, TaskOptions, simulate

#: the tasks each method is timed on (ones it supports) and the image side per prior. Gaussian deblurring uses the
#: separable (rank-1 kernel) path of ``Blur``; DiffPIR is timed on motion deblurring too, where every conjugate-
#: gradient iteration goes through the FFTs
METHOD_TASKS = {"dps": ["deblur"], "mcg": ["inpaint"], "pigdm": ["sr"], "ddrm": ["sr"], "ddnm": ["inpaint"],
                "diffpir": ["deblur", "motion-deblur"], "reddiff": ["deblur"], "daps": ["sr"], "projection": ["inpaint"]}
SIDE = {"fmnist32": 32, "natural64": 64}


def _sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mib(dev) -> float | None:
    """Peak GPU memory of the configuration (None on the CPU: see ``measure_isolated``)."""
    if dev.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _child(conn, threads, args) -> None:
    import resource

    try:
        if threads:
            torch.set_num_threads(threads)
        base = _rss_mib()  # the interpreter, torch and invdiff
        r = measure(*args)
        if r["peak_mib"] is None:  # CPU: what the configuration added to the process at its peak
            r["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
        conn.send(r)
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        conn.send(e)


def measure_isolated(*args, threads: int | None = None) -> dict:
    """``measure`` in a fresh process, so that its peak memory is its own: on the CPU the peak resident set of that
    process above what it held after the imports (a process never gives its peak back, so configurations measured
    one after another in one process could not be told apart)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, threads, args))
    proc.start()
    child.close()
    try:
        r = parent.recv()
    except EOFError:
        r = None
    proc.join()
    if r is None:
        raise RuntimeError(f"the measuring process died (exit code {proc.exitcode})")
    if isinstance(r, BaseException):
        raise r
    return r


def optimise(prior, opt: str, dev: str):
    """off: fp32 eager. on: channels_last + torch.compile (+ bf16 autocast and CUDA graphs on GPU).
    ckpt: activation checkpointing of the network's blocks (memory of gradient methods)."""
    if opt == "on":
        return prior.accelerate(compile=True, cuda_graphs=dev.startswith("cuda"))
    if opt == "ckpt":
        return prior.accelerate(channels_last=False, bf16=False, checkpoint=True)
    return prior


class NullNet(torch.nn.Module):
    """An ε-network that costs (almost) nothing: the restoration's time with it is everything but the network."""

    def forward(self, x, t, cond=None):
        return torch.zeros_like(x)


def images(prior_name: str, batch: int, dev: str) -> torch.Tensor:
    """Real test images (never trained on) so that PSNR can be compared between configurations."""
    if prior_name.startswith("fmnist"):
        from invdiff.data import fashion_mnist

        x = fashion_mnist("test")[0][:batch]
    else:
        from invdiff.data import validation_photos

        x = validation_photos(64)
        x = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch]
    return x.to(dev)


def bare_network_seconds(prior, x, t_count: int, grad: bool, dev) -> float:
    t = torch.full((x.shape[0],), 500, dtype=torch.long, device=x.device)
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
    return time.perf_counter() - t0


def measure(prior_name: str, method: str, task: str, batch: int, steps: int, opt: str, dev: str, repeats: int = 3) -> dict:
    from invdiff.accel import saved_activation_bytes
    from invdiff.metrics import psnr

    prior = optimise(load(prior_name, device=dev), opt, dev)
    x = images(prior_name, batch, dev)
    opts = TaskOptions(kernel_size=9, blur_sigma=1.5)
    op, y = simulate(task, x, opts, generator=make_generators(0, batch))
    m = METHODS[method]
    hp = {"ode_steps": 2, "langevin_steps": 10} if method == "daps" else {}
    hp.update(TASKS[task].hyper_parameters.get(method, {}))
    grad = m.network_gradient

    def run():
        return restore(y, op, 0.05, prior, method=method, steps=steps, generator=make_generators(1, batch), **hp)

    # warm-up (compilation, CUDA-graph capture, allocator and autograd caches: a whole restoration and bare
    # network passes), then sampler and bare network timed in turn, best of ``repeats`` each, so that both see
    # the same machine state
    res = run()
    nfe, vjps = res.nfe, res.vjps
    bare_network_seconds(prior, x, 1, grad, dev)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    best, net = float("inf"), float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        res = run()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
        n = bare_network_seconds(prior, x, vjps, True, dev) if vjps else 0.0
        n += bare_network_seconds(prior, x, nfe - vjps, False, dev) if nfe - vjps else 0.0
        net = min(net, n)
    peak = _peak_mib(dev)
    quality = float(psnr(res.mean.float().cpu(), x.float().cpu()).mean())
    act = None
    if grad:
        t = torch.full((batch,), 500, dtype=torch.long, device=x.device)
        act = saved_activation_bytes(lambda: prior.eps(x.detach().requires_grad_(True), t)) / 2**20
    real = prior.net
    prior.net = NullNet()  # everything but the network, measured directly
    run()
    other = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        run()
        _sync(dev)
        other = min(other, time.perf_counter() - t0)
    prior.net = real
    return {"prior": prior_name, "method": method, "task": task, "batch": batch, "steps": steps, "optimised": opt,
            "nfe": nfe, "vjps": vjps, "sampler_s": best, "network_s": net, "ratio": best / net if net else None,
            "other_s": other, "images_per_s": batch / best, "peak_mib": peak, "vjp_activations_mib": act,
            "psnr": quality, "requires": (m.requires.name or "none").lower()}


def main() -> None:
    from invdiff.accel import keep_freed_memory

    keep_freed_memory()  # as the command line does (the library itself does not)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", default="fmnist32,natural64")
    ap.add_argument("--methods", default=",".join(METHOD_TASKS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--opt", default="off", help="comma-separated: off, on, ckpt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/speed.json")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for prior_name in a.priors.split(","):
        for method in a.methods.split(","):
            for task in METHOD_TASKS[method]:
                for opt in a.opt.split(","):
                    if opt == "ckpt" and not METHODS[method].network_gradient:
                        continue
                    best = None
                    for b in [int(v) for v in a.batches.split(",")]:
                        r = measure_isolated(prior_name, method, task, b, a.steps, opt, a.device, threads=a.threads)
                        rows.append(r)
                        if best is None or r["images_per_s"] > best["images_per_s"]:
                            best = r
                        print(json.dumps(r), flush=True)
                    best["best_batch"] = True
    machine = {"device": a.device, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "cores": os.cpu_count(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None}
    Path(a.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"\nmachine: {machine}\n")
    print("| prior | method | task | opt | batch | NFE | VJPs | sampler s | network s | ratio | other s | images/s | "
          "VJP activations MiB | peak MiB | PSNR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "n/a"
        if r.get("best_batch"):
            ratio = f"**{ratio}**"
        act = f"{r['vjp_activations_mib']:.0f}" if r["vjp_activations_mib"] is not None else "–"
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "–"
        print(f"| {r['prior']} | {r['method']} | {r['task']} | {r['optimised']} | {r['batch']} | {r['nfe']} | {r['vjps']} | "
              f"{r['sampler_s']:.3f} | {r['network_s']:.3f} | {ratio} | {r['other_s']:.3f} | {r['images_per_s']:.1f} | "
              f"{act} | {peak} | {r['psnr']:.2f} |")


if __name__ == "__main__":
    main()
