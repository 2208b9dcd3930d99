"""``invdiff bench``: run a suite (resumable; sharded under torchrun), rebuild its report, or measure speed."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="invdiff bench", description="Run a benchmark suite (benchmarks/suites/NAME.json "
                                 "or a path). Rerunning resumes; under torchrun each process takes its share of images.")
    ap.add_argument("suite", help="suite name (fmnist, natural, dps-ffhq, ...) or path to a suite JSON")
    ap.add_argument("--out", default=None, help="output folder (default: benchmarks/results/SUITE)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of the dataset")
    ap.add_argument("--tasks", default=None, help="comma-separated subset of tasks")
    ap.add_argument("--methods", default=None, help="comma-separated subset of methods (baselines by name, or 'baselines')")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available; LOCAL_RANK under torchrun)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from the results already there")
    ap.add_argument("--lpips-backbone", default=None, help="AlexNet weights for LPIPS (else INVDIFF_LPIPS_BACKBONE / hub cache)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    import os
    from pathlib import Path

    import torch

    from .runner import run_suite
    from .suite import SUITES_DIR, load_suite

    suite = load_suite(a.suite)
    out = Path(a.out) if a.out else SUITES_DIR.parent / "results" / suite.name
    if a.report_only:
        from .report import write_report

        print(write_report(suite, out))
        return
    dev = a.device
    if dev is None:
        dev = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    progress = None
    bar = None
    if not a.quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.console import Console

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=Console(stderr=True))
        bar.__enter__()
        tid = bar.add_task(suite.name, total=None)

        def progress(done, total, what):
            bar.update(tid, completed=done, total=total, description=f"{suite.name}: {what}")

    try:
        path = run_suite(suite, out, limit=a.limit, device=dev, tasks=a.tasks.split(",") if a.tasks else None,
                         methods=a.methods.split(",") if a.methods else None, batch_size=a.batch_size, progress=progress,
                         lpips_backbone=a.lpips_backbone)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if not a.quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"results and report in {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
