"""Measured mode on real files: nothing invented (a kernel or mask is given, read from the file, or estimated and
reported; otherwise one clear error), any size (padded and cropped back, never a lost pixel), any file (16-bit,
grey, EXIF-rotated JPEG, RGBA alpha as the mask), and many files (a folder, a bad file skipped and reported, a
rerun that continues)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from invdiff.cli import app
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.prior import EpsPrior
from invdiff.schedule import NoiseSchedule

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("measured")
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=()))
    prior = EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny", "data": {"channels": 3}})
    assert prior.multiple == 4  # so that odd sizes need padding
    prior.save(d / "tiny.safetensors")
    rng = np.random.default_rng(0)
    img = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(d / "photo.png")
    Image.fromarray((rng.random((37, 45, 3)) * 255).astype(np.uint8)).save(d / "odd.png")
    Image.fromarray(img[..., 0]).save(d / "grey.png")
    Image.fromarray((rng.random((37, 45)) * 65535).astype(np.uint16)).save(d / "deep.png")
    rgba = np.concatenate([img, np.full((48, 40, 1), 255, np.uint8)], -1)
    rgba[10:20, 10:30, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "holes.png")
    exif = Image.Exif()
    exif[274] = 6  # rotate 90° clockwise to display
    Image.fromarray(img).save(d / "rotated.jpg", exif=exif.tobytes())
    mask = np.full((48, 40), 255, np.uint8)
    mask[8:20, 8:20] = 0
    Image.fromarray(mask).save(d / "mask.png")
    np.save(d / "kernel.npy", np.ones((5, 5)) / 25)
    np.save(d / "field.npy", np.ones((2, 2, 5, 5)) / 25)
    return d


def solve(files, out, *args, code=0):
    r = runner.invoke(app, ["solve", *map(str, args), "--prior", str(files / "tiny.safetensors"), "--steps", "2",
                            "--out", str(out), "--quiet", "--json"])
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert (r.exit_code == 0) == (code == 0), err
    return r, err


def one_line(err: str, *needles: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]


def report(r) -> dict:
    return json.loads(r.stdout)


# ---- nothing invented --------------------------------------------------------------------------------------------
def test_inpainting_without_a_mask_is_a_clear_error(files, tmp_path):
    r, err = solve(files, tmp_path, "--task", "inpaint", files / "photo.png", code=2)
    one_line(err, "--mask")
    r, err = solve(files, tmp_path, "--task", "inpaint", "--mask", "box", files / "photo.png", code=2)
    one_line(err, "preset", "--simulate")
    assert not any(tmp_path.iterdir()) if tmp_path.exists() else True


def test_nonuniform_needs_a_kernel_field(files, tmp_path):
    r, err = solve(files, tmp_path / "a", "--task", "nonuniform-deblur", files / "photo.png", code=2)
    one_line(err, "--kernel", "field")
    r, err = solve(files, tmp_path / "b", "--task", "nonuniform-deblur", "--kernel", files / "field.npy",
                   files / "photo.png")
    rep = report(r)
    assert rep["degradation"]["kernel"]["source"] == "given" and rep["operator"]["operator"] == "NonUniformBlur"


def test_given_kernel_and_alpha_mask_are_reported(files, tmp_path):
    r, _ = solve(files, tmp_path / "k", "--task", "motion-deblur", "--kernel", files / "kernel.npy", files / "photo.png")
    rep = report(r)
    assert rep["degradation"]["kernel"] == {"source": "given", "shape": [5, 5], "file": str(files / "kernel.npy")}
    # the operator entry holds the task's own options, and none that only shape a simulated draw
    assert rep["operator"]["kernel"] == str(files / "kernel.npy") and rep["operator"]["padding"] == "reflect"
    assert not {"motion_intensity", "motion_model", "scale", "mask", "mask_fraction", "oversampling"} & set(rep["operator"])
    assert rep["degradation"]["noise_sigma"]["source"] == "estimated" and rep["noise_sigma"] > 0
    assert rep["degradation"]["noise_sigma"]["estimator"].startswith("patch PCA")  # a colour photo
    r, _ = solve(files, tmp_path / "m", "--task", "inpaint", files / "holes.png")
    rep = report(r)
    assert rep["degradation"]["mask"]["source"] == "alpha channel"
    assert "mask" in rep["operator"] and not {"mask_fraction", "kernel", "scale"} & set(rep["operator"])
    assert rep["degradation"]["mask"]["observed_fraction"] == pytest.approx(1 - 10 * 20 / (48 * 40))
    r, _ = solve(files, tmp_path / "s", "--task", "deblur", "--noise-sigma", 0.02, "--blur-sigma", 1.0, files / "photo.png")
    rep = report(r)
    assert rep["degradation"]["kernel"]["source"].startswith("given") and rep["degradation"]["kernel"]["shape"] == [7, 7]
    assert rep["degradation"]["noise_sigma"] == {"value": 0.02, "source": "given", "scale": "[-1, 1]"}



def test_a_simulated_operator_entry_keeps_the_options_of_its_draw(files, tmp_path):
    r, _ = solve(files, tmp_path, "--simulate", "--task", "motion-deblur", "--kernel-size", 7, files / "photo.png")
    op = report(r)["operator"]
    assert op["motion_intensity"] == 0.5 and op["kernel_size"] == 7 and op["kernel_shape"] == [7, 7]
    assert not {"scale", "mask", "mask_fraction", "oversampling"} & set(op)


def test_colourisation_takes_a_grey_photo_and_refuses_a_colour_one(files, tmp_path):
    r, err = solve(files, tmp_path / "c", "--task", "colorize", files / "photo.png", code=2)
    one_line(err, "colour photo", "--simulate")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    grey = np.asarray(Image.open(files / "grey.png"))
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey_rgb.png")  # a grey photo stored as RGB
    for name in (files / "grey.png", tmp_path / "grey_rgb.png"):
        rep = report(solve(files, tmp_path / name.stem, "--task", "colorize", name)[0])
        assert rep["measurement_shape"][0] == 1 and rep["image_shape"][0] == 3


def test_blind_deblurring_of_a_flat_photo_is_a_clear_error(files, tmp_path):
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "black.png")
    for task in ("deblur", "motion-deblur"):
        r, err = solve(files, tmp_path / task, "--task", task, "--kernel-size", 9, tmp_path / "black.png", code=2)
        one_line(err, "flat", "--kernel")
        assert not (tmp_path / task).exists() or not any((tmp_path / task).iterdir())


def test_a_mask_that_observes_nothing_is_a_clear_error(files, tmp_path):
    Image.fromarray(np.zeros((48, 40), np.uint8)).save(tmp_path / "none.png")
    r, err = solve(files, tmp_path / "o", "--task", "inpaint", "--mask", tmp_path / "none.png", files / "photo.png",
                   code=2)
    one_line(err, "no pixel", "inverted")
    clear = np.concatenate([np.asarray(Image.open(files / "photo.png")), np.zeros((48, 40, 1), np.uint8)], -1)
    Image.fromarray(clear, "RGBA").save(tmp_path / "clear.png")  # fully transparent: nothing observed
    r, err = solve(files, tmp_path / "o", "--task", "inpaint", tmp_path / "clear.png", code=2)
    one_line(err, "no pixel")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())

def test_blind_deblurring_estimates_and_writes_the_kernel(files, tmp_path):
    r, _ = solve(files, tmp_path, "--task", "deblur", "--kernel-size", 9, files / "photo.png")
    rep = report(r)
    k = rep["degradation"]["kernel"]
    assert k["source"].startswith("estimated") and k["shape"][0] <= 9 and k["shape"][0] % 2 == 1
    arr = np.load(rep["files"]["kernel"])
    assert arr.ndim == 2 and abs(arr.sum() - 1) < 1e-4 and (arr >= 0).all()
    assert Path(rep["files"]["kernel_image"]).is_file()


def test_simulated_blind_reports_the_kernel_error_and_shows_the_true_kernel(files, tmp_path, monkeypatch):
    import invdiff.blind
    import invdiff.figures

    shown, panels = {}, invdiff.figures.panels

    def spy(path, items, **kw):
        shown.update({label: img for label, img, _ in items})
        return panels(path, items, **kw)

    monkeypatch.setattr(invdiff.figures, "panels", spy)
    r, _ = solve(files, tmp_path, "--simulate", "--blind", "--task", "deblur", "--blur-sigma", 1.5, "--kernel-size", 9,
                 files / "photo.png")
    k = report(r)["degradation"]["kernel"]
    assert k["hidden_from_solver"] is True and k["kernel_error"] >= 0
    assert k["source"] == "estimated (blind, gaussian)"  # --blur-sigma made the blur; the solver does not get it
    from invdiff.operators import gaussian_kernel

    truth = gaussian_kernel(9, 1.5)  # the simulated kernel, scaled to its maximum as the panel shows kernels
    assert np.allclose(shown["true kernel (hidden from the solver)"], (truth / truth.max()).numpy(), atol=1e-6)
    assert any(label.startswith("kernel") and "estimated" in label for label in shown), list(shown)
    shown.clear()  # a kernel that was not hidden has no second panel
    solve(files, tmp_path / "known", "--simulate", "--task", "deblur", "--blur-sigma", 1.5, "--kernel-size", 9,
          files / "photo.png")
    assert shown and not any(label.startswith("true kernel") for label in shown)


# ---- any size, any file ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, args, scale", [("denoise", [], 1), ("sr", ["--scale", 2], 2),
                                                ("deblur", ["--kernel", "kernel.npy"], 1)])
def test_odd_sizes_are_padded_and_cropped_back(files, tmp_path, task, args, scale):
    args = [files / a if str(a).endswith(".npy") else a for a in args]
    r, _ = solve(files, tmp_path, "--task", task, *args, files / "odd.png")
    rep = report(r)
    out = np.asarray(Image.open(rep["files"]["restored"]))
    assert out.shape == (37 * scale, 45 * scale, 3)
    assert rep["degradation"]["padding"]["input_size"] == [37, 45]
    pad = rep["degradation"]["padding"]["padded_to"]
    assert pad[0] % 4 == 0 and pad[1] % 4 == 0 and pad[0] >= 37 * scale


def test_simulate_keeps_the_size_too(files, tmp_path):
    r, _ = solve(files, tmp_path, "--simulate", "--task", "deblur", files / "odd.png")
    rep = report(r)
    assert np.asarray(Image.open(rep["files"]["restored"])).shape == (37, 45, 3) and rep["metrics"]["psnr"] > 0


def test_sixteen_bit_grey_and_rotated_files(files, tmp_path):
    r, _ = solve(files, tmp_path / "d", "--task", "denoise", files / "deep.png")
    im = Image.open(report(r)["files"]["restored"])
    assert im.size == (45, 37) and im.mode.startswith("I")  # 16-bit in, 16-bit grey out
    r, _ = solve(files, tmp_path / "g", "--task", "denoise", files / "grey.png")
    im = Image.open(report(r)["files"]["restored"])
    assert im.mode == "L" and im.size == (40, 48)
    r, _ = solve(files, tmp_path / "r", "--task", "denoise", files / "rotated.jpg")
    im = Image.open(report(r)["files"]["restored"])
    assert im.size == (48, 40)  # the EXIF rotation applied: width and height swapped



def test_a_multi_page_file_restores_its_first_picture_and_says_so(files, tmp_path):
    rng = np.random.default_rng(1)
    pages = [Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)) for _ in range(3)]
    pages[0].save(tmp_path / "pages.tiff", save_all=True, append_images=pages[1:])
    r, err = solve(files, tmp_path / "o", "--task", "denoise", tmp_path / "pages.tiff")
    rep = report(r)
    said = [w for w in rep["warnings"] if "3 pictures" in w]
    assert len(said) == 1 and "first" in said[0]
    assert np.asarray(Image.open(rep["files"]["restored"])).shape == (48, 40, 3)
    r, _ = solve(files, tmp_path / "p", "--task", "denoise", files / "photo.png")
    assert not [w for w in report(r)["warnings"] if "pictures" in w]  # a one-picture file says nothing

# ---- many files ---------------------------------------------------------------------------------------------------
def test_a_folder_with_a_bad_file_restores_the_others_and_a_rerun_continues(files, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("photo.png", "odd.png"):
        (src / name).write_bytes((files / name).read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    out = tmp_path / "out"
    r = runner.invoke(app, ["solve", "--task", "sr", "--scale", "2", str(src), "--prior", str(files / "tiny.safetensors"),
                            "--steps", "2", "--out", str(out), "--quiet", "--json"])
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert r.exit_code == 1
    assert "broken.png" in err and "cannot read" in err
    reps = json.loads(r.stdout)
    assert sorted(Path(p["image"]).name for p in reps) == ["odd.png", "photo.png"]
    done = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (src / "broken.png").unlink()
    r = runner.invoke(app, ["solve", "--task", "sr", "--scale", "2", str(src), "--prior", str(files / "tiny.safetensors"),
                            "--steps", "2", "--out", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    assert "2 already done" in (r.stderr if hasattr(r, "stderr") else r.output)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == done  # finished outputs are never rewritten


def test_an_image_too_large_for_memory_stops_with_the_estimate(files, tmp_path, monkeypatch):
    import invdiff.accel

    monkeypatch.setattr(invdiff.accel, "available_memory", lambda device: 2**14)  # 16 KiB free
    r, err = solve(files, tmp_path, "--task", "denoise", files / "photo.png", code=2)
    line = one_line(err, "needs about", "48x40")
    assert "free" in line
    assert not (tmp_path / "photo_denoise_restored.png").exists()


def test_best_of_k_by_the_measurement(files, tmp_path):
    r, _ = solve(files, tmp_path, "--simulate", "--task", "phase-retrieval", "--samples", 3, "--select", "residual",
                 files / "photo.png")
    sel = report(r)["selection"]
    assert len(sel["residuals"]) == 3 and sel["chosen"] == int(np.nanargmin(sel["residuals"]))
    r, _ = solve(files, tmp_path / "m", "--simulate", "--task", "denoise", "--samples", 3, "--select", "mbr",
                 files / "photo.png")
    sel = report(r)["selection"]
    assert len(sel["distances"]) == 3 and sel["chosen"] == int(np.argmin(sel["distances"])) and "mean" in sel["by"]
    r, err = solve(files, tmp_path / "x", "--task", "denoise", "--select", "truth", files / "photo.png", code=2)
    one_line(err, "--select")


def test_a_noise_sigma_beyond_the_pixel_range_is_refused_as_grey_levels(files, tmp_path):
    r, err = solve(files, tmp_path / "a", "--task", "denoise", files / "photo.png", "--noise-sigma", "5", code=2)
    line = one_line(err, "[-1, 1]", "grey levels")
    assert "0.0392" in line  # 5 levels of 255 on [-1, 1]: 2·5/255
    assert not any((tmp_path / "a").glob("*.png"))
    r, _ = solve(files, tmp_path / "b", "--task", "denoise", files / "photo.png", "--noise-sigma", "1")  # the limit
    assert report(r)["degradation"]["noise_sigma"]["value"] == 1.0


def test_a_jpeg_or_webp_counts_its_quantisation_as_noise_and_reads_a_blind_blur_from_its_edges(files, tmp_path):
    from invdiff.io import compression_sigma, estimate_noise_sigma, read_image

    Image.open(files / "photo.png").save(tmp_path / "p.jpg", quality=80)
    r, _ = solve(files, tmp_path / "o", "--task", "deblur", tmp_path / "p.jpg")
    deg = report(r)["degradation"]
    white, quant = estimate_noise_sigma(read_image(tmp_path / "p.jpg")), compression_sigma(tmp_path / "p.jpg")
    assert deg["noise_sigma"]["white"] == pytest.approx(white) and deg["noise_sigma"]["quantisation"] == quant
    assert deg["noise_sigma"]["value"] == pytest.approx(math.hypot(white, quant))
    assert "edges" in deg["kernel"]["estimator"]
    r, _ = solve(files, tmp_path / "n", "--task", "deblur", files / "photo.png")  # a lossless file: as before
    deg = report(r)["degradation"]
    assert "spectrum" in deg["kernel"]["estimator"] and "quantisation" not in deg["noise_sigma"]
    r, _ = solve(files, tmp_path / "g", "--task", "deblur", tmp_path / "p.jpg", "--noise-sigma", "0.03")  # given
    assert report(r)["degradation"]["noise_sigma"]["value"] == 0.03
    Image.open(files / "photo.png").save(tmp_path / "p.webp", quality=60)  # a lossy WebP: its VP8 header's steps
    deg = report(solve(files, tmp_path / "w", "--task", "deblur", tmp_path / "p.webp")[0])["degradation"]
    quant = compression_sigma(tmp_path / "p.webp")
    assert deg["noise_sigma"]["codec"] == "WEBP" and deg["noise_sigma"]["quantisation"] == quant > 0
    assert deg["noise_sigma"]["value"] == pytest.approx(math.hypot(deg["noise_sigma"]["white"], quant))


def test_an_inpainting_of_a_jpeg_reports_its_quantisation_without_adding_it(files, tmp_path):
    from invdiff.io import compression_sigma, estimate_noise_sigma, read_image
    from invdiff.solve import QUANTISATION_RULE_TEXT

    Image.open(files / "photo.png").save(tmp_path / "p.jpg", quality=80)
    r, _ = solve(files, tmp_path / "o", "--task", "inpaint", tmp_path / "p.jpg", "--mask", files / "mask.png")
    noise = report(r)["degradation"]["noise_sigma"]
    white = estimate_noise_sigma(read_image(tmp_path / "p.jpg"))
    assert noise["value"] == pytest.approx(white) and noise["white"] == pytest.approx(white)
    assert noise["quantisation"] == compression_sigma(tmp_path / "p.jpg") > 0
    assert noise["rule"] == QUANTISATION_RULE_TEXT["reported"]


@pytest.mark.parametrize("task", ["motion-deblur", "nonuniform-deblur"])
def test_motion_deblurring_of_a_jpeg_counts_the_luma_quantisation(files, tmp_path, task):
    from invdiff.io import compression_sigma
    from invdiff.solve import QUANTISATION_RULE_TEXT

    Image.open(files / "photo.png").save(tmp_path / "p.jpg", quality=80)
    np.save(tmp_path / "k.npy", np.outer(np.hanning(7), np.ones(3))[:, 1:2] * np.ones((1, 5)))
    kernel = tmp_path / "k.npy" if task == "motion-deblur" else files / "field.npy"
    rep = report(solve(files, tmp_path / "o", "--task", task, tmp_path / "p.jpg", "--kernel", kernel)[0])
    noise = rep["degradation"]["noise_sigma"]
    assert noise["quantisation"] == compression_sigma(tmp_path / "p.jpg", "luma") < compression_sigma(tmp_path / "p.jpg")
    assert noise["value"] == pytest.approx(math.hypot(noise["white"], noise["quantisation"]))
    assert noise["rule"] == QUANTISATION_RULE_TEXT["luma"]


def test_a_grey_measurement_from_a_colour_jpeg_counts_the_luma_quantisation_only(files, tmp_path):
    from invdiff.io import compression_sigma

    grey = np.asarray(Image.open(files / "grey.png"))
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "g.jpg", quality=80)  # chroma tables, grey pixels
    rep = report(solve(files, tmp_path / "o", "--task", "colorize", tmp_path / "g.jpg")[0])
    assert rep["measurement_shape"][0] == 1
    assert rep["degradation"]["noise_sigma"]["quantisation"] == compression_sigma(tmp_path / "g.jpg", "luma")
    assert compression_sigma(tmp_path / "g.jpg", "luma") < compression_sigma(tmp_path / "g.jpg")
