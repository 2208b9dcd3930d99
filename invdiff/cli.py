"""The ``invdiff`` command line (typer): solve, sample, train, bench, and the listings tasks/methods/priors.

Every error a user can cause (missing/corrupt image, unknown task/method/prior, a kernel or mask of the wrong
size, a method that cannot handle the operator, mismatched channels) ends with one clear line on stderr and a
non-zero exit code; outputs are written atomically, all at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one ``error:`` line on stderr and exit code 2,
    like every other error of the command line, instead of a usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
        from typer.exceptions import Abort

        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help())
            rv = 0
        except ClickException as e:
            msg = (e.format_message() or type(e).__name__).strip().splitlines()
            typer.echo(f"error: {msg[0] if msg else type(e).__name__}", err=True)
            if not standalone_mode:
                raise
            sys.exit(e.exit_code)
        except Abort:
            typer.echo("error: aborted", err=True)
            if not standalone_mode:
                raise
            sys.exit(1)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Imaging inverse problems with diffusion priors.")


def _version_callback(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"invdiff {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="print the version and exit")):
    """Imaging inverse problems with diffusion priors."""


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
    except (UserError, ValueError, TypeError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e).strip() else e.__class__.__name__
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and getattr(e, "strerror", None):
            msg = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        _fail(msg)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _device(name: str | None, option: str = "--device") -> str:
    import torch

    from .samplers.validate import check_device_name

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return check_device_name(name)
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None


def _emit(obj, as_json: bool, table=None) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))
    elif table is not None:
        from rich.console import Console

        Console().print(table)


# ---- listings -----------------------------------------------------------------------------------
@app.command("tasks")
def tasks_cmd(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the tasks with their operators, default methods and what a measured photo needs."""
    from rich.table import Column, Table

    from .tasks import TASKS, solve_preset
    from .zoo import default_prior, palette_models

    rows = [{"task": t.name, "description": t.description, "default_method": t.default_method,
             "palette": ", ".join(palette_models(t.palette)) or None,
             "solve_default": (p.describe() if (p := solve_preset(t.name, default_prior())) else f"{t.default_method}, its defaults"),
             "measured_needs": _measured_needs(t)} for t in TASKS.values()]
    table = Table("operator", Column("solve default", overflow="fold"), Column("a measured photo needs", overflow="fold"),
                  Column("Palette model", overflow="fold"))
    table.columns.insert(0, Column("task", no_wrap=True, min_width=max(len(t) for t in TASKS)))  # names are never cut
    for r in rows:
        table.add_row(r["task"], r["description"], r["solve_default"], r["measured_needs"], r["palette"] or "")
    _emit(rows, json_out, table)


def _measured_needs(t) -> str:
    needs = {"kernel": "--kernel or --blur-sigma" if t.blind == "gaussian" else "--kernel",
             "kernel-field": "--kernel FIELD.npy", "mask": "--mask FILE or an alpha channel"}.get(t.needs, "nothing more")
    if t.blind:
        needs += f" (else blind: the {t.blind} kernel is estimated)"
    if t.measurement == "fourier":
        needs = "Fourier magnitudes as .npy"
    if t.measured_channels == 1:
        needs = "a grey photo (a colour one is refused)"
    return needs


