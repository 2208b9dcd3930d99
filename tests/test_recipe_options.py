"""The training recipe's options under A/B (scripts/campaign_ab.py): the learning-rate schedule, the noise-level
distribution and loss weighting, and the colour jitter of the patch sampler."""
import math
from dataclasses import replace

import pytest
import torch

from invdiff.data import PatchSampler
from invdiff.schedule import NoiseSchedule
from invdiff.train import TrainConfig, diffusion_loss, lr_at, noise_levels, timestep_weights

CFG = TrainConfig(name="toy", data="toy", lr=2e-4, warmup=10)
SCHED = NoiseSchedule.from_config({"kind": "linear", "num_timesteps": 1000})


def test_cosine_learning_rate_follows_the_formula():
    cfg = replace(CFG, lr_schedule="cosine", lr_min=2e-5, lr_decay_steps=400, warmup_from=1000)
    for k in (10, 100, 200, 333, 399):
        want = 2e-5 + (2e-4 - 2e-5) * 0.5 * (1 + math.cos(math.pi * k / 400))
        assert lr_at(cfg, 1000 + k) == pytest.approx(want, rel=1e-12)
    assert lr_at(cfg, 1000 + 200) == pytest.approx((2e-4 + 2e-5) / 2)
    assert lr_at(cfg, 1000 + 400) == pytest.approx(2e-5) and lr_at(cfg, 1000 + 5000) == pytest.approx(2e-5)
    assert lr_at(cfg, 1000) == pytest.approx(2e-4 / 10)  # the warm-up still applies
    assert lr_at(replace(cfg, lr_schedule="constant"), 1000 + 300) == 2e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_at(replace(cfg, lr_schedule="step"), 1100)


def test_uniform_eps_has_no_level_weights_and_config_roundtrips():
    assert timestep_weights(CFG, SCHED) is None
    cfg = replace(CFG, t_sampling="lognormal", t_lognormal=(-1.0, 1.5, 0.3))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_lognormal_levels_match_the_normal_distribution_of_log_sigma():
    mean, std, share = -1.2, 1.2, 0.2
    p, w = timestep_weights(replace(CFG, t_sampling="lognormal", t_lognormal=(mean, std, share)), SCHED)
    T = SCHED.num_timesteps
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12) and torch.all(w == 1)
    assert p.min().item() >= share / T * (1 - 1e-9)  # every t of the schedule is still trained
    ln_sigma = noise_levels(SCHED).log()
    # the mass on {t: |ln σ_t − mean| < std}: (1 − share)·Φ-mass of the interval, up to one half-bin at each edge,
    # plus the uniform share of those t
    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    for lo, hi in ((-1, 1), (0, 2), (-2, -0.5)):  # bands of ln σ in standard deviations about the mean
        inside = (ln_sigma > mean + lo * std) & (ln_sigma < mean + hi * std)
        edge = 2 * (1 - share) * p.max().item()  # the two bins cut by the band's edges
        want = (1 - share) * (phi(hi) - phi(lo)) + share * inside.sum().item() / T
        assert abs(p[inside].sum().item() - want) < edge, (lo, hi)
    with pytest.raises(ValueError, match="t_lognormal"):
        timestep_weights(replace(CFG, t_sampling="lognormal", t_lognormal=(0.0, 0.0, 0.2)), SCHED)
    with pytest.raises(ValueError, match="t_sampling"):
        timestep_weights(replace(CFG, t_sampling="beta"), SCHED)


def test_min_snr_weights():
    gamma = 5.0
    p, w = timestep_weights(replace(CFG, loss_weighting="min-snr", min_snr_gamma=gamma), SCHED)
    sigma = noise_levels(SCHED)
    raw = torch.minimum(torch.ones_like(sigma), gamma * sigma ** 2)  # min(SNR, γ)/SNR with SNR = 1/σ²
    assert torch.allclose(w, raw / (p * raw).sum(), rtol=1e-12)
    assert (p * w).sum().item() == pytest.approx(1.0)
    assert torch.allclose(p, torch.full_like(p, 1 / SCHED.num_timesteps), rtol=1e-12)
    assert w[0] < 0.01 * w[-1]  # the low-noise levels are turned down, the others equal
    with pytest.raises(ValueError, match="loss_weighting"):
        timestep_weights(replace(CFG, loss_weighting="p2"), SCHED)


class Recorder(torch.nn.Module):
    """An ε-network that predicts zeros and records the timesteps it was asked about."""

    def __init__(self):
        super().__init__()
        self.ts = []

    def forward(self, x, t, *cond):
        self.ts.append(t.clone())
        return torch.zeros_like(x)


