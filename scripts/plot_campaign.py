"""Plot the natural prior's training campaign from its model card: validation L_simple against images seen, the
per-noise-level buckets of the first and the latest measurement (where the gain comes from), and the suite bar's
gains over `natural64` (the JSONs of ``benchmarks/suite_bar.py``) against the training seen, with a straight line in
log(training) through the rows that rise with it and where that line would cross the bar.

    python scripts/plot_campaign.py [--card invdiff/weights/natural.json] [--out benchmarks/natural_campaign.png]
                                    [--suite-bars 'benchmarks/campaign/suite_ab_*.json']
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
from pathlib import Path

import numpy as np

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]


def equivalent_64(legs: list[dict]):
    """A function from a count of training images seen (the card's unit: patches of whatever size each leg used) to
    the same training in 64×64-patch equivalents (pixels / 64²), from each leg's recorded patch size (64 where a leg
    does not record one)."""
    spans = []
    for leg in legs:
        (a, b), f = leg["images_seen"], (leg.get("patch", 64) / 64) ** 2
        spans.append((a, b, f))

    def convert(n: float) -> float:
        total = 0.0
        for a, b, f in spans:
            if n <= a:
                break
            total += (min(n, b) - a) * f
        return total + (n - spans[-1][1] if spans and n > spans[-1][1] else 0)

    return convert


#: the suite bar of the natural-prior issue: each row at least this many dB over natural64
BAR_DB = 0.5


def suite_trend(paths: list[Path], eq) -> dict[str, list[tuple[float, float, float]]]:
    """Per row of the suite bar: (training seen in 64×64-patch equivalents, gain over natural64, its standard
    error over the photos) from each JSON of ``benchmarks/suite_bar.py`` (its PSNRs per photo), in the order of the
    training."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for path in paths:
        d = json.loads(Path(path).read_text())
        x = eq(d["natural_images_seen"])
        for key, r in d["rows"].items():
            diff = [b - a for a, b in zip(r["natural64"], r["natural"], strict=True)]
            rows.setdefault(key, []).append((x, statistics.mean(diff), statistics.stdev(diff) / math.sqrt(len(diff))))
    return {k: sorted(v) for k, v in rows.items()}


def log_fit(points: list[tuple[float, ...]]) -> tuple[float, float]:
    """Least squares of gain = a + b·ln(x) over the points (x, gain, ...): (a, b)."""
    if len(points) < 2:
        raise ValueError("a line needs at least two points")
    if len({p[0] for p in points}) < 2:
        raise ValueError("the points share one amount of training")
    b, a = np.polyfit(np.log([p[0] for p in points]), [p[1] for p in points], 1)
    return float(a), float(b)


def crossing(a: float, b: float, level: float = BAR_DB) -> float | None:
    """The training x where the line a + b·ln(x) reaches ``level``; None where the line does not rise."""
    return math.exp((level - a) / b) if b > 0 else None


def current_patch_start(legs: list[dict]) -> int:
    """Images seen when the last run of legs with the current patch size began (the fits' first point)."""
    start = legs[-1]["images_seen"][0]
    for leg in reversed(legs):
        if leg.get("patch", 64) != legs[-1].get("patch", 64):
            break
        start = leg["images_seen"][0]
    return start


