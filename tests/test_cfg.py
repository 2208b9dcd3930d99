"""Classifier-free guidance (Ho & Salimans 2022): ε̂ = (1 + w)·ε(x_t, c) − w·ε(x_t, ∅) for class-conditional and
Palette models, condition dropout in training, batch invariance with guidance, and clear errors where it cannot
apply."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from invdiff import operators as O
from invdiff.cli import app
from invdiff.eps import EpsPrior, drop_condition, null_condition
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.rng import make_generators
from invdiff.samplers import restore, sample
from invdiff.schedule import NoiseSchedule
from invdiff.train import TrainConfig, Trainer

# float32 rounding, relative to the values' scale (the random toy networks give outputs far from unit scale):
# batch-size-dependent kernels reorder sums (~1e-7 relative each), over a few layers and sampling steps
REL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    torch.testing.assert_close(a, b, atol=REL * scale, rtol=0)


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A freshly built U-Net outputs zeros (its last layer starts at 0): give every parameter a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


def _class_prior(dropout: float = 0.1) -> EpsPrior:
    net = _randomise(UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                     attention_levels=(), groups=8, num_classes=3)), 0)
    return EpsPrior(net.eval(), NoiseSchedule.linear(), config={
        "name": "toy-cond", "data": {"channels": 1, "num_classes": 3, "classes": ["a", "b", "c"], "cond_dropout": dropout}})


def _palette_prior(dropout: float = 0.1) -> EpsPrior:
    net = _randomise(UNet(UNetConfig(in_channels=1, cond_channels=2, base_channels=8, channel_mult=(1, 2),
                                     num_res_blocks=1, attention_levels=(), groups=8)), 1)
    return EpsPrior(net.eval(), NoiseSchedule.linear(), config={"name": "toy-palette",
                                                                "data": {"channels": 1, "cond_dropout": dropout}})


def test_guided_eps_is_the_cfg_combination_of_two_separate_evaluations():
    prior = _class_prior()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([10, 300, 600, 999])
    c = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        e_c = prior.eps(x, t, c)
        e_u = prior.eps(x, t, torch.full_like(c, 3))
        for w in (0.5, 3.0):
            want = (1 + w) * e_c - w * e_u
            _close(prior.eps(x, t, c, guidance=w), want)
        # w = 0 is the plain conditional model; the label matters, and ∅ differs from every class
        assert torch.equal(prior.eps(x, t, c, guidance=0.0), e_c)
        assert (e_c - prior.eps(x, t, (c + 1) % 3)).abs().max() > 1e-3
        assert (e_c - e_u).abs().max() > 1e-3


def test_palette_guidance_zero_is_the_conditional_model_and_guidance_doubles_the_nfe():
    prior = _palette_prior()
    op = O.Inpainting(O.box_mask((2, 1, 8, 8)))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = op(x)

    def run(**kw):
        return restore(y, op, 0.05, prior, method="palette", steps=5, start=1.0, generator=make_generators(0, 2), **kw)

    plain, zero, guided = run(), run(guidance=0.0), run(guidance=2.0)
    assert torch.equal(plain.samples, zero.samples) and plain.nfe == zero.nfe == 5
    assert guided.nfe == 10 and (guided.samples - plain.samples).abs().max() > 1e-4


def test_guided_sampling_is_batch_invariant():
    prior = _class_prior()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        whole = sample(prior, (3, 1, 8, 8), steps=4, eta=1.0, generator=make_generators(5, 3), cond=labels, cfg_weight=2.0)
        gens = make_generators(5, 3)
        parts = [sample(prior, (1, 1, 8, 8), steps=4, eta=1.0, generator=[gens[i]], cond=labels[i:i + 1], cfg_weight=2.0)
                 for i in range(3)]
    _close(whole, torch.cat(parts))


def test_guidance_where_it_cannot_apply_is_a_clear_error():
    plain = EpsPrior(UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                     attention_levels=(), groups=8)), NoiseSchedule.linear(), config={"name": "plain"})
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="needs a conditional prior"):
        plain.eps(x, 5, None, guidance=1.0)
    with pytest.raises(ValueError, match="without condition dropout"):
        _class_prior(dropout=0.0).eps(x, 5, torch.tensor([0]), guidance=1.0)
    with pytest.raises(ValueError, match="class labels"):
        _class_prior().eps(x, 5, None)


def test_condition_dropout_replaces_conditions_by_the_null_condition():
    labels = torch.arange(10).repeat(400)
    g = torch.Generator().manual_seed(0)
    out = drop_condition(labels, 0.2, g, num_classes=10)
    dropped = out == 10
    assert torch.equal(out[~dropped], labels[~dropped])
    # the share dropped is binomial(4000, 0.2): standard deviation 0.0063
    assert abs(dropped.float().mean().item() - 0.2) < 0.03
    assert torch.equal(drop_condition(labels, 0.0, torch.Generator(), 10), labels)
    assert torch.equal(drop_condition(labels, 1.0, torch.Generator(), 10), null_condition(labels, 10))
    images = torch.ones(50, 2, 4, 4)
    out = drop_condition(images, 0.5, torch.Generator().manual_seed(1))
    per_image = out.flatten(1)
    assert set(per_image.amin(1).tolist()) == {0.0, 1.0} and torch.equal(per_image.amin(1), per_image.amax(1))


def test_the_training_step_drops_labels_and_learns_the_null_label(tmp_path):
    cfg = TrainConfig(name="toy-cond", data="fmnist", batch_size=16, steps=2, cond_dropout=0.5, ckpt_dir=str(tmp_path), warmup=0,
                      sample_every=0, unet=UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2),
                                                      num_res_blocks=1, attention_levels=(), groups=8, num_classes=3))

    def batches(n, g):
        return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (n,), generator=g)

    tr = Trainer(cfg, batches=batches, quiet=True)
    x0, cond = tr._batch(16, torch.Generator().manual_seed(0))
    assert cond.dtype == torch.long and set(cond.tolist()) <= {0, 1, 2, 3} and (cond == 3).any() and (cond < 3).any()
    before = tr.net.label_emb.weight[3].clone()
    # the output layer starts at zero, so the first step moves only it; the next ones reach the embedding
    losses = [tr.train_step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(tr.net.label_emb.weight[3], before)  # the null label's embedding is trained
    prior = tr.prior()
    assert prior.num_classes == 3


def test_sample_cli_labels_and_guidance(tmp_path):
    runner = CliRunner()
    cond = _class_prior()
    cond.save(tmp_path / "cond.safetensors")
    plain = EpsPrior(UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                     attention_levels=(), groups=8)), NoiseSchedule.linear(),
                     config={"name": "plain", "data": {"channels": 1, "image_size": 8}})
    plain.save(tmp_path / "plain.safetensors")
    base = ["sample", "-n", "2", "--steps", "2", "--size", "8", "--quiet", "--device", "cpu"]

    def run(*args):
        return runner.invoke(app, [*base, *args])

    r = run("--prior", str(tmp_path / "plain.safetensors"), "--guidance", "2", "--out", str(tmp_path / "a.png"))
    assert r.exit_code == 2 and "conditional prior" in r.output
    r = run("--prior", str(tmp_path / "cond.safetensors"), "--label", "zebra", "--out", str(tmp_path / "b.png"))
    assert r.exit_code == 2 and "0 a, 1 b, 2 c" in r.output
    r = run("--prior", str(tmp_path / "cond.safetensors"), "--out", str(tmp_path / "c.png"))
    assert r.exit_code == 2 and "--label" in r.output
    for label in ("B", "1"):
        r = run("--prior", str(tmp_path / "cond.safetensors"), "--label", label, "--guidance", "3",
                "--out", str(tmp_path / f"ok{label}.png"))
        assert r.exit_code == 0, r.output
        assert (tmp_path / f"ok{label}.png").is_file()
    assert json.loads((tmp_path / "cond.json").read_text())["data"]["num_classes"] == 3


def test_solve_guidance_on_an_unconditional_prior_is_a_clear_error(tmp_path):
    import numpy as np
    from PIL import Image

    plain = EpsPrior(UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                     attention_levels=(), groups=8)), NoiseSchedule.linear(), config={"name": "plain"})
    plain.save(tmp_path / "plain.safetensors")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")
    r = CliRunner().invoke(app, ["solve", "--simulate", "--task", "denoise", str(tmp_path / "x.png"), "--prior",
                                 str(tmp_path / "plain.safetensors"), "--guidance", "2", "--out", str(tmp_path / "out"),
                                 "--quiet"])
    assert r.exit_code == 2 and "--guidance needs a conditional" in r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    EpsPrior(UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1,), num_res_blocks=1, attention_levels=(),
                             groups=8, num_classes=2)), NoiseSchedule.linear(),
             config={"name": "cond", "data": {"channels": 3, "num_classes": 2}}).save(tmp_path / "cond.safetensors")
    r = CliRunner().invoke(app, ["solve", "--simulate", "--task", "denoise", str(tmp_path / "x.png"), "--prior",
                                 str(tmp_path / "cond.safetensors"), "--out", str(tmp_path / "out2"), "--quiet"])
    assert r.exit_code == 2 and "class-conditional" in r.output and "invdiff sample --label" in r.output


def _uncond_prior(seed: int) -> EpsPrior:
    net = _randomise(UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                     attention_levels=(), groups=8)), seed)
    return EpsPrior(net.eval(), NoiseSchedule.linear(), config={"name": "toy", "training": {"steps": 7, "images_seen": 56}})


@pytest.mark.parametrize("extra", [{"num_classes": 3}, {"cond_channels": 2}])
def test_an_unconditional_prior_seeds_a_conditional_network_that_starts_as_it(tmp_path, extra):
    """Trainer.load_weights: the label embedding / the condition channels' input weights start at zero, so the new
    network gives the old one's ε for every condition; the card records where it started."""
    cfg = TrainConfig(name="toy-c", data="fmnist", ckpt_dir=str(tmp_path), sample_every=0,
                      unet=UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                      attention_levels=(), groups=8, **extra))
    tr = Trainer(cfg, batches=lambda n, g: torch.zeros(n, 1, 8, 8), quiet=True)
    old = _uncond_prior(3)
    tr.load_weights(old)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0, 10, 500, 999])
    cond = torch.tensor([0, 1, 2, 3]) if "num_classes" in extra else torch.randn(4, 2, 8, 8, generator=g)
    with torch.no_grad():
        want = old.net(x, t)
        for net in (tr.net, tr.ema):
            _close(net(x, t, cond), want)
    # the condition does matter once the new weights move away from zero
    with torch.no_grad():
        (tr.net.label_emb.weight if "num_classes" in extra else tr.net.inp.weight).add_(0.5)
        assert not torch.allclose(tr.net(x, t, cond), want, atol=1e-3)
    assert tr.init_from == {"name": "toy", "training": {"steps": 7, "images_seen": 56, "seconds": None}}
    card = json.loads(tr.export(tmp_path / "c.safetensors").with_suffix(".json").read_text())
    assert card["training"]["initialised_from"]["name"] == "toy"


