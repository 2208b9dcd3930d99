"""Symmetrised posterior samples (``restore(..., symmetry=...)``): chain k restores g_k(y) and is mapped back.

Checked three ways: the group's elements and inverses; each chain against a plain run on g_k(y) mapped back by hand
(same per-chain streams, so the same arithmetic up to float64 rounding of a different batch); and, where the prior
itself is invariant (N(c·1, I)) and A commutes with the group, the back-mapped samples against the exact Gaussian
posterior (a wrong inverse, g_k instead of g_k⁻¹, would move the mean by the distance between y and its turn)."""

from __future__ import annotations

import pytest
import torch

import invdiff.operators as O
from invdiff.analytic import GaussianEps, gaussian_posterior
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers import restore
from invdiff.samplers.symmetry import check_commutes, group_size, per_chain, transform, untransform
from invdiff.schedule import NoiseSchedule

SIGMA = 0.1


@pytest.mark.parametrize("symmetry", ["flips", "dihedral"])
def test_the_group_elements_are_distinct_and_undone_by_their_inverses(symmetry):
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    images = [transform(x, k, symmetry) for k in range(group_size(symmetry))]
    assert torch.equal(images[0], x)
    for k, im in enumerate(images):
        assert torch.equal(untransform(im, k, symmetry), x)
        assert all(not torch.equal(im, other) for other in images[k + 1:])
    # the group is closed: composing any two elements gives one of its elements
    for a in range(len(images)):
        for b in range(len(images)):
            assert any(torch.equal(transform(transform(x, a, symmetry), b, symmetry), im) for im in images)


def test_per_chain_gives_sample_k_the_element_k_mod_the_group_size():
    x = torch.randn(2 * 10, 1, 4, 4, generator=torch.Generator().manual_seed(1))  # 2 images × K = 10 chains
    out = per_chain(x, 10, "dihedral")
    for j in range(20):
        assert torch.equal(out[j], transform(x[j], j % 10 % 8, "dihedral"))
    assert torch.equal(per_chain(out, 10, "dihedral", inverse=True), x)


def _tiny_prior():
    from invdiff.nets.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=())).double()
    return EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny"})


@pytest.mark.parametrize("method", ["ddrm", "dps"])
def test_each_chain_is_the_plain_run_on_the_turned_measurement_turned_back(method):
    A = O.BlockAverage(2)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = A(x) + SIGMA * torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    prior = _tiny_prior()
    kw = dict(method=method, steps=4, samples=8)
    sym = restore(y, A, SIGMA, prior, generator=make_generators(5, 2), symmetry="dihedral", **kw)
    assert sym.hyper_parameters["symmetry"] == "dihedral"
    for k in range(8):
        plain = restore(transform(y, k, "dihedral"), A, SIGMA, prior, generator=make_generators(5, 2), **kw)
        torch.testing.assert_close(sym.samples[:, k], untransform(plain.samples[:, k], k, "dihedral"),
                                   rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sym.mean, sym.samples.mean(1))
    split = restore(y, A, SIGMA, prior, generator=make_generators(5, 2), symmetry="dihedral", batch_size=3, **kw)
    torch.testing.assert_close(split.samples, sym.samples, rtol=1e-9, atol=1e-9)


def test_with_an_invariant_prior_the_symmetrised_samples_are_the_exact_posterior():
    # prior N(c·1, I) on 4×4 images is invariant under the dihedral group, and so is 2× block averaging: every
    # back-mapped chain is a sample of the same exact posterior (ΠGDM with exact weighting is exact here, as in
    # test_restore, at its default steps). K = 1000: the mean's Monte-Carlo error is 0.032 posterior sd, the covariance's about 0.18
    D, K = 16, 1000
    mu = torch.full((D,), 0.3, dtype=torch.float64)
    s = NoiseSchedule.linear()
    prior = EpsPrior(GaussianEps(mu, torch.eye(D, dtype=torch.float64), s, (1, 4, 4)), s)
    A = O.BlockAverage(2)
    x = (mu + torch.randn(D, dtype=torch.float64, generator=torch.Generator().manual_seed(7))).reshape(1, 1, 4, 4)
    y = A(x) + SIGMA * torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(y, torch.rot90(y, 1, (-2, -1)), atol=0.05)  # a turn of y would show in the mean
    Amat = torch.func.jacrev(lambda v: A(v.reshape(1, 1, 4, 4)).flatten())(torch.zeros(D, dtype=torch.float64))
    pm, pc = gaussian_posterior(mu, torch.eye(D, dtype=torch.float64), Amat, y.flatten(), SIGMA)
    r = restore(y, A, SIGMA, prior, method="pigdm", samples=K, generator=make_generators(1, 1), clip=False,
                weighting="exact", eta=1.0, symmetry="dihedral")
    smp = r.samples[0].reshape(K, -1)
    assert float(((smp.mean(0) - pm).abs() / pc.diagonal().sqrt()).max()) < 0.15  # ~5 Monte-Carlo errors
    assert float(torch.linalg.norm(torch.cov(smp.T) - pc) / torch.linalg.norm(pc)) < 0.2


