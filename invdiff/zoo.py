"""Registry of bundled priors: name -> weights file (safetensors) + JSON config in ``invdiff/weights``. Loading
(by name, path or foreign checkpoint) is ``invdiff.prior.load``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    @property
    def config(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.json"

    @property
    def available(self) -> bool:
        return self.weights.is_file() and self.config.is_file()

    def info(self) -> dict:
        return json.loads(self.config.read_text()) if self.config.is_file() else {}


PRIORS: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("natural64", "natural photographs, RGB, trained on 64x64 patches; any image size (default)"),
        ZooEntry("natural", "natural photographs, RGB: natural64 trained further in legs (see its card's ledger); any image size"),
        ZooEntry("fmnist32", "Fashion-MNIST, grey 32x32, unconditional"),
        ZooEntry("fmnist32-palette-sr4", "Fashion-MNIST, Palette conditional model for x4 super-resolution (8x8 -> 32x32)"),
        ZooEntry("fmnist32-palette-inpaint", "Fashion-MNIST, Palette conditional model for box inpainting"),
        ZooEntry("fmnist32-cond", "Fashion-MNIST, class-conditional with classifier-free guidance (invdiff sample --label)"),
        ZooEntry("natural-palette-colorize", "natural photographs, Palette conditional model for colourisation (grey -> "
                                             "RGB); any image size"),
        ZooEntry("natural-palette-sr4", "natural photographs, Palette conditional model for x4 super-resolution (the "
                                        "bicubic upsampling as condition); any image size"),
    ]
}
#: the bundled default; ``default_prior()`` may prefer a better prior that is installed (solve_presets.json)
DEFAULT_PRIOR = "natural64"


def installed(name: str) -> bool:
    """A bundled prior with its files, or a composite ``<denoiser>+<bundled prior>`` whose denoiser weights are
    installed (``invdiff.denoisers.DENOISERS``)."""
    if name in PRIORS:
        return PRIORS[name].available
    left, plus, right = name.partition("+")
    if not plus or right not in PRIORS or not PRIORS[right].available:
        return False
    from .denoisers import DENOISERS

    try:
        DENOISERS[left].locate()
    except (KeyError, ValueError):
        return False
    return True


def default_prior() -> str:
    """The prior ``invdiff solve`` uses without --prior: the first installed one of the order the tuning chose
    (``invdiff/data/solve_presets.json``, ``default_priors``), else ``DEFAULT_PRIOR``."""
    from .tasks import solve_prior_order

    return next((n for n in solve_prior_order() if installed(n)), DEFAULT_PRIOR)


def palette_models(condition: str | None) -> list[str]:
    """The installed bundled Palette models trained for a Palette condition (``invdiff.tasks.PALETTE_CONDITIONS``)."""
    if condition is None:
        return []
    return [e.name for e in PRIORS.values() if e.available and (e.info().get("data") or {}).get("condition") == condition]
