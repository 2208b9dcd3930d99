"""Choose the kernel-EM M-step on the declared tuning split (data/tuning), never on the suite's photos.

For each case (tuning photo i, motion-deblur kernel j of the stream ``blind-motion-kernel``, noise σ): the blurred
photo as in ``blind_motion.py``, the classical estimate once (``estimate_motion_kernel``), its restoration by the
blind variant (no EM), the true kernel's restoration by the preset, and then, for every M-step setting given,
``--rounds`` rounds of ``refine_kernel_em`` (E-step: the blind variant, as ``invdiff solve`` runs it) and the
refined kernel (aligned) restored by the preset. Records per round the kernel error and the kernel's relative
change, so a stopping or fall-back rule can be read off the same runs. Writes a JSON next to the others:

    python benchmarks/blind_em_tuning.py --settings '{"smooth": 0.3}' '{"smooth": 1.0}' --out benchmarks/blind/x.json

A setting's ``em_samples`` (K posterior samples per E-step, the M-step fitting all K: ``kernel_em_samples``) and
``e_step`` (the E-step restoration's options, e.g. ``{"lam": 28}``, ``{"start": 1.0, "steps": 100}``,
``{"lam": 4, "kernel_uncertainty": 0.6}``: the kernel's error per frequency, ``blind_uncertain_probe.py``) belong to the
E-step, ``init_kernel`` (``classical``: the estimate, as solve; ``fitted``: the estimate again in the window that fits its
support, ``fit_size``; ``dirac``: a delta, as Fast Diffusion EM starts;
``saved:DIR``: an earlier run's refined kernel) to the start; the rest is the M-step's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blind_motion import _diffpir, _photos, aligned, blurred


def _case(x, i: int, j: int, s: float, prior, settings: list[dict], rounds: int, kernel_size: int,
          score_rounds: list[int], final_tau: list[float] = (), tau_hat: bool = False,
          save: Path | None = None) -> dict:
    from invdiff.blind import (estimate_motion_kernel, fitted_kernel_size, kernel_error, kernel_error_lam,
                               refine_kernel_em)
    from invdiff.measured import kernel_prior_for
    from invdiff.metrics import psnr
    from invdiff.tasks import get_task, solve_preset

    op, y, k_true = blurred(x, i, j, s)
    preset = solve_preset("motion-deblur")
    kp = kernel_prior_for(get_task("motion-deblur"), preset)[0]  # the classical estimate as solve makes it
    k0 = estimate_motion_kernel(y, None, s, kernel_size=kernel_size, kernel_prior=kp).kernel
    blind = preset.for_operator(op, blind=True)

    def score(k, pre, purpose="sample", options=None):
        return round(float(psnr(_diffpir(y, k, s, i, prior, pre, options, purpose), x)[0]), 3)

    lam = preset.run_hyper_parameters(get_task("motion-deblur")).get("lam")

    row = {"photo": i, "kernel": j, "noise_sigma": s, "psnr_blurry": round(float(psnr(y.clamp(-1, 1), x)[0]), 3),
           "true": score(k_true, preset), "kernel_error_classical": round(kernel_error(k0, k_true), 4),
           "no_em": score(aligned(k0, k_true), blind), "settings": []}
    saved = {"k_true": k_true, "k0": k0, "kernels": [], "last_e_step": []}
    for st in settings:
        t0 = time.perf_counter()
        errors, kernels, restored = [], [], []

        def e_step(kk, refit=None):
            errors.append(round(kernel_error(kk, k_true), 4))
            kernels.append(kk.clone())
            restored.append(_diffpir(y, kk, s, i, prior, blind, e_options, purpose="kernel-em", refit=refit,
                                     samples=n))
            return restored[-1]

        m_step = _resolved(st)
        # not the M-step's: K posterior samples per E-step (the Monte Carlo E-step), the E-step's own options
        n, e_options = int(m_step.pop("em_samples", 1)), m_step.pop("e_step", None)
        init = m_step.pop("init_kernel", "classical")
        start = _initial_kernel(init, k0, i, j) if init != "fitted" else estimate_motion_kernel(
            y, None, s, kernel_size=fitted_kernel_size(k0), kernel_prior=kp).kernel  # fit_size's second run
        if "kernel_prior" in m_step:  # update_kernel's name for it
            m_step["prior"] = m_step.pop("kernel_prior")
        k, hist = refine_kernel_em(y, start, e_step, rounds, **m_step)
        errors.append(round(kernel_error(k, k_true), 4))
        kernels.append(k)
        row["settings"].append({"setting": st, "kernel_error_rounds": errors[1:],
                                "change": [h["change"] for h in hist], "em": score(aligned(k, k_true), preset),
                                "em_rounds": {str(r): score(aligned(kernels[r], k_true), preset)
                                              for r in score_rounds if 0 < r < rounds},
                                "em_tau": {str(tau): score(aligned(k, k_true), preset,
                                                           options={"lam": kernel_error_lam(lam, tau, s)})
                                           for tau in final_tau},
                                "seconds": round(time.perf_counter() - t0, 1)})
        saved["kernels"].append(k)
        saved["last_e_step"].append(restored[-1])
        if tau_hat:  # the level of what the refined kernel cannot explain in the last E-step's restoration
            t_hat = residual_tau(y, k, restored[-1], s)
            row["settings"][-1].update({"tau_hat": round(t_hat, 5), "em_tau_hat": score(
                aligned(k, k_true), preset, options={"lam": kernel_error_lam(lam, t_hat, s)})})
    if save is not None:  # the kernels (and each setting's last E-step image) for selection rules read off later
        save.mkdir(parents=True, exist_ok=True)
        torch.save(saved, save / f"case_{i}_{j}.pt")
    return row


def _initial_kernel(name: str, k0, i: int, j: int):
    """The kernel the EM starts from: ``classical`` (the estimate, as solve starts), ``dirac`` (a centred delta of
    the estimate's size, as Laroche et al.'s Fast Diffusion EM starts its sampler from pure noise), or
    ``saved:DIR`` (the refined kernel an earlier run saved there with ``--save-kernels``, for chaining two EMs)."""
    if name == "classical":
        return k0
    if name == "dirac":
        k = torch.zeros_like(k0)
        k[k.shape[-2] // 2, k.shape[-1] // 2] = 1.0
        return k
    if name.startswith("saved:"):
        return torch.load(Path(name[len("saved:"):]) / f"case_{i}_{j}.pt")["kernels"][0]
    raise ValueError(f"init_kernel must be 'classical', 'dirac' or 'saved:DIR', got {name!r}")


def residual_tau(y, k, x, s: float) -> float:
    """√max(0, mean((y − k * x)²) − σ²): the level of the part of y that the kernel k and the restoration x do not
    explain beyond the noise, a no-reference stand-in for the kernel's error as noise (``kernel_error_lam``)."""
    from invdiff import operators as ops

    with torch.no_grad():
        r = y - ops.Blur(k, padding="reflect")(x)
    return max(float(r.square().mean()) - s * s, 0.0) ** 0.5


