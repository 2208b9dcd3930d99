"""The recipe A/B (scripts/campaign_ab.py): an arm continues a full training state with one change to the recipe,
and `--adopt` makes a finished arm the campaign's next leg: its training goes into the card's ledger and the next
leg resumes exactly from its state. Run here on a toy recipe in place of RECIPES["natural"]."""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch

import invdiff.campaign
import invdiff.zoo
from invdiff.campaign import CampaignTrainer
from invdiff.train import Trainer

from test_campaign import _cfg, _toy_validator
from test_train import toy_batches

_SPEC = importlib.util.spec_from_file_location("campaign_ab", Path(__file__).resolve().parents[1] / "scripts" / "campaign_ab.py")
campaign_ab = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(campaign_ab)


@pytest.fixture
def toy_campaign(tmp_path, monkeypatch):
    """A toy 'natural' recipe, its committed card in a weights folder of its own, and a seed state at step 6."""
    toy = replace(_cfg(tmp_path / "seed-ckpt", 6), name="natural")
    monkeypatch.setitem(campaign_ab.RECIPES, "natural", toy)
    monkeypatch.setattr(campaign_ab, "Trainer", partial(Trainer, batches=toy_batches))
    monkeypatch.setattr(invdiff.zoo, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(invdiff.campaign, "validation_loss", _toy_validator)
    seed = Trainer(toy, batches=toy_batches, quiet=True).run()
    (tmp_path / "weights").mkdir()
    card = {"training": {"steps": seed.step, "images_seen": seed.images_seen, "seconds": 60.0},
            "campaign": {"legs": [{"leg": 0, "steps": [0, seed.step], "cpu_minutes": 1.0}], "validation_curve": [[seed.images_seen, 0.5, 0.01]]}}
    (tmp_path / "weights" / "natural.json").write_text(json.dumps(card))
    torch.save(seed.state(), tmp_path / "seed.pt")
    state = torch.load(tmp_path / "seed.pt", weights_only=True)
    out = tmp_path / "ab"
    out.mkdir()
    (out / "seed.json").write_text(json.dumps({"step": int(state["step"]), "images_seen": int(state["images_seen"])}))
    return tmp_path, toy, state, out


def test_arms_continue_the_same_state_with_their_change(toy_campaign):
    tmp_path, toy, state, out = toy_campaign
    campaign_ab.run_arm("base", {}, state, 0.002, out, 1)
    campaign_ab.run_arm("wide", {"batch_size": 4}, state, 0.002, out, 1)
    for name, batch in (("base", toy.batch_size), ("wide", 4)):
        info = json.loads((out / name / "arm.json").read_text())
        st = torch.load(out / name / "state.pt", weights_only=True)
        assert info["from_step"] == state["step"] and info["steps"] >= 1
        assert info["images"] == info["steps"] * batch  # the change is in force: patches per step
        assert int(st["step"]) == state["step"] + info["steps"]
        assert st["config"]["warmup_from"] == state["step"]  # continues at full learning rate, no re-warm
    # every arm starts from the seed's weights: the first step of each moved them, the seed's are untouched
    seed_w = state["net"]["inp.weight"]
    for name in ("base", "wide"):
        assert not torch.equal(torch.load(out / name / "state.pt", weights_only=True)["net"]["inp.weight"], seed_w)


def test_adopt_writes_the_ledger_and_the_next_leg_resumes_exactly(toy_campaign):
    tmp_path, toy, state, out = toy_campaign
    campaign_ab.run_arm("wide", {"batch_size": 4}, state, 0.002, out, 1)
    info = json.loads((out / "wide" / "arm.json").read_text())
    campaign_ab.adopt("wide", out, ckpt_dir=str(tmp_path / "ckpt"))

    card = json.loads((tmp_path / "weights" / "natural.json").read_text())
    leg = card["campaign"]["legs"][-1]
    end_step, end_images = state["step"] + info["steps"], state["images_seen"] + info["images"]
    assert leg["leg"] == 1 and "'wide'" in leg["what"] and '"batch_size": 4' in leg["what"]
    assert leg["steps"] == [state["step"], end_step] and leg["images_seen"] == [state["images_seen"], end_images]
    assert leg["batch_size"] == 4 and leg["process_cpu_minutes"] == info["cpu_minutes"]
    assert card["training"]["steps"] == end_step and card["training"]["images_seen"] == end_images
    arm_state = torch.load(out / "wide" / "state.pt", weights_only=True)
    assert card["campaign"]["validation_curve"][-1][:2] == [end_images, leg["validation"]["l_simple"]]
    # the validation is the arm's EMA weights'
    ema = Trainer(toy, batches=toy_batches, quiet=True).ema
    ema.load_state_dict(arm_state["ema"])
    assert leg["validation"]["l_simple"] == pytest.approx(_toy_validator(ema.eval(), Trainer(toy, batches=toy_batches,
                                                                                             quiet=True).schedule)["l_simple"])

    # the next leg: an exact resume from the arm's state, with the adopted leg kept in its ledger
    nxt = CampaignTrainer(replace(toy, ckpt_dir=str(tmp_path / "ckpt"), batch_size=4, steps=end_step + 2),
                          batches=toy_batches, quiet=True, weights_dir=tmp_path / "weights",
                          online=tmp_path / "online.safetensors", validator=_toy_validator)
    nxt.begin_leg(rewarm=200, threads=1)
    assert nxt.leg["from"] == f"exact resume from ckpt at step {end_step}" and nxt.leg["leg"] == 2
    assert (nxt.step, nxt.images_seen) == (end_step, end_images)
    for k, v in arm_state["net"].items():
        assert torch.equal(nxt.net.state_dict()[k], v)
    assert nxt.cfg.warmup_from == state["step"] and nxt.cfg.warmup == 1  # no re-warm after an adopted arm
    nxt.run()
    nxt.export_compact(validate=True)
    legs = json.loads((tmp_path / "weights" / "natural.json").read_text())["campaign"]["legs"]
    assert [entry["leg"] for entry in legs] == [0, 1, 2] and legs[2]["steps"] == [end_step, end_step + 2]


def test_adopt_refuses_an_arm_of_another_state(toy_campaign):
    tmp_path, toy, state, out = toy_campaign
    campaign_ab.run_arm("base", {}, state, 0.002, out, 1)
    path = tmp_path / "weights" / "natural.json"
    card = json.loads(path.read_text())
    card["training"]["steps"] += 1  # the committed prior has moved on since the seed was taken
    path.write_text(json.dumps(card))
    with pytest.raises(SystemExit, match="adopt only an arm of the committed state"):
        campaign_ab.adopt("base", out, ckpt_dir=str(tmp_path / "ckpt"))
    assert not (tmp_path / "ckpt" / "natural" / "state.pt").exists()
    assert json.loads(path.read_text()) == card


def test_psnr_rows_reads_a_suite_run_per_row_and_image(tmp_path):
    from invdiff.bench.runner import psnr_rows

    lines = [json.dumps({"task": "deblur", "method": "diffpir", "image": i, "psnr": 20.0 + i + 1e-4}) for i in (2, 0, 1)]
    lines += [json.dumps({"task": "inpaint[mask=box]", "method": "ddrm", "image": 0, "psnr": 18.5}),
              '{"task": "deblur", "method": "dif',  # a line cut by an interruption is skipped
              json.dumps({"note": "not a result row"})]
    (tmp_path / "results.rank0.jsonl").write_text("\n".join(lines) + "\n")
    assert psnr_rows(tmp_path) == {"deblur diffpir": [20.0, 21.0, 22.0], "inpaint[mask=box] ddrm": [18.5]}


def test_the_campaign_figure_counts_larger_patches_by_their_pixels():
    spec = importlib.util.spec_from_file_location("plot_campaign", Path(__file__).resolve().parents[1] / "scripts" / "plot_campaign.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    legs = [{"images_seen": [0, 100]}, {"images_seen": [100, 150], "patch": 64},
            {"images_seen": [150, 160], "patch": 128}, {"images_seen": [160, 170], "patch": 32}]
    eq = plot.equivalent_64(legs)
    assert [eq(n) for n in (0, 50, 100, 150)] == [0, 50, 100, 150]  # 64×64 legs (recorded or not) count as they are
    assert eq(155) == 150 + 5 * 4 and eq(160) == 150 + 10 * 4  # a 128×128 patch holds four 64×64 patches' pixels
    assert eq(170) == 190 + 10 / 4


def test_a_grown_network_starts_as_the_seed_and_keeps_its_adam_moments(toy_campaign):
    from invdiff.nets.unet import UNet, grow_state

    tmp_path, toy, state, out = toy_campaign
    extra = tuple(1 for _ in toy.unet.channel_mult)
    big = UNet(replace(toy.unet, extra_res_blocks=extra)).eval()
    small = UNet(toy.unet).eval()
    small.load_state_dict(state["net"])
    new = grow_state(big, state["net"])
    assert new and all(k.startswith("extra.") for k in new)
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())
    x, t = torch.randn(2, toy.unet.in_channels, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 70])
    with torch.no_grad():  # the new blocks start as the identity: the same function, to float32 rounding
        assert torch.allclose(big(x, t), small(x, t), atol=1e-6, rtol=0)
        for p in big.extra.parameters():  # and they are real blocks: perturbed, the output moves
            p.add_(0.05)
        assert not torch.allclose(big(x, t), small(x, t), atol=1e-3)
    with pytest.raises(ValueError, match="not the same network"):
        grow_state(UNet(replace(toy.unet, base_channels=2 * toy.unet.base_channels)), state["net"])

    campaign_ab.run_arm("deeper", {"grow": {"extra_res_blocks": extra}}, state, 0.002, out, 1)
    info = json.loads((out / "deeper" / "arm.json").read_text())
    st = torch.load(out / "deeper" / "state.pt", weights_only=True)
    assert info["change"] == {"grow": {"extra_res_blocks": list(extra)}} and info["steps"] >= 1
    assert tuple(info["config"]["unet"]["extra_res_blocks"]) == extra
    n_seed = len(state["opt"]["state"])
    assert len(st["opt"]["state"]) > n_seed  # the seed's moments carried on; the new parameters got their own
    campaign_ab.adopt("deeper", out, ckpt_dir=str(tmp_path / "ckpt"))
    card = json.loads((tmp_path / "weights" / "natural.json").read_text())
    assert '"extra_res_blocks"' in card["campaign"]["legs"][-1]["what"]


