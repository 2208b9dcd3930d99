"""benchmarks/full_size_validation.py: the loss on whole photos, paired draw by draw between weights files."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

_SPEC = importlib.util.spec_from_file_location(
    "full_size_validation", Path(__file__).resolve().parents[1] / "benchmarks" / "full_size_validation.py")
fsv = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fsv)


def test_summary_pairs_the_draws_per_bucket():
    loss = torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    ref = torch.tensor([0.5, 2.5, 2.0, 2.0], dtype=torch.float64)
    t = torch.tensor([1, 7, 3, 9])
    s = fsv.summary(loss, t, 2, 10, {"first": ref})
    d = loss - ref  # 0.5, -0.5, 1, 3
    assert math.isclose(s["l_simple"][0], 2.75)
    assert math.isclose(s["minus_first"][0], float(d.mean()))
    assert math.isclose(s["minus_first"][1], round(float(d.std() / 2), 6))
    low, high = s["buckets"]
    assert (low["t"], low["n"], high["t"], high["n"]) == ([0, 4], 2, [5, 9], 2)
    assert math.isclose(low["l_simple"][0], 2.0) and math.isclose(high["l_simple"][0], 3.5)
    assert math.isclose(low["minus_first"][0], 0.75) and math.isclose(high["minus_first"][0], 1.25)
    assert "minus_first" not in fsv.summary(loss, t, 2, 10, {})


def test_every_weights_file_sees_the_same_levels_and_noises():
    photos = torch.rand(2, 1, 32, 32) * 2 - 1
    a, ta = fsv.losses("fmnist32", photos, 3)
    b, tb = fsv.losses("fmnist32", photos, 3)
    assert a.shape == (6,) and torch.equal(ta, tb) and torch.equal(a, b)
    assert int(ta.min()) >= 0 and int(ta.max()) < 1000
    c, tc = fsv.losses("fmnist32", photos.flip(-1), 3)  # other photos, same draws: other losses
    assert torch.equal(tc, ta) and not torch.equal(c, a)


def test_a_palette_model_is_scored_with_its_condition():
    """The card's condition, drawn from its own generator (seeded with 1) after the levels and noises of the
    generator seeded with 0: the same losses as the draws made by hand, and not those of the null condition."""
    from invdiff.prior import load
    from invdiff.train import palette_condition_fn

    photos = torch.rand(2, 1, 32, 32) * 2 - 1
    loss, t = fsv.losses("fmnist32-palette-sr4", photos, 2)
    prior = load("fmnist32-palette-sr4")
    x = photos.repeat(2, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    t_ref = torch.randint(0, prior.schedule.num_timesteps, (4,), generator=g)
    eps = torch.randn(x.shape, generator=g)
    cond = palette_condition_fn("sr4")(x, torch.Generator().manual_seed(1))
    x_t = prior.schedule.q_sample(x, t_ref, eps)
    with torch.no_grad():
        ref = (prior.net(x_t, t_ref, cond) - eps).pow(2).mean(dim=(1, 2, 3)).double()
        null = (prior.net(x_t, t_ref, torch.zeros_like(cond)) - eps).pow(2).mean(dim=(1, 2, 3)).double()
    assert torch.equal(t, t_ref)
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-8)  # the same float32 evaluations, batched alike
    assert not torch.allclose(loss, null, rtol=1e-3)
