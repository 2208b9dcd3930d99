"""The final restoration of a blind kernel with its error modelled per frequency, on the declared tuning split only.

After the kernel EM, solve restores with the refined kernel k̂ as if it were known, its remaining error taken as
white extra noise of level τ (``kernel_error_lam``). But y − k̂ * x = (k − k̂) * x + n: the kernel's error is
multiplied by the image's spectrum, so it is large where the image has energy (low and middle frequencies) and
negligible where it has none. For an error δ = k − k̂ of relative size ε (‖δ‖ = ε‖k̂‖) with no preferred phase,
E|Δ(f)|² = ε²‖k̂‖² (zero-sum and centred kernels: times a ramp 1 − exp(−|ω|²L²/2) that takes it to 0 at DC,
L the kernel's RMS radius), so the residual's variance at frequency f is σ² + ε²‖k̂‖² |X(f)|² (orthonormal FFT).
DiffPIR's data step then weights the residual by w(f) = σ² / (σ² + ε²‖k̂‖² P(f)) (P: the prior's x̂0's power
spectrum, smoothed over 5×5 frequencies, the channels' mean), solved by conjugate gradients; w ≡ 1/(1 + τ²/σ²)
is the white model solve uses.

Reads the refined kernels that ``blind_em_tuning.py --save-kernels DIR`` saved, and restores each case with the
true kernel (the preset), with the white τ (solve's final restoration, as a check against the run's recorded
PSNR) and with the spectral model for each ε given:

    python benchmarks/blind_uncertain_probe.py --kernels runs/select/em --eps 0.2 0.4 \\
        --out benchmarks/blind/tuning_uncertain.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blind_motion import _photos, aligned, blurred


def residual_weight(x0: torch.Tensor, k: torch.Tensor, sigma: float, eps: float, smooth: int = 5) -> torch.Tensor:
    """w(f) = σ² / (σ² + ε²‖k‖² ramp(f) P(f)) on the full FFT grid of x0's size, (B, 1, H, W)."""
    h, w = x0.shape[-2:]
    p = torch.fft.fft2(x0.double(), norm="ortho").abs().square().mean(1, keepdim=True)
    r = smooth // 2
    p = F.avg_pool2d(F.pad(p, (r, r, r, r), mode="circular"), smooth, stride=1)
    kk = k.double()
    yy, xx = torch.meshgrid(torch.arange(kk.shape[-2], dtype=kk.dtype), torch.arange(kk.shape[-1], dtype=kk.dtype),
                            indexing="ij")
    cy, cx = (kk * yy).sum() / kk.sum(), (kk * xx).sum() / kk.sum()
    l2 = float((kk * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / kk.sum())
    wy = 2 * math.pi * torch.fft.fftfreq(h, dtype=kk.dtype)
    wx = 2 * math.pi * torch.fft.fftfreq(w, dtype=kk.dtype)
    om2 = wy[:, None] ** 2 + wx[None, :] ** 2
    ramp = 1 - torch.exp(-om2 * l2 / 2)
    v = eps ** 2 * float(kk.square().sum()) * ramp * p
    return (sigma ** 2 / (sigma ** 2 + v)).float()


def uncertain_blur(k: torch.Tensor, sigma: float, eps: float):
    """``ops.Blur(k)`` whose data step (``prox``) weights the residual by ``residual_weight`` of its x0."""
    from invdiff import operators as ops
    from invdiff.operators.base import _per_image, conjugate_gradient

    class UncertainBlur(ops.Blur):
        def prox(self, x0, y, rho, *, tol: float = 1e-5, iters: int = 50, **_):
            wf = residual_weight(x0, self.kernel[0], sigma, eps)

            def weigh(r):
                return torch.fft.ifft2(torch.fft.fft2(r) * wf).real

            r4 = _per_image(rho, x0)
            delta = conjugate_gradient(lambda v: torch.addcmul(self.adjoint(weigh(self(v))), r4, v),
                                       self.adjoint(weigh(y - self(x0))), iters=iters, tol=tol)
            return delta.add_(x0)

    return UncertainBlur(k, padding="reflect")


def restore(y, op, s: float, i: int, prior, preset, options: dict | None = None) -> torch.Tensor:
    """The motion-deblur preset restoring y with the operator op, on the seeded stream of photo i (as
    ``blind_motion._diffpir``)."""
    from invdiff import operators as ops
    from invdiff.rng import make_generators
    from invdiff.samplers import restore as run
    from invdiff.tasks import get_task

    hp = {**preset.run_hyper_parameters(get_task("motion-deblur")), **(options or {})}
    steps = hp.pop("steps", preset.steps)
    with torch.no_grad():
        return run(y, op, ops.GaussianNoise(s), prior, method=preset.method, steps=steps,
                   generator=make_generators(0, 1, purpose="sample", start=i), **hp).samples[0]


def main() -> None:
    from invdiff import operators as ops
    from invdiff.blind import kernel_error, kernel_error_lam
    from invdiff.metrics import psnr
    from invdiff.prior import load
    from invdiff.tasks import get_task, solve_preset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=Path, required=True, help="a --save-kernels folder of blind_em_tuning.py")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.2, 0.4])
    ap.add_argument("--tau", type=float, default=0.02, help="the white model's τ (solve's)")
    ap.add_argument("--eps-tau", action="store_true", help="also each ε with the white τ's λ on top")
    ap.add_argument("--true-kernel", action="store_true", help="also the spectral model with the true kernel")
    ap.add_argument("--source", choices=("refined", "classical"), default="refined",
                    help="restore the run's refined kernel, or the classical estimate it started from")
    ap.add_argument("--no-true", action="store_true", help="skip the true kernel's restoration (known from a run)")
    ap.add_argument("--prior", default="natural64")
    ap.add_argument("--noise", type=float, nargs=2, default=[0.02, 0.05])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    prior = load(a.prior)
    files = sorted(a.kernels.glob("case_*_*.pt"), key=lambda p: tuple(int(v) for v in p.stem.split("_")[1:]))
    cases = [tuple(int(v) for v in p.stem.split("_")[1:]) for p in files]
    xs, names = _photos("tuning", max(i for i, _ in cases) + 1)
    preset = solve_preset("motion-deblur")
    lam = preset.run_hyper_parameters(get_task("motion-deblur")).get("lam")
    rows = []
    for (i, j), f in zip(cases, files):
        s = a.noise[(i + j) % 2]
        x = xs[i: i + 1]
        _, y, k_true = blurred(x, i, j, s)
        saved = torch.load(f, weights_only=False)
        k = aligned(saved["kernels"][0] if a.source == "refined" else saved["k0"], k_true)
        t0 = time.perf_counter()

        def score(op, options=None):
            return round(float(psnr(restore(y, op, s, i, prior, preset, options), x)[0]), 3)

        row = {"name": names[i], "photo": i, "kernel": j, "noise_sigma": s,
               "kernel_error": round(kernel_error(k, k_true), 4),
               "true": None if a.no_true else score(ops.Blur(k_true, padding="reflect")),
               "white": score(ops.Blur(k, padding="reflect"), {"lam": kernel_error_lam(lam, a.tau, s)}),
               "spectral": {str(e): score(uncertain_blur(k, s, e)) for e in a.eps}}
        if a.eps_tau:
            row["spectral_white"] = {str(e): score(uncertain_blur(k, s, e), {"lam": kernel_error_lam(lam, a.tau, s)})
                                     for e in a.eps}
        if a.true_kernel:
            row["spectral_true"] = {str(e): score(uncertain_blur(k_true, s, e)) for e in a.eps}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        _write(a, rows)


def _write(a, rows: list[dict]) -> None:
    def mean(v):
        return round(sum(v) / len(v), 3)

    m = {"white": mean([r["white"] for r in rows])}
    if all(r["true"] is not None for r in rows):
        m["true"] = mean([r["true"] for r in rows])
    for key in ("spectral", "spectral_white", "spectral_true"):
        for e in a.eps:
            if all(key in r for r in rows):
                m[f"{key} {e}"] = mean([r[key][str(e)] for r in rows])
    a.out.write_text(json.dumps({"prior": a.prior, "kernels": str(a.kernels), "source": a.source, "tau": a.tau,
                                 "cases": len(rows),
                                 "mean": m, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