def _resolved(setting: dict) -> dict:
    """A setting with its ``kernel_prior`` spec (``invdiff.kernel_prior.from_spec``) loaded."""
    from invdiff.kernel_prior import from_spec

    return {**setting, "kernel_prior": from_spec(setting.get("kernel_prior"))}


def normalised_sparsity(x) -> float:
    """‖∇x‖₁/‖∇x‖₂ of the grey image, divided by √N (``invdiff.blind.gradient_sparsity`` of one image)."""
    from invdiff.blind import gradient_sparsity

    return float(gradient_sparsity(x[:1])[0])


def classical(xs, names: list[str], photos: list[int], kernels: list[int], noise: list[float], settings: list[dict],
              kernel_size: int, out_path: Path) -> None:
    """The classical estimator alone under each option set, on every (photo, kernel, σ) of the split: mean kernel
    error and the PSNR of TV deconvolution with the aligned estimate (a cheap stand-in for the restoration), and a
    no-reference score a rule could select by: the normalised sparsity ‖∇x‖₁/‖∇x‖₂ of that deconvolution (Krishnan
    et al. 2011; blur and ringing both raise it), divided by √N."""
    from invdiff import operators as ops
    from invdiff.baselines import run_baseline
    from invdiff.blind import estimate_motion_kernel, kernel_error
    from invdiff.metrics import psnr

    out = []
    for st in settings:
        rows = []
        for i, j, s in [(i, j, s) for j in kernels for i in photos for s in noise]:
            _, y, k_true = blurred(xs[i: i + 1], i, j, s)
            k = aligned(estimate_motion_kernel(y, None, s, kernel_size=kernel_size, **_resolved(st)).kernel, k_true)
            x_tv = run_baseline("tv", y, ops.Blur(k, padding="reflect"), s)
            rows.append({"photo": names[i], "kernel": j, "noise_sigma": s,
                         "kernel_error": round(kernel_error(k, k_true), 4),
                         "psnr_tv": round(float(psnr(x_tv, xs[i: i + 1])[0]), 3),
                         "l1_l2": round(normalised_sparsity(x_tv), 5)})
        out.append({"setting": st, "kernel_error": round(sum(r["kernel_error"] for r in rows) / len(rows), 4),
                    "psnr_tv": round(sum(r["psnr_tv"] for r in rows) / len(rows), 3), "rows": rows})
        print(json.dumps({k: v for k, v in out[-1].items() if k != "rows"}), flush=True)
        out_path.write_text(json.dumps({"protocol": "classical estimate only (estimate_motion_kernel), every photo x "
                                                    "kernel x noise of the split", "settings": out}, indent=1) + "\n")


