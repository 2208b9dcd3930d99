"""Blind motion deblurring against the non-blind result with the true kernel, on the natural suite's photos.

For each photo, motion kernel and noise σ: y = k * x + n with the motion-deblur task's own operator (61×61 kernels of
the ``motionblur`` model, intensity 0.5, reflect padding; kernel j drawn from the seeded stream
``blind-motion-kernel``/j, the same three kernels for every photo, hidden from the estimator). The kernel is
estimated from y alone (``invdiff.blind.estimate_motion_kernel``); with ``--diffusion`` then refined by the blind
preset's rounds of kernel EM (``invdiff.blind.refine_kernel_em``, E-step: the blind variant's restoration), as
``invdiff solve`` does; scored by ``kernel_error`` (normalised L2 after the best integer shift), and the photo restored by TV deconvolution (``invdiff.baselines``) with the estimated and
with the true kernel; with ``--diffusion`` also by the task's solve preset (DiffPIR, natural64) with both.

A blind estimate is defined up to a translation of the image (and the model's kernels are not centred: their mass
can sit several pixels off the middle), so the estimated kernel is moved by the integer shift that best matches
the true one before restoring (the standard protocol of blind-deblurring benchmarks, which align the result); the
unaligned TV PSNR is kept in the JSON. Writes blind_motion.json, blind_motion.md and blind_motion_kernels.png.

    python benchmarks/blind_motion.py --photos 3 --diffusion --out benchmarks/blind
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def aligned(k: torch.Tensor, k_true: torch.Tensor) -> torch.Tensor:
    """k zero-padded around its centre to k_true's size (a larger k keeps its own size: k_true is padded instead)
    and moved by the integer shift that maximises its cross-correlation with k_true (as ``kernel_error``
    aligns)."""
    from invdiff.blind import shift_kernel

    n, m = k_true.shape[0], k.shape[0]
    if m > n:
        k_true, n = F.pad(k_true, ((m - n) // 2,) * 4), m
    k = F.pad(k, ((n - m) // 2,) * 4) if m < n else k
    h = 2 * n - 1
    a, b = F.pad(k.double(), (0, h - n, 0, h - n)), F.pad(k_true.double(), (0, h - n, 0, h - n))
    c = torch.fft.irfft2(torch.fft.rfft2(b) * torch.fft.rfft2(a).conj(), s=(h, h))
    i, j = divmod(int(c.argmax()), h)
    i, j = (i if i < n else i - h), (j if j < n else j - h)
    return shift_kernel(k, i, j)


def blurred(x, i: int, j: int, s: float):
    """(operator, y, true kernel) of case (photo i, kernel j, noise σ = s): the motion-deblur task's operator with
    kernel j of the stream ``blind-motion-kernel``, and its noise from the stream of (s, i, j)."""
    from invdiff.rng import make_generators
    from invdiff.tasks import TaskOptions, get_task

    task, opts = get_task("motion-deblur"), TaskOptions(noise_sigma=s)
    op = task.operator(x.shape, opts, generator=make_generators(0, 1, purpose="blind-motion-kernel", start=j))
    with torch.no_grad():
        y = task.noise(opts)(op(x), generator=make_generators(0, 1, purpose=f"blind-motion-noise-{s}", start=3 * i + j))
    return op, y, op.kernel.reshape(-1, *op.kernel.shape[-2:])[0]


def case(x, i: int, j: int, s: float, kernel_size: int, prior, diffusion: bool, options: dict | None = None,
         restore_options: dict | None = None, earlier: dict | None = None, kernel_em: int | None = None,
         baseline: bool = True, em_options: dict | None = None) -> dict:
    from invdiff import operators as ops
    from invdiff.baselines import run_baseline
    from invdiff.blind import estimate_motion_kernel, kernel_error, refine_kernel_em
    from invdiff.kernel_prior import from_spec
    from invdiff.measured import kernel_prior_for
    from invdiff.metrics import psnr
    from invdiff.tasks import get_task, solve_preset

    earlier = earlier or {}
    op, y, k_true = blurred(x, i, j, s)
    t0 = time.perf_counter()
    options = dict(options or {})
    # the learned kernel prior, for the estimate and the EM: as given, else the blind variant's (what solve runs)
    kp = (from_spec(options.pop("kernel_prior")) if "kernel_prior" in options else
          kernel_prior_for(get_task("motion-deblur"), solve_preset("motion-deblur"))[0])
    k = estimate_motion_kernel(y, prior, s, kernel_size=kernel_size, kernel_prior=kp, **options).kernel
    seconds = time.perf_counter() - t0
    row = {"photo": i, "noise_sigma": s, "kernel": j, "kernel_size": kernel_size,
           "kernel_error": round(kernel_error(k, k_true), 4), "estimate_seconds": round(seconds, 2)}
    pre = solve_preset("motion-deblur").for_operator(op, blind=True)
    rounds = (pre.kernel_em if kernel_em is None else kernel_em) if diffusion else 0
    if rounds:  # what solve runs after the classical estimate: EM with the blind variant's restoration
        def e_step(kk, refit=None):
            return _diffpir(y, kk, s, i, prior, pre, restore_options, purpose="kernel-em", refit=refit,
                            samples=pre.kernel_em_samples)

        row["kernel_error_classical"], row["kernel_em"] = row["kernel_error"], rounds
        same = earlier.get("kernel_error_classical") == row["kernel_error"]  # the same estimate as that run's
        if same and not restore_options and "psnr_diffusion_classical" in earlier:  # the same restoration, run before
            row["psnr_diffusion_classical"] = earlier["psnr_diffusion_classical"]
        elif baseline:  # without EM
            row["psnr_diffusion_classical"] = round(float(psnr(_diffpir(
                y, aligned(k, k_true), s, i, prior, pre, restore_options), x)[0]), 3)
        t0 = time.perf_counter()
        k, _ = refine_kernel_em(y, k, e_step, rounds, prior=kp, per_step=pre.kernel_em_per_step,
                                **{"prior_rounds": pre.kernel_em_prior_rounds, **(em_options or {})})
        row["kernel_error"], row["em_seconds"] = round(kernel_error(k, k_true), 4), round(time.perf_counter() - t0, 2)
    k_al = aligned(k, k_true)

    def tv(kk):
        return float(psnr(run_baseline("tv", y, ops.Blur(kk, padding="reflect"), s), x)[0])

    row.update({"psnr_blurry": round(float(psnr(y.clamp(-1, 1), x)[0]), 3), "psnr_tv_estimated": round(tv(k_al), 3),
                "psnr_tv_estimated_unaligned": round(tv(k), 3), "psnr_tv_true": round(tv(k_true), 3)})
    if diffusion:  # after EM the refined kernel is restored as a known one, as solve does
        from invdiff.metrics import psnr_upto_shift

        row["psnr_blurry_shift"] = round(float(psnr_upto_shift(y.clamp(-1, 1), x)[0]), 3)
        row.update(final_restoration(x, y, k_al, s, i, prior, rounds, restore_options))
        # the true kernel runs the preset itself; --true-from: the same restoration, run before (again where the
        # earlier run has no shift-aligned PSNR: its image is needed; its PSNR then checks the rerun)
        true_psnr = earlier.get("psnr_diffusion_true")
        if true_psnr is not None and "psnr_diffusion_true_shift" in earlier:
            row["psnr_diffusion_true"] = true_psnr
            row["psnr_diffusion_true_shift"] = earlier["psnr_diffusion_true_shift"]
        else:
            row.update(scored(_diffpir(y, k_true, s, i, prior, solve_preset("motion-deblur"), None), x, "true"))
            if true_psnr is not None:
                row["psnr_diffusion_true_before"] = true_psnr
    return row, k, k_true


def scored(x_hat, x, name: str) -> dict:
    """PSNR of a restoration, plainly and after the best sub-pixel shift (``psnr_upto_shift``: ±5 px by 0.25 px, a
    15-px border shaved, Levin et al.'s ``comp_upto_shift``), as ``psnr_diffusion_<name>`` and ``..._shift``."""
    from invdiff.metrics import psnr, psnr_upto_shift

    return {f"psnr_diffusion_{name}": round(float(psnr(x_hat, x)[0]), 3),
            f"psnr_diffusion_{name}_shift": round(float(psnr_upto_shift(x_hat, x)[0]), 3)}


def final_restoration(x, y, k_al, s: float, i: int, prior, rounds: int, restore_options: dict | None,
                      tau: float | None = None) -> dict:
    """The PSNR of the restoration with the (aligned) estimated kernel, as solve runs it: the blind variant without
    EM; after EM the preset, with λ for the kernel's error when the blind variant has a ``kernel_error_tau``, or
    for ``tau`` where given (``invdiff.blind.kernel_error_lam``; a λ in ``restore_options`` is used as it is)."""
    from invdiff.blind import with_kernel_error
    from invdiff.tasks import get_task, solve_preset

    preset = solve_preset("motion-deblur")
    blind = preset.variants["blind"]
    final, options, out = (preset if rounds else blind), dict(restore_options or {}), {}
    if rounds:
        out["kernel_error_tau"] = tau = blind.kernel_error_tau if tau is None else tau
        options = {**with_kernel_error(preset.run_hyper_parameters(get_task("motion-deblur")), tau, s, options),
                   **options}
        out["final_lam"] = options.get("lam")
    out.update(scored(_diffpir(y, k_al, s, i, prior, final, options), x, "estimated"))
    return out


def final_only(source: Path, out: Path, split: str, restore_options: dict | None, tau: float | None = None) -> None:
    """Only the last restoration again, with the refined kernels an earlier run saved (its blind_motion.json and
    blind_motion_kernels.pt, kernels already aligned): for a change of the final restoration's settings, whose
    estimate and EM are deterministic and unchanged. The other columns are the earlier run's."""
    from invdiff.prior import load

    earlier = json.loads((source / "blind_motion.json").read_text())
    kernels = torch.load(source / "blind_motion_kernels.pt", weights_only=False)
    xs, names = _photos(split, max(r["photo"] for r in earlier) + 1)
    prior, rows = load("natural64"), []
    out.mkdir(parents=True, exist_ok=True)
    for r in earlier:
        i, j, s = r["photo"], r["kernel"], r["noise_sigma"]
        _, y, _ = blurred(xs[i: i + 1], i, j, s)
        new = final_restoration(xs[i: i + 1], y, kernels[(i, j, s)], s, i, prior, r.get("kernel_em", 0),
                                restore_options, tau)
        rows.append({**r, **new, "final_only_from": str(source)})
        print(json.dumps(rows[-1]), flush=True)
        (out / "blind_motion.json").write_text(json.dumps(rows, indent=1) + "\n")
    torch.save(kernels, out / "blind_motion_kernels.pt")
    (out / "blind_motion.md").write_text(HEADER + table(rows, names))
    figure(kernels, rows, out / "blind_motion_kernels.png")


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


def _diffpir(y, k, s: float, i: int, prior, preset, options: dict | None, purpose: str = "sample",
             refit=None, samples: int = 1) -> torch.Tensor:
    """The motion-deblur preset (or its blind variant) restoring y with kernel k, on the seeded stream of photo i;
    ``refit``: the kernel refitted at every step (``refine_kernel_em(..., per_step=True)``); ``samples`` > 1: that
    many samples (samples, C, H, W), as the kernel EM's Monte Carlo E-step takes them. ``options``' own
    ``kernel_uncertainty`` ε > 0 restores with ``uncertain_blur`` (the kernel's error per frequency)."""
    from invdiff import operators as ops
    from invdiff.rng import make_generators
    from invdiff.samplers import restore
    from invdiff.tasks import get_task

    hp = {**preset.run_hyper_parameters(get_task("motion-deblur")), **(options or {})}
    steps = hp.pop("steps", preset.steps)
    eps = hp.pop("kernel_uncertainty", 0.0)  # the kernel's error per frequency (uncertain_blur)
    op = uncertain_blur(k, s, eps) if eps else ops.Blur(k, padding="reflect")
    with torch.no_grad():
        return restore(y, op, ops.GaussianNoise(s), prior, method=preset.method,
                       steps=steps, generator=make_generators(0, 1, purpose=purpose, start=i),
                       operator_update=None if refit is None else lambda x0, t: ops.Blur(refit(x0), padding="reflect"),
                       samples=samples, **hp).samples[0]


HEADER = """# Blind motion deblurring (natural suite, 256×256)

The motion-deblur task's own 61×61 kernels (``motionblur`` model, intensity 0.5; kernels 0-2 of the seeded stream
``blind-motion-kernel``, the same for every photo), reflect padding, Gaussian noise σ on [-1, 1]. The kernel is
estimated from the blurred photo alone (``invdiff.blind.estimate_motion_kernel``, 61×61), with the diffusion
restorations then refined by the blind preset's rounds of kernel EM (``invdiff.blind.refine_kernel_em``, E-step:
the blind variant's restoration) as ``invdiff solve`` does, and scored by ``kernel_error`` (‖k − k_true‖/‖k_true‖ after the best integer shift; "classical": before
the EM). PSNR (dB) of the blurry input and of the
restorations with the estimated and with the true kernel: TV deconvolution (``invdiff.baselines``) and, where
present, the task's solve preset (DiffPIR, 20 steps, warm start 0.35 from TV, natural64; with the estimated kernel
its blind variant, λ = 100 instead of the preset's 4, as ``invdiff solve`` runs it; after kernel EM the refined kernel is restored
as a known one, by the preset with λ for the kernel's error (the blind variant's ``kernel_error_tau``), as solve does; "classical k, no EM": the blind variant on the first estimate). The
estimated kernel is
moved by the integer shift that best matches the true one before restoring (a blind estimate is defined up to a
translation; the unaligned TV PSNR is in blind_motion.json). Where present, "shift-aligned" columns score the
diffusion restorations (and the blurry input, in the JSON) as blind-deblurring benchmarks do (Levin et al. 2009,
``comp_upto_shift``): PSNR after the best sub-pixel shift within ±5 px by 0.25 px, a 15-px border shaved
(``invdiff.metrics.psnr_upto_shift``). Produced by ``benchmarks/blind_motion.py``.

"""


def table(rows: list[dict], names: list[str]) -> str:
    diff = all("psnr_diffusion_true" in r for r in rows)
    head = "| photo | σ | kernel | kernel error | blurry | TV est. k | TV true k |"
    sep = "|---|---|---|---|---|---|---|"
    em = all("kernel_error_classical" in r for r in rows)
    classical = diff and all("psnr_diffusion_classical" in r for r in rows)
    if diff:
        head += (" DiffPIR classical k, no EM |" if classical else "") + " DiffPIR est. k | DiffPIR true k |"
        sep += "---|---|" + ("---|" if classical else "")
    if em:
        head, sep = head.replace("| kernel error |", "| kernel error, classical | kernel error |"), sep + "---|"
    shift = diff and all("psnr_diffusion_true_shift" in r for r in rows)
    if shift:
        head, sep = head + " DiffPIR est. k, shift-aligned | DiffPIR true k, shift-aligned |", sep + "---|---|"
    lines = [head, sep]
    cols = ["psnr_blurry", "psnr_tv_estimated", "psnr_tv_true"] + (["psnr_diffusion_classical"] if classical else []) \
        + (["psnr_diffusion_estimated", "psnr_diffusion_true"] if diff else []) \
        + (["psnr_diffusion_estimated_shift", "psnr_diffusion_true_shift"] if shift else [])
    for r in rows:
        vals = " | ".join(f"{r[c]:.2f}" for c in cols)
        err = (f"{r['kernel_error_classical']:.3f} | " if em else "") + f"{r['kernel_error']:.3f}"
        lines.append(f"| {names[r['photo']]} | {r['noise_sigma']} | {r['kernel']} | {err} | {vals} |")
    errs = ["kernel_error_classical", "kernel_error"] if em else ["kernel_error"]
    mean = {c: sum(r[c] for r in rows) / len(rows) for c in cols + errs}
    lines.append("| **mean** | | | " + " | ".join(f"{mean[e]:.3f}" for e in errs) + " | "
                 + " | ".join(f"**{mean[c]:.2f}**" for c in cols) + " |")
    lines.append("")
    scores = (("TV", "tv", ""), ("DiffPIR", "diffusion", "")) if diff else (("TV", "tv", ""),)
    scores += (("DiffPIR, both shift-aligned", "diffusion", "_shift"),) if shift else ()
    for name, key, sfx in scores:
        gap = [r[f"psnr_{key}_true{sfx}"] - r[f"psnr_{key}_estimated{sfx}"] for r in rows]
        gain = [r[f"psnr_{key}_estimated{sfx}"] - r[f"psnr_blurry{sfx}"] for r in rows]
        lines.append(f"- {name}: blind is {sum(gap) / len(gap):.2f} dB below the true kernel on average (within 1.5 dB "
                     f"in {sum(g <= 1.5 for g in gap)}/{len(gap)} cases) and {sum(gain) / len(gain):+.2f} dB over the "
                     f"blurry input (≥ +2 dB in {sum(g >= 2 for g in gain)}/{len(gain)} cases).")
    sec = [r["estimate_seconds"] for r in rows]
    lines.append(f"- kernel estimate: {sum(sec) / len(sec):.1f} s per 256×256 photo on average (max {max(sec):.1f} s).")
    return "\n".join(lines) + "\n"


def figure(kernels: dict, rows: list[dict], path: Path) -> None:
    import matplotlib.figure

    photos = sorted({r["photo"] for r in rows})
    keys = sorted({(r["kernel"], r["noise_sigma"]) for r in rows})
    fig = matplotlib.figure.Figure(figsize=(1.6 * (len(photos) + 1), 1.7 * len(keys)))
    axs = fig.subplots(len(keys), len(photos) + 1, squeeze=False)
    for a, (j, s) in enumerate(keys):
        axs[a, 0].imshow(kernels[("true", j)], cmap="gray")
        axs[a, 0].set_title(f"true {j}, σ={s}", fontsize=7)
        for b, i in enumerate(photos):
            r = next(r for r in rows if (r["photo"], r["kernel"], r["noise_sigma"]) == (i, j, s))
            axs[a, b + 1].imshow(kernels[(i, j, s)], cmap="gray")
            axs[a, b + 1].set_title(f"photo {i}: {r['kernel_error']:.2f}", fontsize=7)
    for ax in axs.flat:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from invdiff.prior import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--split", choices=("suite", "tuning"), default="suite",
                    help="the natural suite's photos (report), or the declared tuning split (data/tuning: choose here)")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.05])
    ap.add_argument("--kernels", type=int, default=3)
    ap.add_argument("--only-kernels", type=int, nargs="+", default=None,
                    help="run only these kernels (for parts run side by side; --merge joins them)")
    ap.add_argument("--kernel-size", type=int, default=61, help="side of the estimated kernel")
    ap.add_argument("--options", type=json.loads, default={}, help="estimate_motion_kernel's keyword options, JSON")
    ap.add_argument("--restore-options", type=json.loads, default={},
                    help="extra hyper-parameters of the restoration with the estimated kernel, JSON")
    ap.add_argument("--diffusion", action="store_true", help="also restore with the task's solve preset (slow)")
    ap.add_argument("--em-options", type=json.loads, default={},
                    help="refine_kernel_em's keyword options over the blind variant's, JSON (e.g. '{\"prior_rounds\": 3}')")
    ap.add_argument("--kernel-em", type=int, default=None,
                    help="rounds of kernel EM after the classical estimate, with --diffusion (default: the preset's)")
    ap.add_argument("--no-em-baseline", action="store_true",
                    help="with EM, do not also restore the classical estimate without it (saves one restoration)")
    ap.add_argument("--true-from", type=Path, default=None,
                    help="an earlier blind_motion.json of the same photos: take the true kernel's diffusion PSNR from it "
                         "(the same restoration: same preset, streams and kernel) instead of running it again, and the "
                         "classical estimate's (no EM) where that estimate is the same (its kernel error agrees)")
    ap.add_argument("--final-only", type=Path, default=None,
                    help="an earlier run's output folder: restore its saved refined kernels again with today's final "
                         "settings, and keep its other columns (the estimate and the EM are deterministic)")
    ap.add_argument("--final-tau", type=float, default=None,
                    help="with --final-only: the kernel error τ of the final λ instead of the blind variant's")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/blind"))
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="only merge the outputs of earlier runs (folders) over disjoint cases into --out")
    a = ap.parse_args()
    if a.merge:
        return merge(a.merge, a.out, _photos(a.split, a.photos)[1])
    if a.final_only:
        return final_only(a.final_only, a.out, a.split, a.restore_options, a.final_tau)
    prior = load("natural64")
    xs, names = _photos(a.split, a.photos)
    a.out.mkdir(parents=True, exist_ok=True)
    rows, kernels = [], {}
    before = {(r["photo"], r["kernel"], r["noise_sigma"]): r
              for r in json.loads(a.true_from.read_text())} if a.true_from else {}
    for j in (a.only_kernels if a.only_kernels is not None else range(a.kernels)):
        for i in range(len(xs)):
            for s in a.noise:
                row, k, k_true = case(xs[i: i + 1], i, j, s, a.kernel_size, prior, a.diffusion, a.options,
                                      a.restore_options, before.get((i, j, s), {}), a.kernel_em,
                                      not a.no_em_baseline, a.em_options)
                rows.append(row)
                kernels[(i, j, s)], kernels[("true", j)] = aligned(k, k_true), k_true
                print(json.dumps(row), flush=True)
                (a.out / "blind_motion.json").write_text(json.dumps(rows, indent=1) + "\n")
                torch.save(kernels, a.out / "blind_motion_kernels.pt")  # for --merge and --final-only
    (a.out / "blind_motion.md").write_text(HEADER + table(rows, names))
    figure(kernels, rows, a.out / "blind_motion_kernels.png")


