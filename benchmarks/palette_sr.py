"""The Palette SR ×4 model of photos (``natural-palette-sr4``): a grid on the declared tuning split, then the
report on the natural suite's photos against bicubic and the solve preset (DDRM).

    python benchmarks/palette_sr.py tune     # steps x start (from bicubic) x guidance on the tuning split
    python benchmarks/palette_sr.py report   # natural suite photos: bicubic, the sr preset, Palette w = 0, 1, 3

``tune`` runs on the first ``--photos`` photos of ``data/tuning`` (``benchmarks/tune.py``), 256×256, SR ×4 with
σ = 0.05, one sample per photo or the mean of K (the grid), each also with the soft paste at every ρ of
``PASTE_RHOS`` (no extra NFE), and keeps the configuration with the best mean PSNR
(ties within 0.05 dB: fewer network evaluations, all K chains counted); it writes ``benchmarks/palette/sr_tuning.json`` and does not change the solve presets (the
``sr`` task keeps its preset unless the Palette model beats it there). ``report`` degrades the suite's six photos
exactly as ``invdiff bench natural`` does (its seed and per-image streams) and scores, in one run, bicubic (the
suite's baseline), the ``sr`` solve preset of the suite's prior and the Palette model at the chosen steps and
start for w ∈ {0, 1, 3} (one sample each), and the chosen configuration itself when it averages K samples (with and without its soft paste); ``benchmarks/palette/sr.json``, ``sr.md`` and a figure per photo (bicubic, K = 4
Palette samples, ground truth).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from palette_colorize import TIE_DB, _mean, _sample_gens, _scores, cli

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "palette"
PRIOR = "natural-palette-sr4"
#: (steps, start, guidance w, K samples averaged[, symmetry]): the mean of K samples approaches the posterior mean,
#: which PSNR rewards (benchmarks/RESULTS.md, "The posterior mean of K samples"); NFE counts all K chains. With
#: "dihedral" chain k restores the measurement turned/mirrored by the k-th element of the square's group and is
#: turned back (``invdiff.samplers.symmetry``): the same NFE, the network's own errors averaged over the group too.
#: (20 steps and w = 1 with one sample were 0.2-1.5 dB below 10 steps with leg 1 and are no longer in the grid.)
GRID = [(10, 1.0, 0.0, 1), (10, 0.5, 0.0, 1), (10, 0.3, 0.0, 1), (10, 0.3, 0.0, 4), (10, 0.3, 0.0, 8),
        (10, 0.5, 0.0, 8), (10, 1.0, 0.0, 8), (10, 0.3, 0.0, 8, "dihedral")]
#: the soft paste's ρ (``paste=True, paste_rho=ρ``: argmin_z ‖y − A z‖² + ρ‖z − x‖²), scored for every grid row: it is
#: affine in the sample, so the paste of the mean of K is the mean of the K pasted samples, and costs no NFE
PASTE_RHOS = (0.03, 0.1, 0.3)


def _problem(x: torch.Tensor, seed: int):
    from invdiff.rng import stream_seed
    from invdiff.tasks import TaskOptions, simulate

    gens = [torch.Generator().manual_seed(stream_seed(seed, "degrade", i)) for i in range(len(x))]
    return simulate("sr", x, TaskOptions(noise_sigma=0.05, scale=4), generator=gens)


def _palette(y, op, prior, steps: int, start: float, w: float, gens, samples: int = 1, symmetry: str | None = None,
             paste_rho: float | None = None):
    from invdiff.samplers import restore

    # start is always passed: Palette's own default is a warm start at 0.5, not pure noise
    hp = {"guidance": w, "start": start, **({"init": "bicubic"} if start < 1 else {}),
          **({"paste": True, "paste_rho": paste_rho} if paste_rho is not None else {})}
    return restore(y, op, 0.05, prior, method="palette", steps=steps, samples=samples, generator=gens,
                   symmetry=symmetry, **hp)


def _bicubic(y, op, x) -> dict:
    from invdiff.baselines import run_baseline

    return {"method": "bicubic (baseline)", "nfe": 0, **_scores(run_baseline("bicubic", y, op, 0.05).clamp(-1, 1), x)}


def tune(args) -> None:
    from invdiff.prior import load

    from tune import _photos

    x = _photos(args.photos)  # the declared tuning split, 256×256
    op, y = _problem(x, 0)
    prior = load(args.prior)
    rows = [_bicubic(y, op, x)]
    for steps, start, w, k, *sym in GRID:
        t0 = time.perf_counter()
        r = _palette(y, op, prior, steps, start, w, _sample_gens(0, len(x)), samples=k, symmetry=(sym or [None])[0])
        row = {"steps": steps, "start": start, "guidance": w, "samples": k, **({"symmetry": sym[0]} if sym else {}),
               "nfe": int(r.nfe) * k, "seconds": round(time.perf_counter() - t0, 1)}
        rows.append({**row, **_scores(r.mean, x)})
        rows += [{**row, "paste_rho": rho, **_scores(op.prox(r.mean, y, rho), x)} for rho in PASTE_RHOS]
        for shown in rows[-1 - len(PASTE_RHOS):]:
            print(json.dumps(shown), flush=True)
    best = max(_mean(r["psnr"]) for r in rows[1:])
    chosen = min((r for r in rows[1:] if _mean(r["psnr"]) >= best - TIE_DB), key=lambda r: (r["nfe"], -_mean(r["psnr"])))
    OUT.mkdir(parents=True, exist_ok=True)
    res = {"prior": args.prior, "photos": args.photos, "rows": rows, "chosen": chosen,
           "rule": f"best mean PSNR; ties within {TIE_DB} dB: fewer NFE"}
    (OUT / "sr_tuning.json").write_text(json.dumps(res, indent=1) + "\n")
    print("chosen:", json.dumps(chosen))


def report(args) -> None:
    from invdiff.bench.suite import load_suite
    from invdiff.figures import display, panels
    from invdiff.prior import load
    from invdiff.samplers import restore
    from invdiff.tasks import get_task, solve_preset

    suite = load_suite("natural")
    x = suite.images()
    op, y = _problem(x, suite.seed)
    chosen = json.loads((OUT / "sr_tuning.json").read_text())["chosen"]
    steps, start, k_mean = chosen["steps"], chosen["start"], chosen.get("samples", 1)
    rows = [_bicubic(y, op, x)]
    pre = solve_preset("sr", suite.prior)
    t0 = time.perf_counter()
    r = restore(y, op, 0.05, load(suite.prior), method=pre.method, steps=pre.steps, generator=_sample_gens(suite.seed, len(x)),
                **pre.run_hyper_parameters(get_task("sr")))
    rows.append({"method": f"{pre.method} {pre.steps} steps, solve preset ({suite.prior})", "nfe": int(r.nfe),
                 "seconds": round(time.perf_counter() - t0, 1), **_scores(r.mean, x)})
    prior = load(args.prior)
    for w in (0.0, 1.0, 3.0):
        t0 = time.perf_counter()
        r = _palette(y, op, prior, steps, start, w, _sample_gens(suite.seed, len(x)))
        rows.append({"method": f"palette w={w:g}", "guidance": w, "steps": steps, "start": start, "nfe": int(r.nfe),
                     "seconds": round(time.perf_counter() - t0, 1), **_scores(r.mean, x)})
        print(json.dumps(rows[-1]), flush=True)
    if k_mean > 1:  # the chosen configuration averages K samples: its row, and the single samples' above
        t0 = time.perf_counter()
        sym, rho = chosen.get("symmetry"), chosen.get("paste_rho")
        r = _palette(y, op, prior, steps, start, chosen["guidance"], _sample_gens(suite.seed, len(x)), samples=k_mean,
                     symmetry=sym)
        row = {"method": f"palette w={chosen['guidance']:g}, mean of K = {k_mean}" + (f", {sym}" if sym else ""),
               "guidance": chosen["guidance"], **({"symmetry": sym} if sym else {}), "steps": steps, "start": start,
               "samples": k_mean, "nfe": int(r.nfe) * k_mean, "seconds": round(time.perf_counter() - t0, 1)}
        rows.append({**row, **_scores(r.mean, x)})
        if rho is not None:  # the soft paste is affine in the sample: pasting the mean = the mean of the pasted samples
            rows.append({**row, "method": row["method"] + f", soft paste ρ = {rho:g}", "paste_rho": rho,
                         **_scores(op.prox(r.mean, y, rho), x)})
        for shown in rows[-2 if rho is not None else -1:]:
            print(json.dumps(shown), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    k = _palette(y[: args.figures], op, prior, steps, start, 0.0, _sample_gens(suite.seed, args.figures), samples=4)
    up = op.pinv(y).clamp(-1, 1) if hasattr(op, "pinv") else None
    for i in range(args.figures):
        items = ([("A⁺y", display(up[i]), None)] if up is not None else [])
        items += [(f"Palette sample {j + 1}", display(k.samples[i, j]), None) for j in range(4)]
        items.append(("ground truth", display(x[i]), None))
        panels(OUT / f"sr_{i}.png", items, title=f"{PRIOR}: {steps} steps, start {start}, w = 0, K = 4")
    (OUT / "sr.json").write_text(json.dumps({"suite": "natural", "photos": len(x), "noise_sigma": 0.05,
                                              "prior": args.prior, "rows": rows}, indent=1) + "\n")
    lines = ["# SR ×4 of the natural suite's photos", "",
             f"The six validation photos, 256×256 → 64×64 (the suite's operator) plus noise σ = 0.05, degraded as "
             f"`invdiff bench natural` does (seed {suite.seed}); one sample per photo unless a row says \"mean of K\".", "",
             "| method | NFE | PSNR | SSIM |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['nfe']} | {_mean(r['psnr']):.2f} | {_mean(r['ssim']):.3f} |" for r in rows]
    lines += ["", "Figures: " + ", ".join(f"[photo {i}](sr_{i}.png)" for i in range(args.figures)), ""]
    (OUT / "sr.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    cli(__doc__, PRIOR, tune, report, report_flags={"--figures": {"type": int, "default": 2}})


if __name__ == "__main__":
    main()
