"""Suite definitions (JSON files in invdiff/bench/suites, shipped with the package): dataset, image count, prior, tasks with their options,
methods per task, seeds, steps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

SUITES_DIR = Path(__file__).resolve().parent / "suites"  # package data: works from an installed wheel


@dataclass(frozen=True)
class TaskSpec:
    task: str
    options: dict = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ()
    #: a Palette model solving this task (method "palette" with that prior)
    palette: str | None = None
    #: per-method hyper-parameters for this task only (over the suite's and the task's presets), e.g. DPS's released ζ;
    #: restore's ``samples`` (K) and ``select`` may be among them: the mean of K samples (or the one chosen by the
    #: measurement) is scored, and the row counts the network evaluations of all K
    hyper_parameters: dict = field(default_factory=dict)
    #: per-method step counts for this task only (over the suite's)
    steps: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()) if k not in ("noise_sigma",))
        return self.task + (f"[{extra}]" if extra else "")


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: dict
    #: the unconditional prior of the diffusion methods (None: given at run time with --prior)
    prior: str | None
    tasks: tuple[TaskSpec, ...]
    count: int
    seed: int = 0
    batch_size: int = 16
    noise_sigma: float = 0.05
    steps: dict = field(default_factory=dict)
    hyper_parameters: dict = field(default_factory=dict)
    description: str = ""
    #: set by --steps: every method runs this many steps
    steps_override: int | None = None

    def all_methods(self) -> list[str]:
        """Every diffusion method the suite runs (Palette included where a task names a Palette prior)."""
        names = []
        for t in self.tasks:
            for m in (*t.methods, *(("palette",) if t.palette else ())):
                if m not in names:
                    names.append(m)
        return names

    def images(self, limit: int | None = None) -> Tensor:
        n = self.count if limit is None else min(self.count, limit)
        kind = self.dataset.get("kind") if isinstance(self.dataset, dict) else None
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
        raise ValueError(f"suite {self.name}: unknown dataset kind {kind!r} (fmnist, validation-photos, folder, random)")


def load_suite(name_or_path: str | Path) -> Suite:
    p = Path(name_or_path)
    if not p.is_file():
        p = SUITES_DIR / f"{name_or_path}.json"
    if not p.is_file():
        known = ", ".join(sorted(q.stem for q in SUITES_DIR.glob("*.json")))
        raise ValueError(f"unknown suite {name_or_path!r}; bundled suites: {known}")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"suite {p} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"suite {p} must be a JSON object")
    missing = [k for k in ("dataset", "count", "tasks") if k not in d]
    if missing:
        raise ValueError(f"suite {p.name} lacks {', '.join(missing)}")
    from ..baselines import BASELINES
    from ..samplers.registry import METHODS
    from ..tasks import TASKS

    try:
        tasks = tuple(TaskSpec(task=t["task"], options=dict(t.get("options", {})), methods=tuple(t.get("methods", ())),
                               baselines=tuple(t.get("baselines", ())), palette=t.get("palette"),
                               hyper_parameters=dict(t.get("hyper_parameters", {})),
                               steps={str(k): int(v) for k, v in dict(t.get("steps", {})).items()}) for t in d["tasks"])
        count, seed, batch = int(d["count"]), int(d.get("seed", 0)), int(d.get("batch_size", 16))
        steps = {str(k): int(v) for k, v in dict(d.get("steps", {})).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"suite {p.name} is malformed: {e.__class__.__name__}: {e}") from None
    for t in tasks:
        if t.task not in TASKS:
            raise ValueError(f"suite {p.name}: unknown task {t.task!r}")
        for m in t.methods:
            if m not in METHODS or m == "palette":
                raise ValueError(f"suite {p.name}: unknown method {m!r} for {t.task}")
        for b in t.baselines:
            if b not in BASELINES:
                raise ValueError(f"suite {p.name}: unknown baseline {b!r} for {t.task}")
    if count < 1 or batch < 1 or any(v < 1 for v in steps.values()) or not 0 <= seed < 2**40:
        raise ValueError(f"suite {p.name}: count, batch_size and steps must be positive, seed in [0, 2**40)")
    return Suite(name=d.get("name", p.stem), dataset=d["dataset"], prior=d.get("prior"), tasks=tasks, count=count,
                 seed=seed, batch_size=batch, noise_sigma=float(d.get("noise_sigma", 0.05)), steps=steps,
                 hyper_parameters=dict(d.get("hyper_parameters", {})), description=d.get("description", ""))
