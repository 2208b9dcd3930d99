"""The tuned defaults of ``invdiff solve`` (invdiff/data/solve_presets.json, written by benchmarks/tune.py): the
shipped file is valid for every task it names, ``solve`` without --method runs exactly the preset, --method and
--steps/--hp override it, and a suite's per-task steps reach the runner."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import invdiff.tasks as tasks_mod
from invdiff.bench.runner import entry_config
from invdiff.bench.suite import load_suite
from invdiff.cli import app
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.prior import EpsPrior
from invdiff.samplers.params import make_params
from invdiff.samplers.registry import METHODS, check_method
from invdiff.schedule import NoiseSchedule
from invdiff.tasks import TASKS, TaskOptions, solve_preset
from invdiff.zoo import PRIORS

runner = CliRunner()


def test_the_shipped_presets_are_valid_for_their_tasks():
    """Every preset names a task and a method that exist; its steps and hyper-parameters are accepted by the
    method's definition, and the method runs on the task's operator with an RGB prior."""
    from invdiff.denoisers import DENOISERS

    spec = json.loads(tasks_mod.SOLVE_PRESETS.read_text())
    assert spec["presets"], "no presets"
    for n in spec.get("default_priors", []):  # bundled priors or composites of a named denoiser and a bundled prior
        left, plus, right = n.partition("+")
        assert n in PRIORS or (plus and left in DENOISERS and right in PRIORS), n
    prior = EpsPrior(UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                     attention_levels=())), NoiseSchedule.linear(), config={"data": {"channels": 3}})
    tables = [(None, spec["presets"])] + [(k, v["presets"]) for k, v in spec.get("by_prior", {}).items()]
    for prior_name, name in ((k, n) for k, table in tables for n in table):
        assert name in TASKS, name
        top = solve_preset(name, prior_name)
        for p in (top, *top.variants.values()):  # the variants run the same method with their own settings
            assert p.method in METHODS and p.steps >= 1
            hp = {**TASKS[name].hyper_parameters.get(p.method, {}), **p.hyper_parameters, "steps": p.steps}
            params = make_params(METHODS[p.method].params, p.method, hp)
            assert params.steps == p.steps
        p = top
        op = TASKS[name].operator((1, 3, 64, 64), TaskOptions())
        if p.prior is not None:  # a preset with its own prior: a bundled one, the model of the task's Palette condition
            from invdiff.prior import load

            assert p.prior in PRIORS and PRIORS[p.prior].available, p.prior
            own = load(p.prior)
            assert own.config["data"]["condition"] == TASKS[name].palette
            check_method(p.method, op, own)
        else:
            check_method(p.method, op, prior)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("presets")
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()))
    EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny", "data": {"channels": 3}}).save(d / "tiny.safetensors")
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(d / "photo.png")
    return d


PRESET = {"denoise": {"method": "ddrm", "steps": 3, "hyper_parameters": {"start": 0.5, "init": "measurement", "eta": 0.7}}}


def _solve(files, out, *args) -> dict:
    r = runner.invoke(app, ["solve", "--simulate", "--task", "denoise", str(files / "photo.png"), "--prior",
                            str(files / "tiny.safetensors"), "--out", str(out), "--quiet", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_solve_without_a_method_runs_the_preset(files, tmp_path, monkeypatch):
    monkeypatch.setattr(tasks_mod, "_presets", lambda: PRESET)
    rep = _solve(files, tmp_path / "a")
    hp = rep["hyper_parameters"]
    assert rep["method"] == "ddrm" and rep["steps"] == 3 and rep["nfe"] == 3
    assert hp["start"] == 0.5 and hp["init"] == "measurement" and hp["eta"] == 0.7
    # --steps and --hp override one field each, the rest of the preset stays
    rep = _solve(files, tmp_path / "b", "--steps", "2", "--hp", "eta=0.3")
    assert rep["steps"] == 2 and rep["hyper_parameters"]["eta"] == 0.3 and rep["hyper_parameters"]["start"] == 0.5
    # a method named on the command line runs with its own defaults, not the preset's
    rep = _solve(files, tmp_path / "c", "--method", "ddrm", "--steps", "2")
    assert rep["hyper_parameters"]["start"] == 1.0 and rep["hyper_parameters"]["eta"] != 0.7


def test_a_preset_can_set_the_samples_and_their_selection(files, tmp_path, monkeypatch):
    """A preset's K and selection (phase retrieval's best of 4 by the residual) apply when --samples is not given;
    --samples replaces both (then the mean, unless --select is given too)."""
    sel = {"denoise": {**PRESET["denoise"], "samples": 3, "select": "residual"}}
    monkeypatch.setattr(tasks_mod, "_presets", lambda: sel)
    rep = _solve(files, tmp_path / "a")
    assert rep["samples"] == 3 and len(rep["selection"]["residuals"]) == 3
    rep = _solve(files, tmp_path / "b", "--samples", "2")
    assert rep["samples"] == 2 and "selection" not in rep
    rep = _solve(files, tmp_path / "c", "-k", "2", "--select", "residual")
    assert len(rep["selection"]["residuals"]) == 2
    assert "best of 3 by residual" in solve_preset("denoise").describe()


def test_without_a_preset_solve_runs_the_task_default_method(files, tmp_path, monkeypatch):
    monkeypatch.setattr(tasks_mod, "_presets", lambda: {})
    rep = _solve(files, tmp_path, "--steps", "2")
    assert rep["method"] == TASKS["denoise"].default_method and rep["hyper_parameters"]["start"] == 1.0


def test_a_suite_task_can_set_its_own_steps(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"name": "s", "dataset": {"kind": "random", "size": 8, "channels": 1}, "count": 1,
                             "prior": None, "steps": {"ddrm": 7},
                             "tasks": [{"task": "denoise", "methods": ["ddrm"], "steps": {"ddrm": 3}},
                                       {"task": "denoise", "methods": ["ddrm"]}]}))
    suite = load_suite(f)
    own, shared = (entry_config(suite, t, "ddrm", "fmnist32", {"fmnist32": {}}) for t in suite.tasks)
    assert own["steps"] == 3 and shared["steps"] == 7
    forced = dataclasses.replace(suite, steps={"ddrm": 5}, steps_override=5)
    assert entry_config(forced, suite.tasks[0], "ddrm", "fmnist32", {"fmnist32": {}})["steps"] == 5


def test_a_preset_with_its_own_prior_runs_it_when_installed(files, tmp_path, monkeypatch):
    """A task's preset may name a bundled Palette model (colourisation): solve runs it when it is installed and no
    other --prior is given; otherwise the task's default method with the prior asked for (or the default)."""
    import invdiff.zoo as zoo

    wdir = tmp_path / "weights"
    net = UNet(UNetConfig(in_channels=3, cond_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=()))
    EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny-colorize", "data": {
        "channels": 3, "cond_channels": 1, "condition": "colorize", "cond_dropout": 0.1}}).save(wdir / "tiny-colorize.safetensors")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", wdir)
    monkeypatch.setitem(zoo.PRIORS, "tiny-colorize", zoo.ZooEntry("tiny-colorize", "test"))
    monkeypatch.setattr(tasks_mod, "_presets", lambda: {"colorize": {
        "method": "palette", "prior": "tiny-colorize", "steps": 3, "hyper_parameters": {"guidance": 1.0, "start": 0.5, "init": "pinv"}}})
    assert zoo.palette_models("colorize") == ["tiny-colorize"]

    def solve(out, *args):
        r = runner.invoke(app, ["solve", "--simulate", "--task", "colorize", str(files / "photo.png"), "--out",
                                str(out), "--quiet", "--json", *args])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    rep = solve(tmp_path / "a")
    assert rep["prior"] == "tiny-colorize" and rep["method"] == "palette" and rep["palette"]
    assert rep["steps"] == 3 and rep["hyper_parameters"]["guidance"] == 1.0 and rep["nfe"] == 2 * 3
    rep = solve(tmp_path / "b", "--prior", str(files / "tiny.safetensors"), "--steps", "2")
    assert rep["method"] == TASKS["colorize"].default_method and not rep["palette"]
    (wdir / "tiny-colorize.safetensors").unlink()  # not installed: the preset does not apply
    assert zoo.palette_models("colorize") == []
    rep = solve(tmp_path / "c", "--prior", str(files / "tiny.safetensors"), "--steps", "2")
    assert rep["method"] == TASKS["colorize"].default_method


