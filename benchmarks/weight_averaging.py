"""Weight averaging of a training leg's snapshots against the EMA it ships, on the campaign's patches.

The campaign keeps an exponential moving average of the weights (decay 0.999: an average over the last ~1000 steps
of 4 patches). With batches that small the online weights jitter, and a longer average may sit lower in the loss
(stochastic weight averaging, Izmailov et al. 2018; post-hoc EMA, Karras et al. 2024). The snapshots are copies of
a leg's full state (``ckpt/natural/state.pt``, rewritten at every checkpoint) taken as the leg runs, one file
``snap_<step>.pt`` each with its "net" (online) and "ema" weights; this script
builds uniform averages of the last K snapshots (of the online weights, and of the EMAs) and measures each with
the campaign's own protocol (``invdiff.campaign.patch_losses``): the 512 tuning-split crops (the decision) and the
512 validation crops (the card's figure), every network on the same patches, levels and noises, so the differences
pair up patch by patch.

    python benchmarks/weight_averaging.py --snapshots runs/swa --windows 3 6 --out benchmarks/campaign/averaging.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def averaged(snaps: list[dict], key: str) -> dict[str, torch.Tensor]:
    """The uniform average of the snapshots' ``key`` ("net" or "ema") state dicts, in float64 then float32."""
    out = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in snaps[0][key].items()}
    for s in snaps:
        for k, v in s[key].items():
            out[k] += v.double()
    return {k: (v / len(snaps)).float() for k, v in out.items()}


def main() -> None:
    from campaign_ab import paired, tuning_patches

    from invdiff.campaign import patch_losses, validation_patches
    from invdiff.prior import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshots", type=Path, required=True, help="a folder of snap_<step>.pt")
    ap.add_argument("--prior", default="natural", help="the prior whose network the snapshots are of")
    ap.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8, 16],
                    help="average the last K snapshots, for each K (K larger than the count: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    files = sorted(a.snapshots.glob("snap_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    if len(files) < 2:
        raise SystemExit(f"error: fewer than 2 snapshots in {a.snapshots}")
    snaps = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    prior = load(a.prior)
    net = prior.net.eval()
    draws = {split: (chunks, g.get_state()) for split, (chunks, g) in
             (("tuning", tuning_patches(512)), ("validation", validation_patches(512)))}

    def measure(sd: dict) -> dict[str, torch.Tensor]:
        net.load_state_dict(sd)
        out = {}
        for split, (chunks, state) in draws.items():
            out[split] = patch_losses(net, prior.schedule, chunks, torch.Generator().set_state(state))[0]
        return out

    candidates = {"ema (last snapshot)": snaps[-1]["ema"], "online (last snapshot)": snaps[-1]["net"]}
    for k in sorted({min(k, len(snaps)) for k in a.windows}):
        candidates[f"online, mean of last {k}"] = averaged(snaps[-k:], "net")
        candidates[f"ema, mean of last {k}"] = averaged(snaps[-k:], "ema")
    rows, base = [], None
    for name, sd in candidates.items():
        res = measure(sd)
        base = base or res
        row = {"weights": name}
        for split in draws:
            row[split] = round(float(res[split].mean()), 6)
            row[f"{split} - ema"] = paired(res[split], base[split])
        rows.append(row)
        print(json.dumps(row), flush=True)
    steps = [int(s["step"]) for s in snaps]
    a.out.write_text(json.dumps({"snapshots": len(snaps), "steps": steps, "prior": a.prior,
                                 "protocol": "campaign patch_losses on 512 tuning and 512 validation 64x64 crops, "
                                             "the same draws for every network; differences paired against the "
                                             "last snapshot's EMA", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