@app.command("methods")
def methods_cmd(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the restoration methods and what each requires."""
    from rich.table import Table

    from .samplers.registry import METHODS, method_requirements

    rows = [{"method": name, **method_requirements(name),
             "hyper_parameters": {k: v for k, v in METHODS[name].defaults.items() if k != "steps"}} for name in METHODS]
    keys = ["operator", "default_steps", "nfe", "network_gradient", "conditional_prior"]
    table = Table("method", *keys, "hyper-parameters (--hp NAME=VALUE)")
    for r in rows:
        table.add_row(r["method"], *[str(r.get(k, "")) for k in keys],
                      ", ".join(f"{k}={v}" for k, v in r["hyper_parameters"].items()) or "none")
    _emit(rows, json_out, table)


@app.command("priors")
def priors_cmd(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the bundled priors."""
    from rich.table import Table

    from .zoo import PRIORS, default_prior

    default = default_prior()
    rows = []
    for e in PRIORS.values():
        info = e.info()
        rows.append({"name": e.name, "default": e.name == default, "available": e.available, "description": e.description,
                     "images_seen": info.get("training", {}).get("images_seen"), "params": info.get("training", {}).get("params")})
    if default not in PRIORS:  # a composite of an installed denoiser and a bundled prior (docs/pretrained.md)
        rows.insert(0, {"name": default, "default": True, "available": True, "images_seen": None, "params": None,
                        "description": "composite: the installed pretrained denoiser at the noise levels it covers, the "
                                       "bundled prior above them (docs/pretrained.md)"})
    from rich.table import Column

    width = max(len(r["name"]) + (10 if r["default"] else 0) for r in rows)
    table = Table(Column("name", no_wrap=True, min_width=width), "available", "description", "images seen", "params")
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
    label: Optional[str] = typer.Option(None, help="class-conditional priors: the class, by name or index"),
    guidance: float = typer.Option(0.0, help="classifier-free guidance weight w (class-conditional priors; 0: none)"),
    quiet: bool = typer.Option(False, "--quiet"),
):
    """Samples from a prior, as a grid: unconditional, or of one class (--label) with classifier-free guidance."""

    def go():
        import math


        from .io import save_grid
        from .prior import load
        from .rng import make_generators
        from .samplers import sample

        import math as _m

        if n < 1:
            raise UserError("-n must be at least 1")
        if steps < 1:
            raise UserError(f"--steps must be a positive integer, got {steps}")
        if size is not None and size < 1:
            raise UserError(f"--size must be a positive integer, got {size}")
        if not _m.isfinite(eta) or eta < 0:
            raise UserError(f"--eta must be a finite non-negative number, got {eta}")
        if not 0 <= seed < 2**62:
            raise UserError(f"--seed must be an integer from 0 to 2**62 - 1, got {seed}")
        if out.is_dir():
            raise UserError(f"--out {out} is a folder: give the PNG file to write")
        dev = _device(device)
        p = load(prior, device=dev)
        if p.cond_channels:
            raise UserError(f"prior {prior!r} is a conditional (Palette) model: use `invdiff solve`")
        if not _m.isfinite(guidance):
            raise UserError(f"--guidance must be a finite number, got {guidance}")
        p.check_guidance(guidance)
        labels = class_labels(p, label, n, dev)
        s = size or p.image_size or 64
        with _progress(quiet, "sampling", steps) as cb:
            x = sample(p, (n, p.channels, s, s), steps=steps, eta=eta, generator=make_generators(seed, n, dev), callback=cb,
                       device=dev, cond=labels, cfg_weight=guidance)
        save_grid(out, x, nrow=int(math.ceil(math.sqrt(n))))
        if not quiet:
            typer.echo(f"wrote {out}")

    _run(go)


def _hp(hp: list[str], guidance: float | None) -> dict:
    """--hp NAME=VALUE pairs, with --guidance W as the hyper-parameter ``guidance``."""
    return {**_parse_hp(hp), **({"guidance": guidance} if guidance is not None else {})}


