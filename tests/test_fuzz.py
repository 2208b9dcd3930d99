"""Malformed input, generated with a fixed seed, fed to ``invdiff solve`` and ``invdiff bench``: each case must end
with exit code 2, exactly one ``error:`` line on stderr, no traceback, and nothing new in the output folder. Most
cases go through typer's CliRunner; every fifteenth also runs as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import string
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

SEED = 20240611
TINY = Path(__file__).resolve().parents[1] / "invdiff" / "bench" / "suites" / "tiny.json"
runner = CliRunner()


def _word(rng, n=6) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase + "_-"), size=n))


def _cases(d: Path) -> list[tuple[str, list[str]]]:
    """(name, argv without --out) for >= 30 malformed invocations, drawn from a fixed-seed generator."""
    rng = np.random.default_rng(SEED)
    img, prior = str(d / "clean.png"), str(d / "tiny3.safetensors")
    base = ["solve", "--prior", prior, "--steps", "2"]
    sim = base + ["--simulate", "--task", "deblur", "--method", "diffpir", img]
    neg = lambda: str(int(rng.integers(-10**6, 1)))  # noqa: E731 - zero or negative
    cases = [
        ("steps", sim + ["--steps", neg()]),
        ("steps-word", sim + ["--steps", _word(rng)]),
        ("samples", sim + ["--samples", neg()]),
        ("kernel-size", sim + ["--kernel-size", neg()]),
        ("blur-sigma", sim + ["--blur-sigma", str(-float(rng.random()) * 10)]),
        ("blur-sigma-nonfinite", sim + ["--blur-sigma", str(rng.choice(["nan", "inf", "-inf"]))]),
        ("noise-sigma-negative", sim + ["--noise-sigma", str(-float(rng.random()) - 1e-3)]),
        ("noise-sigma-word", sim + ["--noise-sigma", _word(rng)]),
        ("noise-sigma-nonfinite", sim + ["--noise-sigma", str(rng.choice(["nan", "inf"]))]),
        ("seed-huge", sim + ["--seed", str(int(rng.integers(1, 10**6)) * 10**20)]),
        ("seed-negative", sim + ["--seed", str(-int(rng.integers(1, 10**9)))]),
        ("batch-size", sim + ["--batch-size", neg()]),
        ("batch-size-word", sim + ["--batch-size", _word(rng)]),
        ("device", sim + ["--device", _word(rng, 4)]),
        ("task", base + ["--task", _word(rng), img]),
        ("method", sim + ["--method", _word(rng)]),
        ("padding", sim + ["--padding", _word(rng)]),
        ("oversampling", base + ["--simulate", "--task", "phase-retrieval", "--oversampling", str(float(rng.random()) - 0.5), img]),
        ("scale", base + ["--simulate", "--task", "sr", "--scale", neg(), img]),
        ("scale-huge", base + ["--simulate", "--task", "sr", "--scale", str(int(rng.integers(64, 4096))), img]),
        ("mask-name", base + ["--simulate", "--task", "inpaint", "--mask", _word(rng), img]),
        ("hp-value", sim + ["--hp", f"lam={_word(rng)}"]),
        ("hp-name", sim + ["--hp", f"{_word(rng).replace('-', '_')}x=1"]),
        ("hp-form", sim + ["--hp", _word(rng)]),
        ("hp-steps", sim + ["--hp", f"steps={int(rng.integers(1, 100))}"]),
        ("image-bytes", base + ["--task", "deblur", str(d / "noise.png")]),
        ("image-truncated", base + ["--task", "deblur", str(d / "truncated.png")]),
        ("image-empty", base + ["--task", "deblur", str(d / "empty.png")]),
        ("image-folder-without-images", base + ["--task", "deblur", str(d / "no_images")]),
        ("image-missing", base + ["--task", "deblur", str(d / f"{_word(rng)}.png")]),
        ("kernel-text", base + ["--task", "deblur", "--kernel", str(d / "text.npy"), img]),
        ("kernel-negative", base + ["--task", "deblur", "--kernel", str(d / "negative.npy"), img]),
        ("unknown-option", sim + [f"--{_word(rng)}"]),
        ("bench-limit", ["bench", "tiny", "--prior", prior, "--limit", neg()]),
        ("bench-tasks", ["bench", "tiny", "--prior", prior, "--tasks", _word(rng)]),
        ("bench-methods", ["bench", "tiny", "--prior", prior, "--methods", _word(rng)]),
        ("bench-steps", ["bench", "tiny", "--prior", prior, "--steps", neg()]),
        ("bench-batch", ["bench", "tiny", "--prior", prior, "--batch-size", neg()]),
        ("bench-device", ["bench", "tiny", "--prior", prior, "--device", _word(rng, 4)]),
        ("bench-suite-name", ["bench", _word(rng), "--prior", prior]),
        ("bench-suite-torn", ["bench", str(d / "torn_suite.json"), "--prior", prior]),
        ("bench-suite-task", ["bench", str(d / "bad_task_suite.json"), "--prior", prior]),
        ("bench-suite-count", ["bench", str(d / "bad_count_suite.json"), "--prior", prior]),
        ("bench-no-prior", ["bench", "tiny"]),
        ("bench-report-only", ["bench", "tiny", "--report-only"]),
    ]
    return cases


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(SEED + 1)
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
    EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny3", "data": {"channels": 3}}).save(d / "tiny3.safetensors")
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(d / "clean.png")
    (d / "noise.png").write_bytes(rng.bytes(500))
    full = (d / "clean.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: int(rng.integers(60, len(full) // 2))])
    (d / "empty.png").write_bytes(b"")
    (d / "no_images").mkdir()
    (d / "no_images" / "notes.txt").write_text("not an image\n")
    (d / "text.npy").write_text("0.1 0.2 0.3\n")
    np.save(d / "negative.npy", -np.ones((3, 3)))
    text = TINY.read_text().strip()
    (d / "torn_suite.json").write_text(text[: int(rng.integers(1, len(text) - 1))])
    spec = json.loads(text)
    spec["tasks"][0]["task"] = _word(rng)
    (d / "bad_task_suite.json").write_text(json.dumps(spec))
    spec = json.loads(text)
    spec["count"] = -int(rng.integers(0, 100))
    (d / "bad_count_suite.json").write_text(json.dumps(spec))
    return d


def _listing(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def _check(name, code, stderr, out, before):
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert code == 2, (name, code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
    assert "Traceback" not in stderr, (name, stderr)
    assert _listing(out) == before, (name, _listing(out))


def test_fuzz_cli(fuzz_dir, tmp_path):
    cases = _cases(fuzz_dir)
    assert len(cases) >= 30
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("already here")
    before = _listing(out)
    for name, argv in cases:
        r = runner.invoke(app, [*argv, "--out", str(out), "--quiet"])
        err = r.stderr if hasattr(r, "stderr") else r.output
        _check(name, r.exit_code, err, out, before)


def test_fuzz_console_script(fuzz_dir, tmp_path):
    exe = shutil.which("invdiff") or str(Path(sys.executable).with_name("invdiff"))
    out = tmp_path / "out"
    out.mkdir()
    before = _listing(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, argv in _cases(fuzz_dir)[::15]:
        p = subprocess.run([exe, *argv, "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300, env=env)
        _check(name, p.returncode, p.stderr, out, before)
