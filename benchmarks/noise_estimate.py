"""The noise level of a measured photo (``invdiff.io.estimate_noise_sigma``, what ``solve`` uses unless
--noise-sigma is given): Donoho's wavelet rule (``mad``) against Chen, Zhu & Heng's patch PCA (``pca``).

1. ``estimates``: photos of a split at 256×256, degraded as measured photos arrive (sharp; Gaussian blur σ = 3; the
   motion-deblur task's kernel 0; the SR task's ×4 bicubic downsampling, 64×64; and grey versions, sharp, blurred
   and downsampled), Gaussian noise σ ∈ {0, 0.01, 0.02,
   0.05, 0.1} on [-1, 1] from a seeded stream, saved as 8-bit (so the truth is √(σ² + q²), q = (2/255)/√12 the
   rounding's); the estimate of each estimator (``auto``, the default; the wavelet rule; PCA with several patch sides; PCA on
   weakly textured patches) and its absolute error.
2. ``restore``: end to end, ``solve``'s default prior and preset on the SR and denoising measurements, the noise level
   given as the default estimate (``auto``), the wavelet rule's or the truth; PSNR of the restored 8-bit file against the clean photo.

    OMP_NUM_THREADS=1 python benchmarks/noise_estimate.py estimates --split tuning --json benchmarks/noise/estimates_tuning.json
    OMP_NUM_THREADS=1 python benchmarks/noise_estimate.py restore --split suite --json benchmarks/noise/restore_suite.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

SIGMAS = (0.0, 0.01, 0.02, 0.05, 0.1)
QUANT = (2 / 255) / math.sqrt(12)
DEGRADATIONS = ("sharp", "gaussian", "motion", "sr4", "grey-sharp", "grey-gaussian", "grey-sr4")


def degrade(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The noiseless measurement of the clean photo x (1, 3, 256, 256) for each kind of DEGRADATIONS."""
    from invdiff.rng import make_generators
    from invdiff.tasks import TaskOptions, get_task

    if kind.startswith("grey-"):  # a grey photo: the clean photo's channel mean, then the degradation
        return degrade(x.mean(1, keepdim=True), kind[len("grey-"):])
    if kind == "sharp":
        return x
    task = {"gaussian": "deblur", "motion": "motion-deblur", "sr4": "sr"}[kind]
    op = get_task(task).operator(x.shape, TaskOptions(), generator=make_generators(0, 1, purpose="blind-motion-kernel"))
    with torch.no_grad():
        return op(x)


def measured(y: torch.Tensor, s: float, seed: int) -> torch.Tensor:
    """y with noise of σ = s (seeded) as an 8-bit file would hold it, on [-1, 1]."""
    n = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return (((y + s * n).clamp(-1, 1) + 1) / 2 * 255).round() / 255 * 2 - 1


def estimators(patches: list[int], weak_patches: list[int]) -> dict:
    from invdiff.io import estimate_noise_sigma

    out = {"auto": lambda y: estimate_noise_sigma(y), "mad": lambda y: estimate_noise_sigma(y, "mad")}
    for p in patches:
        out[f"pca{p}"] = lambda y, p=p: estimate_noise_sigma(y, "pca", patch=p)
    out["weak"] = lambda y: estimate_noise_sigma(y, "weak")
    for p in weak_patches:
        out[f"weak{p}"] = lambda y, p=p: estimate_noise_sigma(y, "weak", patch=p)
    return out


def estimates(xs, names, patches: list[int], weak_patches: list[int] = (), kinds=DEGRADATIONS) -> dict:
    est, rows = estimators(patches, list(weak_patches)), []
    for kind in kinds:
        for i, name in enumerate(names):
            y0 = degrade(xs[i: i + 1], kind)
            for j, s in enumerate(SIGMAS):
                y = measured(y0, s, 100 * i + j)
                truth = math.sqrt(s * s + QUANT * QUANT)
                rows.append({"photo": name, "degradation": kind, "sigma": s, "truth": round(truth, 5),
                             **{k: round(f(y), 5) for k, f in est.items()}})
        print(kind, json.dumps(summary(rows, list(est), kind)), flush=True)
    return {"rows": rows, "summary": {k: summary(rows, list(est), k) for k in (*kinds, None)}}