def class_labels(prior, label: str | None, n: int, device):
    """The (n,) label tensor of ``--label`` (a class name or index) for a class-conditional prior; None for an
    unconditional one (where --label is an error)."""
    import torch

    if not prior.num_classes:
        if label is not None:
            raise UserError(f"--label: prior {prior.name!r} is not class-conditional")
        return None
    names = prior.class_names or [str(i) for i in range(prior.num_classes)]
    listing = ", ".join(f"{i} {nm}" for i, nm in enumerate(names))
    if label is None:
        raise UserError(f"prior {prior.name!r} is class-conditional: give --label (one of: {listing})")
    lowered = [nm.lower() for nm in names]
    if label.lower() in lowered:
        k = lowered.index(label.lower())
    elif label.isdigit() and int(label) < prior.num_classes:
        k = int(label)
    else:
        raise UserError(f"--label {label!r}: unknown class; choose from: {listing}")
    return torch.full((n,), k, dtype=torch.long, device=device)


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
            if "step" not in info:  # e.g. a blind kernel estimate's progress
                return
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
    images: list[Path] = typer.Argument(..., help="the measurement (or, with --simulate, the clean image); several files or folders restore every image in them"),
    task: str = typer.Option(..., "--task", "-t", help="deblur, motion-deblur, nonuniform-deblur, sr, inpaint, phase-retrieval, colorize, denoise"),
    simulate: bool = typer.Option(False, "--simulate", help="IMAGE is clean: degrade it with the task, restore, and score"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="output folder"),
    method: Optional[str] = typer.Option(None, help="restoration method (default: the task's preset, `invdiff tasks`)"),
    prior: Optional[str] = typer.Option(None, help="bundled prior name or path (default: `invdiff priors`)"),
    steps: Optional[int] = typer.Option(None, help="sampling steps (default: the preset's, else the method's)"),
    seed: int = typer.Option(0, help="random seed (simulated degradation, blind estimate, sampling)"),
    samples: Optional[int] = typer.Option(None, "--samples", "-k", help="posterior samples (default: the preset's, else 1): K>1 also writes the mean and a per-pixel std map"),
    noise_sigma: Optional[str] = typer.Option(None, help="noise sigma on [-1,1] or 'auto' (default: auto; 0.05 simulated)"),
    kernel: Optional[Path] = typer.Option(None, help="blur kernel (.png or .npy); for nonuniform-deblur a kernel field .npy (G, G, kh, kw). Without it a measured deblur/motion-deblur is blind"),
    kernel_size: Optional[int] = typer.Option(None, help="simulated kernel size, or bound of a blind one (motion: 61)"),
    blur_sigma: Optional[float] = typer.Option(None, help="Gaussian blur sigma in pixels (measured: else estimated)"),
    blind: bool = typer.Option(False, "--blind", help="with --simulate: hide the simulated kernel and estimate it"),
    kernel_em: Optional[int] = typer.Option(None, help="blind motion: rounds of kernel EM (default: the preset's)"),
    kernel_prior: Optional[str] = typer.Option(None, help="blind motion: 'none' or a kernel prior file (default: bundled)"),
    fast_em: Optional[bool] = typer.Option(None, "--fast-em/--no-fast-em", help="blind motion: also Fast Diffusion EM's kernel, a no-reference rule choosing (invdiff.blind.FAST_EM_RULE; default: off)"),
    estimate_size: Optional[int] = typer.Option(None, help="blind motion: the side of the window of most coherent edges the kernel is estimated from (0: whole photo; default: invdiff.blind.ESTIMATE_SIZE)"),
    select: Optional[str] = typer.Option(None, help="with -k K: 'residual' keeps the sample with the smallest ||y-A(x)||, 'mbr' the sample nearest the mean of the K"),
    symmetry: Optional[str] = typer.Option(None, help="with -k K: flips|dihedral, sample k on y flipped/turned and back"),
    padding: str = typer.Option("reflect", help="blur boundary: zeros, reflect, replicate, circular"),
    scale: int = typer.Option(4, help="super-resolution factor"),
    mask: Optional[str] = typer.Option(None, help="inpainting mask image (white = observed), or a measured photo's alpha "
                                       "channel; --simulate also takes the presets box (default), random, freeform"),
    oversampling: float = typer.Option(2.0, help="phase retrieval oversampling"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when available)"),
    batch_size: Optional[str] = typer.Option(None, help="posterior samples computed together: a number, or 'auto' for as many as memory allows (default: all K)"),
    tile: Optional[int] = typer.Option(None, help="evaluate the network on overlapping tiles of this side (default: only when the whole image would not fit in memory)"),
    hp: list[str] = typer.Option([], "--hp", help="method hyper-parameter, NAME=VALUE (repeatable)"),
    guidance: Optional[float] = typer.Option(None, help="classifier-free guidance weight w (Palette priors; 2 NFE/step)"),
    fast: bool = typer.Option(False, "--fast", help="channels_last + torch.compile (+ bf16 autocast on CUDA): pays a "
                              "one-off compilation, worth it for long runs"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace outputs of an earlier run in --out (default: refuse "
                                   "one image; skip the finished ones of a folder)"),
    save_measurement: bool = typer.Option(False, "--save-measurement", help="also write the measurement (PNG and .npy) and the operator's mask or kernel"),
    lpips_backbone: Optional[Path] = typer.Option(None, "--lpips-backbone", help="AlexNet weights for LPIPS with "
                                                  "--simulate (else INVDIFF_LPIPS_BACKBONE / the torch hub cache)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON (a list for several images)"),
):
    """Restore images: each IMAGE is a measurement, or with --simulate a clean image to degrade first. A measured
    photo is never given an invented degradation: deblurring without --kernel is blind, inpainting needs --mask FILE
    or an alpha channel, the noise level is estimated unless given (see `invdiff tasks`)."""
    from .solve import SolveRequest

    def go():
        req = SolveRequest(image=images[0], task=task, simulate=simulate, out=out, method=method, prior=prior, steps=steps,
                           seed=seed, samples=samples, noise_sigma=noise_sigma, kernel=kernel, kernel_size=kernel_size,
                           blur_sigma=blur_sigma, padding=padding, scale=scale, mask=mask, oversampling=oversampling,
                           device=_device(device), batch_size=_batch_size(batch_size), hyper_parameters=_hp(hp, guidance),
                           fast=fast, overwrite=overwrite, save_measurement=save_measurement,
                           lpips_backbone=lpips_backbone, blind=blind, select=select, kernel_em=kernel_em,
                           symmetry=symmetry, kernel_prior=kernel_prior, fast_em=fast_em, estimate_size=estimate_size,
                           tile=tile)
        one = len(images) == 1 and not images[0].is_dir()
        return _solve_one_cmd(req, quiet, json_out) if one else _solve_many_cmd(req, images, quiet, json_out)

    if code := _run(go):
        raise typer.Exit(code)