def oracle(xs, names: list[str], cases: list[tuple[int, int, float]], settings: list[dict], final_tau: list[float],
           prior, out_path: Path) -> None:
    """The M-step's floor: its kernel when the E-step's image is the true sharp photo (an oracle E-step), for each
    M-step setting (over ``EM_KERNEL_UPDATE``), restored as solve restores a refined kernel (the preset, λ for each
    ``final_tau``, aligned) against the true kernel's restoration. What the kernel EM could reach if its E-step
    were exact."""
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, kernel_error, kernel_error_lam, update_kernel
    from invdiff.metrics import psnr
    from invdiff.tasks import get_task, solve_preset

    preset = solve_preset("motion-deblur")
    lam = preset.run_hyper_parameters(get_task("motion-deblur")).get("lam")
    rows = []
    for i, j, s in cases:
        x = xs[i: i + 1]
        _, y, k_true = blurred(x, i, j, s)

        def score(k, options=None):
            return round(float(psnr(_diffpir(y, k, s, i, prior, preset, options), x)[0]), 3)

        row = {"name": names[i], "photo": i, "kernel": j, "noise_sigma": s, "true": score(k_true), "settings": []}
        for st in settings:
            m_step = {**EM_KERNEL_UPDATE, **_resolved(st)}
            m_step["prior"] = m_step.pop("kernel_prior")
            k = aligned(centre_kernel(update_kernel(x, y, tuple(k_true.shape), **m_step)), k_true)
            row["settings"].append({"setting": st, "kernel_error": round(kernel_error(k, k_true), 4),
                                    "psnr_tau": {str(t): score(k, {"lam": kernel_error_lam(lam, t, s)})
                                                 for t in final_tau or [0.0]}})
        rows.append(row)
        print(json.dumps(row), flush=True)
        means = {"true": round(sum(r["true"] for r in rows) / len(rows), 3)}
        for n, st in enumerate(settings):
            means[f"{json.dumps(st)} kernel error"] = round(sum(r["settings"][n]["kernel_error"] for r in rows) / len(rows), 4)
            for t in final_tau or [0.0]:
                means[f"{json.dumps(st)}, tau {t}"] = round(sum(r["settings"][n]["psnr_tau"][str(t)] for r in rows)
                                                          / len(rows), 3)
        out_path.write_text(json.dumps({"protocol": "oracle E-step: the M-step on the true photo", "cases": len(rows),
                                        "mean": means, "rows": rows}, indent=1) + "\n")


