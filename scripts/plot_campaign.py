"""Plot the natural prior's training campaign from its model card: validation L_simple against images seen, and
the per-noise-level buckets of the first and the latest measurement (where the gain comes from).

    python scripts/plot_campaign.py [--card invdiff/weights/natural.json] [--out benchmarks/natural_campaign.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--card", default=str(ROOT / "invdiff" / "weights" / "natural.json"))
    ap.add_argument("--baseline", default=str(ROOT / "invdiff" / "weights" / "natural64.json"),
                    help="card whose buckets are drawn for comparison (measured with the same patches)")
    ap.add_argument("--baseline-buckets", default=None, help="JSON file with the baseline's buckets (optional)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "natural_campaign.png"))
    a = ap.parse_args()
    card = json.loads(Path(a.card).read_text())
    camp = card["campaign"]
    curve = camp["validation_curve"]
    fig = Figure(figsize=(11, 4))
    ax, bx = fig.subplots(1, 2)
    eq = equivalent_64(camp["legs"])
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
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(a.out)


if __name__ == "__main__":
    main()
