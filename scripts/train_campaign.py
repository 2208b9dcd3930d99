"""One leg of a training campaign: the natural-photo prior, or a model started from it (see invdiff/campaign.py
and CONTRIBUTING.md).

    nice -n 19 nohup python scripts/train_campaign.py --minutes 150 > runs/campaign.log 2>&1 &
    nice -n 19 nohup python scripts/train_campaign.py --recipe natural-palette-colorize --minutes 150 > runs/colorize.log 2>&1 &

Resumes exactly from ckpt/NAME/state.pt, else from the committed compact state, else from the campaign's seed prior
(natural64 for natural; natural for the Palette colouriser). Writes the prior (invdiff/weights/NAME.safetensors +
.json with the ledger) and training/NAME/online.safetensors at every checkpoint; commit those three files after the
leg. SIGTERM or Ctrl-C checkpoints and stops cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from invdiff.campaign import CAMPAIGNS, NAME, CampaignTrainer, campaign_config


class LoggingTrainer(CampaignTrainer):
    def save_state(self) -> None:
        super().save_state()
        last = self.history[-1][1] if self.history else float("nan")
        val = self.leg.get("validation", {}).get("l_simple")
        print(f"{time.strftime('%H:%M:%S')} step {self.step} images {self.images_seen} loss {last:.4f}"
              + (f" val {val:.5f}" if val is not None else ""), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock length of this leg")
    ap.add_argument("--recipe", default=NAME, choices=list(CAMPAIGNS), help="which campaign")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rewarm", type=int, default=200, help="learning-rate warm-up of a re-created optimiser (steps)")
    ap.add_argument("--ckpt-dir", default="ckpt")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="patches per step (default: the recipe's; a GPU wants more, the ledger records it)")
    ap.add_argument("--ckpt-every", type=int, default=None, help="steps between checkpoints (default: the recipe's)")
    ap.add_argument("--fp32", action="store_true",
                    help="no bf16 autocast on CUDA (the legs in bf16 raised the loss at t >= 300; benchmarks/RESULTS.md)")
    a = ap.parse_args()
    cfg = campaign_config(threads=a.threads, minutes=a.minutes, ckpt_dir=a.ckpt_dir, recipe=a.recipe)
    from dataclasses import replace

    if a.device:
        cfg = replace(cfg, device=a.device)
    if a.batch_size:
        cfg = replace(cfg, batch_size=a.batch_size)
    if a.ckpt_every:
        cfg = replace(cfg, ckpt_every=a.ckpt_every)
    if a.fp32:
        cfg = replace(cfg, bf16=False)
    tr = LoggingTrainer(cfg, quiet=True)
    tr.begin_leg(rewarm=a.rewarm, threads=a.threads)
    print(f"leg {tr.leg['leg']}: {tr.leg['from']}", flush=True)

    def stop(signum, frame):  # checkpoint after the current step, then leave
        tr.stop_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tr.run()
    tr.export_compact(validate=True)
    v = tr.leg["validation"]
    print(f"leg {tr.leg['leg']} done: step {tr.step}, images seen {tr.images_seen}, "
          f"validation L_simple {v['l_simple']:.5f} ± {v['stderr']:.5f}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
