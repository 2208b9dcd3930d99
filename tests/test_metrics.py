"""Metrics against scikit-image, and the LPIPS plumbing against the lpips package."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invdiff import metrics


def _pair(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(2, c, 40, 48, generator=g, dtype=torch.float64) * 2 - 1
    x = (ref + 0.2 * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return x, ref


def _np(v):
    return ((v.numpy() + 1) / 2).transpose(1, 2, 0)


@pytest.mark.parametrize("c", [1, 3])
def test_psnr_and_ssim_match_scikit_image(c):
    x, ref = _pair(c)
    p = metrics.psnr(x, ref)
    s = metrics.ssim(x, ref)
    for i in range(2):
        a, b = _np(x[i]), _np(ref[i])
        assert abs(float(p[i]) - peak_signal_noise_ratio(b, a, data_range=1)) < 1e-8
        ref_ssim = structural_similarity(b, a, data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
        assert abs(float(s[i]) - ref_ssim) < 1e-8


def test_identical_images_are_perfect():
    x, _ = _pair(3)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert (metrics.psnr(x, x) > 150).all()
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(x, x[:, :1])


def test_lpips_plumbing_matches_the_lpips_package(tmp_path):
    import lpips as lp
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.alexnet()  # randomly initialised: a test-only backbone
    path = tmp_path / "alexnet.pth"
    torch.save(net.state_dict(), path)
    ours = metrics.lpips_model(path)
    ref = lp.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    metrics.load_alexnet_features(ref, net.features)
    x, y = _pair(3, seed=1)
    x, y = x[:, :, :32, :32], y[:, :, :32, :32]
    with torch.no_grad():
        expected = ref(x.float(), y.float()).flatten().double()
    torch.testing.assert_close(metrics.lpips(x, y, ours), expected)
    # and it is not the random default: the features were replaced by the file's
    other = lp.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        assert not torch.allclose(other(x.float(), y.float()).flatten().double(), expected)


def test_lpips_reports_unavailable_without_a_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("INVDIFF_LPIPS_BACKBONE", raising=False)
    assert metrics.lpips_or_none() is None
    with pytest.raises(metrics.LPIPSUnavailable):
        metrics.lpips_model()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(metrics.LPIPSUnavailable):
        metrics.lpips_model(bad)
    s = metrics.score(*_pair(1))
    assert s["lpips"] is None and s["psnr"].shape == (2,)


def test_colourfulness_follows_its_definition():
    from invdiff.metrics import colourfulness

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert torch.allclose(colourfulness(grey), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    # an independent computation in numpy, image 0
    a = ((x[0].double().numpy() + 1) / 2) * 255
    rg, yb = a[0] - a[1], 0.5 * (a[0] + a[1]) - a[2]
    want = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert abs(float(colourfulness(x)[0]) - want) < 1e-9
    # desaturating towards grey lowers it
    assert (colourfulness(0.5 * x + 0.5 * grey) < colourfulness(x)).all()
    with pytest.raises(ValueError, match="RGB"):
        colourfulness(x[:, :1])


def _upto_shift_transcribed(x: np.ndarray, ref: np.ndarray, maxshift: float, step: float, border: int) -> float:
    """Levin et al.'s comp_upto_shift, per the MATLAB: the reference shaved by ``border``, the estimate's window
    grown by ``maxshift`` and interpolated (bilinear, interp2) at every shift of the grid; the least SSD kept,
    here as PSNR on [0, 1] of the mean over channels and pixels."""
    from scipy.ndimage import map_coordinates

    h, w = ref.shape[-2:]
    r = ref[:, border: h - border, border: w - border]
    best = np.inf
    for dy in np.arange(-maxshift, maxshift + step / 2, step):
        for dx in np.arange(-maxshift, maxshift + step / 2, step):
            yy, xx = np.meshgrid(np.arange(border, h - border) + dy, np.arange(border, w - border) + dx, indexing="ij")
            moved = np.stack([map_coordinates(c, [yy, xx], order=1) for c in x])
            best = min(best, float(((moved - r) ** 2).mean()))
    return 10 * np.log10(1 / max(best, 1e-20))


def test_psnr_upto_shift_transcribes_comp_upto_shift():
    g = torch.Generator().manual_seed(3)
    ref = torch.rand(1, 3, 36, 40, generator=g) * 2 - 1
    x = (torch.roll(ref, (1, -2), (-2, -1)) + 0.1 * torch.randn(1, 3, 36, 40, generator=g)).clamp(-1, 1)
    ours = float(metrics.psnr_upto_shift(x, ref, maxshift=3, step=0.5, border=6)[0])
    theirs = _upto_shift_transcribed(((x[0] + 1) / 2).double().numpy(), ((ref[0] + 1) / 2).double().numpy(), 3, 0.5, 6)
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_psnr_upto_shift_undoes_a_translation_and_never_scores_below_the_unshifted_window():
    from invdiff.data import validation_photos

    ref = validation_photos(64)[:1].float()
    moved = torch.roll(ref, (2, -3), (-2, -1))  # what wraps round lies inside the shaved border
    assert float(metrics.psnr(moved, ref)[0]) < 30
    assert float(metrics.psnr_upto_shift(moved, ref, border=8)[0]) > 100
    noisy = (ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    window = float(metrics.psnr(noisy[..., 8:-8, 8:-8], ref[..., 8:-8, 8:-8])[0])
    assert float(metrics.psnr_upto_shift(noisy, ref, border=8)[0]) >= window - 1e-4  # the zero shift is on the grid
    with pytest.raises(ValueError, match="border"):
        metrics.psnr_upto_shift(noisy, ref, border=40)


def test_psnr_upto_shift_scores_each_image_of_a_batch_alone():
    g = torch.Generator().manual_seed(5)
    ref = torch.rand(3, 3, 40, 44, generator=g) * 2 - 1
    x = (torch.roll(ref, (1, 2), (-2, -1)) + 0.1 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    together = metrics.psnr_upto_shift(x, ref, maxshift=2, step=0.5, border=6)
    alone = torch.cat([metrics.psnr_upto_shift(x[i: i + 1], ref[i: i + 1], maxshift=2, step=0.5, border=6)
                       for i in range(3)])
    # per-image sums in float64, returned as float32: equal to float32 rounding
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-5)
