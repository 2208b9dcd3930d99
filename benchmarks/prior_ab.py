"""natural64 against the campaign prior `natural` on the tuning split (data/tuning, first 3 photos, 256×256, σ = 0.05),
with the solve presets of Gaussian deblurring and 70 % random inpainting; the same degradations and sampling streams.

    python benchmarks/prior_ab.py      # prints per-photo PSNR, writes benchmarks/tuning/prior_ab.json
"""
import torch, json
torch.set_num_threads(1)
from invdiff.data import load_folder
from invdiff.tasks import simulate, TaskOptions, get_task
from invdiff.rng import make_generators
from invdiff.metrics import psnr
from invdiff.prior import load
from invdiff.samplers import restore
x = load_folder('data/tuning', size=256, limit=3)
out = {}
for task, opts, method, steps, hp in [("deblur", {}, "diffpir", 10, {"start": 0.35, "init": "wiener"}),
                                      ("inpaint", {"mask": "random", "mask_fraction": 0.7}, "ddrm", 20, {"start": 0.5, "init": "biharmonic"})]:
    op, y = simulate(task, x, TaskOptions(noise_sigma=0.05).with_(**opts), generator=make_generators(0, 3, purpose="degrade"))
    for name in ("natural64", "natural"):
        h = {**get_task(task).hyper_parameters.get(method, {}), **hp}
        r = restore(y, op, 0.05, load(name), method=method, steps=steps, generator=make_generators(0, 3, purpose="sample"), **h)
        v = psnr(r.mean, x)
        out[f"{task}/{name}"] = [round(float(a), 3) for a in v]
        print(task, name, [round(float(a), 2) for a in v], round(float(v.mean()), 3), flush=True)
json.dump(out, open('benchmarks/tuning/prior_ab.json', 'w'), indent=1)
