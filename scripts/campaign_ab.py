"""Short A/B runs of a campaign's recipe at equal CPU time: every arm continues the same full training state
(online and EMA weights, Adam moments, step counter) for the same process CPU time on one thread, with one change
to the recipe, and the same random streams (step k draws from the same generator in every arm). ``--recipe`` names
the campaign (``natural``, the prior, by default; or a Palette model's, e.g. ``natural-palette-colorize``).

    nice -n 19 nohup python scripts/campaign_ab.py --from ckpt/natural/state.pt --cpu-minutes 16 \\
        --arms base,anneal,lognormal,min-snr,data,patch128 --out runs/ab > runs/ab.log 2>&1 &
    python benchmarks/campaign_ab.py --runs runs/ab     # scores the arms (validation, tuning split)
    python scripts/campaign_ab.py --adopt lognormal --out runs/ab    # the chosen arm becomes the campaign's next leg

Each arm writes OUT/ARM/ema.safetensors and OUT/ARM/online.safetensors, each with its JSON card (loadable priors:
``invdiff.prior.load(path)``, ``benchmarks/full_size_validation.py``), OUT/ARM/state.pt (the full training state, to
continue the campaign from the chosen arm) and OUT/ARM/arm.json (its recipe change, steps, images, CPU and wall
minutes). Arms already written are skipped, so a rerun continues.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from invdiff.recipes import RECIPES
from invdiff.train import Trainer

#: the recipe changes under test, each over the campaign's current recipe RECIPES[recipe]; an arm that the recipe
#: has since adopted is the same as "base". Round 1 (from leg 10, 64×64 patches and uniform levels): every arm down
#: to patch128, log-normal levels adopted; round 2 (from leg 13, log-normal levels): base, patch128 and
#: patch128-uniform, 128×128 patches adopted (leg 14). See benchmarks/RESULTS.md for both.
ARMS: dict[str, dict] = {
    "base": {},
    # the learning rate annealed (cosine) to a tenth over about the arm's length (~780 steps of 16 64×64 patches, ~720 of 4 128×128)
    "anneal": {"lr_schedule": "cosine", "lr_min": 2e-5, "lr_decay_steps": 780},
    # EDM's log-normal training levels (ln σ ~ N(-1.2, 1.2²)) with a 20 % uniform share, L_simple's ε-MSE
    "lognormal": {"t_sampling": "lognormal", "t_lognormal": (-1.2, 1.2, 0.2)},
    # min-SNR-5 weighting of the ε-MSE (uniform t): the low-noise levels that dominate L_simple turned down
    "min-snr": {"loss_weighting": "min-snr", "min_snr_gamma": 5.0},
    # the photos at short side 1024 instead of 384 (scripts/build_natural_data.py --short-side 1024 --out
    # data/natural1024), crops of 1-5.3 patch sizes (the same largest region as today's 1-2 at 384), colour jitter
    "data": {"data": "folder:data/natural1024", "max_scale": 5.3, "colour_jitter": 0.1},
    # 128×128 patches, 4 per step (the same pixels per step as 16 of 64×64)
    "patch128": {"patch": 128, "batch_size": 4},
    # 64×64 patches, 16 per step (the recipe of legs 1-13)
    "patch64": {"patch": 64, "batch_size": 16},
    # the same with DDPM's uniform levels (the recipe before leg 11)
    "patch128-uniform": {"patch": 128, "batch_size": 4, "t_sampling": "uniform"},
    # one 256×256 patch a step (the same pixels): the size the suite restores (RESULTS: "The loss at the size the
    # suite restores")
    "patch256": {"patch": 256, "batch_size": 1},
    # depth: the trained network grown by two residual blocks at the end of each decoder stage, each starting as the
    # identity (invdiff.nets.unet.grow_state), so the arm starts from exactly the seed's function with +25 % of
    # parameters and ~20 % more time a step; the new parameters' Adam moments start at zero. Width cannot grow
    # the same way: the 32 groups of the GroupNorms and the time embedding's width are tied to the channel count.
    "deeper": {"grow": {"extra_res_blocks": (2, 2, 2, 2)}},
    # the training levels moved towards high noise (ln σ ~ N(3.0, 1.5²), a 20 % uniform share; the ε-MSE unweighted):
    # P(t ≥ 700) 0.30 → 0.57, P(t < 100) 0.10 → 0.02. For the colouriser, whose colours are chosen at t ≳ 700 and
    # whose uniform-t ε-loss weighs x̂0's error there by ᾱ/(1−ᾱ) < 0.01 (benchmarks/RESULTS.md, "Leg 6")
    "high-levels": {"t_sampling": "lognormal", "t_lognormal": (3.0, 1.5, 0.2)},
    # the same photos, each patch the more colourful of two candidates (Hasler-Süsstrunk M): for the colouriser,
    # whose colour cosine stopped rising with more of the recipe (benchmarks/RESULTS.md, "the colour cosine")
    "colourful": {"colour_pick": 2},
    # the listed photos without the 140 that exist only as lossy WebPs (gcompris-qt-data, ~1024 px): whether their
    # compression, which smooths fine texture, is what lowered random inpainting after leg 56 (benchmarks/RESULTS.md)
    "no-webp": {"data": "natural-no-webp"},
    # the 66 photos and the 140 WebP ones at half the training copy's size (short side 192 instead of 384, about a
    # fifth of their source's), where their compression artefacts are below a pixel: more photos again, for the
    # validation loss that rose over legs 58-63 on the 66 alone (benchmarks/RESULTS.md, "The suite bar's trend")
    "webp-half": {"data": "natural-webp-half"},
}


def grown(cfg, grow: dict | None):
    """The recipe with its U-Net grown as ``grow`` says (UNetConfig fields), or unchanged."""
    if not grow:
        return cfg
    return replace(cfg, unet=replace(cfg.unet, **{k: tuple(v) if isinstance(v, list) else v for k, v in grow.items()}))


def load_seed(tr, seed_state: dict) -> None:
    """The seed's full state into a trainer whose network is the seed's or the seed's grown deeper: weights and EMA
    (new blocks as the identity), and Adam's moments for every parameter the seed had (the new ones start at zero:
    they come last in the parameter order, so the seed's indices stay valid)."""
    from invdiff.nets.unet import grow_state

    new = grow_state(tr.net, seed_state["net"])
    grow_state(tr.ema, seed_state["ema"])
    opt = seed_state["opt"]
    if new:
        n = sum(1 for _ in tr.net.parameters())
        opt = {"state": opt["state"], "param_groups": [{**opt["param_groups"][0], "params": list(range(n))}]}
    tr.opt.load_state_dict(opt)


