"""The network on overlapping tiles (``invdiff.tiling``, ``EpsPrior.tiled``) and solve's use of them when an image
would not fit in memory (``invdiff.measured.memory_plan``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from invdiff.cli import app
from invdiff.eps import EpsPrior
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.schedule import NoiseSchedule
from invdiff.tiling import ramp, tile_starts, tiled_map


@pytest.mark.parametrize("n, tile, overlap", [(200, 64, 16), (256, 128, 64), (100, 96, 32), (64, 64, 16), (50, 64, 8)])
def test_tiles_cover_the_axis_overlap_enough_and_start_on_the_step(n, tile, overlap):
    starts = tile_starts(n, tile, overlap)
    covered = torch.zeros(n, dtype=torch.int64)
    for a in starts:
        covered[a: a + min(tile, n)] += 1
    assert (covered >= 1).all() and starts[0] == 0 and starts[-1] + min(tile, n) == n
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours share ≥ overlap pixels
    assert all(a % (tile - overlap) == 0 for a in starts[:-1])


def test_the_blend_weights_ramp_only_towards_a_neighbour_and_stay_positive():
    w = ramp(10, 4, first=False, last=False)
    assert torch.allclose(w, torch.tensor([0.125, 0.375, 0.625, 0.875, 1, 1, 0.875, 0.625, 0.375, 0.125],
                                          dtype=torch.float64))
    assert (ramp(10, 4, first=True, last=True) == 1).all()
    assert (ramp(10, 4, first=True, last=False)[:6] == 1).all() and (ramp(10, 4, True, False) > 0).all()


class Local(nn.Module):
    """Three 3×3 convolutions: every output pixel depends on the 7×7 input pixels around it only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x, cond):
        return self.body(torch.cat([x, cond], 1))


def test_tiles_of_a_local_network_blend_to_its_whole_image_result():
    """A tile's output differs from the whole image's only within the receptive field (3 px) of a tile edge that
    is not the image's; there the tile's ramp weight is at most 2.5/16 (overlap 16), and the other tile holding
    those pixels is exact. So the blend equals the whole image's result to float32 rounding away from such edges,
    and near them differs by at most that weight times the tile's error there (bounded by twice the output's
    largest magnitude)."""
    net = Local()
    x = torch.randn(2, 3, 80, 112, generator=torch.Generator().manual_seed(1))
    cond = torch.randn(2, 1, 80, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = net(x, cond)
        tiled = tiled_map(net, x, cond, tile=48, overlap=16)
    err = (tiled - whole).abs()
    border = err.amax().item()
    assert border <= 2.5 / 16 * 2 * whole.abs().amax().item()
    assert tiled.shape == whole.shape
    # pixels at least 3 px from every tile edge that is not the image's: float32 rounding only
    inner = torch.ones(80, 112, dtype=torch.bool)
    for n, axis in ((80, 0), (112, 1)):
        for a in tile_starts(n, 48, 16):
            for edge in (a, a + 48):
                if 0 < edge < n:
                    idx = slice(max(edge - 3, 0), min(edge + 3, n))
                    if axis == 0:
                        inner[idx, :] = False
                    else:
                        inner[:, idx] = False
    assert inner.any() and err[..., inner].amax() < 1e-5


def test_the_tiled_prior_is_the_whole_one_when_the_image_fits_a_tile_and_close_when_it_does_not():
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=()))
    with torch.no_grad():  # a network that is not the untrained one's zero output
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    prior = EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny", "data": {"channels": 3}})
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = prior.eps(x, 500)
        assert torch.equal(prior.tiled(128, 32).eps(x, 500), whole)  # one tile: the same call
        tiled = prior.tiled(64, 32).eps(x, 500)
        assert torch.equal(prior.tiled(None).eps(x, 500), whole)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all() and not torch.equal(tiled, whole)
    for bad in ((66, 32), (64, 64), (64, 30)):
        with pytest.raises(ValueError, match="multiples"):
            prior.tiled(*bad)


@pytest.fixture()
def tiny(tmp_path):
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=()))
    EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny", "data": {"channels": 3}}).save(tmp_path / "tiny.safetensors")
    img = (np.random.default_rng(0).random((136, 200, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png")
    return tmp_path / "tiny.safetensors", tmp_path / "photo.png"


def _solve(tiny, out, *extra):
    r = CliRunner().invoke(app, ["solve", "--task", "denoise", str(tiny[1]), "--prior", str(tiny[0]), "--steps", "2",
                                 "--noise-sigma", "0.05", "--out", str(out), "--quiet", "--json", *extra])
    return r, (r.stderr if hasattr(r, "stderr") else r.output)


def test_an_image_that_would_not_fit_is_restored_on_tiles_and_the_report_says_so(tiny, tmp_path, monkeypatch):
    """Memory as a model (1000 bytes a pixel for the network's forward pass, 33.5 MB free): the whole 200×136
    image (27.2 MB) is above 0.8 of it, a 128-px tile (16.4 MB) within half of it, so solve tiles at 128: rows at 0, 8 and columns at 0, 64, 72."""
    import invdiff.accel

    monkeypatch.setattr(invdiff.accel, "per_image_bytes", lambda prior, shape, **kw: 1000 * shape[-1] * shape[-2])
    monkeypatch.setattr(invdiff.accel, "available_memory", lambda device: 33_500_000)
    r, err = _solve(tiny, tmp_path / "auto")
    assert r.exit_code == 0, err
    rep = json.loads(r.stdout)
    assert rep["tiles"]["tile"] == 128 and rep["tiles"]["count"] == 2 * 3 and "memory" in rep["tiles"]["reason"]
    assert Image.open(rep["files"]["restored"]).size == (200, 136)
    monkeypatch.setattr(invdiff.accel, "available_memory", lambda device: 10**12)  # plenty: no tiles
    r, err = _solve(tiny, tmp_path / "whole")
    assert r.exit_code == 0, err
    assert "tiles" not in json.loads(r.stdout)


def test_tiles_asked_for_are_used_and_bad_ones_are_one_clear_error(tiny, tmp_path):
    r, err = _solve(tiny, tmp_path / "given", "--tile", "96")
    assert r.exit_code == 0, err
    rep = json.loads(r.stdout)
    assert rep["tiles"] == {"tile": 96, "overlap": 64, "count": 3 * 5, "reason": "given (--tile)"}
    for bad, words in ((["--tile", "98"], "multiple"), (["--tile", "64"], "overlap"),
                       (["--tile", "96", "--method", "dps"], "differentiates")):
        r, err = _solve(tiny, tmp_path / "bad", *bad)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert r.exit_code != 0 and len(lines) == 1 and words in lines[0] and "--tile" in lines[0]
        assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