def test_weight_averaging_takes_the_uniform_mean_of_the_snapshots():
    spec = importlib.util.spec_from_file_location("weight_averaging",
                                                  Path(__file__).resolve().parents[1] / "benchmarks" / "weight_averaging.py")
    wa = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wa)
    g = torch.Generator().manual_seed(0)
    snaps = [{"net": {"w": torch.randn(3, 4, generator=g), "b": torch.randn(2, generator=g)}} for _ in range(3)]
    avg = wa.averaged(snaps, "net")
    for k in ("w", "b"):
        assert avg[k].dtype == torch.float32
        assert torch.allclose(avg[k], (snaps[0]["net"][k] + snaps[1]["net"][k] + snaps[2]["net"][k]) / 3, atol=1e-6)
    assert torch.equal(wa.averaged(snaps[:1], "net")["w"], snaps[0]["net"]["w"])


def test_an_arm_of_a_palette_recipe_is_a_conditional_prior_and_adopts_with_its_condition(tmp_path, monkeypatch):
    """--recipe: the arms of a Palette campaign train with its condition, write cards that load as a conditional
    prior, and --adopt validates with the condition and resumes that campaign's own ckpt folder."""
    from invdiff.prior import load
    from test_train import TINY

    toy = replace(_cfg(tmp_path / "seed-ckpt", 6), name="toy-palette", condition="sr4", cond_dropout=0.1,
                  unet=replace(TINY, cond_channels=1))
    monkeypatch.setitem(campaign_ab.RECIPES, "toy-palette", toy)
    monkeypatch.setattr(campaign_ab, "Trainer", partial(Trainer, batches=toy_batches))
    monkeypatch.setattr(invdiff.zoo, "WEIGHTS_DIR", tmp_path / "weights")
    seen = []
    monkeypatch.setattr(invdiff.campaign, "validation_loss",
                        lambda net, schedule, condition=None: seen.append(condition) or {"l_simple": 0.1, "stderr": 0.01})
    seed = Trainer(toy, batches=toy_batches, quiet=True).run()
    seed.export(tmp_path / "weights" / "toy-palette.safetensors")
    card = json.loads((tmp_path / "weights" / "toy-palette.json").read_text())
    card.update(training={"steps": seed.step, "images_seen": seed.images_seen, "seconds": 60.0},
                campaign={"legs": [{"leg": 0}], "validation_curve": []})
    (tmp_path / "weights" / "toy-palette.json").write_text(json.dumps(card))
    state = seed.state()
    out = tmp_path / "ab"
    out.mkdir()
    (out / "seed.json").write_text(json.dumps({"recipe": "toy-palette", "step": int(state["step"]),
                                               "images_seen": int(state["images_seen"])}))
    campaign_ab.run_arm("high-levels", campaign_ab.ARMS["high-levels"], state, 0.002, out, 1, "toy-palette")

    info = json.loads((out / "high-levels" / "arm.json").read_text())
    assert info["recipe"] == "toy-palette" and info["config"]["condition"] == "sr4"
    assert info["config"]["t_sampling"] == "lognormal"
    prior = load(out / "high-levels" / "ema.safetensors")
    assert prior.config["data"]["condition"] == "sr4" and prior.config["name"] == "toy-palette-ab-high-levels-ema"
    arm_state = torch.load(out / "high-levels" / "state.pt", weights_only=True)
    for k, v in arm_state["ema"].items():
        assert torch.equal(prior.net.state_dict()[k].float(), v.float())

    campaign_ab.adopt("high-levels", out, ckpt_dir=str(tmp_path / "ckpt"))
    assert len(seen) == 1 and seen[0] is not None  # validated with the Palette condition
    assert (tmp_path / "ckpt" / "toy-palette" / "state.pt").is_file()
    assert not (tmp_path / "ckpt" / "natural").exists()
    legs = json.loads((tmp_path / "weights" / "toy-palette.json").read_text())["campaign"]["legs"]
    assert "'high-levels'" in legs[-1]["what"] and legs[-1]["steps"] == [state["step"], state["step"] + info["steps"]]


