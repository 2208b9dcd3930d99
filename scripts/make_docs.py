"""Regenerate the documentation pictures and tables: docs/operators.png (every operator of the registry applied to
one validation photo) and docs/methods.md (method × requirements × cost)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import invdiff.operators as O  # noqa: E402
from invdiff.data import validation_photos  # noqa: E402
from invdiff.figures import display, magnitude_display  # noqa: E402
from invdiff.rng import make_generators  # noqa: E402
from invdiff.samplers.registry import METHODS, method_requirements  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def operators_figure(path: Path, size: int = 128) -> None:
    x = validation_photos(size)[:1]
    names = list(O.OPERATORS)
    cols = 6
    rows = math.ceil((len(names) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows))
    axes = axes.flatten()
    axes[0].imshow(display(x[0]))
    axes[0].set_title("x (astronaut)", fontsize=8)
    for ax, name in zip(axes[1:], names):
        op = O.OPERATORS[name](tuple(x.shape), make_generators(0, 1))
        with torch.no_grad():
            y = op(x)
        shown = magnitude_display(y[0]) if name == "phase-retrieval" else y[0]
        ax.imshow(display(shown))
        ax.set_title(f"{name}\n{tuple(y.shape[1:])}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("invdiff.operators.OPERATORS applied to one image (noiseless A(x))", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def methods_table(path: Path) -> None:
    lines = ["# Restoration methods", "",
             "Every method runs through `invdiff.samplers.restore(y, operator, noise, prior, method=...)` (or "
             "`invdiff solve --method`). *Operator* is what the method needs from A; *network gradient* means a "
             "vector-Jacobian product through the ε-network at every step (memory and ~3× the time of a forward "
             "pass). NFE and VJPs are per image at the default number of steps; all of them scale linearly with "
             "`steps`. Every hyper-parameter is a keyword argument of `restore` (CLI: `--hp NAME=VALUE`).", "",
             "| method | operator | network gradient | default steps | NFE | VJPs | hyper-parameters (defaults) | reference | "
             "differences from the reference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in METHODS.items():
        r = method_requirements(name)
        hp = ", ".join(f"{k}={v}" for k, v in m.defaults.items() if k != "steps")
        hp += f" ({m.params.__name__})"
        lines.append(f"| `{name}` | {r['operator']}{' + conditional prior' if m.conditional else ''} | "
                     f"{'yes' if r['network_gradient'] else 'no'} | {r['default_steps']} | {r['nfe']} | {r['vjps']} | {hp} | {r['paper']} | "
                     f"{m.differences} |")
    lines += ["", "Each method's hyper-parameters are one frozen dataclass in `invdiff/samplers/params.py` (the column's "
              "name in brackets); `restore`, the registry, `--hp` and this table read it. `spacing` places the steps: "
              "`uniform` (round(i·(T−1)/(S−1))), `leading` (i·⌊T/S⌋, the DDIM/DDRM/DDNM code's), `trailing`, `quad` "
              "(DiffPIR's), `quad-ddim` (the DDIM code's)."]
    lines += ["", "NFE in practice: `repaint` evaluates the network once per reverse step of its schedule, "
              "steps + (jump points)·(resamples − 1)·jump_length (250, 10, 10: 2410); `palette` runs exactly `steps` "
              "evaluations, spread over [0, t_start] when start < 1 (t_start = round(start·(T−1))), twice that with guidance, "
              "and one more with `paste_denoiser` (the denoiser's pass over A⁺y); `daps` runs "
              "steps × ode_steps (the reference's 200 × 5 = 1000) plus steps × langevin_steps operator gradients."]
    lines += ["", "Methods that need an SVD (`ddrm`) or a linear operator (`ddnm`, `pigdm`, `mcg`, `projection`, `repaint`) refuse other "
              "operators with a message naming an alternative. Operators with an exact SVD: `Identity`, `Inpainting`, "
              "`CircularBlur`, `SeparableBlur`, `BlockAverage`, `BicubicDownsample`, `Colorize`. `Blur` (any padding) and "
              "`NonUniformBlur` are linear with exact adjoints (pinv by conjugate gradients; a Gaussian or box `Blur` solves "
              "prox and ΠGDM's weighted pseudo-inverse in closed form through its separable SVD); `PhaseRetrieval` is "
              "non-linear. Data consistency is the operator's own (`prox`, `weighted_pinv`, `norm_estimate`, `on_grid`), "
              "and methods state what they need as `Capability` flags: a new operator works with every method its "
              "capabilities allow.",
              "", "How each method is checked: `tests/test_restore.py` runs them on Gaussian data, where the exact ε and "
              "the exact posterior are known (ΠGDM with weighting='exact', and DAPS's reference annealing with Tweedie's x̂0, "
              "the inner Gaussian sampled exactly and τ = √2σ, must recover the posterior mean and covariance; DDRM, DDNM, "
              "DiffPIR and RePaint its mean; DPS must move towards it and fit the measurement). `tests/test_faithful_a.py` "
              "runs DDNM/DDNM+ (with time travel), ΠGDM (weighting='authors'), DiffPIR and RED-diff, and "
              "`tests/test_faithful_b.py` DPS, DAPS, RePaint and Palette, against transcriptions of the authors' update "
              "rules with the same inputs and noise. `tests/test_posterior_paths.py` checks the paths without an SVD "
              "(ΠGDM, projection, MCG, DDNM+ by conjugate gradients), DAPS's Langevin branch and DPS's gradient."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    DOCS.mkdir(exist_ok=True)
    operators_figure(DOCS / "operators.png")
    methods_table(DOCS / "methods.md")
    print("wrote docs/operators.png and docs/methods.md")
