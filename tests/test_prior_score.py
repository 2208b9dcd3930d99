"""``invdiff.blind.prior_score``: the prior's denoising loss at low noise levels, checked against the exact expected
loss of a Gaussian prior (whose ε-network is exact), within the Monte Carlo error that the common draws leave."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.analytic import GaussianEps
from invdiff.blind import prior_score
from invdiff.prior import EpsPrior
from invdiff.schedule import NoiseSchedule

SHAPE = (1, 4, 4)
D = 16
TS = (10, 25, 50)


@pytest.fixture(scope="module")
def gaussian():
    """N(μ, Σ) over 4×4 grey images with a smooth covariance (neighbouring pixels correlated), and its exact ε."""
    s = NoiseSchedule.linear()
    yy, xx = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    p = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    cov = 0.3 * torch.exp(-torch.cdist(p, p).square() / 4.0) + 1e-3 * torch.eye(D, dtype=torch.float64)
    mu = torch.zeros(D, dtype=torch.float64)
    return EpsPrior(GaussianEps(mu, cov, s, SHAPE), s), mu, cov, s


def _expected(x: torch.Tensor, mu, cov, s) -> tuple[float, torch.Tensor]:
    """E over ε of the loss, per dimension and averaged over TS, and the linear map B_t (ε̂ − ε = a_t + B_t ε)."""
    total, bs = 0.0, []
    for t in TS:
        ab = float(s.alphas_cumprod[t])
        m = torch.linalg.inv(ab * cov + (1 - ab) * torch.eye(D, dtype=torch.float64))
        a = math.sqrt((1 - ab) * ab) * m @ (x.flatten().double() - mu)
        b = (1 - ab) * m - torch.eye(D, dtype=torch.float64)
        total += (float(a @ a) + float(torch.trace(b @ b))) / D
        bs.append((a, b))
    return total / len(TS), bs


def test_score_difference_is_the_expected_loss_difference_within_its_monte_carlo_error(gaussian):
    prior, mu, cov, s = gaussian
    g = torch.Generator().manual_seed(0)
    smooth = (torch.linalg.cholesky(cov) @ torch.randn(D, dtype=torch.float64, generator=g)).reshape(1, *SHAPE)
    checker = (0.3 * (-1.0) ** (torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :])).reshape(1, *SHAPE)
    rough = smooth + checker.double()  # the same image with a ringing pattern the prior finds unlikely
    draws = 256
    got = prior_score(prior, torch.cat([smooth, rough]).float(), timesteps=TS, draws=draws)
    e1, ab1 = _expected(smooth, mu, cov, s)
    e2, ab2 = _expected(rough, mu, cov, s)
    # the difference of the two losses for one draw ε is ‖a₂‖² − ‖a₁‖² + 2(a₂ − a₁)ᵀB ε: its variance, per draw and t
    var = sum(4 * float((a2 - a1) @ b @ b @ (a2 - a1)) for (a1, b), (a2, _) in zip(ab1, ab2)) / D ** 2
    sd = math.sqrt(var / (len(TS) ** 2 * draws))
    assert float(got[1] - got[0]) == pytest.approx(e2 - e1, abs=4 * sd + 1e-5)
    assert e2 - e1 > 20 * sd  # the measurement separates them: the ringing image scores clearly worse
    assert float(got[1]) > float(got[0])
    # each score alone: its mean, within the draws' spread; for ε ~ N(0, I), ‖a + Bε‖² has variance
    # 2 tr(B⁴) + 4 aᵀB²a (B symmetric)
    for value, e, ab in ((got[0], e1, ab1), (got[1], e2, ab2)):
        v = sum(2 * float(torch.trace(b @ b @ b @ b)) + 4 * float(a @ b @ b @ a) for a, b in ab) / D ** 2
        assert float(value) == pytest.approx(e, abs=4 * math.sqrt(v / (len(TS) ** 2 * draws)))


def test_scores_are_per_image_and_the_draws_are_common(gaussian):
    prior = gaussian[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn((3, *SHAPE), generator=g) * 0.3
    together = prior_score(prior, x)
    alone = torch.cat([prior_score(prior, x[n: n + 1]) for n in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-7)  # float32 rounding, batch invariant
    twice = prior_score(prior, torch.cat([x[:1], x[:1]]))
    assert float(twice[0]) == float(twice[1])  # the same image gets the same noises: its score, not the draws'
    other_seed = prior_score(prior, x[:1], seed=5)
    assert float(other_seed[0]) != float(together[0])


@pytest.mark.parametrize("kwargs", [{"draws": 0}, {"timesteps": ()}, {"timesteps": (10, 1000)}])
def test_bad_arguments_are_one_clear_error(gaussian, kwargs):
    with pytest.raises(ValueError, match="prior_score|timesteps"):
        prior_score(gaussian[0], torch.zeros(1, *SHAPE), **kwargs)


def test_gradient_sparsity_of_edges_is_the_fraction_of_differences_they_hold():
    """‖∇x‖₁/(‖∇x‖₂√N) of m equal differences among N is √(m/N) exactly: one vertical step edge of height a
    (m = H − 1 differences of the cropped grid), the same edge split into two half steps (a ghost: 2m), and the
    image's scale and colour do not matter."""
    from invdiff.blind import gradient_sparsity

    h, w = 16, 20
    n = 2 * (h - 1) * (w - 1)
    edge = torch.zeros(1, 3, h, w)
    edge[..., 10:] = 0.8
    ghost = torch.zeros(1, 3, h, w)
    ghost[..., 7:] = 0.4
    ghost[..., 13:] = 0.8
    got = gradient_sparsity(torch.cat([edge, ghost, 0.25 * edge, edge * torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1, 1)]))
    want = torch.tensor([(h - 1) / n, 2 * (h - 1) / n, (h - 1) / n, (h - 1) / n]).sqrt()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="gradient_sparsity"):
        gradient_sparsity(torch.zeros(3, 8, 8))


