"""Run a suite: per (task, method) and chunk of images, degrade (seeded per image), restore, score, and append one
JSON line per image to the rank's results file (flushed and fsynced, so an interrupted run loses at most the
chunk in flight). A rerun skips every (task, method, image) already there. Under torchrun each rank takes the
images i ≡ rank (mod world size); rank 0 merges and writes the report."""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import partial
from pathlib import Path

import torch

from ..baselines import run_baseline
from ..metrics import lpips_or_none, score
from ..prior import load as load_prior
from ..rng import stream_seed
from ..samplers import restore
from ..tasks import TaskOptions, get_task, simulate
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


def repair_torn_line(path: Path) -> bool:
    """Cut a last line left incomplete by an interruption (no final newline), so the next rows start on a line of
    their own; the cut row is computed again. Returns whether anything was cut."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data[: data.rfind(b"\n") + 1]
    with open(path, "r+b") as f:
        f.truncate(len(keep))
        f.flush()
        os.fsync(f.fileno())
    return True


def _rows(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: redone
            if isinstance(r, dict) and {"task", "method", "image"} <= set(r):
                rows.append(r)
    return rows


def psnr_rows(out: str | Path) -> dict[str, list[float]]:
    """The PSNR per image of a finished suite run in ``out`` (rank 0's results), keyed "task method" as the rows'
    labels read (e.g. "inpaint[mask=box] ddrm"), images in order, rounded to 1e-3 dB."""
    rows: dict[str, dict[int, float]] = {}
    for r in _rows(Path(out) / "results.rank0.jsonl"):
        rows.setdefault(f"{r['task']} {r['method']}", {})[int(r["image"])] = r["psnr"]
    return {k: [round(v[i], 3) for i in sorted(v)] for k, v in rows.items()}


def _done(path: Path) -> set[tuple]:
    return {(r["task"], r["method"], r["image"], r.get("config_id")) for r in _rows(path)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prior_fingerprint(name: str) -> dict:
    """The prior's name, its weights file and the SHA-256 of that file (of every weights/config file of a folder;
    for a denoiser or a composite ``denoiser+prior[@σ]``, of the denoiser's file and the diffusion prior's print)."""
    from ..denoisers import DENOISERS
    from ..zoo import PRIORS

    left, plus, right = name.partition("+")
    if left in DENOISERS or (plus and Path(left).expanduser().is_file()):
        f = DENOISERS[left].locate() if left in DENOISERS else Path(left).expanduser()
        h = hashlib.sha256(_sha256(f).encode())
        if right:
            h.update(prior_fingerprint(right.rpartition("@")[0] or right)["prior_sha256"].encode())
            h.update(right.encode())
        return {"prior": name, "prior_file": str(f), "prior_sha256": h.hexdigest()}
    if name in PRIORS:
        files = [PRIORS[name].weights, PRIORS[name].config]
    else:
        p = Path(name).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".pt"))
        elif p.suffix in (".safetensors", ".json"):
            files = [p.with_suffix(".safetensors"), p.with_suffix(".json")]
        else:
            files = [p]
    files = [f for f in files if f.is_file()]
    if not files:
        raise ValueError(f"prior {name!r}: no weights file found (a bundled name, a .safetensors/.pt path or a folder)")
    h = hashlib.sha256()
    for f in files:
        h.update(_sha256(f).encode())
    return {"prior": name, "prior_file": str(files[0]), "prior_sha256": h.hexdigest()}


def entry_config(suite: Suite, spec, method: str, prior_name: str | None, fingerprints: dict) -> dict:
    """Everything that determines a row's numbers besides the image: what a rerun must match to resume."""
    from .. import __version__
    from ..samplers.registry import METHODS

    task = get_task(spec.task)
    cfg = {"suite": suite.name, "dataset": suite.dataset, "task": spec.task, "options": spec.options,
           "noise_sigma": suite.noise_sigma, "seed": suite.seed, "method": method, "code_version": __version__}
    if not method.startswith("baseline:"):
        if prior_name not in fingerprints:
            fingerprints[prior_name] = prior_fingerprint(prior_name)
        cfg.update(fingerprints[prior_name])
        cfg["steps"] = int(suite.steps_override or spec.steps.get(method) or suite.steps.get(method) or METHODS[method].defaults["steps"])
        cfg["hyper_parameters"] = {**task.hyper_parameters.get(method, {}), **suite.hyper_parameters.get(method, {}),
                                   **spec.hyper_parameters.get(method, {})}
    return cfg