def _solve_one_cmd(req, quiet: bool, json_out: bool) -> int:
    import warnings

    from .solve import solve

    with warnings.catch_warnings(record=True) as caught, _progress(quiet, req.task, None) as cb:
        warnings.simplefilter("always", UserWarning)
        report = solve(req, callback=cb)
    for w in caught:
        if issubclass(w.category, UserWarning) and str(w.message) in report.get("warnings", []):
            typer.echo(f"warning: {w.message}", err=True)
    if json_out:
        typer.echo(json.dumps(report, indent=2, default=str))
    elif not quiet:
        _print_report(report)
    return 0


def _solve_many_cmd(req, images: list[Path], quiet: bool, json_out: bool) -> int:
    """Every image of the folders and files given, one progress bar over all of them; a failed image is reported
    and the others go on; exit status 1 when any failed."""
    from .solve import solve_many

    bar = _ImagesBar(quiet)
    with bar:
        outcome = solve_many(req, images, on_image=bar.update)
    for path, msg in outcome.failed:
        typer.echo(f"error: {path}: {msg}", err=True)
    if json_out:
        typer.echo(json.dumps(outcome.reports, indent=2, default=str))
    elif not quiet:
        for r in outcome.reports:
            _print_report(r)
    if not quiet or outcome.failed:
        typer.echo(f"{len(outcome.reports)} restored, {len(outcome.skipped)} already done, {len(outcome.failed)} failed",
                   err=True)
    return 1 if outcome.failed else 0


class _ImagesBar:
    """One rich progress bar over the images of a folder (stderr; silent with --quiet)."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __enter__(self):
        return self

    def update(self, i: int, n: int, path: Path, status: str) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=_stderr_console())
            self.bar.__enter__()
            self.task = self.bar.add_task("images", total=n)
        self.bar.update(self.task, completed=i + 1, description=f"{path.name}: {status}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def _batch_size(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"--batch-size expects a positive integer or 'auto', got {value!r}")
    return int(value)


def _parse_hp(items: list[str]) -> dict:
    """--hp NAME=VALUE: VALUE as JSON (numbers, true/false) or else a string; the method checks names and types."""
    out = {}
    for it in items:
        if "=" not in it:
            raise UserError(f"--hp expects NAME=VALUE, got {it!r}")
        k, v = (p.strip() for p in it.split("=", 1))
        if not k.isidentifier():
            raise UserError(f"--hp expects NAME=VALUE with a hyper-parameter name, got {it!r}")
        if k in out:
            raise UserError(f"--hp {k} given twice")
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, ValueError):
            out[k] = v
    return out


def _print_report(r: dict) -> None:
    per = f"{r['nfe']} network evaluations" + (f" per sample, {r['nfe_total']} in total" if r["samples"] > 1 else "")
    line = f"{r['task']} / {r['method']} / {r['prior']}: {r['steps']} steps, {per}, {r['seconds']:.1f} s"
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


@app.command("bench")
def bench_cmd(
    suite: str = typer.Argument(..., help="suite name (fmnist, natural, dps-ffhq, tiny) or path to a suite JSON"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default: bench-results/SUITE in the "
                                       "current folder; published results are copied to benchmarks/results on purpose)"),
    prior: Optional[str] = typer.Option(None, help="bundled prior name or path, instead of the suite's"),
    steps: Optional[int] = typer.Option(None, help="sampling steps for every method, instead of the suite's"),
    limit: Optional[int] = typer.Option(None, help="only the first N images of the dataset"),
    tasks: Optional[str] = typer.Option(None, help="comma-separated subset of the suite's tasks (names or labels)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated subset of methods (baselines by name, or 'baselines')"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda when available; LOCAL_RANK under torchrun)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per batch (default: the suite's)"),
    report_only: bool = typer.Option(False, "--report-only", help="rebuild the report from the results already there"),
    lpips_backbone: Optional[Path] = typer.Option(None, "--lpips-backbone", help="AlexNet weights for LPIPS (else "
                                                  "INVDIFF_LPIPS_BACKBONE / hub cache)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Run a benchmark suite: every task x method (and baseline) over a dataset, scored per image. Rerunning the same
    configuration resumes; rows carry the configuration that produced them, and a folder holding results of another
    configuration is refused. Under torchrun each process takes its share of the images."""
    from .bench.cli import run_bench

    _run(lambda: run_bench(suite=suite, out=out, prior=prior, steps=steps, limit=limit, tasks=tasks, methods=methods,
                           device=device, batch_size=batch_size, report_only=report_only, lpips_backbone=lpips_backbone,
                           quiet=quiet))


def main() -> None:
    from .accel import keep_freed_memory

    keep_freed_memory()  # the command line owns its process: keep freed activations for the next step (see accel)
    app()


if __name__ == "__main__":
    main()
