"""The ``invdiff`` command line (typer): solve, sample, train, bench, and the listings tasks/methods/priors.

Every error a user can cause (missing/corrupt image, unknown task/method/prior, a kernel or mask of the wrong
size, a method that cannot handle the operator, mismatched channels) ends with one clear line on stderr and a
non-zero exit code; outputs are written atomically, all at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Imaging inverse problems with diffusion priors.")


class UserError(Exception):
    """An error caused by the input: reported as one line, exit code 2."""


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _run(fn):
    """Call fn, turning user-facing errors into one stderr line and a non-zero exit."""
    try:
        return fn()
    except typer.Exit:
        raise
    except (UserError, ValueError, FileNotFoundError, TypeError) as e:
        _fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return name


def _emit(obj, as_json: bool, table=None) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))
    elif table is not None:
        from rich.console import Console

        Console().print(table)


# ---- listings -----------------------------------------------------------------------------------
@app.command("tasks")
def tasks_cmd(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the tasks with their operators and default methods."""
    from rich.table import Table

    from .tasks import TASKS

    rows = [{"task": t.name, "description": t.description, "default_method": t.default_method, "palette": t.palette} for t in TASKS.values()]
    table = Table("task", "operator", "default method", "Palette model")
    for r in rows:
        table.add_row(r["task"], r["description"], r["default_method"], r["palette"] or "")
    _emit(rows, json_out, table)


@app.command("methods")
def methods_cmd(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the restoration methods and what each requires."""
    from rich.table import Table

    from .samplers.registry import METHODS, method_requirements

    rows = [{"method": name, **method_requirements(name)} for name in METHODS]
    keys = sorted({k for r in rows for k in r if k != "method"})
    table = Table("method", *keys)
    for r in rows:
        table.add_row(r["method"], *[str(r.get(k, "")) for k in keys])
    _emit(rows, json_out, table)


@app.command("priors")
def priors_cmd(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the bundled priors."""
    from rich.table import Table

    from .zoo import DEFAULT_PRIOR, PRIORS

    rows = []
    for e in PRIORS.values():
        info = e.info()
        rows.append({"name": e.name, "default": e.name == DEFAULT_PRIOR, "available": e.available, "description": e.description,
                     "images_seen": info.get("training", {}).get("images_seen"), "params": info.get("training", {}).get("params")})
    table = Table("name", "available", "description", "images seen", "params")
    for r in rows:
        table.add_row(r["name"] + (" (default)" if r["default"] else ""), "yes" if r["available"] else "no", r["description"],
                      str(r["images_seen"] or ""), str(r["params"] or ""))
    _emit(rows, json_out, table)


# ---- sample -------------------------------------------------------------------------------------
@app.command("sample")
def sample_cmd(
    prior: str = typer.Option("fmnist32", help="bundled prior name or path"),
    n: int = typer.Option(16, "-n", help="number of samples"),
    size: Optional[int] = typer.Option(None, help="image side (default: the prior's training size)"),
    steps: int = typer.Option(50, help="sampling steps (1000 = full DDPM)"),
    eta: float = typer.Option(0.0, help="DDIM eta (0 deterministic, 1 ancestral)"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("samples.png"), help="output grid (PNG)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when available)"),
    quiet: bool = typer.Option(False, "--quiet"),
):
    """Unconditional samples from a prior, as a grid."""

    def go():
        import math

        import torch

        from .io import save_grid
        from .prior import load
        from .rng import make_generators
        from .samplers import sample

        if n < 1:
            raise UserError("-n must be at least 1")
        dev = _device(device)
        p = load(prior, device=dev)
        if p.cond_channels:
            raise UserError(f"prior {prior!r} is a conditional (Palette) model: use `invdiff solve`")
        s = size or p.image_size or 64
        with _progress(quiet, "sampling", steps) as cb:
            x = sample(p, (n, p.channels, s, s), steps=steps, eta=eta, generator=make_generators(seed, n, dev), callback=cb, device=dev)
        save_grid(out, x, nrow=int(math.ceil(math.sqrt(n))))
        if not quiet:
            typer.echo(f"wrote {out}")

    _run(go)


class _progress:
    """A rich progress bar (on stderr) fed by the samplers' ``callback(info)``; created at the first step, so a run
    that fails while checking its input prints only its error; silent with --quiet."""

    def __init__(self, quiet: bool, label: str, total: int | None):
        self.quiet, self.label, self.total = quiet, label, total
        self.bar = None

    def _start(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), transient=False, console=_stderr_console())
        self.bar.__enter__()
        self.task = self.bar.add_task(self.label, total=self.total)

    def __enter__(self):
        if self.quiet:
            return None

        def cb(info):
            if self.bar is None:
                self._start()
            if info.get("total"):
                self.bar.update(self.task, total=info["total"])
            self.bar.update(self.task, completed=info["step"] + 1)

        return cb

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