def config_id(cfg: dict) -> str:
    """A short hash of the configuration (where the weights file lies does not count, its content does)."""
    key = {k: v for k, v in cfg.items() if k != "prior_file"}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _config_difference(old: dict | None, new: dict) -> str:
    if not old:
        return "rows without a recorded configuration"
    keys = sorted(set(old) | set(new))
    diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k) and k != "prior_file"]
    return "; ".join(diffs)[:300] or "another configuration"


def _entries(suite: Suite, spec, methods) -> list[tuple[str, str | None]]:
    entries = [(m, suite.prior) for m in spec.methods if not methods or m in methods]
    if spec.palette and (not methods or "palette" in methods):
        entries.append(("palette", spec.palette))
    entries += [(f"baseline:{b}", None) for b in spec.baselines if not methods or b in methods or "baselines" in methods]
    return entries


def check_selection(suite: Suite, tasks=None, methods=None) -> None:
    """--tasks and --methods name what the suite has, and select at least one (task, method)."""
    if tasks:
        known = {t.task for t in suite.tasks} | {t.label for t in suite.tasks}
        bad = [t for t in tasks if t not in known]
        if bad:
            raise ValueError(f"--tasks: suite {suite.name} has no task {', '.join(map(repr, bad))}; it has "
                             f"{', '.join(sorted({t.task for t in suite.tasks}))}")
    specs = [t for t in suite.tasks if not tasks or t.task in tasks or t.label in tasks]
    if methods:
        known = {"baselines"} | {m for t in specs for m in t.methods} | {b for t in specs for b in t.baselines}
        known |= {"palette"} if any(t.palette for t in specs) else set()
        bad = [m for m in methods if m not in known]
        if bad:
            raise ValueError(f"--methods: the selected tasks of suite {suite.name} have no method {', '.join(map(repr, bad))}; "
                             f"they have {', '.join(sorted(known))}")
    entries = [e for t in specs for e in _entries(suite, t, methods)]
    if not entries:
        raise ValueError(f"nothing to run: --tasks/--methods select no (task, method) of suite {suite.name}")
    if suite.prior is None and any(not m.startswith("baseline:") and m != "palette" for m, _ in entries):
        raise ValueError(f"suite {suite.name} names no prior: give one with --prior (a bundled name or a path)")


def _append(path: Path, rows: list[dict]) -> None:
    repair_torn_line(path)
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())


def _plan(suite: Suite, tasks, methods, fingerprints: dict) -> list[tuple]:
    """What each selected (task, method) would be computed with: (spec, method, prior name, config, config id)."""
    plan = []
    for spec in suite.tasks:
        if tasks and spec.task not in tasks and spec.label not in tasks:
            continue
        for method, prior_name in _entries(suite, spec, methods):
            cfg = entry_config(suite, spec, method, prior_name, fingerprints)
            plan.append((spec, method, prior_name, cfg, config_id(cfg)))
    return plan


def _refuse_other_configurations(out: Path, plan: list[tuple]) -> None:
    """Existing rows of another configuration than the plan's refuse the run."""
    existing: dict[tuple, dict] = {}
    for f in sorted(out.glob("results.rank*.jsonl")):
        for r in _rows(f):
            existing.setdefault((r["task"], r["method"]), r)
            if existing[(r["task"], r["method"])].get("config_id") != r.get("config_id"):
                existing[(r["task"], r["method"])] = {**r, "config_id": "mixed"}
    for spec, method, _, cfg, cid in plan:
        old = existing.get((spec.label, method))
        if old is not None and old.get("config_id") != cid:
            raise ValueError(f"{out} holds {spec.label} / {method} results of another configuration "
                             f"({_config_difference(old.get('config'), cfg)}): use another --out, or remove them")