def test_presets_of_a_prior_come_first_and_solve_defaults_to_the_first_installed_prior(monkeypatch):
    """solve_presets.json may hold presets tuned with a particular prior (``by_prior``): they take precedence for
    that prior, the general table serves the rest. The default prior is the first installed one of
    ``default_priors``; a composite counts as installed when its denoiser's weights are found."""
    import invdiff.zoo as zoo
    from invdiff.denoisers import DENOISERS, NamedDenoiser

    spec = {"prior": "natural64", "default_priors": ["missing+natural64", "present+natural64", "natural64"],
            "presets": {"denoise": {"method": "ddrm", "steps": 20, "hyper_parameters": {}},
                        "sr": {"method": "ddrm", "steps": 30, "hyper_parameters": {}}},
            "by_prior": {"present+natural64": {"presets": {"denoise": {"method": "diffpir", "steps": 5,
                                                                       "hyper_parameters": {"start": 0.1}}}}}}
    monkeypatch.setattr(tasks_mod, "_spec", lambda: spec)
    # a denoiser whose "weights" exist (any file of an installed package) and one whose package is absent
    monkeypatch.setitem(DENOISERS, "present", NamedDenoiser("present", "", "json", "__init__.py", 0.3, "pip"))
    monkeypatch.setitem(DENOISERS, "missing", NamedDenoiser("missing", "", "no_such_package_xyz", "w.pth", 0.3, "pip"))
    assert zoo.installed("present+natural64") == PRIORS["natural64"].available
    assert not zoo.installed("missing+natural64") and not zoo.installed("present+no-such-prior")
    if PRIORS["natural64"].available:
        assert zoo.default_prior() == "present+natural64"
    p = solve_preset("denoise", "present+natural64")
    assert (p.method, p.steps, p.hyper_parameters) == ("diffpir", 5, {"start": 0.1})
    assert solve_preset("sr", "present+natural64").steps == 30  # not tuned with that prior: the general preset
    assert solve_preset("denoise", "natural64").method == "ddrm" and solve_preset("denoise").method == "ddrm"
    spec["default_priors"] = ["missing+natural64"]
    assert zoo.default_prior() == zoo.DEFAULT_PRIOR


