"""The recipes of the bundled priors: the exact commands that produced the shipped weights.

    python scripts/train_zoo.py fmnist32 [--max-minutes M] [--threads N] [--steps S] [--export]

Training resumes from ckpt/<name>/state.pt when it exists (exactly: see invdiff.train). ``--export`` writes the
EMA weights to invdiff/weights/<name>.safetensors (fp16) + .json; ``--init-from-shipped`` starts a new run from
the shipped weights (continue training later).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from invdiff.recipes import RECIPES
from invdiff.train import Trainer

WEIGHTS = Path(__file__).resolve().parents[1] / "invdiff" / "weights"



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--ckpt-dir", default="ckpt")
    ap.add_argument("--export", action="store_true", help="write the EMA weights to invdiff/weights after training")
    ap.add_argument("--init-from-shipped", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    cfg = replace(RECIPES[a.name], max_minutes=a.max_minutes, threads=a.threads, device=a.device, ckpt_dir=a.ckpt_dir)
    if a.steps is not None:
        cfg = replace(cfg, steps=a.steps)
    trainer = Trainer(cfg, quiet=a.quiet)
    if a.init_from_shipped and trainer.step == 0:
        from invdiff.prior import load

        trainer.load_weights(load(a.name))
    trainer.run()
    print(f"{a.name}: step {trainer.step}, images seen {trainer.images_seen}, {trainer.seconds / 60:.1f} min, "
          f"last loss {trainer.history[-1][1] if trainer.history else float('nan'):.4f}")
    if a.export:
        path = trainer.export(WEIGHTS / f"{a.name}.safetensors")
        print(f"exported {path}")


if __name__ == "__main__":
    main()
