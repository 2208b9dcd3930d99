"""``invdiff bench``: run a suite (resumable; sharded under torchrun) or rebuild its report. The options are those of
the ``bench`` command of ``invdiff.cli``; ``python -m invdiff.bench SUITE ...`` (what torchrun starts) runs the
same command."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

#: where results go unless --out says otherwise: outside the package, in the current folder
DEFAULT_RESULTS = Path("bench-results")


def _positive(value, option: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value}")


def _split(value: str | None, option: str) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError(f"{option} expects a comma-separated list, got {value!r}")
    return items


def _load(suite: str, prior: str | None, steps: int | None):
    """The suite, with --prior and --steps applied."""
    from .suite import load_suite

    s = load_suite(suite)
    if prior is not None:
        s = replace(s, prior=prior)
    if steps is not None:
        s = replace(s, steps={m: steps for m in s.all_methods()}, steps_override=steps)
    return s


def _report_only(s, out: Path) -> Path:
    from .report import load_results, write_report

    if not out.is_dir() or not load_results(out):
        raise ValueError(f"--report-only: no results in {out} (run the suite first, or give its --out)")
    path = write_report(s, out)
    print(path)
    return path


def _device(device: str | None) -> str:
    """--device checked; None or 'auto': this rank's GPU if there is one, else the CPU."""
    import torch

    from ..samplers.validate import check_device_name

    if device in (None, "auto"):
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    try:
        return check_device_name(device)
    except ValueError as e:
        raise ValueError(f"--device: {e}") from None


def _progress_bar(name: str, quiet: bool):
    """(bar, progress callback): a rich progress bar on stderr, started on the first report; (None, None) if quiet."""
    if quiet:
        return None, None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True))
    started = []

    def progress(done, total, what):
        if not started:
            bar.__enter__()
            started.append(bar.add_task(name, total=None))
        bar.update(started[0], completed=done, total=total, description=f"{name}: {what}")

    return bar, progress


def run_bench(*, suite: str, out: Path | None = None, prior: str | None = None, steps: int | None = None,
              limit: int | None = None, tasks: str | None = None, methods: str | None = None, device: str | None = None,
              batch_size: int | None = None, report_only: bool = False, lpips_backbone: Path | None = None,
              quiet: bool = False) -> Path:
    from .runner import check_selection, run_suite

    _positive(limit, "--limit")
    _positive(steps, "--steps")
    _positive(batch_size, "--batch-size")
    task_list, method_list = _split(tasks, "--tasks"), _split(methods, "--methods")
    s = _load(suite, prior, steps)
    out = Path(out) if out is not None else DEFAULT_RESULTS / s.name
    from ..io import check_out_folder

    check_out_folder(out)
    if report_only:
        return _report_only(s, out)
    check_selection(s, task_list, method_list)
    if lpips_backbone is not None and not Path(lpips_backbone).is_file():
        raise ValueError(f"--lpips-backbone {lpips_backbone}: file not found")
    dev = _device(device)
    bar, progress = _progress_bar(s.name, quiet)
    try:
        path = run_suite(s, out, limit=limit, device=dev, tasks=task_list, methods=method_list, batch_size=batch_size,
                         progress=progress, lpips_backbone=lpips_backbone)
    finally:
        if bar is not None and bar.live.is_started:
            bar.__exit__(None, None, None)
    if not quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"results and report in {path}", file=sys.stderr)
    return path