def merge(parts: list[Path], out: Path, names: list[str]) -> None:
    """One table and figure from runs over disjoint cases (e.g. one per noise level, run side by side)."""
    rows, kernels = [], {}
    for p in parts:
        rows += json.loads((p / "blind_motion.json").read_text())
        kernels.update(torch.load(p / "blind_motion_kernels.pt", weights_only=False))
    rows.sort(key=lambda r: (r["kernel"], r["photo"], r["noise_sigma"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "blind_motion.json").write_text(json.dumps(rows, indent=1) + "\n")
    torch.save(kernels, out / "blind_motion_kernels.pt")  # for --final-only
    (out / "blind_motion.md").write_text(HEADER + table(rows, names))
    figure(kernels, rows, out / "blind_motion_kernels.png")


#: the declared "hard" split of the blind estimator's tuning: six of the prior's training photos (data/natural),
#: picked before any run for the content on which the suite's first estimates fail (grass, fur, dense texture, a
#: photo with few edges). Only for the classical estimator's options, which never see the prior; not the suite's.
HARD_PHOTOS = ("mate-GreenMeadow", "opencv-chicky", "plasma-OneStandsOut", "plasma-Kite", "opencv-baboon",
               "plasma-Path")


def _photos(split: str, n: int) -> tuple[torch.Tensor, list[str]]:
    from invdiff.data import VALIDATION_PHOTOS, center_crop_resize, list_images, load_folder, validation_photos
    from invdiff.io import read_image

    if split == "suite":
        return validation_photos(256)[:n], list(VALIDATION_PHOTOS[:n])
    if split == "hard":
        folder = Path(__file__).resolve().parents[1] / "data" / "natural"
        if not folder.is_dir():
            raise SystemExit("no training photos: run `python scripts/build_natural_data.py` first")
        names = list(HARD_PHOTOS[:n])
        return torch.cat([center_crop_resize(read_image(folder / f"{m}.png", channels=3), 256) for m in names]), names
    folder = Path(__file__).resolve().parents[1] / "data" / "tuning"
    if not folder.is_dir():
        raise SystemExit("no tuning photos: run `python scripts/build_natural_data.py --split tuning` first")
    return load_folder(folder, size=256, limit=n), [p.stem for p in list_images(folder)[:n]]


if __name__ == "__main__":
    main()
