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


def test_attention_is_softmax_qkt_v_with_contiguous_rows(monkeypatch):
    """The attention block, transcribed: per head, softmax(Q Kᵀ / √d) V over the h·w tokens, projected and added to
    the input. PyTorch's CPU kernel that never holds the tokens² score matrix takes only contiguous rows; strided
    ones fall back to the one that does (a 960×540 photo: 2.9 GB instead of 0.65), so the block must hand it those."""
    import torch.nn.functional as F

    from invdiff.nets.unet import Attention

    torch.manual_seed(0)
    att = Attention(32, 4, 8)
    torch.nn.init.normal_(att.proj.weight, std=0.1)
    x = torch.randn(2, 32, 5, 7)
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append(all(t.is_contiguous() for t in (q, k, v)))
        return sdpa(q, k, v, *a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        out = att(x)
        qkv = att.qkv(att.norm(x)).reshape(2, 3, 4, 8, 35)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (b, heads, tokens, d)
        ref = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v
        ref = x + att.proj(ref.transpose(-1, -2).reshape(2, 32, 5, 7))
    assert seen == [True]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
