"""The training campaign: legs that resume exactly from a checkpoint, or from the compact committed state, with a
ledger in the model card; an interrupted leg keeps everything up to its last checkpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import torch

from invdiff.campaign import CampaignTrainer
from invdiff.prior import EpsPrior, load
from invdiff.schedule import NoiseSchedule
from invdiff.train import TrainConfig, Trainer

from test_train import TINY, toy_batches


def _cfg(ckpt, steps, ckpt_every=4):
    return TrainConfig(name="toy", data="toy", unet=TINY, batch_size=8, lr=2e-3, warmup=4, steps=steps,
                       ckpt_dir=str(ckpt), ckpt_every=ckpt_every, sample_every=0,
                       schedule={"kind": "linear", "num_timesteps": 100})


def _seed_prior(tmp_path):
    """A 'shipped' toy prior with a training record, as natural64 is for the real campaign."""
    tr = Trainer(_cfg(tmp_path / "seed-ckpt", 3), batches=toy_batches, quiet=True).run()
    path = tr.export(tmp_path / "seed" / "toy-seed.safetensors", extra={"figures": {"validation_l_simple": 0.5,
                                                                                     "validation_l_simple_stderr": 0.01}})
    return path


def _toy_validator(net, schedule: NoiseSchedule, *, condition=None) -> dict:
    g = torch.Generator().manual_seed(7)
    x0 = toy_batches(16, g)
    t = torch.randint(0, schedule.num_timesteps, (16,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        loss = (net(schedule.q_sample(x0, t, eps), t) - eps).pow(2).mean(dim=(1, 2, 3)).double()
    return {"l_simple": float(loss.mean()), "stderr": float(loss.std() / 4), "patches": 16, "buckets": []}


def _trainer(tmp_path, steps, seed_path, ckpt="ckpt", **kw):
    """A campaign in its own checkout ``tmp_path / ckpt``: checkpoints, shipped weights and compact state."""
    return CampaignTrainer(_cfg(tmp_path / ckpt / "ckpt", steps, **kw), batches=toy_batches, quiet=True,
                           weights_dir=tmp_path / ckpt / "weights", online=tmp_path / ckpt / "training" / "online.safetensors",
                           seed_prior=seed_path, validator=_toy_validator, val_every=4)


def test_first_leg_starts_from_the_seed_prior_and_writes_a_ledger(tmp_path):
    seed = _seed_prior(tmp_path)
    tr = _trainer(tmp_path, 11, seed)
    tr.begin_leg(rewarm=5, threads=1)
    assert tr.step == 3 and tr.images_seen == 24  # the seed prior's own record continues
    assert tr.cfg.warmup_from == 3 and tr.cfg.warmup == 5
    seed_sd = load(seed).net.state_dict()
    for k, v in tr.net.state_dict().items():
        assert torch.equal(v, seed_sd[k].to(v.dtype)), k
    tr.run()
    tr.export_compact(validate=True)
    card = json.loads((tmp_path / "ckpt" / "weights" / "toy.json").read_text())
    legs = card["campaign"]["legs"]
    assert [leg["leg"] for leg in legs] == [0, 1]
    assert legs[0]["steps"] == [0, 3] and legs[1]["steps"] == [3, 11]
    assert legs[1]["images_seen"] == [24, 88] and card["training"]["images_seen"] == 88
    assert card["figures"]["validation_l_simple"] == legs[1]["validation"]["l_simple"]
    # the validation curve: the seed's figure, the checkpoints at steps 4 and 8 (val_every), and the leg's end
    assert [c[0] for c in card["campaign"]["validation_curve"]] == [24, 32, 64, 88]
    assert card["version"] == 1


def test_an_interrupted_leg_resumes_exactly_from_its_checkpoint(tmp_path):
    seed = _seed_prior(tmp_path)
    whole = _trainer(tmp_path, 12, seed, ckpt="a")
    whole.begin_leg(rewarm=5, threads=1)
    whole.run()

    cut = _trainer(tmp_path, 12, seed, ckpt="b")
    cut.begin_leg(rewarm=5, threads=1)
    batches = cut.batches

    def interrupting(n, g):  # a stop request (SIGTERM) arrives during step 6
        if cut.step == 5:
            cut.stop_requested = True
        return batches(n, g)

    cut.batches = interrupting
    cut.run()
    assert cut.step == 6  # checkpointed at the step it stopped, not at the last periodic checkpoint

    resumed = _trainer(tmp_path, 12, seed, ckpt="b")
    resumed.begin_leg(rewarm=5, threads=1)
    assert resumed.step == 6 and "exact resume" in resumed.leg["from"]
    assert resumed.cfg.warmup_from == whole.cfg.warmup_from  # the warm-up is part of the checkpointed config
    resumed.run()
    for (k, p), (_, q) in zip(whole.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(p, q), k
    for p, q in zip(whole.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(p, q)


def test_a_new_leg_resumes_from_the_compact_state(tmp_path):
    seed = _seed_prior(tmp_path)
    first = _trainer(tmp_path, 8, seed)
    first.begin_leg(rewarm=5, threads=1)
    first.run()
    first.export_compact(validate=False)
    shutil.rmtree(tmp_path / "ckpt" / "ckpt")  # a fresh clone: only the committed files are there

    nxt = _trainer(tmp_path, 10, seed)
    nxt.begin_leg(rewarm=5, threads=1)
    assert nxt.step == 8 and nxt.images_seen == 64 and "compact state" in nxt.leg["from"]
    assert nxt.cfg.warmup_from == 8
    # the online weights come back rounded to fp16 (the compact state), the EMA weights are the shipped prior
    for (k, p), (_, q) in zip(first.net.state_dict().items(), nxt.net.state_dict().items()):
        assert torch.equal(p.half().float(), q), k
    shipped = EpsPrior.from_files(tmp_path / "ckpt" / "weights" / "toy.safetensors").net.state_dict()
    for k, v in nxt.ema.state_dict().items():
        assert torch.equal(v, shipped[k]), k
    nxt.run()
    nxt.export_compact(validate=False)
    card = json.loads((tmp_path / "ckpt" / "weights" / "toy.json").read_text())
    assert [leg["steps"] for leg in card["campaign"]["legs"]] == [[0, 3], [3, 8], [8, 10]]
    assert card["version"] == 2


def test_an_accelerator_leg_counts_gpu_minutes_apart_from_cpu_minutes(tmp_path):
    seed = _seed_prior(tmp_path)
    tr = _trainer(tmp_path, 5, seed)
    tr.begin_leg(rewarm=5, threads=8)
    tr.run()
    tr.seconds += 120.0  # the leg's wall clock: two more minutes than the run took
    tr.export_compact(validate=False)
    cpu_leg = dict(tr.leg)
    assert "gpu_minutes" not in cpu_leg and cpu_leg["cpu_minutes"] == round(cpu_leg["wall_minutes"] * 8, 1)
    tr.device = torch.device("cuda")  # the accounting of a leg on an accelerator (nothing runs there here)
    tr.export_compact(validate=False)
    leg = tr.leg
    # the GPU's minutes are the wall minutes; the CPU minutes are only what the host process used, not 8 × wall
    assert leg["gpu_minutes"] == leg["wall_minutes"] >= 2.0
    assert leg["cpu_minutes"] == leg["process_cpu_minutes"] < leg["wall_minutes"]
    campaign = json.loads((tmp_path / "ckpt" / "weights" / "toy.json").read_text())["campaign"]
    assert campaign["gpu_minutes_total"] == leg["gpu_minutes"]
    assert campaign["cpu_minutes_total"] == round(sum(entry["cpu_minutes"] for entry in campaign["legs"]), 1)
    # and in which precision the accelerator trained (a CPU leg always trains in fp32)
    assert leg["precision"] == "bf16 autocast" and "precision" not in cpu_leg
    tr.cfg = replace(tr.cfg, bf16=False)
    tr.export_compact(validate=False)
    assert tr.leg["precision"] == "fp32"


def test_a_leg_on_photos_records_how_many_it_draws_from(tmp_path):
    """The training set can grow between legs; each leg's ledger entry says how many photos it drew from."""
    from invdiff.data import PatchSampler

    seed = _seed_prior(tmp_path)
    photos = [torch.randint(0, 256, (3, 24 + 4 * i, 20), dtype=torch.uint8) for i in range(3)]
    tr = CampaignTrainer(_cfg(tmp_path / "ckpt" / "ckpt", 3), batches=PatchSampler(photos, patch=8).sample, quiet=True,
                         weights_dir=tmp_path / "ckpt" / "weights", online=tmp_path / "ckpt" / "training" / "online.safetensors",
                         seed_prior=seed, validator=_toy_validator, val_every=4)
    tr.begin_leg(rewarm=5, threads=1)
    tr.export_compact(validate=False)
    card = json.loads((tmp_path / "ckpt" / "weights" / "toy.json").read_text())
    assert card["campaign"]["legs"][-1]["photos"] == 3
    # data that are not photos (Fashion-MNIST, a toy function) record no count
    other = _trainer(tmp_path, 3, seed, ckpt="other")
    other.begin_leg(rewarm=5, threads=1)
    assert "photos" not in other.leg
