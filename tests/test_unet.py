import pytest
import torch

from invdiff.nets.unet import UNet, UNetConfig, timestep_embedding

SMALL = dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,), groups=8)


def _randomise(net):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


@pytest.mark.parametrize("cin,cond", [(1, 0), (3, 0), (1, 2)])
def test_shapes_any_size(cin, cond):
    net = _randomise(UNet(UNetConfig(in_channels=cin, cond_channels=cond, **SMALL)))
    for h, w in [(16, 16), (24, 40)]:
        x = torch.randn(2, cin, h, w)
        c = torch.randn(2, cond, h, w) if cond else None
        out = net(x, torch.tensor([3, 700]), c)
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_conditioning_and_size_errors():
    net = UNet(UNetConfig(in_channels=1, cond_channels=1, **SMALL))
    with pytest.raises(ValueError, match="conditioning"):
        net(torch.randn(1, 1, 16, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="multiples"):
        net(torch.randn(1, 1, 15, 16), torch.tensor([1]), torch.randn(1, 1, 15, 16))


def test_batch_invariance_and_time_dependence():
    net = _randomise(UNet(UNetConfig(in_channels=1, **SMALL))).eval()
    x = torch.randn(4, 1, 16, 16)
    t = torch.tensor([1, 50, 300, 999])
    full = net(x, t)
    for i in range(4):
        assert torch.allclose(net(x[i: i + 1], t[i: i + 1]), full[i: i + 1], atol=1e-5)
    assert not torch.allclose(net(x, torch.zeros(4, dtype=torch.long)), full)


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0.0, 10.0]), 16)
    assert e.shape == (2, 16)
    assert torch.allclose(e[0, :8], torch.ones(8)) and torch.allclose(e[0, 8:], torch.zeros(8))


def test_config_roundtrip():
    c = UNetConfig(in_channels=3, **SMALL)
    assert UNetConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown"):
        UNetConfig.from_dict({**c.to_dict(), "bogus": 1})
