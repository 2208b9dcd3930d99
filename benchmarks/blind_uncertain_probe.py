"""The final restoration of a blind kernel with its error modelled per frequency, on the declared tuning split only.

After the kernel EM, solve restores with the refined kernel k̂ as if it were known, its remaining error taken as
white extra noise of level τ (``kernel_error_lam``). But y − k̂ * x = (k − k̂) * x + n: the kernel's error is
multiplied by the image's spectrum, so it is large where the image has energy (low and middle frequencies) and
negligible where it has none. For an error δ = k − k̂ of relative size ε (‖δ‖ = ε‖k̂‖) with no preferred phase,
E|Δ(f)|² = ε²‖k̂‖² (zero-sum and centred kernels: times a ramp 1 − exp(−|ω|²L²/2) that takes it to 0 at DC,
L the kernel's RMS radius), so the residual's variance at frequency f is σ² + ε²‖k̂‖² |X(f)|² (orthonormal FFT).
DiffPIR's data step then weights the residual by w(f) = σ² / (σ² + ε²‖k̂‖² P(f)) (P: the prior's x̂0's power
spectrum, smoothed over 5×5 frequencies, the channels' mean), solved by conjugate gradients; w ≡ 1/(1 + τ²/σ²)
is the white model solve uses (``blind_motion.uncertain_blur``; ``blind_motion._diffpir``'s option
``kernel_uncertainty`` = ε).

Reads the refined kernels that ``blind_em_tuning.py --save-kernels DIR`` saved, and restores each case with the
true kernel (the preset), with the white τ (solve's final restoration, as a check against the run's recorded
PSNR) and with the spectral model for each ε given:

    python benchmarks/blind_uncertain_probe.py --kernels runs/select/em --eps 0.2 0.4 \\
        --out benchmarks/blind/tuning_uncertain.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blind_motion import _diffpir, _photos, aligned, blurred


def main() -> None:
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

        def score(kernel, options=None):
            return round(float(psnr(_diffpir(y, kernel, s, i, prior, preset, options), x)[0]), 3)

        def spectral(kernel, e, options=None):
            return score(kernel, {**(options or {}), "kernel_uncertainty": e})

        row = {"name": names[i], "photo": i, "kernel": j, "noise_sigma": s,
               "kernel_error": round(kernel_error(k, k_true), 4),
               "true": None if a.no_true else score(k_true),
               "white": score(k, {"lam": kernel_error_lam(lam, a.tau, s)}),
               "spectral": {str(e): spectral(k, e) for e in a.eps}}
        if a.eps_tau:
            row["spectral_white"] = {str(e): spectral(k, e, {"lam": kernel_error_lam(lam, a.tau, s)}) for e in a.eps}
        if a.true_kernel:
            row["spectral_true"] = {str(e): spectral(k_true, e) for e in a.eps}
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