def test_choice_score_names_its_rules():
    from invdiff.blind import CHOICE_RULES, FAST_EM_RULE, choice_rules, choice_score, gradient_sparsity

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert set(choice_rules(FAST_EM_RULE)) <= set(CHOICE_RULES)
    torch.testing.assert_close(choice_score("sparsity", None, x), gradient_sparsity(x))
    y = torch.zeros(2, 3, 8, 8)
    torch.testing.assert_close(choice_score("residual", None, x, y, lambda v: 2 * v), (2 * x).square().mean((1, 2, 3)))
    with pytest.raises(ValueError, match="residual"):
        choice_score("residual", None, x)
    with pytest.raises(ValueError, match="sparsity"):
        choice_score("evidence", None, x)


def test_choose_switches_by_one_rule_and_only_by_agreement_of_several():
    from invdiff.blind import choice_rules, choose

    assert choice_rules("residual") == ("residual",) and choice_rules("residual+sparsity") == ("residual", "sparsity")
    for bad in ("", "evidence", "residual+residual", "residual+", None, 3):
        with pytest.raises(ValueError, match="choice rule"):
            choice_rules(bad)
    s = {"em": {"residual": 1.0, "sparsity": 0.5}, "fast_em": {"residual": 0.9, "sparsity": 0.6}}
    assert choose(s, "residual", "em") == "fast_em" and choose(s, "sparsity", "em") == "em"
    assert choose(s, "residual+sparsity", "em") == "em"  # the two disagree: no switch
    assert choose(s, "residual+sparsity", "fast_em") == "fast_em"
    s["fast_em"]["sparsity"] = 0.4
    assert choose(s, "residual+sparsity", "em") == "fast_em" and choose(s, "sparsity+residual", "em") == "fast_em"
    s["fast_em"]["sparsity"] = 0.5  # a tie is no agreement to switch
    assert choose(s, "residual+sparsity", "em") == "em"
    s["fast_em"]["sparsity"] = 0.4
    three = {**s, "third": {"residual": 0.95, "sparsity": 0.1}}
    assert choose(three, "residual+sparsity", "em") == "fast_em"  # both beat em; the lower by the first rule
    three["third"]["residual"] = 0.85
    assert choose(three, "residual+sparsity", "em") == "third"
    with pytest.raises(ValueError, match="default"):
        choose(s, "residual", "nothing")


def test_a_presets_fast_em_rule_is_checked_when_the_preset_is_made():
    from invdiff.tasks import Preset

    assert Preset("diffpir", 20, {}, kernel_fast_em={"rule": "residual+sparsity"}).kernel_fast_em["rule"] == \
        "residual+sparsity"
    for bad in ("evidence", "residual+evidence", "residual+"):
        with pytest.raises(ValueError, match="kernel_fast_em's rule"):
            Preset("diffpir", 20, {}, kernel_fast_em={"rule": bad})
