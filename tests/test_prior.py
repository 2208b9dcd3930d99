import json

import pytest
import torch

from invdiff.nets.unet import UNet, UNetConfig
from invdiff.prior import EpsPrior, load
from invdiff.schedule import NoiseSchedule
from invdiff.zoo import PRIORS


def _prior():
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,), groups=8))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return EpsPrior(net.eval(), NoiseSchedule.linear(), config={"name": "tiny", "data": {"image_size": 16}})


def test_save_load_bit_exact(tmp_path):
    prior = _prior()
    path = prior.save(tmp_path / "tiny.safetensors")
    back = load(path)
    for (k, a), (k2, b) in zip(prior.net.state_dict().items(), back.net.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert back.schedule.betas.equal(prior.schedule.betas)
    cfg = json.loads(path.with_suffix(".json").read_text())
    assert cfg["data"]["range"] == [-1, 1] and cfg["schedule"]["kind"] == "linear" and "format_version" in cfg
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([10, 900])
    assert torch.equal(prior.eps(x, t), back.eps(x, t))


def test_fp16_save_halves_size(tmp_path):
    prior = _prior()
    a = prior.save(tmp_path / "a.safetensors").stat().st_size
    b = prior.save(tmp_path / "b.safetensors", dtype=torch.float16).stat().st_size
    assert b < 0.55 * a
    back = load(tmp_path / "b.safetensors")
    assert next(back.net.parameters()).dtype == torch.float32


def test_x0_eps_score_consistency():
    prior = _prior()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    t = torch.tensor([0, 400, 999])
    d = prior.denoise(x, t)
    ac = prior.schedule.at("alphas_cumprod", t, x)
    assert torch.allclose(ac.sqrt() * d.x0 + (1 - ac).sqrt() * d.eps, x, atol=1e-10)
    assert torch.allclose(prior.score(x, t), -d.eps / (1 - ac).sqrt())
    c = prior.denoise(x, t, clip=True)
    assert c.x0.abs().max() <= 1 and torch.allclose(prior.x0_from_eps(x, t, c.eps), c.x0, atol=1e-9)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown prior"):
        load("no-such-prior")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    (tmp_path / "bad.json").write_text(json.dumps({"arch": "unet", "unet": UNetConfig().to_dict(), "schedule": {"kind": "linear"}}))
    with pytest.raises(ValueError, match="cannot read"):
        load(bad)
    (tmp_path / "nojson.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="config not found"):
        load(tmp_path / "nojson.safetensors")


def test_check_image():
    prior = _prior()
    with pytest.raises(ValueError, match="1-channel"):
        prior.check_image(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiples"):
        prior.check_image(torch.zeros(1, 1, 15, 16))


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_shipped_priors_load(name):
    assert PRIORS[name].available, f"bundled prior {name} is registered but its weights are not in the repository"
    assert PRIORS[name].weights.stat().st_size < 15 * 2**20  # each file ≤ 15 MiB
    prior = load(name)
    cfg = prior.config
    assert cfg["data"]["range"] == [-1, 1] and cfg["training"]["steps"] > 0 and cfg["training"]["images_seen"] > 0
    c, s = prior.channels, 32
    x = torch.randn(2, c, s, s)
    cond = (torch.randn(2, prior.cond_channels, s, s) if prior.cond_channels
            else torch.tensor([0, prior.num_classes]) if prior.num_classes else None)  # a class and the null label
    eps = prior.eps(x, torch.tensor([5, 500]), cond)
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_accelerate_keeps_eps():
    # channels_last changes only the memory layout: same ε up to float32 summation order; bf16 autocast of the
    # network keeps the caller's dtype and stays within bf16 precision (8 mantissa bits: ~1e-2 relative)
    prior = _prior().float().requires_grad_(False)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = prior.eps(x, 300)
    prior.accelerate(channels_last=True, compile=False, bf16=False)
    torch.testing.assert_close(prior.eps(x, 300), ref, rtol=1e-4, atol=1e-5)
    prior.accelerate(channels_last=True, compile=False, bf16=True)
    out = prior.eps(x, 300)
    assert out.dtype == x.dtype and out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 5e-2