@pytest.mark.parametrize("task", ["sr", "colorize", "deblur", "denoise"])
def test_the_operators_that_commute_with_the_square_group_are_accepted(task):
    from invdiff.tasks import TaskOptions, simulate

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op, _ = simulate(task, x, TaskOptions(noise_sigma=0.05), generator=make_generators(0, 2))
    for symmetry in ("flips", "dihedral"):
        check_commutes(op, x.shape, symmetry)


@pytest.mark.parametrize("task", ["motion-deblur", "inpaint", "phase-retrieval"])
def test_operators_that_do_not_commute_are_refused_with_a_clear_error(task):
    from invdiff.tasks import TaskOptions, simulate

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op, y = simulate(task, x, TaskOptions(noise_sigma=0.05), generator=make_generators(0, 1))
    with pytest.raises(ValueError, match="commutes with"):
        check_commutes(op, x.shape, "flips")


def test_bad_symmetry_arguments_are_clear_errors():
    A = O.BlockAverage(2)
    y = torch.zeros(1, 1, 4, 6, dtype=torch.float64)
    prior = _tiny_prior()
    with pytest.raises(ValueError, match="symmetry must be one of"):
        restore(y, A, SIGMA, prior, method="ddrm", steps=2, samples=2, symmetry="rotations")
    with pytest.raises(ValueError, match="needs a square image"):
        restore(y, A, SIGMA, prior, method="ddrm", steps=2, samples=2, symmetry="dihedral")
    with pytest.raises(ValueError, match="samples ≥ 2"):  # one sample would silently be the plain run
        restore(y, A, SIGMA, prior, method="ddrm", steps=2, symmetry="flips")
    r = restore(y, A, SIGMA, prior, method="ddrm", steps=2, samples=4, symmetry="flips",
                generator=make_generators(0, 1))  # flips keep a non-square shape
    assert r.samples.shape == (1, 4, 1, 8, 12)


def test_solve_takes_symmetry_and_refuses_it_for_an_operator_that_does_not_commute(tmp_path):
    import json

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from invdiff.cli import app
    from invdiff.nets.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
    EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny3", "data": {"channels": 3, "image_size": 32}}).save(
        tmp_path / "tiny3.safetensors")
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    np.save(tmp_path / "k.npy", np.triu(np.ones((5, 5))) / 15)  # a kernel with no mirror symmetry
    base = ["solve", "--prior", str(tmp_path / "tiny3.safetensors"), "--steps", "2", "-k", "4", "--quiet", "--json"]
    r = CliRunner().invoke(app, [*base, "--simulate", "--task", "sr", str(tmp_path / "x.png"), "--symmetry", "dihedral",
                                 "--out", str(tmp_path / "sr")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hyper_parameters"]["symmetry"] == "dihedral"
    r = CliRunner().invoke(app, [*base, "--task", "deblur", "--kernel", str(tmp_path / "k.npy"), str(tmp_path / "x.png"),
                                 "--symmetry", "flips", "--noise-sigma", "0.05", "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "commutes with" in r.output
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    r = CliRunner().invoke(app, [*base, "--simulate", "--task", "sr", str(tmp_path / "x.png"), "--symmetry", "rotate",
                                 "--out", str(tmp_path / "unknown")])
    assert r.exit_code != 0 and "--symmetry must be" in r.output
