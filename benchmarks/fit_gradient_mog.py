"""Fit the zero-mean Gaussian mixture of natural-photo derivatives that ``blind_marginal.py`` uses as its image prior
(Levin et al. 2011 fit theirs to natural images; we fit ours to the natural prior's training photos).

    python benchmarks/fit_gradient_mog.py [--photos data/natural] [--components 4]

Horizontal and vertical forward differences of each training photo's grey image on the [0, 1] scale, at full size
and shrunk by 2 and 4 (the estimator's pyramid sees every scale), a fixed subsample; EM for the mixture's weights
and inverse variances. Prints the two lists to paste into ``blind_marginal.py``. Never the validation photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def derivatives(path: Path, rng: np.random.Generator, per_image: int) -> np.ndarray:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    out = []
    for f in (1, 2, 4):
        g = np.asarray(Image.fromarray((grey * 255).astype(np.uint8)).reduce(f), dtype=np.float64) / 255.0 \
            if f > 1 else grey
        d = np.concatenate([np.diff(g, axis=1).ravel(), np.diff(g, axis=0).ravel()])
        out.append(rng.choice(d, size=min(per_image, d.size), replace=False))
    return np.concatenate(out)


def fit(d: np.ndarray, components: int, iters: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """EM for a zero-mean mixture: weights π and inverse variances (precisions), from spread-out starts."""
    pis = np.full(components, 1.0 / components)
    ivars = 1.0 / (np.var(d) * np.logspace(-2, 1, components))
    d2 = d * d
    for _ in range(iters):
        logp = np.log(pis) + 0.5 * np.log(ivars) - 0.5 * d2[:, None] * ivars
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        n = r.sum(0)
        pis = n / n.sum()
        ivars = n / np.maximum((r * d2[:, None]).sum(0), 1e-12)
    order = np.argsort(-ivars)
    return pis[order], ivars[order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="data/natural")
    ap.add_argument("--components", type=int, default=4)
    ap.add_argument("--per-image", type=int, default=20000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    paths = sorted(Path(a.photos).glob("*.png"))
    if not paths:
        raise SystemExit(f"no photos in {a.photos}: build them with scripts/build_natural_data.py")
    d = np.concatenate([derivatives(p, rng, a.per_image) for p in paths])
    pis, ivars = fit(d, a.components)
    print(json.dumps({"photos": len(paths), "samples": int(d.size), "pis": [round(float(v), 5) for v in pis],
                      "ivars": [float(f"{v:.5g}") for v in ivars]}))


if __name__ == "__main__":
    main()
