"""The colour cosine of the colourisation benchmark (benchmarks/palette_colorize.py ``_scores``): the cosine
between the result's and the truth's colour (their parts in the null space of the grey operator), and the rule
it stands for: against the grey image, adding colour a·c lowers the squared error iff a‖c‖ < 2‖c_true‖·cos."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from invdiff.operators.colorize import Colorize

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_BENCH))
_SPEC = importlib.util.spec_from_file_location("palette_colorize", _BENCH / "palette_colorize.py")
palette_colorize = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(palette_colorize)


def _parts(x, op):
    grey = op.pinv(op(x))
    return grey, x - grey


def test_the_colour_cosine_is_that_of_the_null_space_parts():
    g = torch.Generator().manual_seed(0)
    op = Colorize()
    x = 0.3 * torch.rand(2, 3, 16, 16, generator=g) - 0.15
    grey, c = _parts(x, op)
    other = 0.3 * torch.rand(2, 3, 16, 16, generator=g) - 0.15
    _, c2 = _parts(other, op)
    cases = {"scaled": grey + 0.5 * c, "negated": grey - c, "other": grey + c2}
    got = {k: palette_colorize._scores(v, x, op)["colour_cosine"] for k, v in cases.items()}
    assert got["scaled"] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert got["negated"] == pytest.approx([-1.0, -1.0], abs=1e-3)
    want = [float(torch.nn.functional.cosine_similarity(c2[i].flatten(), c[i].flatten(), dim=0)) for i in range(2)]
    assert got["other"] == pytest.approx(want, abs=1e-3)
    # the grey image has no colour: cosine 0, not NaN
    assert palette_colorize._scores(grey, x, op)["colour_cosine"] == [0.0, 0.0]
    assert "colour_cosine" not in palette_colorize._scores(grey, x)


def test_colour_pays_against_grey_exactly_when_the_cosine_rule_says():
    g = torch.Generator().manual_seed(1)
    op = Colorize()
    x = 0.3 * torch.rand(1, 3, 16, 16, generator=g) - 0.15
    grey, ct = _parts(x, op)
    for seed in range(20):
        gs = torch.Generator().manual_seed(100 + seed)
        _, c = _parts(0.3 * torch.rand(1, 3, 16, 16, generator=gs) - 0.15 + 0.5 * x * (seed % 3), op)
        cos = palette_colorize._scores(grey + c, x, op)["colour_cosine"][0]
        for a in (0.25, 0.5, 1.0, 2.0):
            better = float(((grey + a * c - x) ** 2).sum()) < float(((grey - x) ** 2).sum())
            margin = 2 * float(ct.norm()) * cos - a * float(c.norm())
            if abs(margin) > 1e-3 * float(ct.norm()):  # away from the boundary, where rounding decides
                assert better == (margin > 0)