# ---- solve --------------------------------------------------------------------------------------
@app.command("solve")
def solve_cmd(
    image: Path = typer.Argument(..., help="the measurement (or, with --simulate, the clean image)"),
    task: str = typer.Option(..., "--task", "-t", help="deblur, motion-deblur, nonuniform-deblur, sr, inpaint, phase-retrieval, colorize, denoise"),
    simulate: bool = typer.Option(False, "--simulate", help="IMAGE is clean: degrade it with the task, restore, and score"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="output folder"),
    method: Optional[str] = typer.Option(None, help="restoration method (default: the task's)"),
    prior: Optional[str] = typer.Option(None, help="bundled prior name or path (default: natural64)"),
    steps: Optional[int] = typer.Option(None, help="sampling steps (default: the method's)"),
    seed: int = typer.Option(0, help="random seed (measurement noise, kernels, masks, sampling)"),
    samples: int = typer.Option(1, "--samples", "-k", help="posterior samples: K>1 also writes the mean and a per-pixel std map"),
    noise_sigma: Optional[str] = typer.Option(None, help="measurement noise sigma on the [-1,1] scale, or 'auto' to estimate it (default 0.05)"),
    kernel: Optional[Path] = typer.Option(None, help="blur kernel (.png or .npy)"),
    kernel_size: Optional[int] = typer.Option(None, help="Gaussian/motion kernel size (default 61, 9 on small images)"),
    blur_sigma: Optional[float] = typer.Option(None, help="Gaussian blur sigma in pixels (default 3, 1.5 on small images)"),
    padding: str = typer.Option("reflect", help="blur boundary: zeros, reflect, replicate, circular"),
    scale: int = typer.Option(4, help="super-resolution factor"),
    mask: str = typer.Option("box", help="inpainting mask: box, random, freeform or a mask image (white = observed); "
                                          "a measurement PNG's alpha channel is used when present"),
    oversampling: float = typer.Option(2.0, help="phase retrieval oversampling"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when available)"),
    batch_size: Optional[str] = typer.Option(None, help="posterior samples computed together: a number, or 'auto' for as "
                                             "many as memory allows (default: all K)"),
    hp: list[str] = typer.Option([], "--hp", help="method hyper-parameter, NAME=VALUE (repeatable)"),
    fast: bool = typer.Option(False, "--fast", help="channels_last + torch.compile (+ bf16 autocast on CUDA): pays a "
                              "one-off compilation, worth it for long runs"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
):
    """Restore an image: IMAGE is the measurement, or with --simulate a clean image to degrade first."""
    from .solve import SolveRequest, solve

    def go():
        req = SolveRequest(image=image, task=task, simulate=simulate, out=out, method=method, prior=prior, steps=steps,
                           seed=seed, samples=samples, noise_sigma=noise_sigma, kernel=kernel, kernel_size=kernel_size,
                           blur_sigma=blur_sigma, padding=padding, scale=scale, mask=mask, oversampling=oversampling,
                           device=_device(device), batch_size=_batch_size(batch_size), hyper_parameters=_parse_hp(hp),
                           fast=fast)
        with _progress(quiet, f"{task}", None) as cb:
            report = solve(req, callback=cb)
        if json_out:
            typer.echo(json.dumps(report, indent=2, default=str))
        elif not quiet:
            _print_report(report)

    _run(go)


def _batch_size(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"--batch-size expects a positive integer or 'auto', got {value!r}")
    return int(value)


def _parse_hp(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise UserError(f"--hp expects NAME=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _print_report(r: dict) -> None:
    line = f"{r['task']} / {r['method']} / {r['prior']}: {r['nfe']} network evaluations, {r['seconds']:.1f} s"
    m = r.get("metrics")
    if m:
        line += "  |  " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
    typer.echo(line)
    for f in r["files"].values():
        typer.echo(f"  {f}")


# ---- train / bench ------------------------------------------------------------------------------
@app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="a recipe name (fmnist32, natural64, fmnist32-palette-sr4, ...) or a new name with --data"),
    data: Optional[str] = typer.Option(None, help="fmnist, natural, or folder:PATH (required for a new name)"),
    steps: Optional[int] = typer.Option(None),
    max_minutes: Optional[float] = typer.Option(None, help="stop (checkpointed, resumable) after this long"),
    batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    channels: Optional[int] = typer.Option(None, help="image channels of a new model"),
    patch: Optional[int] = typer.Option(None, help="patch size for photo data"),
    ckpt_dir: str = typer.Option("ckpt", help="checkpoints (resumed from when present)"),
    export: Optional[Path] = typer.Option(None, help="write the EMA weights here as a prior (.safetensors + .json)"),
    init: Optional[str] = typer.Option(None, help="start from these prior weights (continue a shipped model)"),
    device: Optional[str] = typer.Option(None),
    threads: Optional[int] = typer.Option(None),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network"),
    quiet: bool = typer.Option(False, "--quiet"),
):
    """Train an ε-network (resumable; DDP under torchrun)."""

    def go():
        from dataclasses import replace

        from .nets.unet import UNetConfig
        from .recipes import RECIPES
        from .train import TrainConfig, Trainer

        if name in RECIPES:
            cfg = RECIPES[name]
        elif data is None:
            raise UserError(f"{name!r} is not a recipe ({', '.join(RECIPES)}); give --data for a new model")
        else:
            ch = channels or (1 if data == "fmnist" else 3)
            cfg = TrainConfig(name=name, data=data, unet=UNetConfig(in_channels=ch, base_channels=32, channel_mult=(1, 2, 2, 2),
                                                                     attention_levels=(3,)))
        kw = {k: v for k, v in dict(data=data, steps=steps, max_minutes=max_minutes, batch_size=batch_size, lr=lr, patch=patch,
                                      device=device, threads=threads).items() if v is not None}
        cfg = replace(cfg, ckpt_dir=ckpt_dir, compile=compile, **kw)
        tr = Trainer(cfg, quiet=quiet)
        if init and tr.step == 0:
            from .prior import load

            tr.load_weights(load(init))
        tr.run()
        if export:
            path = tr.export(export)
            if not quiet:
                typer.echo(f"wrote {path} and {path.with_suffix('.json')}")

    _run(go)


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_cmd(ctx: typer.Context):
    """Run a benchmark suite (see `invdiff bench --help-suite`); arguments go to invdiff.bench."""
    from .bench.cli import main as bench_main

    _run(lambda: bench_main(list(ctx.args)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
