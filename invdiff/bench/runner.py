"""Run a suite: per (task, method) and chunk of images, degrade (seeded per image), restore, score, and append one
JSON line per image to the rank's results file (flushed and fsynced, so an interrupted run loses at most the
chunk in flight). A rerun skips every (task, method, image) already there. Under torchrun each rank takes the
images i ≡ rank (mod world size); rank 0 merges and writes the report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from ..baselines import run_baseline
from ..metrics import lpips_or_none, score
from ..prior import load as load_prior
from ..samplers import restore
from ..tasks import TaskOptions, get_task
from .suite import Suite


def _dist():
    """(rank, world, initialised-here) from torchrun's environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return dist.get_rank(), dist.get_world_size(), False


def _done(path: Path) -> set[tuple]:
    out = set()
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: redone
            out.add((r["task"], r["method"], r["image"]))
    return out


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_suite(suite: Suite, out: str | Path, *, limit: int | None = None, device: str = "cpu", tasks=None, methods=None,
              batch_size: int | None = None, progress=None, lpips_backbone=None) -> Path:
    """Run (or resume) ``suite``; returns the output folder with results.rank*.jsonl and, on rank 0, the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world, own = _dist()
    res_file = out / f"results.rank{rank}.jsonl"
    done = _done(res_file)
    x_all = suite.images(limit)
    idx_mine = [i for i in range(x_all.shape[0]) if i % world == rank]
    bs = batch_size or suite.batch_size
    lp = lpips_or_none(lpips_backbone, device=device)
    priors: dict[str, object] = {}

    def prior_for(name):
        if name not in priors:
            priors[name] = load_prior(name, device=device)
        return priors[name]

    jobs = []
    for spec in suite.tasks:
        if tasks and spec.task not in tasks:
            continue
        entries = [(m, suite.prior) for m in spec.methods if not methods or m in methods]
        if spec.palette and (not methods or "palette" in methods):
            entries.append(("palette", spec.palette))
        entries += [(f"baseline:{b}", None) for b in spec.baselines if not methods or b in methods or "baselines" in methods]
        for method, prior_name in entries:
            todo = [i for i in idx_mine if (spec.label, method, i) not in done]
            if todo:
                jobs.append((spec, method, prior_name, todo))
    total = sum(len(j[3]) for j in jobs)
    finished = 0
    for spec, method, prior_name, todo in jobs:
        task = get_task(spec.task)
        opts = TaskOptions(noise_sigma=suite.noise_sigma).with_(**spec.options)
        for start in range(0, len(todo), bs):
            ids = todo[start : start + bs]
            x = x_all[ids].to(device)
            gens = [torch.Generator(device="cpu").manual_seed(suite.seed * 1_000_003 + i) for i in ids]
            op = task.operator(x.shape, opts, generator=gens).to(device)
            with torch.no_grad():
                y = task.noise(opts)(op(x), generator=gens)
            if torch.cuda.is_available() and device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            if method.startswith("baseline:"):
                xr = run_baseline(method.split(":", 1)[1], y, op, opts.noise_sigma)
                nfe, vjps = 0, 0
            else:
                prior = prior_for(prior_name)
                hp = {**task.hyper_parameters.get(method, {}), **suite.hyper_parameters.get(method, {})}
                steps = suite.steps.get(method)
                sample_gens = [torch.Generator(device=device).manual_seed(suite.seed * 1_000_003 + 500_000 + i) for i in ids]
                r = restore(y, op, task.noise(opts), prior, method=method, steps=steps, generator=sample_gens, **hp)
                xr, nfe, vjps = r.mean, r.nfe, r.vjps
            seconds = (time.perf_counter() - t0) / len(ids)
            mem = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
            sc = score(xr, x, lpips_model=lp)
            rows = [{"suite": suite.name, "task": spec.label, "method": method, "image": i, "prior": prior_name,
                     "psnr": float(sc["psnr"][k]), "ssim": float(sc["ssim"][k]),
                     "lpips": float(sc["lpips"][k]) if sc["lpips"] is not None else None,
                     "nfe": int(nfe), "vjps": int(vjps), "seconds": seconds, "peak_mem_mib": mem, "rank": rank}
                    for k, i in enumerate(ids)]
            _append(res_file, rows)
            _save_examples(out, spec.label, method, ids, x, y, xr)
            finished += len(ids)
            if progress is not None:
                progress(finished, total, f"{spec.label} {method}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        from .report import write_report

        write_report(suite, out)
    if own:
        import torch.distributed as dist

        dist.destroy_process_group()
    return out


def _save_examples(out: Path, label: str, method: str, ids, x, y, xr, keep: int = 4) -> None:
    """The first ``keep`` images of each (task, method) as tensors for the report's grids."""
    d = out / "examples"
    d.mkdir(exist_ok=True)
    for k, i in enumerate(ids):
        if i >= keep:
            continue
        safe = f"{label}__{method}__{i}".replace("/", "_").replace(":", "-")
        torch.save({"x": x[k].cpu(), "y": y[k].cpu(), "restored": xr[k].cpu()}, d / f"{safe}.pt")