def test_diffusion_loss_draws_levels_from_p_and_weights_them():
    sched = NoiseSchedule.from_config({"kind": "linear", "num_timesteps": 100})
    p = torch.linspace(1, 3, 100, dtype=torch.float64)
    p /= p.sum()
    w = torch.linspace(0.5, 2.0, 100, dtype=torch.float64)
    net, x0 = Recorder(), torch.zeros(4000, 1, 2, 2)
    g = torch.Generator().manual_seed(0)
    loss = diffusion_loss(net, sched, x0, g, levels=(p, w))
    # replay: the same draws in the same order, the weighted ε-MSE written out
    g = torch.Generator().manual_seed(0)
    t = torch.multinomial(p, 4000, replacement=True, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    assert torch.equal(net.ts[0], t)
    assert loss.item() == pytest.approx((eps.pow(2).mean(dim=(1, 2, 3)) * w.float()[t]).mean().item(), rel=1e-5)
    # the frequencies of t follow p: per decile of t, within 4 binomial standard errors
    counts = torch.bincount(t, minlength=100).double()
    for lo in range(0, 100, 10):
        q = p[lo: lo + 10].sum().item()
        assert abs(counts[lo: lo + 10].sum().item() / 4000 - q) < 4 * math.sqrt(q * (1 - q) / 4000)
    # without levels: uniform t and the plain MSE, the stream as before (randint, then ε)
    net = Recorder()
    g = torch.Generator().manual_seed(1)
    loss = diffusion_loss(net, sched, x0[:64], g)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 100, (64,), generator=g)
    eps = torch.randn(64, 1, 2, 2, generator=g)
    assert torch.equal(net.ts[0], t) and loss.item() == pytest.approx(eps.pow(2).mean().item(), rel=1e-6)


def test_colour_jitter_scales_saturation_and_contrast_only():
    g = torch.Generator().manual_seed(0)
    photos = [(torch.rand(3, 80, 96, generator=g) - 0.5) * 0.8]  # in [-0.4, 0.4]: the jitter never clips
    plain = PatchSampler(photos, patch=32, max_scale=1.0)
    jit = PatchSampler(photos, patch=32, max_scale=1.0, colour_jitter=0.1)
    a = plain.sample(16, torch.Generator().manual_seed(5))
    b = jit.sample(16, torch.Generator().manual_seed(5))
    # the same crops (drawn first), then per patch: grey + s (x − grey), and contrast c about the patch mean
    assert torch.allclose(b.mean(dim=(1, 2, 3)), a.mean(dim=(1, 2, 3)), atol=1e-5)
    grey_a, grey_b = a.mean(1), b.mean(1)
    c = (grey_b - grey_b.mean(dim=(1, 2), keepdim=True)).flatten(1).norm(dim=1) / \
        (grey_a - grey_a.mean(dim=(1, 2), keepdim=True)).flatten(1).norm(dim=1)
    s = (b - b.mean(1, keepdim=True)).flatten(1).norm(dim=1) / (a - a.mean(1, keepdim=True)).flatten(1).norm(dim=1) / c
    assert torch.all((c > 0.9 - 1e-4) & (c < 1.1 + 1e-4)) and torch.all((s > 0.9 - 1e-4) & (s < 1.1 + 1e-4))
    assert c.std() > 0.01 and s.std() > 0.01  # drawn per patch
    with pytest.raises(ValueError, match="colour_jitter"):
        PatchSampler(photos, patch=32, colour_jitter=1.5)


