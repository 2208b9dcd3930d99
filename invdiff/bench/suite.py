"""Suite definitions (JSON files in benchmarks/suites): dataset, image count, prior, tasks with their options,
methods per task, seeds, steps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

SUITES_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"


@dataclass(frozen=True)
class TaskSpec:
    task: str
    options: dict = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ()
    #: a Palette model solving this task (method "palette" with that prior)
    palette: str | None = None

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()) if k not in ("noise_sigma",))
        return self.task + (f"[{extra}]" if extra else "")


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: dict
    prior: str
    tasks: tuple[TaskSpec, ...]
    count: int
    seed: int = 0
    batch_size: int = 16
    noise_sigma: float = 0.05
    steps: dict = field(default_factory=dict)
    hyper_parameters: dict = field(default_factory=dict)
    description: str = ""

    def images(self, limit: int | None = None) -> Tensor:
        n = self.count if limit is None else min(self.count, limit)
        kind = self.dataset["kind"]
        if kind == "fmnist":
            from ..data import fashion_mnist

            x, _ = fashion_mnist(self.dataset.get("split", "test"))
            return x[:n]
        if kind == "validation-photos":
            from ..data import validation_photos

            return validation_photos(int(self.dataset.get("size", 256)))[:n]
        if kind == "folder":
            from ..data import load_folder

            return load_folder(self.dataset["path"], channels=int(self.dataset.get("channels", 3)),
                               size=self.dataset.get("size"), limit=n)
        if kind == "random":  # for tests of the machinery
            g = torch.Generator().manual_seed(int(self.dataset.get("seed", 0)))
            c, s = int(self.dataset.get("channels", 1)), int(self.dataset.get("size", 16))
            return (torch.rand(n, c, s, s, generator=g) * 2 - 1).clamp(-1, 1)
        raise ValueError(f"unknown dataset kind {kind!r}")


def load_suite(name_or_path: str | Path) -> Suite:
    p = Path(name_or_path)
    if not p.is_file():
        p = SUITES_DIR / f"{name_or_path}.json"
    if not p.is_file():
        known = ", ".join(sorted(q.stem for q in SUITES_DIR.glob("*.json")))
        raise ValueError(f"unknown suite {name_or_path!r}; bundled suites: {known}")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"suite {p} is not valid JSON: {e}") from None
    tasks = tuple(TaskSpec(task=t["task"], options=dict(t.get("options", {})), methods=tuple(t.get("methods", ())),
                           baselines=tuple(t.get("baselines", ())), palette=t.get("palette")) for t in d["tasks"])
    from ..tasks import TASKS

    for t in tasks:
        if t.task not in TASKS:
            raise ValueError(f"suite {p.name}: unknown task {t.task!r}")
    return Suite(name=d.get("name", p.stem), dataset=d["dataset"], prior=d["prior"], tasks=tasks, count=int(d["count"]),
                 seed=int(d.get("seed", 0)), batch_size=int(d.get("batch_size", 16)),
                 noise_sigma=float(d.get("noise_sigma", 0.05)), steps=dict(d.get("steps", {})),
                 hyper_parameters=dict(d.get("hyper_parameters", {})), description=d.get("description", ""))