def _restore_chunk(suite: Suite, spec, method: str, prior_for, cfg: dict, ids: list[int], x, device: str):
    """Degrade the images ``ids`` (seeded per image) and restore them: (y, restored, nfe, vjps, seconds per image).
    ``prior_for()`` gives the diffusion prior (loaded on first use, inside the timed part as it always was)."""
    task = get_task(spec.task)
    opts = TaskOptions(noise_sigma=suite.noise_sigma).with_(**spec.options)
    gens = [torch.Generator(device="cpu").manual_seed(stream_seed(suite.seed, "degrade", i)) for i in ids]
    op, y = simulate(task, x.to(device), opts, generator=gens)
    if torch.cuda.is_available() and device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if method.startswith("baseline:"):
        xr = run_baseline(method.split(":", 1)[1], y, op, opts.noise_sigma)
        nfe, vjps = 0, 0
    else:
        prior = prior_for()
        hp, steps = cfg["hyper_parameters"], cfg["steps"]
        sample_gens = [torch.Generator(device=device).manual_seed(stream_seed(suite.seed, "sample", i)) for i in ids]
        # a suite's hyper-parameters may hold restore's ``samples`` (K) and ``select``: the row scores the mean of the
        # K samples (or the one chosen by the measurement) and counts the network evaluations of all K
        r = restore(y, op, task.noise(opts), prior, method=method, steps=steps, generator=sample_gens, **hp)
        k = r.samples.shape[1]
        xr, nfe, vjps = r.mean, r.nfe * k, r.vjps * k
    seconds = (time.perf_counter() - t0) / len(ids)
    return y, xr, nfe, vjps, seconds


def _score_rows(suite: Suite, spec, method: str, prior_name, cfg: dict, cid: str, ids, x, xr, nfe, vjps, seconds,
                *, rank: int, device: str, lpips_model) -> list[dict]:
    """One result row per image of the chunk."""
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    sc = score(xr, x, lpips_model=lpips_model)
    return [{"suite": suite.name, "task": spec.label, "method": method, "image": i, "prior": prior_name,
             "psnr": float(sc["psnr"][k]), "ssim": float(sc["ssim"][k]),
             "lpips": float(sc["lpips"][k]) if sc["lpips"] is not None else None,
             "nfe": int(nfe), "vjps": int(vjps), "seconds": seconds, "peak_mem_mib": mem, "rank": rank,
             "steps": cfg.get("steps"), "prior_sha256": cfg.get("prior_sha256"), "config_id": cid, "config": cfg}
            for k, i in enumerate(ids)]


def _finish(suite: Suite, out: Path, rank: int, world: int, own: bool) -> None:
    """Wait for every rank, write the report on rank 0, and close a process group opened here."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        from .report import write_report

        write_report(suite, out)
    if own:
        import torch.distributed as dist

        dist.destroy_process_group()


def run_suite(suite: Suite, out: str | Path, *, limit: int | None = None, device: str = "cpu", tasks=None, methods=None,
              batch_size: int | None = None, progress=None, lpips_backbone=None) -> Path:
    """Run (or resume) ``suite``; returns the output folder with results.rank*.jsonl and, on rank 0, the report."""
    out = Path(out)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    check_selection(suite, tasks, methods)
    rank, world, own = _dist()
    res_file = out / f"results.rank{rank}.jsonl"
    plan = _plan(suite, tasks, methods, {})
    _refuse_other_configurations(out, plan)
    out.mkdir(parents=True, exist_ok=True)
    repair_torn_line(res_file)
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
    for spec, method, prior_name, cfg, cid in plan:
        todo = [i for i in idx_mine if (spec.label, method, i, cid) not in done]
        if todo:
            jobs.append((spec, method, prior_name, todo, cfg, cid))
    total = sum(len(j[3]) for j in jobs)
    finished = 0
    for spec, method, prior_name, todo, cfg, cid in jobs:
        for start in range(0, len(todo), bs):
            ids = todo[start : start + bs]
            x = x_all[ids].to(device)
            y, xr, nfe, vjps, seconds = _restore_chunk(suite, spec, method, partial(prior_for, prior_name), cfg,
                                                       ids, x, device)
            _append(res_file, _score_rows(suite, spec, method, prior_name, cfg, cid, ids, x, xr, nfe, vjps, seconds,
                                          rank=rank, device=device, lpips_model=lp))
            _save_examples(out, spec.label, method, ids, x, y, xr)
            finished += len(ids)
            if progress is not None:
                progress(finished, total, f"{spec.label} {method}")
    _finish(suite, out, rank, world, own)
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