def bias(xs, names: list[str], cases: list[tuple[int, int, float]], settings: list[dict], reblur: list[float],
         prior, out_path: Path) -> None:
    """The M-step at the EM's fixed point: its kernel from the E-step's restoration made with the *true* kernel
    (the blind variant, as the EM's E-step runs it), against its kernel from the true photo (the oracle), for each
    M-step setting (a setting's ``e_step``: the E-step's options), and with y low-passed by a Gaussian of each σ in
    ``reblur`` (px) before the fit: if the E-step's image is the photo smoothed by about that Gaussian, y smoothed
    the same way is the blur of that image by the true kernel (convolutions commute), and the fit is no longer pulled
    short. Kernel errors only (no restoration)."""
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, kernel_error, reblurred, update_kernel
    from invdiff.tasks import solve_preset

    preset = solve_preset("motion-deblur")
    rows = []
    for i, j, s in cases:
        x = xs[i: i + 1]
        op, y, k_true = blurred(x, i, j, s)
        blind = preset.for_operator(op, blind=True)
        images = {}  # the E-step's image per E-step option set
        row = {"name": names[i], "photo": i, "kernel": j, "noise_sigma": s, "settings": []}
        for st in settings:
            m_step = {**EM_KERNEL_UPDATE, **_resolved(st)}
            m_step["prior"] = m_step.pop("kernel_prior")
            e_options = m_step.pop("e_step", None)
            key = json.dumps(e_options, sort_keys=True)
            if key not in images:
                images[key] = _diffpir(y, k_true, s, i, prior, blind, e_options, purpose="kernel-em")
            x_hat = images[key]

            def err(img, yy):
                return round(kernel_error(aligned(centre_kernel(update_kernel(img, yy, tuple(k_true.shape), **m_step)),
                                                  k_true), k_true), 4)

            entry = {"setting": st, "oracle": err(x, y), "e_step": err(x_hat, y), "e_step_reblur": {}}
            for r in reblur:
                entry["e_step_reblur"][str(r)] = err(x_hat, reblurred(y, r))
            row["settings"].append(entry)
        rows.append(row)
        print(json.dumps(row), flush=True)
        means = {}
        for n, st in enumerate(settings):
            key = json.dumps(st)
            means[f"{key} oracle"] = round(sum(r["settings"][n]["oracle"] for r in rows) / len(rows), 4)
            means[f"{key} e_step"] = round(sum(r["settings"][n]["e_step"] for r in rows) / len(rows), 4)
            for rb in reblur:
                means[f"{key} e_step, y reblurred {rb}"] = round(
                    sum(r["settings"][n]["e_step_reblur"][str(rb)] for r in rows) / len(rows), 4)
        out_path.write_text(json.dumps({"protocol": "the M-step at the EM's fixed point: kernel errors from the "
                                                    "E-step image made with the true kernel", "cases": len(rows),
                                        "mean": means, "rows": rows}, indent=1) + "\n")


