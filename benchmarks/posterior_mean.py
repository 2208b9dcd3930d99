"""The posterior mean of K samples of a solve preset, on the declared tuning split (as ``benchmarks/tune.py``).

    python benchmarks/posterior_mean.py [--prior ffdnet+natural64] [--tasks sr,deblur] [--samples 1,4,8]
                                        [--steps 30] [--start 0.2]

Each task runs its preset (method, steps, warm start, hyper-parameters of ``invdiff/data/solve_presets.json`` for the
prior; ``--steps``/``--start`` override them) with ``restore(..., samples=K)`` and scores the mean of the K samples
(the MMSE estimate the samples approximate) on the tuning photos, with the photos, degradations and sampling streams
of tune.py. One JSON line per configuration goes to ``benchmarks/tuning/posterior-mean-PRIOR.jsonl`` (NFE counts
all K chains); configurations already there are skipped.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import tune


def main() -> None:
    from invdiff.metrics import psnr, ssim
    from invdiff.rng import make_generators
    from invdiff.samplers import restore
    from invdiff.tasks import get_task, solve_preset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default="ffdnet+natural64")
    ap.add_argument("--tasks", default="deblur,sr", help="tune.py case keys")
    ap.add_argument("--samples", default="1,4,8")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--start", type=float, default=None)
    ap.add_argument("--photos", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = tune._photos(args.photos)
    prior = tune._prior(args.prior)
    path = tune.OUT / f"posterior-mean-{args.prior}.jsonl"
    done = {json.dumps(r["config"], sort_keys=True) for r in map(json.loads, path.read_text().splitlines())} \
        if path.is_file() else set()
    for key in args.tasks.split(","):
        case = next(c for c in tune.CASES if c.key == key)
        op, y = tune._problem(case, x, 0)
        p = solve_preset(case.task, args.prior).for_operator(op)  # what solve runs for this measurement
        hp = p.run_hyper_parameters(get_task(case.task))
        if args.start is not None:
            hp["start"] = args.start
        steps = args.steps or p.steps
        for k in map(int, args.samples.split(",")):
            config = {"case": key, "method": p.method, "steps": steps, "samples": k, "hyper_parameters": hp}
            if json.dumps(config, sort_keys=True) in done:
                continue
            t0 = time.perf_counter()
            r = restore(y, op, 0.05, prior, method=p.method, steps=steps, samples=k,
                        generator=make_generators(0, len(x), purpose="sample"), **hp)
            row = {"config": config, "nfe": int(r.nfe) * k, "seconds": round(time.perf_counter() - t0, 1),
                   "psnr": [round(float(v), 3) for v in psnr(r.mean, x)],
                   "ssim": [round(float(v), 4) for v in ssim(r.mean, x)]}
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(key, p.method, f"steps {steps} start {hp.get('start', 1)} K {k}:",
                  f"PSNR {sum(row['psnr']) / len(row['psnr']):.3f}", flush=True)


if __name__ == "__main__":
    main()