def run_arm(name: str, change: dict, seed_state: dict, minutes: float, out: Path, threads: int,
            recipe: str = "natural") -> None:
    from invdiff.campaign import arm_card

    step0 = int(seed_state["step"])
    change = dict(change)
    grow = change.pop("grow", None)
    cfg = grown(replace(RECIPES[recipe], name=f"{recipe}-ab-{name}", threads=threads, sample_every=0,
                        ckpt_dir=str(out / "_none"), warmup=1, warmup_from=step0, **change), grow)
    tr = Trainer(cfg, quiet=True)
    load_seed(tr, seed_state)
    tr.step, tr.images_seen = step0, int(seed_state["images_seen"])
    c0, w0, losses = time.process_time(), time.perf_counter(), []
    while time.process_time() - c0 < 60 * minutes:
        losses.append(tr.train_step())
        if tr.step % 100 == 0:
            print(f"{time.strftime('%H:%M:%S')} {name} step {tr.step} loss {sum(losses[-100:]) / len(losses[-100:]):.4f}", flush=True)
    from safetensors.torch import save_file

    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    for which, net in (("online", tr.net), ("ema", tr.ema)):
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(d / f"{which}.safetensors"))
        arm_card(recipe, f"{recipe}-ab-{name}-{which}", cfg.unet.to_dict(), d / f"{which}.json")
    torch.save(tr.state(), d / "state.pt")  # the full state: the campaign can continue from the chosen arm
    info = {"arm": name, "recipe": recipe, "change": json.loads(json.dumps({**change, **({"grow": grow} if grow else {})})),
            "from_step": step0, "steps": tr.step - step0, "images": tr.images_seen - int(seed_state["images_seen"]),
            "pixels": (tr.images_seen - int(seed_state["images_seen"])) * cfg.patch ** 2,
            "cpu_minutes": round((time.process_time() - c0) / 60, 2), "wall_minutes": round((time.perf_counter() - w0) / 60, 2),
            "threads": threads, "mean_training_loss": sum(losses) / len(losses), "config": cfg.to_dict()}
    (d / "arm.json").write_text(json.dumps(info, indent=1))
    print(f"{name} done: {info['steps']} steps, {info['images']} patches, {info['cpu_minutes']} CPU-min", flush=True)


