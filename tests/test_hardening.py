"""Bad input gets one clear line and exit code 2, nothing is silently wrong, results are never lost or mislabelled:
the command line through typer's CliRunner (and a few cases as real subprocesses), bench, and restore's entry."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from invdiff import operators as ops
from invdiff.cli import app
from invdiff.io import read_image
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.prior import EpsPrior
from invdiff.samplers import restore
from invdiff.schedule import NoiseSchedule

runner = CliRunner()
SUITES = Path(__file__).resolve().parents[1] / "invdiff" / "bench" / "suites"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard")
    torch.manual_seed(0)
    for ch in (1, 3):
        net = UNet(UNetConfig(in_channels=ch, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
        EpsPrior(net, NoiseSchedule.linear(), config={"name": f"tiny{ch}", "data": {"channels": ch}}).save(d / f"tiny{ch}.safetensors")
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(d / "clean.png")
    Image.fromarray(img).save(d / "clean.jpg")
    Image.fromarray(img[..., 0]).save(d / "grey.png")
    (d / "text.npy").write_text("this is not an array\n")
    (d / "afolder").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "zero_mask.png")
    return d


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    err = r.stderr if hasattr(r, "stderr") else r.output
    return r, err


def solve(files, out, *args, prior="tiny3"):
    return cli("solve", *args, "--prior", files / f"{prior}.safetensors", "--out", out, "--quiet")


def one_error_line(r, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2, (r.exit_code, err, r.output)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]


# ---- raw tracebacks -------------------------------------------------------------------------------------------
def test_out_is_a_file_is_refused_before_any_work(files, tmp_path, monkeypatch):
    import invdiff.samplers

    called = []
    monkeypatch.setattr(invdiff.samplers, "restore", lambda *a, **k: called.append(1))
    target = tmp_path / "taken"
    target.write_text("x")
    r, err = solve(files, target, "--simulate", "--task", "denoise", "--steps", 2, files / "clean.png")
    one_error_line(r, err, "--out", "not a folder")
    assert not called and target.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_out_in_read_only_folder(files, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r, err = solve(files, ro / "out", "--simulate", "--task", "denoise", "--steps", 2, files / "clean.png")
        one_error_line(r, err, "permission")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda", "cuda:7", "gpu"])
def test_unavailable_device_solve_and_bench(files, tmp_path, device):
    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("CUDA is available here")
    r, err = solve(files, tmp_path / "o", "--simulate", "--task", "denoise", "--steps", 2, "--device", device, files / "clean.png")
    one_error_line(r, err, "--device", device)
    r, err = cli("bench", "tiny", "--prior", files / "tiny1.safetensors", "--limit", 1, "--device", device, "--out",
                 tmp_path / "b", "--quiet")
    one_error_line(r, err, "--device", device)
    assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


def test_noise_estimate_sees_through_fine_texture():
    from invdiff.io import estimate_noise_sigma, noise_estimator

    # fine texture (three oblique sinusoids of periods 2.5-4 px: every 7x7 patch lies in a 6-dimensional subspace)
    # plus white noise of sigma 0.05. The patch PCA puts the texture in six eigenvalues and reads sigma from the other
    # 141; its spread over ~15k overlapping patches is a few per cent, so 10 % is a loose bound. Donoho's rule takes
    # the texture's finest wavelet coefficients for noise: it reads far more.
    i, j = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    tex = sum(0.3 * torch.sin(2 * math.pi * (i * a + j * b) / per) for a, b, per in ((1, 2, 2.5), (2, -1, 3), (1, 1, 4)))
    g = torch.Generator().manual_seed(3)
    y = (tex / 3)[None].expand(3, -1, -1) + 0.05 * torch.randn(3, 128, 128, generator=g)
    assert noise_estimator(y) == "pca" and abs(estimate_noise_sigma(y) - 0.05) < 0.005
    assert estimate_noise_sigma(y, "mad") > 0.065
    # a grey photo repeated to RGB carries one noise field three times: it is read as the grey photo (by PCA on its
    # weakly textured patches, the default for grey), and PCA does not read the copies' missing dimensions as zero
    grey = tex / 3 + 0.05 * torch.randn(128, 128, generator=g)
    rgb = grey.expand(3, -1, -1)
    assert noise_estimator(rgb) == noise_estimator(grey[None]) == "weak"
    assert estimate_noise_sigma(rgb) == estimate_noise_sigma(grey[None])
    for method in ("auto", "pca", "weak"):
        assert abs(estimate_noise_sigma(rgb, method) - 0.05) < 0.005, method
    assert estimate_noise_sigma(rgb, "mad") > 0.065
    with pytest.raises(ValueError, match="unknown noise estimator"):
        estimate_noise_sigma(y, "median")


def test_grey_noise_estimate_reads_the_weakly_textured_patches():
    from invdiff.io import estimate_noise_sigma

    # a grey photo half smooth ramp, half full-rank texture (smoothed white noise, no low-dimensional structure for
    # PCA to set apart), plus noise of sigma 0.05: plain PCA and the wavelet rule take texture for noise; keeping
    # only the patches whose gradient energy noise alone could give (the ramp's) reads the noise itself, to the few
    # per cent its ~6k patches allow (0.005 is the bound)
    g = torch.Generator().manual_seed(5)
    i, j = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    tex = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 130, 130, generator=g), 3, 1)[0, 0] * 0.6
    y = (torch.where(j < 64, 0.004 * (i - 64), tex) + 0.05 * torch.randn(128, 128, generator=g))[None]
    weak = estimate_noise_sigma(y)
    assert abs(weak - 0.05) < 0.005
    assert estimate_noise_sigma(y, "pca") - 0.05 > 2 * abs(weak - 0.05)
    assert estimate_noise_sigma(y, "mad") - 0.05 > 2 * abs(weak - 0.05)


def test_the_patch_side_leaves_enough_patches_per_dimension():
    from invdiff.io import _pca_noise_sigma, _weak_texture_noise_sigma, estimate_noise_sigma

    # the rule, transcribed: the largest side q <= 7 with (H-q+1)(W-q+1) >= per * C * q^2 patches, per = 100 for the
    # weak-texture selection (it keeps only some) and 20 for plain PCA; where 100 leaves no side, 20 decides
    g = torch.Generator().manual_seed(2)
    for n, weak_side, pca_side in ((256, 7, 7), (64, 5, 7), (40, 3, 7), (20, 3, 3)):
        y = 0.1 * torch.randn(1, n, n, generator=g)
        assert estimate_noise_sigma(y, "weak") == _weak_texture_noise_sigma(y.double(), weak_side), n
        assert estimate_noise_sigma(y, "pca") == _pca_noise_sigma(y.double(), pca_side), n
    rgb = 0.1 * torch.randn(3, 48, 48, generator=g)  # colour: 3·q² dimensions, so 48 px takes 5-px patches
    assert estimate_noise_sigma(rgb) == _pca_noise_sigma(rgb.double(), 5)
    with pytest.raises(ValueError, match="give --noise-sigma"):
        estimate_noise_sigma(torch.randn(1, 15, 15, generator=g))


def test_noise_sigma_auto_estimates_sigma(files, tmp_path):
    from invdiff.io import estimate_noise_sigma

    # a smooth ramp plus Gaussian noise of sigma 0.1 on [-1, 1], saved as 16-bit PNG (quantisation ~1e-5)
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(-0.6, 0.6, 128)[None, :].expand(128, 128)
    noisy = (ramp + 0.1 * torch.randn(128, 128, generator=g)).clamp(-1, 1)
    a = ((noisy + 1) / 2 * 65535).round().numpy().astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "noisy.png")
    # Donoho's MAD estimator: relative standard error ~ 1.36 / sqrt(n) = 2 % for n = 64^2 coefficients; 10 % margin
    assert abs(estimate_noise_sigma(noisy[None, None]) - 0.1) < 0.01
    r, err = solve(files, tmp_path / "o", "--task", "denoise", "--steps", 2, "--noise-sigma", "auto", tmp_path / "noisy.png",
                   prior="tiny1")
    assert r.exit_code == 0, err
    rep = json.loads(next((tmp_path / "o").glob("*_report.json")).read_text())
    assert abs(rep["noise_sigma"] - 0.1) < 0.01


@pytest.mark.parametrize("args, needles", [
    (["--limit", "-3"], ["--limit"]),
    (["--limit", "0"], ["--limit"]),
    (["--tasks", "foo"], ["--tasks", "foo"]),
    (["--methods", "foo"], ["--methods", "foo"]),
    (["--tasks", "deblur", "--methods", "ddrm"], ["--methods", "ddrm"]),
    (["--steps", "0"], ["--steps"]),
])
def test_bench_bad_selection(files, tmp_path, args, needles):
    out = tmp_path / "b"
    r, err = cli("bench", "tiny", "--prior", files / "tiny1.safetensors", "--out", out, "--quiet", *args)
    one_error_line(r, err, *needles)
    assert not out.exists()


def test_bench_report_only_on_missing_folder(tmp_path):
    r, err = cli("bench", "tiny", "--report-only", "--out", tmp_path / "nothing")
    one_error_line(r, err, "no results")
    assert not (tmp_path / "nothing").exists()


def test_tiny_suite_without_prior_asks_for_one(tmp_path):
    r, err = cli("bench", "tiny", "--out", tmp_path / "b", "--quiet")
    one_error_line(r, err, "--prior")


# ---- silently wrong results -----------------------------------------------------------------------------------
def test_16bit_and_float_images_read_correctly(tmp_path):
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f32.tif")
    for f, tol in (("g16.png", 1 / 65535), ("f32.tif", 1e-6)):
        x = read_image(tmp_path / f)
        assert x.shape == (1, 1, 64, 64)
        assert torch.allclose(x[0, 0].double(), torch.from_numpy(ramp * 2 - 1), atol=2 * tol + 1e-6), f
        assert read_image(tmp_path / f, channels=3).shape == (1, 3, 64, 64)
    Image.fromarray((ramp * 300).astype(np.float32)).save(tmp_path / "f300.tif")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        read_image(tmp_path / "f300.tif")


@pytest.mark.parametrize("args, needles", [
    (["--steps", "0"], ["--steps"]),
    (["--steps", "-5"], ["--steps"]),
    (["--kernel-size", "0"], ["--kernel-size"]),
    (["--blur-sigma", "0"], ["--blur-sigma"]),
    (["--blur-sigma", "nan"], ["--blur-sigma"]),
    (["--samples", "0"], ["--samples"]),
    (["--noise-sigma", "-1"], ["noise"]),
    (["--hp", "lam=abc"], ["--hp lam", "number"]),
    (["--hp", "steps=2"], ["--hp steps", "--steps"]),
    (["--hp", "nosuch=1"], ["--hp nosuch"]),
    (["--seed", "99999999999999999999"], ["--seed"]),
    (["--seed", "-1"], ["--seed"]),
])
def test_option_values_are_checked(files, tmp_path, args, needles):
    out = tmp_path / "o"
    r, err = solve(files, out, "--simulate", "--task", "deblur", "--method", "diffpir", *args, files / "clean.png")
    one_error_line(r, err, *needles)
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [(["--steps", "0"], "--steps"), (["--eta", "nan"], "--eta"),
                                          (["--seed", str(10**20)], "--seed"), (["--device", "tpu"], "--device")])
def test_sample_options_are_checked(files, tmp_path, args, needle):
    r, err = cli("sample", "--prior", files / "tiny1.safetensors", "-n", 2, "--out", tmp_path / "s.png", "--quiet", *args)
    one_error_line(r, err, needle)
    assert not (tmp_path / "s.png").exists()


def test_messages_name_the_option(files, tmp_path):
    out = tmp_path / "o"
    one_error_line(*solve(files, out, "--simulate", "--task", "inpaint", "--mask", "boxx", files / "clean.png"),
                   "--mask", "box, random, freeform")
    one_error_line(*solve(files, out, "--task", "deblur", files / "afolder"), "folder")
    one_error_line(*solve(files, out, "--task", "deblur", "--kernel", files / "text.npy", files / "clean.png"),
                   "not a numpy .npy file")
    one_error_line(*solve(files, out, "--simulate", "--task", "phase-retrieval", "--method", "ddrm", files / "clean.png"),
                   "--method", "dps")
    one_error_line(*solve(files, out, "--task", "phase-retrieval", files / "clean.png"), "magnitudes", ".npy",
                   "--simulate")
    one_error_line(*solve(files, out, "--simulate", "--task", "sr", "--scale", 128, files / "clean.png"), "--scale 128")
    assert not out.exists()


def test_conditional_prior_must_match_its_task(tmp_path):
    pytest.importorskip("safetensors")
    from invdiff.zoo import PRIORS

    if not PRIORS["fmnist32-palette-sr4"].available:
        pytest.skip("bundled Palette prior missing")
    g = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    r, err = cli("solve", "--simulate", "--task", "deblur", "--prior", "fmnist32-palette-sr4", "--steps", 2, "--out",
                 tmp_path / "o", "--quiet", tmp_path / "g.png")
    one_error_line(r, err, "--task sr", "deblur")
    r, err = cli("solve", "--simulate", "--task", "sr", "--scale", 2, "--prior", "fmnist32-palette-sr4", "--steps", 2,
                 "--out", tmp_path / "o", "--quiet", tmp_path / "g.png")
    one_error_line(r, err, "--scale 4")


def test_grey_input_gives_grey_output(files, tmp_path):
    r, err = solve(files, tmp_path, "--simulate", "--task", "denoise", "--steps", 2, files / "grey.png")
    assert r.exit_code == 0, err
    rep = json.loads((tmp_path / "grey_denoise_report.json").read_text())
    assert rep["output_channels"] == 1 and rep["grey_input"] is True
    assert Image.open(tmp_path / "grey_denoise_restored.png").mode == "L"


def test_all_zero_mask_is_refused(files, tmp_path):
    # nothing of the photo would be used: the output would be a sample of the prior, not a restoration
    one_error_line(*solve(files, tmp_path / "o", "--task", "inpaint", "--steps", 2, "--mask", files / "zero_mask.png",
                          files / "clean.png"), "no pixel", "inverted")
    assert not (tmp_path / "o").exists()


def test_outputs_never_overwritten_silently(files, tmp_path):
    r, err = solve(files, tmp_path, "--simulate", "--task", "denoise", "--steps", 2, files / "clean.png")
    assert r.exit_code == 0, err
    before = (tmp_path / "clean_denoise_restored.png").read_bytes()
    # the same stem from another file, and a plain rerun: refused, and the first outputs kept
    line = one_error_line(*solve(files, tmp_path, "--simulate", "--task", "denoise", "--steps", 2, files / "clean.jpg"),
                          "already exists", "--overwrite")
    assert "clean.png" in line
    one_error_line(*solve(files, tmp_path, "--simulate", "--task", "denoise", "--steps", 2, files / "clean.png"),
                   "already exists")
    assert (tmp_path / "clean_denoise_restored.png").read_bytes() == before
    r, err = solve(files, tmp_path, "--simulate", "--task", "denoise", "--steps", 2, "--overwrite", files / "clean.jpg")
    assert r.exit_code == 0, err


# ---- nothing lost, nothing half-written, nothing mislabelled -------------------------------------------------
def test_stale_staging_folders_are_cleaned(files, tmp_path):
    dead = tmp_path / ".invdiff-staging-999999999-abcd1234"  # no such process
    dead.mkdir(parents=True)
    (dead / "clean_deblur_restored.png").write_bytes(b"half")
    old_style = tmp_path / ".clean-k2j4h5g6"
    old_style.mkdir()
    (old_style / "clean_deblur_figure.png").write_bytes(b"half")
    r, err = solve(files, tmp_path, "--simulate", "--task", "denoise", "--steps", 2, "--json", files / "clean.png")
    assert r.exit_code == 0, err
    assert not dead.exists() and not old_style.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _tiny_suite(files, tmp_path) -> Path:
    spec = json.loads((SUITES / "tiny.json").read_text())
    spec["count"] = 3
    spec["tasks"] = spec["tasks"][:1]
    spec["tasks"][0]["baselines"] = []
    p = tmp_path / "suite.json"
    p.write_text(json.dumps(spec))
    return p


def test_bench_torn_last_line_is_repaired(files, tmp_path):
    suite = _tiny_suite(files, tmp_path)
    out = tmp_path / "b"
    args = ["bench", suite, "--prior", files / "tiny1.safetensors", "--out", out, "--quiet", "--methods", "ddrm"]
    r, err = cli(*args)
    assert r.exit_code == 0, err
    f = out / "results.rank0.jsonl"
    lines = f.read_text().splitlines()
    assert len(lines) == 3
    f.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # cut mid-write
    r, err = cli(*args)
    assert r.exit_code == 0, err
    rows = [json.loads(ln) for ln in f.read_text().splitlines()]  # every line parses
    assert sorted(r["image"] for r in rows) == [0, 1, 2]


def test_bench_rows_carry_their_configuration_and_are_never_mixed(files, tmp_path):
    suite = _tiny_suite(files, tmp_path)
    out = tmp_path / "b"
    base = ["bench", suite, "--out", out, "--quiet", "--methods", "ddrm"]
    r, err = cli(*base, "--prior", files / "tiny1.safetensors")
    assert r.exit_code == 0, err
    rows = [json.loads(ln) for ln in (out / "results.rank0.jsonl").read_text().splitlines()]
    import hashlib

    sha = hashlib.sha256()
    for suffix in (".safetensors", ".json"):
        sha.update(hashlib.sha256((files / f"tiny1{suffix}").read_bytes()).hexdigest().encode())
    for row in rows:
        c = row["config"]
        assert c["prior"] == str(files / "tiny1.safetensors") and c["prior_sha256"] == sha.hexdigest()
        assert c["steps"] == 3 and c["seed"] == 0 and "code_version" in c and "hyper_parameters" in c
    # another prior (different weights) or other steps: refused, nothing added, nothing relabelled
    other = tmp_path / "other.safetensors"
    torch.manual_seed(5)
    net = UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
    EpsPrior(net, NoiseSchedule.linear(), config={"name": "other", "data": {"channels": 1}}).save(other)
    before = (out / "results.rank0.jsonl").read_text()
    one_error_line(*cli(*base, "--prior", other), "another configuration", "prior")
    one_error_line(*cli(*base, "--prior", files / "tiny1.safetensors", "--steps", 2), "another configuration", "steps")
    assert (out / "results.rank0.jsonl").read_text() == before
    # the same configuration resumes (nothing to redo); a new folder computes the other one
    r, err = cli(*base, "--prior", files / "tiny1.safetensors")
    assert r.exit_code == 0 and (out / "results.rank0.jsonl").read_text() == before
    r, err = cli("bench", suite, "--out", tmp_path / "b2", "--quiet", "--methods", "ddrm", "--prior", other)
    assert r.exit_code == 0, err
    assert "## Configurations" in (out / "report.md").read_text()


def test_bench_default_output_is_outside_the_package(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = _tiny_suite(files, tmp_path)
    r, err = cli("bench", suite, "--prior", files / "tiny1.safetensors", "--quiet", "--methods", "ddrm", "--limit", 1)
    assert r.exit_code == 0, err
    assert (tmp_path / "bench-results" / "tiny" / "results.rank0.jsonl").is_file()
    assert not (SUITES.parent / "results" / "tiny").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in SUITES.glob("*.json")))
def test_every_shipped_suite_runs(files, tmp_path, name):
    from invdiff.bench import load_suite

    suite = load_suite(name)
    kind = suite.dataset["kind"]
    if kind == "fmnist":
        try:
            from invdiff.data import _find_fmnist

            _find_fmnist()
        except FileNotFoundError:
            pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    if kind == "folder" and not Path(suite.dataset["path"]).is_dir():
        pytest.skip(f"{name}: dataset folder {suite.dataset['path']} not present")
    channels = 3 if kind in ("validation-photos", "folder") else 1
    # the diffusion methods of the suite (its baselines are tested in test_baselines/test_bench; HIO on 256x256 takes
    # minutes); on 256x256 photos, every task but the spatially varying blur, whose CG iterations take two minutes on
    # a 2-core CPU (that task runs here on the 32x32 suite, and its operator in test_operators)
    methods = ",".join(suite.all_methods())
    specs = [t for t in suite.tasks if not (kind == "validation-photos" and t.task == "nonuniform-deblur")]
    tasks = ",".join(sorted({t.task for t in specs}))
    r, err = cli("bench", name, "--prior", files / f"tiny{channels}.safetensors", "--limit", 1, "--steps", 2, "--methods",
                 methods, "--tasks", tasks, "--out", tmp_path / name, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, err
    rows = [json.loads(ln) for ln in (tmp_path / name / "results.rank0.jsonl").read_text().splitlines()]
    expected = sum(len(t.methods) + bool(t.palette) for t in specs)
    assert len(rows) == expected and all(math.isfinite(r["psnr"]) for r in rows)


# ---- the Python API: restore validates its inputs -------------------------------------------------------------
@pytest.fixture(scope="module")
def prior3(files):
    from invdiff.prior import load

    return load(files / "tiny3.safetensors")


def test_restore_rejects_bad_arguments(prior3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    blur = ops.Blur(ops.gaussian_kernel(5, 1.0))
    y = blur(x)
    for kw, msg in ((dict(steps=0), "steps"), (dict(steps=-1), "steps"), (dict(batch_size=0), "batch_size"),
                    (dict(batch_size="half"), "batch_size"), (dict(samples=0), "samples")):
        with pytest.raises(ValueError, match=msg):
            restore(y, blur, 0.05, prior3, method="diffpir", **kw)
    for sigma in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise"):
            restore(y, blur, sigma, prior3, method="diffpir", steps=2)
    with pytest.raises(ValueError, match="batch dimension"):
        restore(y[0], blur, 0.05, prior3, method="diffpir", steps=2)
    sr = ops.BicubicDownsample(4)
    with pytest.raises(ValueError, match="measurement has shape"):
        restore(x, sr, 0.05, prior3, method="ddrm", steps=2, x_shape=(1, 3, 32, 32))  # y given at full size
    inp = ops.Inpainting(torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="mask or kernel"):
        restore(x, inp, 0.05, prior3, method="ddrm", steps=2)
    # None means the default
    r = restore(y, blur, 0.05, prior3, method="diffpir", steps=None, batch_size=None, generator=[g])
    assert r.hyper_parameters["steps"] >= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(files):
    from invdiff.prior import load

    with pytest.raises(ValueError, match="CUDA is not available"):
        load(files / "tiny3.safetensors", device="cuda")


# ---- expected features ----------------------------------------------------------------------------------------
def test_version_and_listings(files):
    from invdiff import __version__
    from invdiff.samplers.registry import METHODS
    from invdiff.zoo import PRIORS

    r, _ = cli("--version")
    assert r.exit_code == 0 and r.output.strip() == f"invdiff {__version__}"
    rows = {m["method"]: m for m in json.loads(cli("methods", "--json")[0].output)}
    assert rows["dps"]["hyper_parameters"]["zeta"] == METHODS["dps"].defaults["zeta"]
    table = cli("methods")[0].output
    assert "zeta=" in table
    text = cli("priors")[0].output
    for name in PRIORS:
        assert name in text, name  # never cut or wrapped
    r, _ = cli("bench", "--help")
    for opt in ("--prior", "--limit", "--tasks", "--methods", "--report-only", "--lpips-backbone", "--steps"):
        assert opt in r.output, opt


def test_report_records_what_was_run(files, tmp_path, monkeypatch):
    import invdiff.figures

    labels = []
    real = invdiff.figures.panels
    monkeypatch.setattr(invdiff.figures, "panels", lambda p, items, **k: (labels.extend(i[0] for i in items), real(p, items, **k))[1])
    r, err = solve(files, tmp_path, "--simulate", "--task", "deblur", "--method", "diffpir", "--steps", 3, "--samples", 2,
                   "--save-measurement", "--json", files / "clean.png")
    assert r.exit_code == 0, err
    rep = json.loads(r.output)
    assert rep["steps"] == 3 and rep["nfe_per_sample"] == 3 and rep["nfe_total"] == 6
    assert {"invdiff", "torch", "numpy", "python"} <= set(rep["versions"])
    assert rep["operator"]["operator"] == "Blur" and rep["operator"]["kernel_shape"] == [9, 9]
    assert rep["operator"]["kernel_size"] is None or rep["operator"]["kernel_size"] == 9
    assert "blur_sigma" in rep["operator"] and not {"scale", "mask_fraction", "oversampling"} & set(rep["operator"])
    assert set(rep["measurement_metrics"]) == {"psnr", "ssim"} and rep["measurement_metrics"]["psnr"] > 0
    assert rep["peak_memory_mib"] > 0
    for k in ("measurement", "measurement_array", "kernel"):
        assert Path(rep["files"][k]).is_file(), k
    k = np.load(rep["files"]["kernel"])
    assert k.shape == (9, 9) and abs(k.sum() - 1) < 1e-5
    y = np.load(rep["files"]["measurement_array"])
    assert y.shape == (3, 32, 32)
    assert any(lbl.startswith("kernel") for lbl in labels)
    r, err = solve(files, tmp_path / "m", "--simulate", "--task", "inpaint", "--steps", 2, "--save-measurement",
                   "--json", files / "clean.png")
    rep = json.loads(r.output)
    assert Path(rep["files"]["mask"]).is_file() and any(lbl.startswith("mask") for lbl in labels)


def test_solve_lpips_backbone_option(files, tmp_path):
    one_error_line(*solve(files, tmp_path / "o", "--simulate", "--task", "denoise", "--steps", 2, "--lpips-backbone",
                          tmp_path / "missing.pth", files / "clean.png"), "--lpips-backbone")


# ---- the same through the installed console script ------------------------------------------------------------
def test_console_script_one_line_errors(files, tmp_path):
    exe = shutil.which("invdiff") or str(Path(sys.executable).with_name("invdiff"))
    (tmp_path / "file").write_text("x")
    cases = [
        (["solve", "--task", "denoise", "--simulate", str(files / "clean.png"), "--out", str(tmp_path / "file")], "--out"),
        (["solve", "--task", "denoise", str(files / "clean.png"), "--device", "tpu", "--out", str(tmp_path / "o")], "--device"),
        (["solve", "--task", "deblur", "--hp", "lam=abc", str(files / "clean.png"), "--prior", str(files / "tiny3.safetensors"),
          "--out", str(tmp_path / "o")], "--hp lam"),
        (["bench", "tiny", "--limit", "-3", "--out", str(tmp_path / "b")], "--limit"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args, needle in cases:
        p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env=env)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (args, p.stderr)
    assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()
    v = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=300, env=env)
    assert v.returncode == 0 and v.stdout.startswith("invdiff ")