def test_colour_pick_keeps_the_most_colourful_of_k_candidates():
    from invdiff.metrics import colourfulness

    g = torch.Generator().manual_seed(0)
    grey = torch.rand(1, 64, 64, generator=g).expand(3, -1, -1) * 2 - 1
    colour = torch.rand(3, 64, 64, generator=g) * 2 - 1
    photos = [grey.clone(), colour]  # one grey photo, one colourful one, the same area
    plain = PatchSampler(photos, patch=16, max_scale=1.0)
    pick = PatchSampler(photos, patch=16, max_scale=1.0, colour_pick=3)
    # transcribed: the 3·n candidates are the plain stream's first 3·n patches, and each patch is the most colourful
    # of its 3
    cand = plain.sample(3 * 40, torch.Generator().manual_seed(7)).reshape(40, 3, 3, 16, 16)
    want = cand[torch.arange(40), colourfulness(cand.flatten(0, 1)).reshape(40, 3).argmax(1)]
    got = pick.sample(40, torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
    # a grey patch survives only when all 3 candidates are grey: P = 1/8 against 1/2 for the plain sampler
    grey_share = float((colourfulness(got) < 1e-3).float().mean())
    assert grey_share < 0.3 and float((colourfulness(plain.sample(40, torch.Generator().manual_seed(7))) < 1e-3).float().mean()) > 0.3
    assert torch.equal(PatchSampler(photos, patch=16, max_scale=1.0, colour_pick=1).sample(8, torch.Generator().manual_seed(3)),
                       plain.sample(8, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="colour_pick"):
        PatchSampler(photos, patch=16, colour_pick=0)


def test_the_natural_recipe_draws_from_exactly_the_listed_photos(tmp_path):
    """A training copy built before the list grew is an error that names the fix, not a silently smaller set;
    photos in the folder that the list does not name are not trained on."""
    import numpy as np
    from PIL import Image

    from invdiff.data import natural_photos, natural_sources

    names = [f["name"] for f in natural_sources()]
    for i, n in enumerate(names[:-1]):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"{n}.png")
    with pytest.raises(FileNotFoundError, match=f"lacks 1 of the {len(names)} .*build_natural_data"):
        natural_photos(tmp_path, listed=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{names[-1]}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "not-listed.png")
    assert len(natural_photos(tmp_path, listed=True)) == len(names)
    assert len(natural_photos(tmp_path)) == len(names) + 1  # a plain folder read takes every PNG
    # named photos come in the order asked for (not file-name order), and a missing one is the same clear error
    picked = [names[2], names[0], names[1]]
    got = natural_photos(tmp_path, names=picked)
    assert [int(im[0, 0, 0]) for im in got] == [2, 0, 1]
    (tmp_path / f"{names[0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match="lacks 1 of the 3 .*build_natural_data"):
        natural_photos(tmp_path, names=picked)


def test_the_no_webp_data_leaves_out_exactly_the_photos_whose_source_is_a_webp(monkeypatch):
    import invdiff.data as D

    fake = [{"name": "b", "path": "/x/b.JPG"}, {"name": "a", "path": "/x/bundle.rcc", "member": "r/a.webp"},
            {"name": "c", "path": "/x/c.webp"}, {"name": "d", "path": "/x/d.rcc", "member": "r/d.png"}]
    monkeypatch.setattr(D, "natural_sources", lambda: fake)
    assert D.natural_names() == ["a", "b", "c", "d"]
    assert D.natural_names(skip_format="webp") == ["b", "d"]
    assert D.natural_names(skip_format="JPG") == ["a", "c", "d"]


def test_the_webp_half_data_keeps_the_other_photos_whole_and_halves_the_webp_ones(monkeypatch):
    """`natural-webp-half`: the photos whose source is not a WebP as they are, then the WebP ones at half size
    (each side halved; a flat photo stays flat; a smooth ramp keeps its values at the coarser grid's centres)."""
    from dataclasses import replace

    import invdiff.data as D
    from invdiff.recipes import RECIPES
    from invdiff.train import make_batches

    fake = [{"name": "a", "path": "/x/a.webp"}, {"name": "b", "path": "/x/b.JPG"},
            {"name": "c", "path": "/x/c.rcc", "member": "r/c.webp"}]
    ramp = torch.arange(256, dtype=torch.float32).div(2).expand(3, 64, 256).round().to(torch.uint8)
    images = {"a": torch.full((3, 300, 260), 77, dtype=torch.uint8), "b": torch.zeros(3, 130, 140, dtype=torch.uint8),
              "c": ramp.transpose(1, 2).contiguous()}
    seen = []
    monkeypatch.setattr(D, "natural_sources", lambda: fake)
    monkeypatch.setattr(D, "natural_photos", lambda names: seen.append(list(names)) or [images[n] for n in names])
    made = []
    monkeypatch.setattr(D, "PatchSampler", lambda photos, **kw: made.append(photos) or type("S", (), {"sample": 0}))
    make_batches(replace(RECIPES["natural"], data="natural-webp-half"))
    assert seen == [["b"], ["a", "c"]]
    b, a, c = made[0]
    assert torch.equal(b, images["b"])
    assert a.shape == (3, 150, 130) and a.dtype == torch.uint8 and bool((a == 77).all())
    assert c.shape == (3, 128, 32)
    # away from the border, pixel i of the half-size ramp sits at 2i + 0.5 of the original: value (2i + 0.5)/2
    centre = c[0, 8:-8, 10].float()
    expected = (2 * torch.arange(8, 120).float() + 0.5) / 2
    assert (centre - expected).abs().max() <= 1.0  # the original's rounding (0.5) and this one's (0.5)