def adopt(name: str, out: Path, ckpt_dir: str = "ckpt") -> None:
    """Make an arm the campaign's next leg: its training goes into the card's ledger (as a leg of its own, with its
    recipe change and validation figures) and its full state becomes ckpt/RECIPE/state.pt, so that the next
    `train_campaign.py` leg resumes exactly from it. The card and weights are rewritten at that leg's first
    checkpoint; the recipe change itself belongs in invdiff/recipes.py."""
    import datetime as _dt

    from invdiff.campaign import validation_loss
    from invdiff.prior import load
    from invdiff.zoo import WEIGHTS_DIR

    info = json.loads((out / name / "arm.json").read_text())
    seed = json.loads((out / "seed.json").read_text())
    recipe = seed.get("recipe", "natural")
    card_path = WEIGHTS_DIR / f"{recipe}.json"
    card = json.loads(card_path.read_text())
    if int(card["training"]["steps"]) != info["from_step"]:
        raise SystemExit(f"the arm started at step {info['from_step']}, the committed prior is at step "
                         f"{card['training']['steps']}: adopt only an arm of the committed state")
    st = torch.load(out / name / "state.pt", map_location="cpu", weights_only=True)
    st["seconds"] = float(card["training"]["seconds"]) + 60 * info["wall_minutes"]
    tr = Trainer(grown(replace(RECIPES[recipe], ckpt_dir=str(out / "_none")), info["change"].get("grow")), quiet=True)
    tr.ema.load_state_dict(st["ema"])
    val = validation_loss(tr.ema.eval(), tr.schedule, condition=tr.condition)
    legs = card["campaign"]["legs"]
    legs.append({"leg": len(legs), "what": f"recipe A/B arm '{name}' ({json.dumps(info['change'])}), adopted; "
                 "see benchmarks/RESULTS.md", "started": _dt.datetime.fromtimestamp((out / name / "arm.json").stat().st_mtime
                 - 60 * info["wall_minutes"], _dt.timezone.utc).isoformat(timespec="seconds"),
                 "from": f"exact resume from ckpt at step {info['from_step']}",
                 "steps": [info["from_step"], info["from_step"] + info["steps"]],
                 "images_seen": [seed["images_seen"], seed["images_seen"] + info["images"]],
                 "wall_minutes": info["wall_minutes"], "cpu_minutes": round(info["wall_minutes"] * info["threads"], 1),
                 "process_cpu_minutes": info["cpu_minutes"], "threads": info["threads"], "validation": val,
                 **{k: info["config"][k] for k in ("patch", "batch_size", "lr")}})
    card["campaign"]["validation_curve"].append([seed["images_seen"] + info["images"], val["l_simple"], val["stderr"]])
    card["training"].update(steps=info["from_step"] + info["steps"], images_seen=seed["images_seen"] + info["images"],
                            seconds=round(st["seconds"], 1))
    ck = Path(ckpt_dir) / recipe
    ck.mkdir(parents=True, exist_ok=True)
    torch.save(st, ck / "state.pt.tmp")
    (ck / "state.pt.tmp").replace(ck / "state.pt")
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    print(f"adopted {name}: leg {len(legs) - 1}, step {card['training']['steps']}, validation {val['l_simple']:.5f} ± "
          f"{val['stderr']:.5f}; the next leg resumes from {ck / 'state.pt'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="seed", help="a full training state (ckpt/RECIPE/state.pt)")
    ap.add_argument("--recipe", default="natural", help="the campaign whose recipe the arms change (RECIPES)")
    ap.add_argument("--adopt", default=None, help="make this (finished) arm the campaign's next leg, then stop")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--cpu-minutes", type=float, default=16.0, help="process CPU time of each arm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/ab")
    a = ap.parse_args()
    if a.adopt:
        return adopt(a.adopt, Path(a.out))
    if not a.seed:
        raise SystemExit("--from STATE is needed to run arms")
    if a.recipe not in RECIPES:
        raise SystemExit(f"unknown recipe {a.recipe!r}; known: {', '.join(RECIPES)}")
    names = [n.strip() for n in a.arms.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    seed_state = torch.load(a.seed, map_location="cpu", weights_only=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seed.json").write_text(json.dumps({"from": a.seed, "recipe": a.recipe, "step": int(seed_state["step"]),
                                               "images_seen": int(seed_state["images_seen"])}))
    for n in names:
        if (out / n / "arm.json").is_file():
            print(f"{n}: already done, skipped", flush=True)
            continue
        run_arm(n, ARMS[n], seed_state, a.cpu_minutes, out, a.threads, a.recipe)


if __name__ == "__main__":
    main()