def test_weights_of_another_architecture_are_refused(tmp_path):
    cfg = TrainConfig(name="toy-c", data="fmnist", ckpt_dir=str(tmp_path), sample_every=0,
                      unet=UNetConfig(in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                      attention_levels=(), groups=8, num_classes=3))
    tr = Trainer(cfg, batches=lambda n, g: torch.zeros(n, 1, 8, 8), quiet=True)
    with pytest.raises((ValueError, RuntimeError)):
        tr.load_weights(_uncond_prior(3))


def test_colourisation_is_a_palette_condition_and_its_validation_uses_the_condition():
    """The grey image conditions the colouriser, built by the same function at training and restoration time; the
    campaign's validation passes it to the network."""
    from invdiff.campaign import validation_loss
    from invdiff.train import palette_condition_fn

    cond = palette_condition_fn("colorize")
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    c = cond(x0, torch.Generator().manual_seed(1))
    assert c.shape == (2, 1, 16, 16)
    grey = x0.mean(1, keepdim=True)
    assert float((c - grey).abs().mean()) < 0.1  # the grey image plus the task's measurement noise
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x, t, *c):
            seen.append(len(c) and c[0].shape)
            return torch.zeros_like(x)

    out = validation_loss(Net(), NoiseSchedule.linear(), n_patches=64, condition=cond)
    assert out["patches"] == 64 and seen and all(s == (8, 1, 64, 64) for s in seen)
    assert abs(out["l_simple"] - 1.0) < 0.05  # ε predicted as 0: L_simple = E|ε|² = 1
