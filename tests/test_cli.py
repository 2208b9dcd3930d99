"""The command line, through typer's CliRunner and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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
from invdiff.tasks import TASKS

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    for ch in (1, 3):
        net = UNet(UNetConfig(in_channels=ch, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
        EpsPrior(net, NoiseSchedule.linear(), config={"name": f"tiny{ch}", "data": {"channels": ch, "image_size": 32}}).save(d / f"tiny{ch}.safetensors")
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(d / "clean.png")
    Image.fromarray(img[..., 0]).save(d / "grey.png")
    k = np.ones((5, 5)) / 25
    np.save(d / "kernel.npy", k)
    np.save(d / "big_kernel.npy", np.ones((41, 41)))
    mask = np.full((32, 32), 255, np.uint8)
    mask[8:20, 8:20] = 0
    Image.fromarray(mask).save(d / "mask.png")
    Image.fromarray(mask[:16, :16]).save(d / "small_mask.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return d


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _solve(files, out, *args):
    return invoke("solve", *args, "--prior", files / "tiny3.safetensors", "--steps", 3, "--out", out, "--quiet", "--json")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_in_simulate_mode(files, tmp_path, task):
    r = _solve(files, tmp_path, "--simulate", "--task", task, files / "clean.png")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["task"] == task and report["nfe"] >= 3
    assert {"psnr", "ssim", "lpips"} <= set(report["metrics"])
    for f in report["files"].values():
        assert Path(f).is_file()
    assert json.loads(Path(report["files"]["report"]).read_text())["seed"] == 0
    restored = np.asarray(Image.open(report["files"]["restored"]))
    assert restored.shape[:2] == (32, 32)


def test_measured_mode_with_user_kernel_and_mask(files, tmp_path):
    r = _solve(files, tmp_path / "k", "--task", "deblur", "--kernel", files / "kernel.npy", files / "clean.png")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["simulate"] is False
    r = _solve(files, tmp_path / "m", "--task", "inpaint", "--mask", files / "mask.png", files / "clean.png")
    assert r.exit_code == 0, r.output
    r = _solve(files, tmp_path / "s", "--task", "sr", "--scale", 2, files / "clean.png")
    assert r.exit_code == 0, r.output
    assert np.asarray(Image.open(json.loads(r.output)["files"]["restored"])).shape[:2] == (64, 64)  # larger than input


def test_posterior_samples_write_mean_and_std(files, tmp_path):
    r = _solve(files, tmp_path, "--simulate", "--task", "inpaint", "--samples", 3, "--seed", 4, files / "clean.png")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["samples"] == 3 and Path(rep["files"]["std"]).is_file() and Path(rep["files"]["samples"]).is_file()
    again = _solve(files, tmp_path / "again", "--simulate", "--task", "inpaint", "--samples", 3, "--seed", 4, files / "clean.png")
    a = np.asarray(Image.open(rep["files"]["restored"]))
    b = np.asarray(Image.open(json.loads(again.output)["files"]["restored"]))
    assert np.array_equal(a, b)  # same seed, same result
    # computed one sample at a time, or as many at once as memory allows: the same samples
    for bs in ("1", "auto"):
        split = _solve(files, tmp_path / f"bs{bs}", "--simulate", "--task", "inpaint", "--samples", 3, "--seed", 4,
                       "--batch-size", bs, files / "clean.png")
        assert split.exit_code == 0, split.output
        c = np.asarray(Image.open(json.loads(split.output)["files"]["restored"])).astype(int)
        assert np.abs(c - a.astype(int)).max() <= 1  # float32 rounding may move a value across a quantisation step


def test_listings(files):
    for cmd in ("tasks", "methods", "priors"):
        r = invoke(cmd, "--json")
        assert r.exit_code == 0, r.output
        rows = json.loads(r.output)
        assert rows
    assert {r["task"] for r in json.loads(invoke("tasks", "--json").output)} == set(TASKS)
    methods = {r["method"]: r for r in json.loads(invoke("methods", "--json").output)}
    assert methods["ddrm"]["operator"] == "exact SVD" and methods["dps"]["network_gradient"] is True


def test_sample_grid(files, tmp_path):
    out = tmp_path / "grid.png"
    r = invoke("sample", "--prior", files / "tiny1.safetensors", "-n", 4, "--steps", 3, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert out.is_file()


@pytest.mark.parametrize("args, message", [
    (["--task", "deblur", "MISSING"], "not found"),
    (["--task", "deblur", "corrupt.png"], "cannot read"),
    (["--task", "warp", "clean.png"], "unknown task"),
    (["--task", "deblur", "--method", "magic", "clean.png"], "unknown method"),
    (["--task", "deblur", "--method", "ddrm", "clean.png"], "SVD"),
    (["--task", "inpaint", "--mask", "small_mask.png", "clean.png"], "does not match"),
    (["--task", "deblur", "--kernel", "big_kernel.npy", "clean.png"], "larger than the image"),
    (["--task", "colorize", "--prior", "tiny1.safetensors", "grey.png"], "channel"),
    (["--task", "deblur", "--prior", "no-such-prior", "clean.png"], "prior"),
    (["--task", "deblur", "--noise-sigma", "nan", "clean.png"], "noise sigma"),
    (["--task", "deblur", "--batch-size", "0", "clean.png"], "batch-size"),
])
def test_bad_input_one_line_nonzero_exit_nothing_written(files, tmp_path, args, message):
    args = [str(files / a) if (files / a).exists() or a == "MISSING" else a for a in args]
    if "--prior" not in args:
        args += ["--prior", str(files / "tiny3.safetensors")]
    out = tmp_path / "out"
    r = runner.invoke(app, ["solve", *args, "--steps", "2", "--out", str(out), "--quiet"])
    assert r.exit_code != 0
    err = r.stderr if hasattr(r, "stderr") else r.output
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message.lower() in lines[0].lower(), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_installed_console_script(files, tmp_path):
    exe = shutil.which("invdiff") or str(Path(sys.executable).with_name("invdiff"))
    ok = subprocess.run([exe, "solve", "--simulate", "--task", "denoise", str(files / "clean.png"), "--prior",
                         str(files / "tiny3.safetensors"), "--steps", "2", "--out", str(tmp_path), "--quiet", "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert Path(json.loads(ok.stdout)["files"]["figure"]).is_file()
    bad = subprocess.run([exe, "solve", "--task", "deblur", str(files / "MISSING.png")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:") and "\n" not in bad.stderr.strip()