def summary(rows: list[dict], names: list[str], kind: str | None) -> dict:
    """Mean absolute error of each estimator (on [-1, 1]), over the rows of one degradation (or all), and per σ."""
    sel = [r for r in rows if kind is None or r["degradation"] == kind]
    out = {"all": {k: round(sum(abs(r[k] - r["truth"]) for r in sel) / len(sel), 5) for k in names}}
    for s in SIGMAS:
        ss = [r for r in sel if r["sigma"] == s]
        out[str(s)] = {k: round(sum(abs(r[k] - r["truth"]) for r in ss) / len(ss), 5) for k in names}
    return out


def score_arms(path: Path, x: torch.Tensor, task: str, arms: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """``solve`` the measured file once per arm (its SolveRequest keywords), next to it: {arm: (the noise level
    solve used, PSNR of the restored file against the clean photo x)}."""
    from invdiff.io import read_image
    from invdiff.metrics import psnr
    from invdiff.solve import SolveRequest, solve

    out = {}
    for arm, kw in arms.items():
        rep = solve(SolveRequest(image=path, task=task, out=path.parent / arm, **kw))
        x_hat = read_image(rep["files"]["restored"], channels=3)
        out[arm] = (round(rep["degradation"]["noise_sigma"]["value"], 5), round(float(psnr(x_hat, x)[0]), 3))
    return out


def restore_rows(xs, names, tasks: list[str], sigmas: list[float]) -> list[dict]:
    """End to end through ``solve`` (measured mode, the default prior and preset), σ given as each estimate."""
    from invdiff.io import estimate_noise_sigma, write_image

    rows = []
    for task in tasks:
        kind = {"sr": "sr4", "denoise": "sharp"}[task]
        for i, name in enumerate(names):
            y0 = degrade(xs[i: i + 1], kind)
            for j, s in enumerate(sigmas):
                y = measured(y0, s, 100 * i + SIGMAS.index(s))
                arms = {"truth": math.sqrt(s * s + QUANT * QUANT), "mad": estimate_noise_sigma(y, "mad"),
                        "auto": estimate_noise_sigma(y)}
                row = {"photo": name, "task": task, "sigma": s, "sigma_given": {}, "psnr": {}}
                with tempfile.TemporaryDirectory() as tmp:
                    write_image(Path(tmp) / f"{name}.png", y)
                    scores = score_arms(Path(tmp) / f"{name}.png", xs[i: i + 1], task,
                                        {arm: {"noise_sigma": v} for arm, v in arms.items()})
                    for arm, v in arms.items():
                        row["sigma_given"][arm] = round(v, 5)
                        row["psnr"][arm] = scores[arm][1]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from blind_motion import _photos

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("estimates", "restore"))
    ap.add_argument("--split", choices=("tuning", "suite"), default="tuning")
    ap.add_argument("--patches", type=int, nargs="+", default=[5, 7, 9])
    ap.add_argument("--weak-patches", type=int, nargs="*", default=[],
                    help="also the weak-texture estimate with these patch sides (forced, before the size rule)")
    ap.add_argument("--degradations", nargs="+", choices=DEGRADATIONS, default=list(DEGRADATIONS))
    ap.add_argument("--tasks", nargs="+", default=["sr", "denoise"])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.02, 0.05])
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    xs, names = _photos(a.split, 6)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    if a.mode == "estimates":
        out = {"split": a.split, "names": names, **estimates(xs, names, a.patches, a.weak_patches, a.degradations)}
    else:
        out = {"split": a.split, "names": names, "rows": restore_rows(xs, names, a.tasks, a.sigmas)}
    a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
