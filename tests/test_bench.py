"""Benchmark machinery: a tiny suite end to end, resuming after an interruption, and torchrun sharding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invdiff.bench import load_suite, run_suite
from invdiff.bench.report import load_results
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.prior import EpsPrior
from invdiff.schedule import NoiseSchedule

SUITE = Path(__file__).resolve().parents[1] / "invdiff" / "bench" / "suites" / "tiny.json"


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
    EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny", "data": {"channels": 1, "image_size": 16}}).save(d / "tiny.safetensors")
    spec = json.loads(SUITE.read_text())
    spec["prior"] = str(d / "tiny.safetensors")
    (d / "suite.json").write_text(json.dumps(spec))
    return d / "suite.json"


def _table(out):
    return {(r["task"], r["method"], r["image"]): (round(r["psnr"], 6), round(r["ssim"], 6)) for r in load_results(out)}


def test_suite_runs_end_to_end(suite_file, tmp_path):
    suite = load_suite(suite_file)
    out = run_suite(suite, tmp_path / "run")
    rows = load_results(out)
    methods = {(r["task"], r["method"]) for r in rows}
    assert len(methods) == 5 and len(rows) == 5 * 6
    assert all(r["psnr"] > 0 and -1 <= r["ssim"] <= 1 for r in rows)
    assert all(r["nfe"] == 3 for r in rows if not r["method"].startswith("baseline:"))
    report = (out / "report.md").read_text()
    assert "| inpaint[mask=random,mask_fraction=0.5] | ddrm" in report and "best baseline" in report
    assert (out / "report.csv").is_file() and (out / "psnr_vs_nfe.png").is_file()
    assert list(out.glob("grid_*.png"))


def test_interrupted_run_resumes_without_redoing_work(suite_file, tmp_path):
    suite = load_suite(suite_file)
    full = _table(run_suite(suite, tmp_path / "full"))
    calls = []

    def interrupt(done, total, what):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path / "cut", progress=interrupt)
    cut_file = tmp_path / "cut" / "results.rank0.jsonl"
    before = cut_file.read_text()
    assert 0 < len(before.splitlines()) < 30
    resumed = []
    run_suite(suite, tmp_path / "cut", progress=lambda d, t, w: resumed.append(t))
    after = cut_file.read_text()
    assert after.startswith(before)  # earlier results kept as they were
    assert resumed[0] == 30 - len(before.splitlines())  # only the missing images were run
    keys = [(r["task"], r["method"], r["image"]) for r in map(json.loads, after.splitlines())]
    assert len(keys) == len(set(keys)) == 30
    assert _table(tmp_path / "cut") == full


def test_torchrun_two_processes_match_one(suite_file, tmp_path):
    one = _table(run_suite(load_suite(suite_file), tmp_path / "one"))
    import socket

    with socket.socket() as sock:  # a free port: another run of the tests may hold a fixed one
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), "-m",
           "invdiff.bench", str(suite_file), "--out", str(tmp_path / "two"), "--device", "cpu", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "two" / "results.rank1.jsonl").is_file()
    two = _table(tmp_path / "two")
    assert two.keys() == one.keys()
    for k in one:
        assert abs(one[k][0] - two[k][0]) < 1e-4 and abs(one[k][1] - two[k][1]) < 1e-5, (k, one[k], two[k])
    assert (tmp_path / "two" / "report.md").is_file()


def test_samples_in_a_suite_score_their_mean_and_count_every_evaluation(suite_file, tmp_path):
    """hyper_parameters {"ddrm": {"samples": 3}}: the row scores the mean of the 3 samples that restore draws for the
    same image and streams, and its NFE counts all three chains."""
    from invdiff.bench.runner import stream_seed
    from invdiff.metrics import psnr
    from invdiff.prior import load
    from invdiff.samplers import restore
    from invdiff.tasks import TaskOptions, get_task, simulate

    spec = json.loads(suite_file.read_text())
    spec["tasks"] = spec["tasks"][:1]
    spec["tasks"][0].update(methods=["ddrm"], baselines=[], hyper_parameters={"ddrm": {"samples": 3}})
    path = tmp_path / "k3.json"
    path.write_text(json.dumps(spec))
    suite = load_suite(path)
    rows = sorted(load_results(run_suite(suite, tmp_path / "k3")), key=lambda r: r["image"])
    assert [r["nfe"] for r in rows] == [3 * 3] * 6  # 3 steps of 3 chains

    x = suite.images()
    t = suite.tasks[0]
    opts = TaskOptions(noise_sigma=suite.noise_sigma).with_(**t.options)
    op, y = simulate(t.task, x, opts, generator=[torch.Generator().manual_seed(stream_seed(suite.seed, "degrade", i))
                                                 for i in range(len(x))])
    gens = [torch.Generator().manual_seed(stream_seed(suite.seed, "sample", i)) for i in range(len(x))]
    r = restore(y, op, get_task(t.task).noise(opts), load(spec["prior"]), method="ddrm", steps=3, generator=gens,
                samples=3, **get_task(t.task).hyper_parameters.get("ddrm", {}))
    expected = psnr(r.mean, x)
    # batches of 4 in the suite against one batch of 6 here: equal up to float32 rounding
    assert all(abs(row["psnr"] - float(e)) < 1e-3 for row, e in zip(rows, expected))
