"""Benchmark suites: every task × method (and classical baseline) over a dataset, scored per image, resumable and
sharded over processes with torchrun; reports as Markdown/CSV tables, image grids and a PSNR-vs-NFE plot."""

from .runner import run_suite
from .suite import Suite, load_suite

__all__ = ["Suite", "load_suite", "run_suite"]
