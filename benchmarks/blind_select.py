"""Two blind kernel estimates per photo, and a no-reference rule's choice between them.

Solve's kernel EM (the classical estimate, then 6 rounds of restoration and least squares, the kernel prior in
rounds 1-3) and Fast Diffusion EM from a delta (Laroche et al.: one sampler run from pure noise, 100 DiffPIR steps
at λ 28, the kernel refitted to the prior's x̂0 at every step) fail on different photos (RESULTS.md, "Fast
Diffusion EM as its authors run it"). For each case this script runs both and restores each kernel as solve restores
a refined kernel (the preset, λ for τ = 0.02). Each restoration x̂ is scored by five rules, each taking the
candidate with the lower value: ``prior``, the prior's denoising loss at low noise levels (``invdiff.blind.
prior_score``; ``picked`` in the rows); ``residual``, mean (y − k * x̂)² / σ²; ``sparsity``, the normalised gradient
sparsity ‖∇x̂‖₁ / (‖∇x̂‖₂ √N) (``invdiff.blind.gradient_sparsity``); and two that score the kernel from y alone,
``gcv``, generalised cross-validation of a Tikhonov restoration (Reeves & Mersereau's blur identification), and
``evidence``, the kernel's type-II likelihood under a power-law spectrum. The PSNR of each candidate, each rule's
choice, the better of the two (the oracle) and the PSNR of the two restorations' mean are recorded per case, and
the choice of ``residual+sparsity``, which keeps the EM's kernel unless both of those rules prefer the other.

Cases come in a fixed random order (seed 0) over photos × kernels × σ, so that a run cut short is an unbiased
subset; ``--previous`` continues one. The true kernel's restoration is read from a ``blind_motion.py`` JSON of the
same photos (``--true-from``: the same restoration, streams and kernel), and solve's EM row is checked against it.

    python benchmarks/blind_select.py --split suite --true-from benchmarks/blind/blind_motion.json \\
        --out benchmarks/blind/select_suite.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from blind_em_tuning import _initial_kernel
from blind_motion import _diffpir, _photos, aligned, blurred

FAST_EM = {"per_step": True, "init_kernel": "dirac",
           "e_step": {"start": 1.0, "init": "zeros", "steps": 100, "lam": 28}}


def cases(photos: int, kernels: int, noise: list[float], seed: int = 0,
          alternate: bool = False) -> list[tuple[int, int, float]]:
    """Every (photo, kernel, σ), in a random order fixed by ``seed``; with ``alternate``, one σ per (photo, kernel),
    ``noise[(i + j) % 2]`` (the tuning split's cases in ``blind_em_tuning.py``)."""
    every = ([(i, j, noise[(i + j) % 2]) for j in range(kernels) for i in range(photos)] if alternate else
             [(i, j, s) for j in range(kernels) for i in range(photos) for s in noise])
    order = torch.randperm(len(every), generator=torch.Generator().manual_seed(seed)).tolist()
    return [every[n] for n in order]


def run_case(x, i: int, j: int, s: float, prior, tau: float, kernel_size: int = 61) -> tuple[dict, dict]:
    from invdiff.blind import (estimate_motion_kernel, kernel_error, prior_score,
                               refine_kernel_em, with_kernel_error)
    from invdiff.measured import kernel_prior_for
    from invdiff.metrics import psnr
    from invdiff.tasks import get_task, solve_preset

    op, y, k_true = blurred(x, i, j, s)
    task, preset = get_task("motion-deblur"), solve_preset("motion-deblur")
    blind = preset.for_operator(op, blind=True)
    kp = kernel_prior_for(task, preset)[0]
    t0 = time.perf_counter()
    k0 = estimate_motion_kernel(y, prior, s, kernel_size=kernel_size, kernel_prior=kp).kernel
    final_hp = with_kernel_error(preset.run_hyper_parameters(task), tau, s)
    row = {"photo": i, "kernel": j, "noise_sigma": s, "psnr_blurry": round(float(psnr(y.clamp(-1, 1), x)[0]), 3),
           "kernel_error_classical": round(kernel_error(k0, k_true), 4), "candidates": {}}
    saved = {"k_true": k_true, "k0": k0}
    for name in ("em", "fastem"):
        e_options = FAST_EM["e_step"] if name == "fastem" else None

        def e_step(kk, refit=None):
            return _diffpir(y, kk, s, i, prior, blind, e_options, purpose="kernel-em", refit=refit)

        if name == "em":  # what solve runs
            k, _ = refine_kernel_em(y, k0, e_step, blind.kernel_em, prior=kp, per_step=blind.kernel_em_per_step,
                                    prior_rounds=blind.kernel_em_prior_rounds)
        else:  # Fast Diffusion EM: one sampler run from pure noise and a delta, the kernel refitted at each step
            k, _ = refine_kernel_em(y, _initial_kernel("dirac", k0, i, j), e_step, 1, prior=kp, per_step=True)
        k_al = aligned(k, k_true)
        x_hat = _diffpir(y, k_al, s, i, prior, preset, final_hp)
        row["candidates"][name] = {"kernel_error": round(kernel_error(k, k_true), 4),
                                   "psnr": round(float(psnr(x_hat, x)[0]), 3),
                                   "prior_score": round(float(prior_score(prior, x_hat)[0]), 6),
                                   **no_reference_scores(y, x_hat, k, k_true, s),
                                   "seconds": round(time.perf_counter() - t0, 1)}
        saved[name] = {"kernel": k, "restored": x_hat}
        t0 = time.perf_counter()
    row["psnr_mean_of_both"] = mean_psnr([saved[m]["restored"] for m in row["candidates"]], x)
    return picks(row), saved


def no_reference_scores(y, x_hat, k, k_true, s: float) -> dict:
    """A candidate's scores by the rules after the prior's: the restoration x̂ through its kernel k (aligned to
    k_true, as it was restored) against y, the sparsity of x̂, and the two that read k from y alone."""
    from invdiff.blind import gradient_sparsity

    return {"residual": residual(y, x_hat, aligned(k, k_true), s),
            "sparsity": round(float(gradient_sparsity(x_hat)[0]), 5),
            "gcv": float(f"{gcv(y, k):.7g}"), "evidence": round(spectral_evidence(y, k, s), 6)}


def mean_psnr(restored: list[torch.Tensor], x: torch.Tensor) -> float:
    """The PSNR of the mean of the candidates' restorations: a hedge that needs no rule."""
    from invdiff.metrics import psnr

    return round(float(psnr(sum(restored) / len(restored), x)[0]), 3)


def residual(y: torch.Tensor, x_hat: torch.Tensor, k: torch.Tensor, s: float) -> float:
    """mean (y − k * x̂)² / σ² (solve's ``residual`` rule over σ²): how well the restoration with its own kernel
    explains the photo (1: to the noise)."""
    from invdiff.blind import choice_score
    from invdiff.tasks import TaskOptions, get_task

    op = get_task("motion-deblur").operator(tuple(x_hat.shape), TaskOptions(noise_sigma=s, kernel=k))
    return round(float(choice_score("residual", None, x_hat, y, op)[0]) / s ** 2, 5)


def gcv(y: torch.Tensor, k: torch.Tensor, lams=None) -> float:
    """Generalised cross-validation of the kernel k (Reeves & Mersereau 1992, blur identification): for the
    Tikhonov restoration with a Laplacian penalty, GCV(k, λ) = (‖(I − A)y‖²/N) / (tr(I − A)/N)²,
    A = H(HᵀH + λCᵀC)⁻¹Hᵀ, minimised over λ on a log grid (channels share A; N counts the pixels of all of them).
    Circulant on y's symmetric extension (periodic), so A is diagonal in Fourier: 1 − A_f = λ|C_f|² / (|H_f|² +
    λ|C_f|²). Lower means k predicts left-out data better; it sees |H| only."""
    lams = torch.logspace(-7, 0, 36, dtype=torch.float64) if lams is None else lams
    g = y.detach().double()[0]
    g = torch.cat([g, g.flip(-1)], -1)
    g = torch.cat([g, g.flip(-2)], -2)
    h, w = g.shape[-2:]
    power = torch.fft.fft2(g).abs().square()

    def transfer(a: torch.Tensor) -> torch.Tensor:
        n, m = a.shape
        pad = torch.zeros(h, w, dtype=torch.float64)
        pad[:n, :m] = a.double()
        return torch.fft.fft2(torch.roll(pad, (-(n // 2), -(m // 2)), (0, 1))).abs().square()

    k2 = transfer(k.reshape(k.shape[-2:]))
    c2 = transfer(torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]))
    best = math.inf
    for lam in lams.tolist():
        rest = lam * c2 / (k2 + lam * c2)
        best = min(best, float((rest.square() * power).mean() / (h * w) / rest.mean().square()))
    return best


def spectral_evidence(y: torch.Tensor, k: torch.Tensor, s: float) -> float:
    """−log p(y | k) per frequency under a power-law clean spectrum and white noise of σ = s (the probe's
    ``SpectralEvidence``, blind_em_probes.py): the kernel's type-II likelihood, from y alone; it sees |H| only."""
    from blind_em_probes import SpectralEvidence

    return SpectralEvidence(y, s).model(k.reshape(k.shape[-2:]))[0]


#: no-reference rules, each picking the candidate with the lowest value (``gcv`` and ``evidence`` score the kernel
#: from y alone; the others score the restoration)
RULES = {"prior": lambda c: c["prior_score"], "residual": lambda c: c["residual"],
         "sparsity": lambda c: c["sparsity"], "gcv": lambda c: c["gcv"], "evidence": lambda c: c["evidence"]}
#: rules that keep solve's EM unless both parts prefer Fast Diffusion EM (``invdiff.blind.choose``)
AGREEMENTS = ("residual+sparsity",)


def picks(row: dict) -> dict:
    """The row with each rule's pick (``picked``: the prior's, what solve's ``kernel_fast_em`` does) and the oracle."""
    c = row["candidates"]
    row["picked"] = min(c, key=lambda m: c[m]["prior_score"])
    if all(all(key in v for key in ("residual", "sparsity", "gcv", "evidence")) for v in c.values()):
        from invdiff.blind import choose

        row["picked_by"] = {r: min(c, key=lambda m: f(c[m])) for r, f in RULES.items()}
        for rule in AGREEMENTS:
            row["picked_by"][rule] = choose({m: {p: c[m][p] for p in rule.split("+")} for m in c}, rule, "em")
    row["oracle"] = max(c, key=lambda m: c[m]["psnr"])
    return row


def rescore(rows: list[dict], saved: Path, split: str, photos: int) -> list[dict]:
    """Add each candidate's residual, sparsity, GCV and spectral evidence to an earlier run's rows, and the PSNR of
    the two restorations' mean, from the restorations and kernels it saved (``--save``)."""
    xs, _ = _photos(split, photos)
    for r in rows:
        i, j, s = r["photo"], r["kernel"], r["noise_sigma"]
        d = torch.load(saved / f"case_{i}_{j}_{s}.pt")
        _, y, k_true = blurred(xs[i: i + 1], i, j, s)
        for name, c in r["candidates"].items():
            c.update(no_reference_scores(y, d[name]["restored"], d[name]["kernel"], k_true, s))
        r["psnr_mean_of_both"] = mean_psnr([d[m]["restored"] for m in r["candidates"]], xs[i: i + 1])
        picks(r)
    return rows


def summary(rows: list[dict]) -> dict:
    def stats(v, base):
        d = torch.tensor(v, dtype=torch.float64) - torch.tensor(base, dtype=torch.float64)
        return {"psnr": round(sum(v) / len(v), 3), "change over em": round(float(d.mean()), 3),
                "stderr": round(float(d.std() / math.sqrt(len(d))), 3) if len(d) > 1 else None,
                "better_in": int((d > 0).sum()), "worse_in": int((d < 0).sum())}

    em = [r["candidates"]["em"]["psnr"] for r in rows]
    out = {"cases": len(rows)}
    for key, v in (("em (solve)", em), ("fastem", [r["candidates"]["fastem"]["psnr"] for r in rows]),
                   ("prior's choice", [r["candidates"][r["picked"]]["psnr"] for r in rows]),
                   ("oracle", [r["candidates"][r["oracle"]]["psnr"] for r in rows])):
        out[key] = stats(v, em)
    out["prior's choice"]["picks_the_better"] = sum(r["picked"] == r["oracle"] for r in rows)
    if all("picked_by" in r for r in rows):
        for rule in (*RULES, *AGREEMENTS):
            v = [r["candidates"][r["picked_by"][rule]]["psnr"] for r in rows]
            out[f"rule {rule}"] = {**stats(v, em), "picks_the_better": sum(r["picked_by"][rule] == r["oracle"]
                                                                            for r in rows)}
    if all("psnr_mean_of_both" in r for r in rows):
        out["mean of the two restorations"] = stats([r["psnr_mean_of_both"] for r in rows], em)
    if all(r.get("true") is not None for r in rows):
        true = [r["true"] for r in rows]
        out["true kernel"] = {"psnr": round(sum(true) / len(true), 3)}
        for key in ("em (solve)", "prior's choice"):
            gap = [t - r["candidates"][r["picked"] if key != "em (solve)" else "em"]["psnr"]
                   for t, r in zip(true, rows)]
            out[key]["below the true kernel"] = round(sum(gap) / len(gap), 3)
            out[key]["within 1.5 dB"] = sum(g <= 1.5 for g in gap)
    return out


def figure(rows: list[dict], saved: Path, split: str, photos: int, path: Path, limit: int = 6) -> None:
    """Per case (the ``limit`` with the largest gap between the candidates): the true photo, each candidate's
    restoration with its PSNR and which rules chose it, and the true, EM and Fast Diffusion EM kernels."""
    import matplotlib.figure

    xs, names = _photos(split, photos)
    rows = sorted(rows, key=lambda r: -abs(r["candidates"]["em"]["psnr"] - r["candidates"]["fastem"]["psnr"]))[:limit]
    fig = matplotlib.figure.Figure(figsize=(9.6, 2.0 * len(rows)))
    axs = fig.subplots(len(rows), 6, squeeze=False, gridspec_kw={"width_ratios": [3, 3, 3, 1, 1, 1]})

    def show(ax, x, title):
        ax.imshow(x[0].clamp(-1, 1).add(1).div(2).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=7)

    for a, r in enumerate(rows):
        i, j, s = r["photo"], r["kernel"], r["noise_sigma"]
        d = torch.load(saved / f"case_{i}_{j}_{s}.pt")
        show(axs[a, 0], xs[i: i + 1], f"{names[i]}, kernel {j}, σ {s}")
        for b, name in enumerate(("em", "fastem")):
            c = r["candidates"][name]
            by = [rule for rule, pick in r.get("picked_by", {"prior": r["picked"]}).items() if pick == name]
            show(axs[a, b + 1], d[name]["restored"], f"{'EM' if name == 'em' else 'Fast Diffusion EM'}: "
                 f"{c['psnr']:.2f} dB" + (f"\nchosen by {', '.join(by)}" if by else ""))
        for b, (title, k) in enumerate((("true", d["k_true"]), ("EM", d["em"]["kernel"]),
                                       ("Fast EM", d["fastem"]["kernel"]))):
            axs[a, b + 3].imshow(k.reshape(k.shape[-2:]).numpy(), cmap="gray")
            axs[a, b + 3].set_title(title, fontsize=7)
    for ax in axs.flat:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    from invdiff.prior import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("suite", "tuning"), default="suite")
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--kernels", type=int, default=3)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.05])
    ap.add_argument("--alternate-noise", action="store_true",
                    help="one σ per (photo, kernel), alternating as blind_em_tuning.py's tuning cases do")
    ap.add_argument("--from-end", action="store_true",
                    help="take the cases from the end of the order (a second process beside one from the start)")
    ap.add_argument("--max-cases", type=int, default=None, help="stop after this many cases of the random order")
    ap.add_argument("--tau", type=float, default=0.02, help="the final restoration's τ (solve's)")
    ap.add_argument("--true-from", type=Path, default=None,
                    help="a blind_motion.py JSON of the same split: the true kernel's restoration, and solve's EM row")
    ap.add_argument("--previous", type=Path, default=None, help="an earlier --out of this script: continue it")
    ap.add_argument("--save", type=Path, default=None, help="save each case's kernels and restorations here (.pt)")
    ap.add_argument("--rescore", action="store_true",
                    help="only (re)compute the rules after the prior's and the mean of the two for --previous, from what "
                         "it saved in --save")
    ap.add_argument("--figure", type=Path, default=None,
                    help="with --previous and --save: the cases with the largest gap between the kernels, as a PNG")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.figure is not None:
        return figure(json.loads(a.previous.read_text())["rows"], a.save, a.split, a.photos, a.figure)
    if a.rescore:
        previous = json.loads(a.previous.read_text())
        rows = rescore(previous["rows"], a.save, a.split, a.photos)
        a.out.write_text(json.dumps({**previous, "summary": summary(rows), "rows": rows}, indent=1) + "\n")
        return
    prior = load("natural64")
    xs, names = _photos(a.split, a.photos)
    before = {(r["photo"], r["kernel"], r["noise_sigma"]): r
              for r in json.loads(a.true_from.read_text())} if a.true_from else {}
    rows = json.loads(a.previous.read_text())["rows"] if a.previous else []
    done = {(r["photo"], r["kernel"], r["noise_sigma"]) for r in rows}
    todo = [c for c in cases(len(xs), a.kernels, a.noise, alternate=a.alternate_noise) if c not in done]
    todo = todo[::-1] if a.from_end else todo
    for i, j, s in todo[: None if a.max_cases is None else max(a.max_cases - len(rows), 0)]:
        row, saved = run_case(xs[i: i + 1], i, j, s, prior, a.tau)
        earlier = before.get((i, j, s), {})
        row = {"name": names[i], **row, "true": earlier.get("psnr_diffusion_true"),
               "em_recorded": earlier.get("psnr_diffusion_estimated")}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.save is not None:
            a.save.mkdir(parents=True, exist_ok=True)
            torch.save(saved, a.save / f"case_{i}_{j}_{s}.pt")
        a.out.write_text(json.dumps({"split": a.split, "prior": "natural64", "tau": a.tau, "noise": a.noise,
                                     "alternate_noise": a.alternate_noise, "fast_em": FAST_EM,
                                     "summary": summary(rows), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