def test_the_suite_trend_fits_a_line_in_log_training_and_finds_where_it_crosses_the_bar(tmp_path):
    spec = importlib.util.spec_from_file_location("plot_campaign", Path(__file__).resolve().parents[1] / "scripts" / "plot_campaign.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    legs = [{"images_seen": [0, 100]}, {"images_seen": [100, 200], "patch": 128}, {"images_seen": [200, 300], "patch": 128}]
    assert plot.current_patch_start(legs) == 100  # where the run of 128×128 legs began
    assert plot.current_patch_start(legs[:1]) == 0
    eq = plot.equivalent_64(legs)
    a, b = 0.1, 0.05  # gains exactly on a + b·ln(x) in 64×64 equivalents, each photo off by ±d
    paths = []
    for i, n in enumerate((100, 150, 300)):
        g, d = a + b * math.log(eq(n)), 0.01 * (i + 1)
        p = tmp_path / f"bar{i}.json"
        p.write_text(json.dumps({"natural_images_seen": n, "rows": {"deblur diffpir": {
            "natural64": [20.0, 21.0, 22.0, 23.0], "natural": [20.0 + g + d, 21.0 + g - d, 22.0 + g + d, 23.0 + g - d]}}}))
        paths.append(p)
    trend = plot.suite_trend(paths[::-1], eq)["deblur diffpir"]
    assert [x for x, _, _ in trend] == [100, 300, 900]  # ordered by training; 128×128 patches count four times
    for i, (x, g, se) in enumerate(trend):
        assert g == pytest.approx(a + b * math.log(x), abs=1e-9)
        assert se == pytest.approx(0.01 * (i + 1) * math.sqrt(4 / 3) / 2, rel=1e-9)  # sample std / √n
    fa, fb = plot.log_fit(trend)
    assert (fa, fb) == (pytest.approx(a, abs=1e-9), pytest.approx(b, abs=1e-9))
    assert plot.crossing(fa, fb, 0.5) == pytest.approx(math.exp((0.5 - a) / b), rel=1e-6)
    assert plot.crossing(0.1, -0.01) is None and plot.crossing(0.1, 0.0) is None  # a flat or falling row never gets there
    with pytest.raises(ValueError, match="two points"):
        plot.log_fit(trend[:1])
