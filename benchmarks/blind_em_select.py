"""Pick one of several blind kernel estimates per photo by a no-reference score, on the declared tuning split only.

Solve's kernel EM (classical estimate, then rounds of restoration and least squares) and Fast Diffusion EM from a
delta (Laroche et al.: the kernel refitted to the prior's x̂0 at every step of one sampler run from pure noise) fail
on different photos. This script reads what ``blind_em_tuning.py --save-kernels DIR --out RUN.json`` saved for
each run (each case's refined kernel, its last E-step image, and the PSNR of the final restoration with it) and
scores, per case, every candidate kernel k by rules that need no ground truth:

- ``evidence``: −log p(y | k) under a Gaussian image model (power spectrum c·|f|^−α, fitted per kernel; the
  ``SpectralEvidence`` of ``blind_em_probes.py``), lower is likelier;
- ``residual``: mean (y − k * x)², x the candidate's own last E-step image;
- ``sparsity``: ‖∇x‖₁/‖∇x‖₂ (normalised by √N) of TV deconvolution of y with k (Krishnan et al. 2011: blur and
  ringing both raise it);
- ``prior`` (with ``--prior-rule PRIOR``): the diffusion prior's denoising loss at low noise levels
  (``invdiff.blind.prior_score``) of the final restoration with k (the preset, λ for the run's τ), the rule solve's
  ``kernel_fast_em`` uses; the restoration is run again and its PSNR checked against the run's record.

Each rule's choice is scored by the PSNR its candidate's run recorded (final restoration, τ as given), against
each run alone and the oracle choice, paired per case.

    python benchmarks/blind_em_select.py --run em=runs/select/em.json:runs/select/em \\
        --run fastem=runs/select/fastem.json:runs/select/fastem --tau 0.02 --out benchmarks/blind/tuning_em_select.json \\
        --figure benchmarks/blind/tuning_em_select.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from blind_em_probes import SpectralEvidence
from blind_em_tuning import normalised_sparsity
from blind_motion import _diffpir, _photos, aligned, blurred

RULES = ("evidence", "residual", "sparsity")


def scores(y: torch.Tensor, s: float, k: torch.Tensor, x_last: torch.Tensor) -> dict[str, float]:
    """The no-reference scores of kernel k for the blurred photo y (noise σ = s); lower is better for each."""
    from invdiff import operators as ops
    from invdiff.baselines import run_baseline

    op = ops.Blur(k, padding="reflect")
    with torch.no_grad():
        residual = float((y - op(x_last)).square().mean())
        x_tv = run_baseline("tv", y, op, s)
    return {"evidence": SpectralEvidence(y, s).model(k)[0], "residual": residual,
            "sparsity": normalised_sparsity(x_tv)}


def prior_rule(y: torch.Tensor, x: torch.Tensor, s: float, i: int, k_al: torch.Tensor, tau: float, prior,
               score_prior) -> tuple[float, float]:
    """(prior_score, PSNR) of the final restoration with the aligned kernel k_al, as the tuning runs restored it."""
    from invdiff.blind import kernel_error_lam, prior_score
    from invdiff.metrics import psnr
    from invdiff.tasks import get_task, solve_preset

    preset = solve_preset("motion-deblur")
    lam = preset.run_hyper_parameters(get_task("motion-deblur")).get("lam")
    x_hat = _diffpir(y, k_al, s, i, prior, preset, {"lam": kernel_error_lam(lam, tau, s)})
    return float(prior_score(score_prior, x_hat)[0]), float(psnr(x_hat, x)[0])


def figure(rows: list[dict], kernels: list[dict[str, torch.Tensor]], names: list[str], path: Path) -> None:
    """One row per case: the true kernel and each run's refined kernel (aligned to it), with its error and PSNR."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * (len(names) + 1), 1.9 * len(rows)))
    axes = fig.subplots(len(rows), len(names) + 1, squeeze=False)
    for r, ks, ax in zip(rows, kernels, axes):
        for a, (title, k) in zip(ax, [("true", ks["true"]), *((m, ks[m]) for m in names)]):
            a.imshow(k.numpy(), cmap="gray", vmin=0, vmax=float(k.max()))
            a.set_xticks([]), a.set_yticks([])
            c = r["candidates"].get(title)
            label = (f"{r['name']} k{r['kernel']} σ={r['noise_sigma']}" if c is None else
                     f"{title}: {c['kernel_error']:.2f}, {c['psnr']:.1f} dB")
            a.set_title(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="NAME=JSON:DIR",
                    help="a blind_em_tuning.py run: its JSON and its --save-kernels folder (one setting each)")
    ap.add_argument("--tau", default="0.02", help="which final restoration's PSNR to score (the run's --final-tau)")
    ap.add_argument("--figure", type=Path, default=None, help="the kernels of every case, as a PNG")
    ap.add_argument("--prior-rule", nargs="*", default=[], metavar="PRIOR",
                    help="also the prior rule, scored by each of these priors (the restorations by natural64)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    runs = {}
    for spec in a.run:
        name, rest = spec.split("=", 1)
        js, folder = rest.split(":", 1)
        runs[name] = (json.loads(Path(js).read_text()), Path(folder))
    names = list(runs)
    rules = (*RULES, *(f"prior {p}" for p in a.prior_rule))
    if a.prior_rule:
        from invdiff.prior import load

        restorer, scorers = load("natural64"), {p: load(p) for p in a.prior_rule}
    first = runs[names[0]][0]["rows"]
    xs, photo_names = _photos("tuning", max(r["photo"] for r in first) + 1)
    rows, kernels = [], []
    for n, r0 in enumerate(first):
        i, j, s = r0["photo"], r0["kernel"], r0["noise_sigma"]
        _, y, k_true = blurred(xs[i: i + 1], i, j, s)
        row = {"name": r0["name"], "photo": i, "kernel": j, "noise_sigma": s, "true": r0["true"], "candidates": {}}
        kernels.append({"true": k_true})
        for name in names:
            data, folder = runs[name]
            r = data["rows"][n]
            assert (r["photo"], r["kernel"], r["noise_sigma"]) == (i, j, s), "the runs' cases differ"
            saved = torch.load(folder / f"case_{i}_{j}.pt")
            assert torch.equal(saved["k_true"], k_true), "the saved case is not this one"
            k, x_last = saved["kernels"][0], saved["last_e_step"][0]
            kernels[-1][name] = aligned(k, k_true)
            x_last = x_last if x_last.dim() == 4 else x_last.unsqueeze(0)
            st = r["settings"][0]
            row["candidates"][name] = {"psnr": st["em_tau"][a.tau], "kernel_error": st["kernel_error_rounds"][-1],
                                       **{key: round(v, 6) for key, v in scores(y, s, k, x_last).items()}}
            for p in a.prior_rule:
                sc, check = prior_rule(y, xs[i: i + 1], s, i, kernels[-1][name], float(a.tau), restorer, scorers[p])
                assert abs(check - row["candidates"][name]["psnr"]) < 5e-3, "the restoration is not the run's"
                row["candidates"][name][f"prior {p}"] = round(sc, 6)
        c = row["candidates"]
        row["picked"] = {rule: min(names, key=lambda m: c[m][rule]) for rule in rules}
        row["picked"]["oracle"] = max(names, key=lambda m: c[m]["psnr"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    base = names[0]
    for choice in [*({"run": m} for m in names), *({"rule": m} for m in (*rules, "oracle"))]:
        if "run" in choice:
            v = [r["candidates"][choice["run"]]["psnr"] for r in rows]
        else:
            v = [r["candidates"][r["picked"][choice["rule"]]]["psnr"] for r in rows]
        d = torch.tensor(v, dtype=torch.float64) - torch.tensor([r["candidates"][base]["psnr"] for r in rows],
                                                                 dtype=torch.float64)
        key = choice.get("run") or f"rule {choice['rule']}"
        summary[key] = {"psnr": round(sum(v) / len(v), 3), f"change over {base}": round(float(d.mean()), 3),
                        "stderr": round(float(d.std() / math.sqrt(len(d))), 3) if len(d) > 1 else None,
                        "better_in": int((d > 0).sum()), "worse_in": int((d < 0).sum())}
        if "rule" in choice and choice["rule"] != "oracle":  # how often the rule picks the better candidate
            summary[key]["picks_the_better"] = sum(r["picked"][choice["rule"]] == r["picked"]["oracle"] for r in rows)
    summary["true kernel"] = {"psnr": round(sum(r["true"] for r in rows) / len(rows), 3)}
    print(json.dumps(summary, indent=1))
    if a.figure is not None:
        figure(rows, kernels, names, a.figure)
    a.out.write_text(json.dumps({"protocol": "one of the runs' refined kernels per case, picked by a no-reference "
                                             "score; PSNR of the final restoration with it (tau " + a.tau + ")",
                                 "runs": {m: runs[m][0]["rows"][0]["settings"][0]["setting"] for m in names},
                                 "cases": len(rows), "summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