def main() -> None:
    from invdiff.prior import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, nargs="+", default=[0, 1, 2, 3], help="indices into the split's photos")
    ap.add_argument("--split", choices=("tuning", "hard"), default="tuning",
                    help="tuning: data/tuning; hard: blind_motion.HARD_PHOTOS, training photos for the classical "
                         "estimator's options only")
    ap.add_argument("--kernels", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--noise", type=float, nargs=2, default=[0.02, 0.05],
                    help="σ of case (i, j) is the first when i + j is even, else the second (a balanced design)")
    ap.add_argument("--settings", type=json.loads, nargs="+", required=True,
                    help="M-step options (refine_kernel_em), JSON each; with --classical estimate_motion_kernel's")
    ap.add_argument("--classical", action="store_true",
                    help="compare options of the classical estimator alone (kernel error, TV), every σ of --noise")
    ap.add_argument("--oracle", action="store_true",
                    help="the M-step's floor: each setting's M-step on the true photo, restored by the preset (oracle)")
    ap.add_argument("--bias", type=float, nargs="*", default=None, metavar="SIGMA",
                    help="the M-step at the EM's fixed point (E-step image from the true kernel), with y low-passed "
                         "by each Gaussian σ (px) given")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--score-rounds", type=int, nargs="*", default=[],
                    help="also restore (by the preset) the kernel after each of these rounds < --rounds")
    ap.add_argument("--final-tau", type=float, nargs="*", default=[],
                    help="also restore the refined kernel with the preset's λ scaled by 1 + τ²/σ² for each τ: the "
                         "kernel's error taken as extra noise of level τ (on [-1, 1]) in quadrature with σ")
    ap.add_argument("--tau-hat", action="store_true",
                    help="also restore the refined kernel with λ for τ̂ = the rms of y − k * x beyond σ, x the last "
                         "E-step's restoration (residual_tau)")
    ap.add_argument("--kernel-size", type=int, default=61)
    ap.add_argument("--prior", default="natural64")
    ap.add_argument("--previous", type=Path, default=None,
                    help="rows already run (JSON lines, in the cases' order, same settings): continue after them")
    ap.add_argument("--save-kernels", type=Path, default=None, metavar="DIR",
                    help="save each case's true, classical and refined kernels (and the last E-step images) there")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    prior = load(a.prior)
    xs, names = _photos(a.split, max(a.photos) + 1)
    if a.classical:
        return classical(xs, names, a.photos, a.kernels, a.noise, a.settings, a.kernel_size, a.out)
    if a.oracle:
        return oracle(xs, names, [(i, j, a.noise[(i + j) % 2]) for j in a.kernels for i in a.photos], a.settings,
                      a.final_tau, prior, a.out)
    if a.bias is not None:
        return bias(xs, names, [(i, j, a.noise[(i + j) % 2]) for j in a.kernels for i in a.photos], a.settings,
                    a.bias, prior, a.out)
    rows = [json.loads(line) for line in a.previous.read_text().splitlines() if line.strip()] if a.previous else []
    for i, j in [(i, j) for j in a.kernels for i in a.photos][len(rows):]:
        s = a.noise[(i + j) % 2]
        rows.append({"name": names[i], **_case(xs[i: i + 1], i, j, s, prior, a.settings, a.rounds, a.kernel_size,
                                                 a.score_rounds, a.final_tau, a.tau_hat, a.save_kernels)})
        print(json.dumps(rows[-1]), flush=True)
        _write(a, rows)
    _write(a, rows)


def _write(a, rows: list[dict]) -> None:
    a.out.write_text(json.dumps({"prior": a.prior, "rounds": a.rounds, "cases": len(rows), "mean": _means(rows),
                                 "rows": rows}, indent=1) + "\n")


def _means(rows: list[dict]) -> dict:
    """Mean PSNR over the cases of the true kernel, no EM, and each M-step setting run on every case."""
    cols = {"true": [r["true"] for r in rows], "no_em": [r["no_em"] for r in rows]}
    for r in rows:
        for st in r["settings"]:
            cols.setdefault(json.dumps(st["setting"]), []).append(st["em"])
            for n, v in st.get("em_rounds", {}).items():
                cols.setdefault(f"{json.dumps(st['setting'])} after {n} rounds", []).append(v)
            for tau, v in st.get("em_tau", {}).items():
                cols.setdefault(f"{json.dumps(st['setting'])}, final tau {tau}", []).append(v)
            if "em_tau_hat" in st:
                cols.setdefault(f"{json.dumps(st['setting'])}, final tau_hat", []).append(st["em_tau_hat"])
    return {k: round(sum(v) / len(v), 3) for k, v in cols.items() if len(v) == len(rows)}


if __name__ == "__main__":
    main()