def _suite_panel(ax, trend: dict, total: float, fit_from: float) -> list[str]:
    """Draw the suite bar's rows against training (log x) and return one line per row: the slope and crossing of
    its straight line in log(training), fitted to the points from ``fit_from`` on."""
    lines = []
    for i, (key, pts) in enumerate(trend.items()):
        xs = [p[0] / 1000 for p in pts]
        ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", ms=3, capsize=2, lw=0.8,
                    color=f"C{i}", label=key)
        pts = [p for p in pts if p[0] >= fit_from]
        a, b = log_fit(pts)
        x_bar = crossing(a, b)
        lines.append(f"{key}: {b * math.log(2):+.3f} dB per doubling of the training; "
                     + (f"the line reaches +{BAR_DB} dB at {x_bar / 1e6:.0f}M 64×64-patch equivalents "
                        f"({x_bar / total:.0f}× the {total / 1e6:.2f}M so far)" if x_bar else "the line does not rise"))
        if x_bar:
            ends = [fit_from, min(x_bar, 30 * total)]
            ax.plot([e / 1000 for e in ends], [a + b * math.log(e) for e in ends], ls=":", color=f"C{i}", lw=1)
    ax.axhline(BAR_DB, color="C3", lw=1.2, ls="--")
    ax.annotate(f"the bar: +{BAR_DB} dB on each row", (0.02, BAR_DB), xycoords=("axes fraction", "data"),
                va="bottom", fontsize=8, color="C3")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training seen (thousands of 64×64-patch equivalents, log scale)")
    ax.set_ylabel("PSNR gain over natural64 (dB, 6 photos)")
    ax.axvline(fit_from / 1000, color="0.6", lw=0.8, ls="--")
    ax.set_title("the suite bar; dotted: each rising row's straight line in log(training), fitted since the\n"
                 "current patch size (grey line), up to the bar or 30× the training so far", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--card", default=str(ROOT / "invdiff" / "weights" / "natural.json"))
    ap.add_argument("--baseline", default=str(ROOT / "invdiff" / "weights" / "natural64.json"),
                    help="card whose buckets are drawn for comparison (measured with the same patches)")
    ap.add_argument("--baseline-buckets", default=None, help="JSON file with the baseline's buckets (optional)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "natural_campaign.png"))
    ap.add_argument("--suite-bars", default=str(ROOT / "benchmarks" / "campaign" / "suite_ab_*.json"),
                    help="glob of benchmarks/suite_bar.py's JSONs (a third panel); '' for none")
    a = ap.parse_args()
    card = json.loads(Path(a.card).read_text())
    camp = card["campaign"]
    curve = camp["validation_curve"]
    eq = equivalent_64(camp["legs"])
    bars = sorted(glob.glob(a.suite_bars)) if a.suite_bars else []
    fig = Figure(figsize=(16.5 if bars else 11, 4))
    ax, bx, *cx = fig.subplots(1, 3 if bars else 2)
    xs = [eq(c[0]) / 1000 for c in curve]
    ax.errorbar(xs, [c[1] for c in curve], yerr=[c[2] or 0 for c in curve], marker="o", capsize=3)
    photos, changes = None, 0  # the legs before the ledger counted photos drew from natural64's 38
    for leg in camp["legs"][1:]:
        x = eq(leg["images_seen"][0]) / 1000
        ax.axvline(x, color="0.8", lw=0.8)
        if leg.get("photos", photos) != photos:  # the training set changed here
            photos = leg["photos"]
            ax.axvline(x, color="C3", lw=1.2, ls="--")
            ax.annotate(f"{photos} photos from leg {leg['leg']} on", (x, 0.98 - 0.4 * (changes % 2)),
                        xycoords=("data", "axes fraction"),
                        ha="right", va="top", rotation=90, fontsize=8, color="C3",
                        bbox={"fc": "white", "ec": "none", "alpha": 0.85})
            changes += 1
    ax.set_xlabel("training seen (thousands of 64×64 patches, or their pixels in larger ones)")
    ax.set_ylabel("validation L_simple (512 patches, uniform t)")
    cpu = camp.get("process_cpu_minutes_total", camp["cpu_minutes_total"])
    gpu = camp.get("gpu_minutes_total")
    ax.set_title(f"{card['name']} v{card.get('version')}: {cpu:.0f} CPU-minutes" + (f" + {gpu:g} GPU-minutes" if gpu else "")
                 + " of training in all")
    ax.grid(alpha=0.3)
    legs = [leg for leg in camp["legs"] if leg.get("validation", {}).get("buckets")]
    series = []
    if a.baseline_buckets:
        series.append(("natural64", json.loads(Path(a.baseline_buckets).read_text())))
    if legs:
        series.append((f"after leg {legs[-1]['leg']}", legs[-1]["validation"]["buckets"]))
    for label, buckets in series:
        mids = [(b["t"][0] + b["t"][1]) / 2 for b in buckets if b["l_simple"] is not None]
        bx.plot(mids, [b["l_simple"] for b in buckets if b["l_simple"] is not None], marker="o", label=label)
    bx.set_yscale("log")
    bx.set_xlabel("timestep t (bucket centre)")
    bx.set_ylabel("L_simple in the bucket")
    bx.set_title("where the loss is: per noise level")
    bx.grid(alpha=0.3)
    if series:
        bx.legend()
    if bars:
        for line in _suite_panel(cx[0], suite_trend(bars, eq), eq(camp["legs"][-1]["images_seen"][1]),
                                 eq(current_patch_start(camp["legs"]))):
            print(line)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(a.out)


if __name__ == "__main__":
    main()