def test_inpainting_presets_have_a_variant_for_masks_with_holes(monkeypatch):
    """A mask with a missing pixel farther than HOLE_DISTANCE from every observed pixel (a box) takes the preset's
    "holes" variant; scattered missing pixels (a 70 % random mask) and operators without a mask the preset itself."""
    from invdiff import operators as ops
    from invdiff.tasks import HOLE_DISTANCE, measurement_kind

    box = torch.ones(1, 1, 64, 64)
    box[..., 16:48, 16:48] = 0  # the centre pixel is 16 px from the nearest observed one
    thin = torch.ones(1, 1, 64, 64)
    thin[..., 10:10 + int(2 * HOLE_DISTANCE) - 2, :] = 0  # a band: at most HOLE_DISTANCE - 1 px from the edge
    scattered = (torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    assert measurement_kind(ops.Inpainting(box)) == "holes"
    assert measurement_kind(ops.Inpainting(thin)) == "scattered"
    assert measurement_kind(ops.Inpainting(scattered)) == "scattered"
    assert measurement_kind(ops.Inpainting(torch.ones(1, 1, 8, 8))) == "scattered"
    assert measurement_kind(TASKS["deblur"].operator((1, 3, 32, 32), TaskOptions())) is None
    spec = {"presets": {"inpaint": {"method": "ddrm", "steps": 20, "hyper_parameters": {"start": 0.2},
                                    "variants": {"holes": {"steps": 30, "hyper_parameters": {}}}}}}
    monkeypatch.setattr(tasks_mod, "_spec", lambda: spec)
    p = solve_preset("inpaint")
    assert p.for_operator(ops.Inpainting(box)).steps == 30 and p.for_operator(ops.Inpainting(box)).hyper_parameters == {}
    assert p.for_operator(ops.Inpainting(scattered)) is p
    assert "holes" in p.describe()
    assert p.for_operator(ops.Inpainting(box), blind=True) is p.variants["holes"]  # no blind variant: the kind's
    spec["presets"]["inpaint"]["variants"]["blind"] = {"steps": 5, "hyper_parameters": {"lam": 3.0}}
    q = solve_preset("inpaint")
    assert q.for_operator(ops.Inpainting(scattered), blind=True).hyper_parameters == {"lam": 3.0}
    assert q.for_operator(ops.Inpainting(scattered)) is q


def test_solve_without_a_prior_runs_the_default_prior_with_its_own_presets(files, tmp_path, monkeypatch):
    import invdiff.zoo as zoo

    tiny = str(files / "tiny.safetensors")
    spec = {"prior": "natural64", "presets": PRESET,
            "by_prior": {tiny: {"presets": {"denoise": {"method": "ddrm", "steps": 2, "hyper_parameters": {"eta": 0.4}}}}}}
    monkeypatch.setattr(tasks_mod, "_spec", lambda: spec)
    monkeypatch.setattr(zoo, "default_prior", lambda: tiny)
    r = runner.invoke(app, ["solve", "--simulate", "--task", "denoise", str(files / "photo.png"), "--out",
                            str(tmp_path / "a"), "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["prior"] == tiny and rep["steps"] == 2 and rep["hyper_parameters"]["eta"] == 0.4
    spec["by_prior"] = {}  # no presets tuned with that prior: the general ones
    assert _solve(files, tmp_path / "b")["hyper_parameters"]["eta"] == 0.7


def test_priors_lists_a_composite_default_first(monkeypatch):
    """`invdiff priors` marks solve's default prior: a bundled one in place, a composite as its own first row."""
    import invdiff.zoo as zoo

    monkeypatch.setattr(zoo, "default_prior", lambda: "ffdnet+natural64")
    rows = json.loads(runner.invoke(app, ["priors", "--json"]).stdout)
    assert rows[0]["name"] == "ffdnet+natural64" and rows[0]["default"]
    assert [r["name"] for r in rows if r["default"]] == ["ffdnet+natural64"]
    monkeypatch.setattr(zoo, "default_prior", lambda: "natural64")
    rows = json.loads(runner.invoke(app, ["priors", "--json"]).stdout)
    assert [r["name"] for r in rows if r["default"]] == ["natural64"] and len(rows) == len(PRIORS)


def test_solve_says_when_its_default_prior_is_not_installed(files, tmp_path, monkeypatch):
    """Without the denoiser's wheel solve runs the next prior of the order, and says so (no silent fallback)."""
    import invdiff.zoo as zoo

    tiny = str(files / "tiny.safetensors")
    monkeypatch.setattr(tasks_mod, "_spec", lambda: {"presets": PRESET, "default_priors": ["missing+natural64", tiny]})
    monkeypatch.setattr(zoo, "default_prior", lambda: tiny)
    r = runner.invoke(app, ["solve", "--simulate", "--task", "denoise", str(files / "photo.png"), "--out",
                            str(tmp_path / "a"), "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    assert "'missing+natural64' is not installed" in r.stderr and json.loads(r.stdout)["prior"] == tiny
    monkeypatch.setattr(tasks_mod, "_spec", lambda: {"presets": PRESET, "default_priors": [tiny]})
    r = runner.invoke(app, ["solve", "--simulate", "--task", "denoise", str(files / "photo.png"), "--out",
                            str(tmp_path / "b"), "--quiet", "--json"])
    assert r.exit_code == 0 and "not installed" not in r.stderr


@pytest.fixture
def tune(monkeypatch):
    """benchmarks/tune.py as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tune.py"
    spec = importlib.util.spec_from_file_location("tune_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, spec.name, mod)  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_tuning_keeps_the_variants_chosen_elsewhere(tune, tmp_path, monkeypatch):
    """A re-tune rewrites a task's preset but keeps a variant another benchmark chose (marked ``chosen_by``, the
    blind one of motion-deblur); a tuned variant of the same kind replaces the old one."""
    import json

    path = tmp_path / "presets.json"
    blind = {"steps": 20, "hyper_parameters": {"lam": 100.0}, "chosen_by": "blind_motion.py"}
    old = {"method": "diffpir", "steps": 20, "hyper_parameters": {}, "variants": {"blind": blind, "holes": {"steps": 9}}}
    path.write_text(json.dumps({"prior": "p", "presets": {"motion-deblur": old}}))
    monkeypatch.setattr(tune, "PRESETS", path)
    tune._write_presets("p", {"motion-deblur": {"method": "diffpir", "steps": 10, "hyper_parameters": {"start": 0.3}}})
    new = json.loads(path.read_text())["presets"]["motion-deblur"]
    assert new["steps"] == 10 and new["variants"] == {"blind": blind}  # the tuned "holes" was tune's own: gone
    tune._write_presets("p", {"motion-deblur": {"method": "diffpir", "steps": 10, "variants": {"blind": {"steps": 3}}}})
    assert json.loads(path.read_text())["presets"]["motion-deblur"]["variants"] == {"blind": {"steps": 3}}


def test_tuning_keeps_the_presets_of_tasks_tuned_elsewhere(tune, tmp_path, monkeypatch):
    """A re-tune, of the general table or of another prior's, keeps a task preset another benchmark chose
    (phase retrieval's, marked ``chosen_by``); another prior's table is rewritten, so an unmarked preset that the
    re-tune did not produce goes."""
    import json

    path = tmp_path / "presets.json"
    phase = {"method": "dps", "steps": 20, "hyper_parameters": {"start": 0.2}, "chosen_by": "phase_retrieval.py"}
    table = {"phase-retrieval": phase, "colorize": {"method": "ddrm", "steps": 5}}
    path.write_text(json.dumps({"prior": "p", "presets": dict(table), "by_prior": {"q": {"presets": dict(table)}}}))
    monkeypatch.setattr(tune, "PRESETS", path)
    sr = {"method": "ddrm", "steps": 30, "hyper_parameters": {}}
    tune._write_presets("q", {"sr": sr})
    assert json.loads(path.read_text())["by_prior"]["q"]["presets"] == {"phase-retrieval": phase, "sr": sr}
    tune._write_presets("p", {"sr": sr})
    assert json.loads(path.read_text())["presets"]["phase-retrieval"] == phase


def test_tuning_chooses_across_methods_and_prefers_the_cases_own_on_a_tie(tune):
    """benchmarks/tune.py run --methods: rows of several methods for one case; choose takes the best mean PSNR
    (within MAX_NFE), and within TIE_DB the cheaper, then the case's own method."""
    case = next(c for c in tune.CASES if c.key == "sr")

    def row(method, steps, start, psnr, nfe=None):
        return {"case": "sr", "method": method, "steps": steps, "start": start, "nfe": nfe or steps, "psnr": psnr}

    rows = [row("baseline:bicubic", None, None, [30.0, 30.0], nfe=0), row(case.method, 20, 0.2, [24.0, 25.0]),
            row("ddnm", 20, 0.2, [24.5, 25.5]), row("ddnm", 40, 0.2, [26.0, 26.0])]  # 40 NFE: over MAX_NFE
    ch = tune._choose(rows, [case])
    assert (ch["method"], ch["steps"], ch["start"], ch["psnr"]) == ("ddnm", 20, 0.2, 25.0)
    tie = [row(case.method, 20, 0.2, [24.0, 25.0]), row("ddnm", 20, 0.2, [24.0, 25.0 + tune.TIE_DB / 2])]
    assert tune._choose(tie, [case])["method"] == case.method
    assert tune._entry(ch, case)["hyper_parameters"] == {"start": 0.2, "init": case.init}


def test_the_box_start_probe_writes_its_best_start_as_the_holes_variant_and_a_retune_keeps_it(tune, tmp_path, monkeypatch):
    """benchmarks/box_starts.py: the best mean PSNR (within tune's tie margin the earlier start) becomes the holes
    variant of that prior's inpainting preset, marked ``chosen_by`` with every start's mean, and a later
    ``tune.py choose`` of the task keeps it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("box_starts", Path(__file__).resolve().parents[1] / "benchmarks" / "box_starts.py")
    box = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(box)
    path = tmp_path / "presets.json"
    inpaint = {"method": "ddrm", "steps": 20, "hyper_parameters": {"start": 0.15}, "variants": {"holes": {"steps": 20}}}
    path.write_text(json.dumps({"prior": "p", "presets": {}, "by_prior": {"q": {"presets": {"inpaint": inpaint}}}}))
    monkeypatch.setattr(box.tune, "PRESETS", path)
    monkeypatch.setattr(tune, "PRESETS", path)
    rows = [{"prior": "q", "steps": 20, "start": s, "psnr": v} for s, v in ((0.5, [19.0, 19.2]), (0.7, [20.0, 20.02]),
                                                                            (0.8, [20.0, 20.05]), (1.0, [18.0, 18.0]))]
    rows.append({"prior": "r", "steps": 20, "start": 1.0, "psnr": [30.0, 30.0]})  # another prior's rows do not count
    res = {"photos": 2, "rows": rows}
    assert box.best(res, "q")["start"] == 0.7  # 0.8 is 0.015 dB better: a tie, so the earlier start
    box.write_preset(res, "q")
    holes = json.loads(path.read_text())["by_prior"]["q"]["presets"]["inpaint"]["variants"]["holes"]
    assert holes["hyper_parameters"] == {"start": 0.7, "init": "biharmonic", "eta": 1.0} and holes["tuning_psnr"] == 20.01
    assert "from 0.5 19.10" in holes["chosen_by"] and "from 1.0 18.00" in holes["chosen_by"]
    tune._write_presets("q", {"inpaint": {"method": "ddrm", "steps": 30, "hyper_parameters": {}}})
    assert json.loads(path.read_text())["by_prior"]["q"]["presets"]["inpaint"]["variants"]["holes"] == holes
    with pytest.raises(SystemExit, match="no rows"):
        box.best(res, "s")


def test_the_preset_check_runs_each_tuned_preset_with_both_priors_and_pairs_them(tune, tmp_path, monkeypatch):
    """benchmarks/tune.py check: each case's preset (the holes variant for the box case, the base preset for the
    random mask) is run with the prior and the one it is checked against, with the preset's method, steps, start
    and hyper-parameters and without the init (the case's own); the rows hold each prior's PSNR and the printed
    line the paired difference with its standard error."""
    import argparse
    import statistics

    path = tmp_path / "presets.json"
    inpaint = {"method": "ddrm", "steps": 20, "hyper_parameters": {"start": 0.15, "init": "biharmonic", "eta": 1.0},
               "variants": {"holes": {"steps": 20, "hyper_parameters": {"start": 0.7, "init": "biharmonic", "eta": 1.0}}}}
    sr = {"method": "ddnm", "steps": 30, "hyper_parameters": {"start": 0.2, "init": "bicubic"}}
    path.write_text(json.dumps({"prior": "p", "presets": {"sr": sr}, "by_prior": {"q": {"presets": {"inpaint": inpaint}}}}))
    monkeypatch.setattr(tune, "PRESETS", path)
    monkeypatch.setattr(tune, "OUT", tmp_path)
    monkeypatch.setattr(tune, "_photos", lambda n: torch.zeros(n, 3, 8, 8))
    monkeypatch.setattr(tune, "_problem", lambda case, x, seed: (case.key, seed))
    calls = []
    scores = {"q": [20.0, 21.0, 23.0], "r": [19.0, 21.5, 22.0]}

    def fake(case, x, op, y, steps, start, seed, extra=None):
        calls.append((tune._run_config.prior, case.key, case.method, steps, start, extra, op))
        return {"psnr": scores[tune._run_config.prior], "seconds": 0.0}

    monkeypatch.setattr(tune, "_run_config", fake)
    args = argparse.Namespace(prior="q", against="r", presets_of=None, tasks="sr,inpaint-box,inpaint-random,denoise",
                              photos=3, seed=4, threads=1)
    tune.check(args)
    assert calls == [(p, "sr", "ddnm", 30, 0.2, None, "sr") for p in "qr"] + [
        (p, "inpaint-box", "ddrm", 20, 0.7, {"eta": 1.0}, "inpaint-box") for p in "qr"] + [
        (p, "inpaint-random", "ddrm", 20, 0.15, {"eta": 1.0}, "inpaint-random") for p in "qr"]  # denoise: no preset
    out = json.loads((tmp_path / "check-q.json").read_text())
    assert [r["case"] for r in out["rows"]] == ["sr", "inpaint-box", "inpaint-random"]
    assert out["rows"][0]["q"]["mean"] == round(64 / 3, 3) and out["rows"][0]["r"]["psnr"] == scores["r"]
    d = [a - b for a, b in zip(scores["q"], scores["r"])]
    line = tune._check_line(out["rows"][0], ["q", "r"])
    assert f"{statistics.mean(d):+.3f} +- {statistics.stdev(d) / 3 ** 0.5:.3f}" in line


def test_the_box_start_probe_averages_each_photo_over_its_draws_and_compares_like_with_like():
    """benchmarks/box_starts.py --draws: a configuration's PSNR per photo is the mean of its draws (seeds), and only
    the configurations with the most draws compete, so one lucky draw of a configuration run once cannot win."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("box_starts", Path(__file__).resolve().parents[1] / "benchmarks" / "box_starts.py")
    box = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(box)
    rows = [{"prior": "q", "steps": 20, "start": 0.7, "seed": 0, "psnr": [20.0, 18.0]},
            {"prior": "q", "steps": 20, "start": 0.7, "seed": 1, "psnr": [21.0, 19.0]},
            {"prior": "q", "steps": 20, "start": 1.0, "psnr": [25.0, 17.0]},  # an older row: seed 0
            {"prior": "q", "steps": 20, "start": 1.0, "seed": 1, "psnr": [19.0, 17.0]},
            {"prior": "q", "steps": 20, "start": 0.5, "seed": 0, "psnr": [30.0, 30.0]}]  # one draw only
    res = {"photos": 2, "rows": rows}
    got = {r["start"]: r for r in box.configs_of(res, "q")}
    assert got[0.7]["psnr"] == [20.5, 18.5] and got[0.7]["draws"] == 2
    assert got[1.0]["psnr"] == [22.0, 17.0] and got[0.5]["draws"] == 1
    b = box.best(res, "q")  # 0.7: 19.5, 1.0: 19.5 -> a tie, the earlier start; 0.5 ran once and does not compete
    assert (b["start"], b["draws"]) == (0.7, 2)
    rows[1]["psnr"] = [20.0, 18.0]  # 0.7 now 19.0 < 1.0's 19.5
    assert box.best(res, "q")["start"] == 1.0
