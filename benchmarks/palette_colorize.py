"""The Palette colouriser of photos (``natural-palette-colorize``): tuning on the declared tuning split, then the
report on the natural suite's photos.

    python benchmarks/palette_colorize.py tune     # grid of steps x start x guidance on the tuning split; writes the preset
    python benchmarks/palette_colorize.py tune --prior W.safetensors --no-preset --json J   # scores other weights
    python benchmarks/palette_colorize.py tune ... --grid 20,0.7,3 10,0.6,1   # only these (steps, start, w)
    python benchmarks/palette_colorize.py report   # natural suite photos: grey, DDRM (the suite's method), Palette w=0,1,3
    python benchmarks/palette_colorize.py select   # tuning split: one sample, the mean of K, or the sample nearest the mean
    python benchmarks/palette_colorize.py trajectory   # tuning split: the preset with the grey level kept at every step

``tune`` runs on the first ``--photos`` (6, the whole split, since leg 8; 3 before) photos of ``data/tuning`` (opencv-doc photos that are neither training nor
validation photos, ``benchmarks/tune.py``), 256×256, colourisation with σ = 0.05: for each configuration the
PSNR and the Hasler–Süsstrunk colourfulness M of a single sample (K = 1: the mean of several samples would be
greyer). It chooses, among the configurations whose mean M is at least ``MIN_COLOUR`` of the ground truth's, the
one with the best mean PSNR (ties within 0.05 dB: the fewer network evaluations), and writes it as the colourisation
preset of ``invdiff solve`` (``invdiff/data/solve_presets.json``).

``report`` degrades the natural suite's six photos exactly as ``invdiff bench natural`` does (the suite's seed and
per-image streams) and scores, in one run: the grey image (A⁺y, the suite's ``pinv`` baseline), DDRM with the
unconditional prior (the suite's method and steps), and the Palette model at the preset's steps and start for
guidance w ∈ {0, 1, 3}. Writes ``benchmarks/palette/colorize.json`` and ``colorize.md`` and a figure per photo:
the grey input, K = 4 Palette samples and the ground truth.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "palette"
PRESETS = ROOT / "invdiff" / "data" / "solve_presets.json"
PRIOR = "natural-palette-colorize"
MIN_COLOUR = 0.6
TIE_DB = 0.05
#: ``select``'s diagnostic: the colour of a result scaled about the measured grey (RESULTS, "the colour cosine")
COLOUR_SCALES = (0.25, 0.5, 0.75)
#: ``select``'s other diagnostic: the colour (x − A⁺Ax) low-passed by a Gaussian of these widths (px); a blur acts on
#: each channel alike, so it commutes with the channel mean and the result keeps the pasted grey level exactly
COLOUR_BLURS = (4, 8, 16, 32)
# (steps, start, w); the starts 0.7 and 0.8 since leg 5: the first steps from pure noise set the colour casts, where
# x̂0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ amplifies the network's error (benchmarks/RESULTS.md, "Where the colours go wrong")
GRID = [(10, 0.6, 0.0), (10, 0.6, 1.0), (10, 0.6, 3.0), (20, 0.7, 3.0), (20, 0.8, 3.0), (20, 1.0, 1.0), (20, 1.0, 3.0)]


def _scores(xr: torch.Tensor, x: torch.Tensor, op=None) -> dict:
    """PSNR, SSIM and colourfulness M per image; with the colourisation operator ``op``, also the cosine between
    the result's colour and the truth's (their parts that ``op`` does not see, x − A⁺Ax). Against the grey image
    (no colour), colour c scaled by a > 0 lowers the squared error iff a‖c‖ < 2‖c_true‖·cos: at the truth's
    saturation, colours pay only where the cosine exceeds 1/2."""
    from invdiff.metrics import colourfulness, psnr, ssim

    out = {"psnr": [round(float(v), 3) for v in psnr(xr, x)], "ssim": [round(float(v), 4) for v in ssim(xr, x)],
           "colourfulness": [round(float(v), 2) for v in colourfulness(xr)]}
    if op is not None:
        c, ct = (xr - op.pinv(op(xr))).flatten(1), (x - op.pinv(op(x))).flatten(1)
        cos = (c * ct).sum(1) / (c.norm(dim=1) * ct.norm(dim=1)).clamp_min(1e-12)
        out["colour_cosine"] = [round(float(v), 3) for v in cos]
    return out


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _palette(y, op, prior, steps: int, start: float, w: float, gens, samples: int = 1, paste: bool = False,
             paste_denoiser: str = ""):
    from invdiff.samplers import restore

    hp = {"guidance": w, "start": start, "init": "pinv", "paste": paste}
    if paste_denoiser:
        hp["paste_denoiser"] = paste_denoiser
    return restore(y, op, 0.05, prior, method="palette", steps=steps, samples=samples, generator=gens, **hp)


def _pasted(x: torch.Tensor, y: torch.Tensor, op) -> torch.Tensor:
    """Palette's ``paste=True`` applied to a finished sample: the measured grey level replaces the sample's own,
    x + A⁺(y − A x), the colour (the part A does not see) kept (then clipped, as ``restore`` clips)."""
    return (x + op.pinv(y - op(x))).clamp(-1, 1)


#: the denoiser of the denoised paste (``paste_denoiser``): the measured grey level with its noise removed
PASTE_DENOISER = "ffdnet"


def _variants(xr: torch.Tensor, y: torch.Tensor, op, yd: torch.Tensor):
    """A finished sample as ``restore`` returns it without a paste, with the paste, and with the denoised paste
    (``yd``: ``denoised_measurement``): (paste, paste_denoiser, extra NFE, result)."""
    return ((False, "", 0, xr), (True, "", 0, _pasted(xr, y, op)), (True, PASTE_DENOISER, 1, _pasted(xr, yd, op)))


def _denoised(y: torch.Tensor, op, shape) -> torch.Tensor:
    from invdiff.samplers.palette import denoised_measurement

    return denoised_measurement(y, op, 0.05, PASTE_DENOISER, shape)


def _problem(x: torch.Tensor, seed: int, ids=None):
    from invdiff.rng import stream_seed
    from invdiff.tasks import TaskOptions, simulate

    ids = range(len(x)) if ids is None else ids
    gens = [torch.Generator().manual_seed(stream_seed(seed, "degrade", i)) for i in ids]
    return simulate("colorize", x, TaskOptions(noise_sigma=0.05), generator=gens)


def _sample_gens(seed: int, n: int):
    from invdiff.rng import stream_seed

    return [torch.Generator().manual_seed(stream_seed(seed, "sample", i)) for i in range(n)]


def tune(args) -> None:
    from invdiff.metrics import colourfulness
    from invdiff.prior import load

    from tune import _photos

    x = _photos(args.photos)  # the declared tuning split, 256×256
    op, y = _problem(x, 0)
    yd = _denoised(y, op, x.shape)
    prior = load(args.prior)
    truth = float(colourfulness(x).mean())
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for steps, start, w in args.grid or GRID:
        t0 = time.perf_counter()
        r = _palette(y, op, prior, steps, start, w, _sample_gens(0, len(x)))
        seconds = round(time.perf_counter() - t0, 1)
        for paste, den, extra, xr in _variants(r.mean, y, op, yd):
            row = {"steps": steps, "start": start, "guidance": w, "paste": paste, "paste_denoiser": den,
                   "nfe": int(r.nfe) + extra, "seconds": seconds, **_scores(xr, x, op)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = [r for r in rows if _mean(r["colourfulness"]) >= MIN_COLOUR * truth] or rows
    best = max(_mean(r["psnr"]) for r in ok)
    chosen = min((r for r in ok if _mean(r["psnr"]) >= best - TIE_DB), key=lambda r: (r["nfe"], -_mean(r["psnr"])))
    res = {"prior": args.prior, "photos": args.photos, "truth_colourfulness": round(truth, 2), "rows": rows,
           "chosen": chosen, "rule": f"best mean PSNR among mean M >= {MIN_COLOUR} x truth's; ties within {TIE_DB} dB: fewer NFE"}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.no_preset:  # e.g. a recipe A/B arm's weights: scored, not installed
        print("chosen (preset not written):", json.dumps(chosen))
        return
    spec = json.loads(PRESETS.read_text())
    hp = {"guidance": chosen["guidance"], "start": chosen["start"], "init": "pinv", "paste": chosen["paste"]}
    if chosen.get("paste_denoiser"):
        hp["paste_denoiser"] = chosen["paste_denoiser"]
    spec["presets"]["colorize"] = {"method": "palette", "prior": args.prior, "steps": chosen["steps"], "hyper_parameters": hp,
                                   "tuning_psnr": round(_mean(chosen["psnr"]), 3),
                                   "tuning_colourfulness": round(_mean(chosen["colourfulness"]), 2)}
    PRESETS.write_text(json.dumps(spec, indent=1) + "\n")
    print("chosen:", json.dumps(chosen))


def report(args) -> None:
    from invdiff.bench.suite import load_suite
    from invdiff.figures import display, panels
    from invdiff.metrics import colourfulness
    from invdiff.prior import load
    from invdiff.samplers import restore
    from invdiff.tasks import solve_preset

    suite = load_suite("natural")
    x = suite.images()
    op, y = _problem(x, suite.seed)
    preset = solve_preset("colorize")
    hp = preset.hyper_parameters if preset and preset.prior else {}
    steps, start, paste = (preset.steps if hp else 20), hp.get("start", 1.0), bool(hp.get("paste", False))
    paste_den = hp.get("paste_denoiser", "")
    rows = [{"method": "ground truth", "colourfulness": [round(float(v), 2) for v in colourfulness(x)]}]
    grey = op.pinv(y).clamp(-1, 1)
    rows.append({"method": "grey (A+y, baseline pinv)", "nfe": 0, **_scores(grey, x)})
    yd = _denoised(y, op, x.shape)
    rows.append({"method": f"grey, denoised ({PASTE_DENOISER}; A+ of the denoised measurement)", "nfe": 1,
                 **_scores(op.pinv(yd).clamp(-1, 1), x)})
    if not args.skip_ddrm:
        t0 = time.perf_counter()
        r = restore(y, op, 0.05, load(suite.prior), method="ddrm", steps=suite.steps["ddrm"], generator=_sample_gens(suite.seed, len(x)))
        rows.append({"method": f"ddrm {suite.steps['ddrm']} steps ({suite.prior})", "nfe": int(r.nfe),
                     "seconds": round(time.perf_counter() - t0, 1), **_scores(r.mean, x, op)})
        print(json.dumps(rows[-1]), flush=True)
    prior = load(args.prior)
    w_preset = float(hp.get("guidance", 1.0))
    for w in sorted({0.0, 1.0, 3.0, w_preset}):  # the three weights and the preset's
        t0 = time.perf_counter()
        r = _palette(y, op, prior, steps, start, w, _sample_gens(suite.seed, len(x)))
        seconds = round(time.perf_counter() - t0, 1)
        for p, den, extra, xr in _variants(r.mean, y, op, yd):
            name = f"palette w={w:g}" + (", paste" if p else "") + (f" denoised ({den})" if den else "")
            rows.append({"method": name, "guidance": w, "paste": p, "paste_denoiser": den, "steps": steps,
                         "start": start, "nfe": int(r.nfe) + extra, "seconds": seconds, **_scores(xr, x, op)})
            print(json.dumps(rows[-1]), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    w_fig = preset.hyper_parameters.get("guidance", 1.0) if preset and preset.prior else 1.0
    k = _palette(y[: args.figures], op.select(list(range(args.figures))), prior, steps, start, w_fig,
                 _sample_gens(suite.seed, args.figures), samples=4, paste=paste, paste_denoiser=paste_den)
    for i in range(args.figures):
        items = [("grey input", display(grey[i]), None)]
        items += [(f"Palette sample {j + 1}", display(k.samples[i, j]), None) for j in range(4)]
        items.append(("ground truth", display(x[i]), None))
        title = (f"{PRIOR}: {steps} steps, start {start}, w = {w_fig:g}" + (", paste" if paste else "")
                 + (f" ({paste_den})" if paste_den else "") + ", K = 4")
        panels(OUT / f"colorize_{i}.png", items, title=title)
    res = {"suite": "natural", "photos": len(x), "noise_sigma": 0.05, "prior": args.prior, "rows": rows}
    (OUT / "colorize.json").write_text(json.dumps(res, indent=1) + "\n")
    truth = _mean(rows[0]["colourfulness"])
    lines = ["# Colourisation of the natural suite's photos", "",
             f"The six validation photos, 256×256, grey = mean of RGB plus noise σ = 0.05, degraded as `invdiff bench "
             f"natural` does (seed {suite.seed}). One sample per photo (K = 1). Colourfulness: Hasler–Süsstrunk M, "
             f"mean over the photos; the ground truth's is {truth:.1f}.", "",
             "| method | NFE | PSNR | SSIM | colourfulness M | M / truth |", "|---|---|---|---|---|---|"]
    for r in rows[1:]:
        m = _mean(r["colourfulness"])
        lines.append(f"| {r['method']} | {r['nfe']} | {_mean(r['psnr']):.2f} | {_mean(r['ssim']):.3f} | {m:.1f} | "
                     f"{m / truth:.0%} |")
    lines += ["", "Figures: " + ", ".join(f"[photo {i}](colorize_{i}.png)" for i in range(args.figures)), ""]
    (OUT / "colorize.md").write_text("\n".join(lines))
    print("\n".join(lines))


def select(args) -> None:
    """K samples of the preset per tuning photo, pasted as the preset pastes (``paste_denoiser`` included); scores
    of what ``restore`` can return from them: one sample (the first, which is the K = 1 result), the mean of the first k, and the sample of the first k nearest
    their mean (``select="mbr"``), for k = 4 and K; and, as a diagnostic, one sample and the mean of K with their
    colour scaled by ``COLOUR_SCALES`` about the measured grey (grey + a·(x − A⁺Ax): a = 0 is the grey image) or
    low-passed by ``COLOUR_BLURS`` (grey + G * (x − A⁺Ax)), with
    every row's colour cosine (``_scores``). ``--cache DIR`` keeps each photo's samples (and reuses them)."""
    from invdiff.bench.runner import prior_fingerprint
    from invdiff.metrics import colourfulness
    from invdiff.prior import load
    from invdiff.samplers.registry import distances_to_mean
    from invdiff.tasks import solve_preset

    from tune import _photos

    x = _photos(args.photos)
    op, y = _problem(x, 0)
    preset = solve_preset("colorize")
    hp = preset.hyper_parameters
    steps, start, w = preset.steps, hp.get("start", 1.0), hp.get("guidance", 0.0)
    prior = load(args.prior)
    gens = _sample_gens(0, len(x))
    # the preset's paste: of the measurement, or of the denoised measurement (``paste_denoiser``)
    y_paste = _denoised(y, op, x.shape) if hp.get("paste_denoiser") else y
    cache = Path(args.cache) if args.cache else None
    key = prior_fingerprint(args.prior)["prior_sha256"][:16]
    ks = sorted({4, args.k})
    scaled = [f"{what}, colour × {a:g}" for what in ("one sample", f"mean of {args.k}") for a in COLOUR_SCALES]
    scaled += [f"{what}, colour blurred {b} px" for what in ("one sample", f"mean of {args.k}") for b in COLOUR_BLURS]
    rows = {name: [] for name in ["one sample", "a sample, on average"]
            + [f"{how} of {k}" for k in ks for how in ("mean", "nearest the mean")] + scaled}
    colour = {name: [] for name in rows}
    cosine = {name: [] for name in rows}
    for i in range(len(x)):
        # the cache is keyed by the weights' hash and the preset, so samples of other weights are never reused
        f = cache / f"{key}_{steps}_{start}_{w:g}_photo{i}_K{args.k}.pt" if cache else None
        if f is not None and f.exists():
            s = torch.load(f)
        else:
            s = _palette(y[i:i + 1], op.select([i]), prior, steps, start, w, [gens[i]], samples=args.k).samples[0]
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                torch.save(s, f)
        s = _pasted(s, y_paste[i:i + 1].expand(len(s), -1, -1, -1), op.select([i] * len(s)))
        picks = {"one sample": s[:1]}
        for k in ks:
            picks[f"mean of {k}"] = s[:k].mean(0, keepdim=True)
            picks[f"nearest the mean of {k}"] = s[int(distances_to_mean(s[None, :k])[0].argmin())][None]
        opi = op.select([i])
        for what in ("one sample", f"mean of {args.k}"):
            grey_i = opi.pinv(opi(picks[what]))
            for a in COLOUR_SCALES:
                picks[f"{what}, colour × {a:g}"] = (grey_i + a * (picks[what] - grey_i)).clamp(-1, 1)
            for b in COLOUR_BLURS:
                picks[f"{what}, colour blurred {b} px"] = (grey_i + _blurred(picks[what] - grey_i, b)).clamp(-1, 1)
        for name, xr in picks.items():
            sc = _scores(xr, x[i:i + 1], opi)
            rows[name].append(sc["psnr"][0])
            colour[name].append(sc["colourfulness"][0])
            cosine[name].append(sc["colour_cosine"][0])
        sc = _scores(s, x[i:i + 1].expand_as(s), op.select([i] * len(s)))
        rows["a sample, on average"].append(round(_mean(sc["psnr"]), 3))
        colour["a sample, on average"].append(round(_mean(sc["colourfulness"]), 2))
        cosine["a sample, on average"].append(round(_mean(sc["colour_cosine"]), 3))
        print(i, {n: v[-1] for n, v in rows.items()}, flush=True)
    grey = _scores(op.pinv(y).clamp(-1, 1), x)
    truth = [round(float(v), 2) for v in colourfulness(x)]
    res = {"prior": args.prior, "photos": len(x), "K": args.k, "steps": steps, "start": start, "guidance": w, "paste": True,
           "paste_denoiser": hp.get("paste_denoiser", ""),
           **({"denoised_grey_psnr": _scores(op.pinv(y_paste).clamp(-1, 1), x)["psnr"]} if y_paste is not y else {}),
           "grey_psnr": grey["psnr"], "truth_colourfulness": truth,
           "rows": [{"method": n, "psnr": rows[n], "colourfulness": colour[n], "colour_cosine": cosine[n]} for n in rows]}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    base = rows["one sample"]
    print(f"grey image {_mean(grey['psnr']):.2f} dB; truth's M {_mean(truth):.1f}")
    for n in rows:
        d = [a - b for a, b in zip(rows[n], base)]
        m = _mean(d)
        se = (sum((v - m) ** 2 for v in d) / max(1, len(d) - 1) / len(d)) ** 0.5
        print(f"{n}: {_mean(rows[n]):.2f} dB ({m:+.2f} ± {se:.2f} over one sample), M {_mean(colour[n]) / _mean(truth):.0%} "
              f"of the truth's, colour cosine {_mean(cosine[n]):.2f}")


class _GreyKept:
    """A conditional prior whose x̂0 has its measured part replaced by the denoised measurement at every step,
    x̂0 ← x̂0 + A⁺(ŷ − A x̂0), with ε re-derived from x_t (DDNM's range-null split on Palette's trajectory): the
    colour the network predicts is then always conditioned on a state whose grey level is the measured one."""

    def __init__(self, prior, op, yd):
        self.__dict__.update(_prior=prior, _op=op, _yd=yd)

    def __getattr__(self, name):
        return getattr(self._prior, name)

    def denoise(self, x_t, t, cond=None, **kw):
        from invdiff.eps import Denoised

        d = self._prior.denoise(x_t, t, cond, **kw)
        x0 = d.x0 + self._op.pinv(self._yd - self._op(d.x0))
        return Denoised(x0=x0, eps=self._prior.eps_from_x0(x_t, t, x0))


def trajectory(args) -> None:
    """The preset on the tuning split, one sample per photo, as it is and with the grey level kept on the measured
    (denoised) one at every step (``_GreyKept``), the same streams: PSNR, M and colour cosine of each."""
    from invdiff.metrics import colourfulness
    from invdiff.prior import load
    from invdiff.tasks import solve_preset

    from tune import _photos

    x = _photos(args.photos)
    op, y = _problem(x, 0)
    yd = _denoised(y, op, x.shape)
    preset = solve_preset("colorize")
    hp = preset.hyper_parameters
    prior = load(args.prior)
    truth = float(colourfulness(x).sum())
    res = {"prior": args.prior, "photos": len(x), "steps": preset.steps, "hyper_parameters": hp, "rows": []}
    for kept in (False, True):
        gens = _sample_gens(0, len(x))
        sc = {"psnr": [], "ssim": [], "colourfulness": [], "colour_cosine": []}
        for i in range(len(x)):
            opi = op.select([i])
            p = _GreyKept(prior, opi, yd[i:i + 1]) if kept else prior
            xr = _palette(y[i:i + 1], opi, p, preset.steps, hp.get("start", 1.0), hp.get("guidance", 0.0),
                          [gens[i]], paste=True, paste_denoiser=hp.get("paste_denoiser", "")).mean
            for key, v in _scores(xr, x[i:i + 1], opi).items():
                sc[key] += v
        res["rows"].append({"grey_kept_every_step": kept, **sc})
        print(f"grey kept at every step: {kept}: {_mean(sc['psnr']):.3f} dB, M {sum(sc['colourfulness']) / truth:.0%} "
              f"of the truth's, colour cosine {_mean(sc['colour_cosine']):.3f}", flush=True)
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


def _blurred(c: torch.Tensor, width: float) -> torch.Tensor:
    """A Gaussian low-pass of std ``width`` px (kornia, reflect borders) of each channel of c."""
    from kornia.filters import gaussian_blur2d

    k = 2 * round(3 * width) + 1
    return gaussian_blur2d(c, (k, k), (float(width), float(width)), border_type="reflect")


def cli(doc: str, prior: str, tune_fn, report_fn, *, photos: int = 3, report_flags: dict | None = None,
        commands: dict | None = None, command_flags: dict | None = None, tune_flags: dict | None = None) -> None:
    """The ``tune`` / ``report`` command line of a benchmark on the tuning split and the natural suite:
    ``report_flags`` and ``tune_flags`` (flag: ``add_argument`` keywords) go to ``report`` and ``tune``; ``commands`` (name: (help, function of
    the parsed arguments)) are further subcommands, with their flags in ``command_flags`` (name: flags as
    ``report_flags``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tune")
    t.add_argument("--photos", type=int, default=photos)
    t.add_argument("--prior", default=prior)
    for flag, kw in (tune_flags or {}).items():
        t.add_argument(flag, **kw)
    r = sub.add_parser("report")
    r.add_argument("--prior", default=prior)
    for flag, kw in (report_flags or {}).items():
        r.add_argument(flag, **kw)
    fns = {"tune": tune_fn, "report": report_fn}
    for name, (help_, fn) in (commands or {}).items():
        c = sub.add_parser(name, help=help_)
        for flag, kw in (command_flags or {}).get(name, {}).items():
            c.add_argument(flag, **kw)
        fns[name] = fn
    a = ap.parse_args()
    fns[a.cmd](a)


def _config(text: str) -> tuple[int, float, float]:
    """A ``--grid`` entry "steps,start,w"."""
    try:
        steps, start, w = text.split(",")
        return int(steps), float(start), float(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STEPS,START,W (e.g. 20,0.7,3), got {text!r}") from None


def main() -> None:
    cli(__doc__, PRIOR, tune, report, photos=6, report_flags={"--figures": {"type": int, "default": 3},
                                                    "--skip-ddrm": {"action": "store_true"}},
        commands={"select": ("K samples on the tuning split: one, their mean, the one nearest their mean", select),
                  "trajectory": ("the preset with the grey level kept on the measured one at every step", trajectory)},
        tune_flags={"--json": {"default": str(OUT / "colorize_tuning.json"), "help": "where the rows and the choice go"},
                    "--no-preset": {"action": "store_true", "help": "score only: leave the preset of solve as it is"},
                    "--grid": {"type": _config, "nargs": "+", "default": None, "metavar": "STEPS,START,W",
                               "help": "configurations to score instead of GRID (e.g. a recipe A/B arm's shortlist)"}},
        command_flags={"select": {"--photos": {"type": int, "default": 6}, "--prior": {"default": PRIOR},
                                  "-k": {"type": int, "default": 8, "dest": "k"}, "--cache": {"default": None},
                                  "--json": {"default": str(OUT / "colorize_select.json")}},
                       "trajectory": {"--photos": {"type": int, "default": 6}, "--prior": {"default": PRIOR},
                                      "--json": {"default": str(OUT / "colorize_trajectory.json")}}})


if __name__ == "__main__":
    main()
