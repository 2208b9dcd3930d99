"""Random streams derived from (seed, purpose, image index): no collisions between purposes, images or
neighbouring seeds; image i of a batch draws what it draws alone."""

from __future__ import annotations

import itertools

import pytest
import torch

from invdiff.rng import make_generators, randn, stream_seed


def test_streams_of_purposes_images_and_neighbouring_seeds_are_distinct():
    keys = list(itertools.product(range(4), ["degrade", "sample", "default"], range(8)))
    seeds = {stream_seed(*k) for k in keys}
    assert len(seeds) == len(keys)  # 96 streams, no two alike (a collision among 63-bit seeds has odds ~1e-16)
    # the old scheme's trap: seed s's sampling stream was seed s+1's degradation stream
    a = randn((1, 16), make_generators(0, 1, purpose="sample"))
    b = randn((1, 16), make_generators(1, 1, purpose="degrade"))
    assert not torch.allclose(a, b)


def test_image_i_of_a_batch_draws_what_it_draws_alone():
    batch = randn((5, 3, 4, 4), make_generators(7, 5, purpose="sample"))
    for i in range(5):
        alone = randn((1, 3, 4, 4), make_generators(7, 1, purpose="sample", start=i))
        assert torch.equal(alone[0], batch[i])


def test_same_seed_same_stream_and_bad_seeds():
    assert stream_seed(3, "x", 2) == stream_seed(3, "x", 2)
    assert 0 <= stream_seed(2**70, "x", 0) < 2**63  # huge seeds are mixed down, not overflowed
    with pytest.raises(ValueError, match="non-negative"):
        stream_seed(-1, "x", 0)


def test_restore_with_the_same_generators_repeats_itself_for_one_sample_and_for_several():
    import invdiff.operators as O
    from invdiff.analytic import GaussianEps
    from invdiff.prior import EpsPrior
    from invdiff.samplers import restore
    from invdiff.schedule import NoiseSchedule

    s = NoiseSchedule.linear()
    prior = EpsPrior(GaussianEps(torch.zeros(16, dtype=torch.float64), torch.eye(16, dtype=torch.float64), s, (1, 4, 4)), s)
    A = O.Inpainting((torch.arange(16) % 2 == 0).double().reshape(1, 1, 4, 4))
    y = A(torch.ones(2, 1, 4, 4, dtype=torch.float64))
    for k in (1, 3):
        gens = make_generators(5, 2, purpose="sample")
        a = restore(y, A, 0.05, prior, method="ddrm", steps=5, samples=k, generator=gens)
        b = restore(y, A, 0.05, prior, method="ddrm", steps=5, samples=k, generator=gens)  # the same objects again
        assert torch.equal(a.samples, b.samples)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_generators_without_cuda_are_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        make_generators(0, 2, "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CPU generator feeding a CUDA run needs a CUDA device")
def test_one_cpu_generator_feeds_a_cuda_run():
    # the draw happens on the generator's device and is moved: the same numbers wherever the run lives
    ref = torch.randn(2, 3, generator=torch.Generator().manual_seed(5))
    on_gpu = randn((2, 3), torch.Generator().manual_seed(5), device="cuda")
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), ref)


def test_poisson_counts_come_from_the_generator_wherever_the_rates_live():
    from invdiff.rng import poisson

    rates = torch.full((2, 1, 4, 4), 30.0)
    one = poisson(rates, torch.Generator().manual_seed(3))
    assert torch.equal(one, torch.poisson(rates, generator=torch.Generator().manual_seed(3)))
    per_image = poisson(rates, make_generators(3, 2))
    assert torch.equal(per_image[1:], poisson(rates[1:], make_generators(3, 1, start=1)))  # image i alone
    if torch.cuda.is_available():
        assert torch.equal(poisson(rates.cuda(), torch.Generator().manual_seed(3)).cpu(), one)
