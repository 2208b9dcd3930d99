"""Before/after check of a restructuring through the Python API, and a paired summary of two suite runs.

Three modes:

``--dump FILE``: run ``invdiff.samplers.restore`` on fixed inputs with whatever ``invdiff`` is importable (put the
checkout first with ``PYTHONPATH=<checkout>``) and save every output. The inputs do not depend on how the library
derives its random streams: clean images are the first Fashion-MNIST test images and the first validation photos
(at 64×64), operators are built from explicit kernels and masks, the measurement noise is drawn here from
``torch.Generator().manual_seed(...)``, and ``restore`` gets one explicit ``torch.Generator`` per image. Every case
runs two samples per image: for K > 1 both the old and the new ``restore`` derive the per-sample streams from each
image's generator the same way (for K = 1 the old one used the given generators directly). Only methods and
operators that no change between the two checkouts was meant to alter are run, with hyper-parameters that mean
the same at both (see ``CASES``).

``--compare BEFORE AFTER``: per case, the largest absolute difference of the samples, the PSNR of one against
the other, and each one's PSNR against the clean images.

``--suites BEFORE_DIR AFTER_DIR``: per (task, method) of two bench runs (results.rank*.jsonl), mean ± standard
error of PSNR/SSIM at each, and the paired difference (after − before) over the images present in both.

    PYTHONPATH=/tmp/before python benchmarks/before_after.py --dump before.pt
    PYTHONPATH=/tmp/after python benchmarks/before_after.py --dump after.pt
    python benchmarks/before_after.py --compare before.pt after.pt
    python benchmarks/before_after.py --suites runs/before-fmnist runs/after-fmnist
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

SIGMA = 0.05  # measurement noise on the [-1, 1] scale
SAMPLES = 2  # per image: both versions derive the per-sample streams identically for K > 1
N_FMNIST, N_NATURAL, NATURAL_SIZE = 4, 2, 64


@dataclass(frozen=True)
class Case:
    name: str
    data: str  # "fmnist" or "natural"
    operator: str  # a key of OPERATOR_BUILDERS
    method: str
    steps: int
    #: hyper-parameters; DiffPIR's ``lam`` is given in the old units (σ on [-1, 1]) and converted where needed
    hp: dict = field(default_factory=dict)
    why: str = ""
    samples: int = SAMPLES
    #: None: the outputs must agree; else the change between the checkouts that alters them on purpose (a control
    #: that the comparison sees a difference where there is one)
    changed_by: str | None = None


#: hyper-parameters the older API may lack: dropping them there keeps the meaning (what the older code always did)
OPTIONAL = {"weighting": "exact", "gradient": "raw", "cg_tol": 1e-5}

CASES = [
    Case("fmnist sr4 ddrm", "fmnist", "sr4", "ddrm", 20, why="DDRM: no change meant"),
    Case("fmnist sr4 pigdm", "fmnist", "sr4", "pigdm", 15, {"weighting": "exact"},
         why="ΠGDM exact weighting (the only one before), SVD path"),
    Case("fmnist sr4 diffpir", "fmnist", "sr4", "diffpir", 20, {"lam": 7.0, "zeta": 0.3},
         why="DiffPIR, data step exact (SVD) at both; λ 7 old units = 28 paper units"),
    Case("fmnist sr4 dps-raw", "fmnist", "sr4", "dps", 15, {"gradient": "raw"},
         why="DPS through the unclipped x̂0 (the older behaviour, kept as gradient='raw')"),
    Case("fmnist sepblur ddrm", "fmnist", "sepblur9", "ddrm", 20, why="DDRM on the separable Gaussian blur's SVD"),
    Case("fmnist sepblur diffpir", "fmnist", "sepblur9", "diffpir", 20, {"lam": 1.0, "zeta": 1.0},
         why="DiffPIR on an SVD blur (exact data step at both); deblur preset λ = 1 old units = 4"),
    Case("fmnist motion diffpir-cg", "fmnist", "motion7", "diffpir", 12,
         {"lam": 1.0, "zeta": 1.0, "cg_iters": 10, "cg_tol": 1e-5},
         why="DiffPIR's CG data step with the older iteration count and tolerance (non-separable kernel)"),
    Case("fmnist motion pigdm-cg", "fmnist", "motion7", "pigdm", 10, {"weighting": "exact"},
         why="ΠGDM's CG path (a kernel without a separable form)"),
    Case("fmnist box projection", "fmnist", "box", "projection", 20, why="projection: no change meant"),
    Case("fmnist box mcg-raw", "fmnist", "box", "mcg", 10, {"gradient": "raw"}, why="MCG with the older gradient"),
    Case("fmnist random ddrm", "fmnist", "random70", "ddrm", 20, why="DDRM on a random mask"),
    Case("fmnist random diffpir", "fmnist", "random70", "diffpir", 20, {"lam": 7.0, "zeta": 0.3},
         why="DiffPIR on a mask (exact data step at both)"),
    Case("fmnist denoise ddrm", "fmnist", "identity", "ddrm", 20, why="DDRM denoising"),
    Case("fmnist denoise diffpir", "fmnist", "identity", "diffpir", 20, {"lam": 7.0, "zeta": 0.3},
         why="DiffPIR denoising"),
    Case("natural sr4 ddrm", "natural", "sr4", "ddrm", 15, why="DDRM with the natural64 prior (RGB photos)"),
    Case("natural sepblur diffpir", "natural", "sepblur15", "diffpir", 12, {"lam": 1.0, "zeta": 1.0},
         why="DiffPIR deblurring on an SVD blur with the natural64 prior"),
    Case("natural random pigdm", "natural", "random70", "pigdm", 10, {"weighting": "exact"},
         why="ΠGDM on a random mask with the natural64 prior"),
    # controls: changed on purpose between the checkouts, so they must differ
    Case("control sr4 ddrm K=1", "fmnist", "sr4", "ddrm", 20, samples=1,
         changed_by="restore derives the stream of a single sample from its image's generator too"),
    Case("control sr4 dps", "fmnist", "sr4", "dps", 15, changed_by="DPS's default gradient through the clipped x̂0"),
    Case("control blur diffpir", "fmnist", "blur9", "diffpir", 20, {"lam": 1.0, "zeta": 1.0},
         changed_by="DiffPIR's data step on Blur: closed form (separable SVD) instead of 10 CG iterations"),
    Case("control sr4 ddnm", "fmnist", "sr4", "ddnm", 20, changed_by="DDNM+ as the authors' code"),
]


def _seed(*parts) -> int:
    """A fixed seed from names, independent of the library's stream derivation."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def _motion_kernel() -> torch.Tensor:
    """A fixed 7×7 kernel without a separable form: a bent line, normalised."""
    k = torch.zeros(7, 7, dtype=torch.float64)
    for i, j in [(1, 1), (2, 2), (3, 3), (3, 4), (4, 5), (5, 5), (6, 5)]:
        k[i, j] = 1.0
    k[3, 3] = 2.0
    return (k / k.sum()).float()


def _box_mask(n: int, side: int) -> torch.Tensor:
    m = torch.ones(n, 1, side, side)
    lo = side // 4
    m[:, :, lo : lo + side // 2, lo + 1 : lo + 1 + side // 2] = 0
    return m


def _random_mask(n: int, side: int, name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(_seed(name, "mask"))
    return (torch.rand(n, 1, side, side, generator=g) >= 0.7).float()


def build_operator(key: str, x: torch.Tensor, case_name: str):
    import invdiff.operators as ops

    n, side = x.shape[0], x.shape[-1]
    builders = {
        "sr4": lambda: ops.BicubicDownsample(4),
        "sepblur9": lambda: ops.SeparableBlur.gaussian(9, 1.5, padding="reflect"),
        "sepblur15": lambda: ops.SeparableBlur.gaussian(15, 2.0, padding="reflect"),
        "blur9": lambda: ops.Blur(ops.gaussian_kernel(9, 1.5), padding="reflect"),
        "motion7": lambda: ops.Blur(_motion_kernel(), padding="reflect"),
        "box": lambda: ops.Inpainting(_box_mask(n, side)),
        "random70": lambda: ops.Inpainting(_random_mask(n, side, case_name)),
        "identity": lambda: ops.Identity(),
    }
    return builders[key]()


def clean_images(data: str) -> torch.Tensor:
    from invdiff.data import fashion_mnist, validation_photos

    if data == "fmnist":
        return fashion_mnist("test")[0][:N_FMNIST].float()
    return validation_photos(NATURAL_SIZE)[:N_NATURAL].float()


def _hyper_parameters(case: Case) -> tuple[dict, list[str]]:
    """The case's hyper-parameters as this version of the library takes them, and the optional ones it lacks."""
    from invdiff.samplers.registry import METHODS
    from invdiff.samplers.spectral import DiffPIR

    accepted = set(METHODS[case.method].defaults)
    hp, dropped = {}, []
    for k, v in case.hp.items():
        if k not in accepted:
            if k not in OPTIONAL or OPTIONAL[k] != v:
                raise ValueError(f"{case.name}: this version has no hyper-parameter {k!r} and no equivalent default")
            dropped.append(k)
            continue
        hp[k] = v
    if case.method == "diffpir" and "lam" in hp and hasattr(DiffPIR, "rho"):
        hp["lam"] = 4.0 * hp["lam"]  # ρ = λ (σ/2)² ᾱ/(1−ᾱ) in the paper's units: 4λ gives the older λσ²
    return hp, dropped


def _checkout_commit() -> str | None:
    import invdiff

    root = Path(invdiff.__file__).resolve().parents[1]
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def dump(path: Path, only: list[str] | None) -> None:
    import invdiff
    from invdiff.prior import load
    from invdiff.samplers import restore

    priors = {"fmnist": load("fmnist32"), "natural": load("natural64")}
    images = {d: clean_images(d) for d in priors}
    out = {"meta": {"invdiff": invdiff.__file__, "commit": _checkout_commit(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "samples": SAMPLES, "sigma": SIGMA}, "cases": {}}
    for case in CASES:
        if only and case.name not in only:
            continue
        x = images[case.data]
        op = build_operator(case.operator, x, case.name)
        with torch.no_grad():
            clean_y = op(x)
        noise = torch.randn(clean_y.shape, generator=torch.Generator().manual_seed(_seed(case.name, "noise")))
        y = clean_y + SIGMA * noise
        gens = [torch.Generator().manual_seed(_seed(case.name, "sample", i)) for i in range(x.shape[0])]
        hp, dropped = _hyper_parameters(case)
        r = restore(y, op, SIGMA, priors[case.data], method=case.method, steps=case.steps, samples=case.samples,
                    generator=gens, **hp)
        out["cases"][case.name] = {"x": x, "y": y, "samples": r.samples.detach(), "mean": r.mean.detach(),
                                   "nfe": int(r.nfe), "vjps": int(r.vjps), "hp": hp, "dropped": dropped,
                                   "seconds": float(r.seconds), "changed_by": case.changed_by}
        print(f"{case.name:28s} hp={hp} dropped={dropped} nfe={r.nfe} {r.seconds:.1f}s", flush=True)
    torch.save(out, path)
    print(f"saved {path}")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR per image on the [0, 1] scale (data range 1) of images given on [-1, 1]."""
    mse = ((a - b) / 2).flatten(1).pow(2).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-30))


def compare(before: Path, after: Path) -> int:
    """Print the comparison table; returns the number of cases against expectation (unchanged cases that differ,
    controls that do not)."""
    a, b = torch.load(before, weights_only=False), torch.load(after, weights_only=False)
    print(f"before: {a['meta']}\nafter:  {b['meta']}\n")
    print("| case | expected | NFE before/after | max abs diff | PSNR after vs before (dB) | PSNR vs clean before | "
          "PSNR vs clean after |")
    print("|---|---|---|---|---|---|---|")
    surprises = 0
    for name, ca in a["cases"].items():
        cb = b["cases"].get(name)
        if cb is None:
            print(f"| {name} | | missing after | | | | |")
            surprises += 1
            continue
        if not (torch.equal(ca["x"], cb["x"]) and torch.equal(ca["y"], cb["y"])):
            raise SystemExit(f"{name}: the inputs differ between the dumps")
        sa, sb = ca["samples"].flatten(0, 1), cb["samples"].flatten(0, 1)
        diff = float((sa - sb).abs().max())
        agree = "∞ (identical)" if diff == 0 else f"{float(_psnr(sa, sb).min()):.1f} (lowest sample)"
        qa, qb = _psnr(ca["mean"], ca["x"]).mean(), _psnr(cb["mean"], cb["x"]).mean()
        changed = cb.get("changed_by")
        surprises += (diff > 0) if changed is None else (diff == 0)
        expected = "identical" if changed is None else f"differs ({changed})"
        print(f"| {name} | {expected} | {ca['nfe']}/{cb['nfe']} | {diff:.2e} | {agree} | {float(qa):.2f} | "
              f"{float(qb):.2f} |")
    print(f"\n{surprises} case(s) against expectation")
    return surprises


def _rows(folder: Path) -> dict[tuple[str, str], dict[int, dict]]:
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for f in sorted(Path(folder).glob("results.rank*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            out.setdefault((r["task"], r["method"]), {})[int(r["image"])] = r
    return out


def _mean_se(v: list[float]) -> tuple[float, float]:
    n = len(v)
    m = sum(v) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1)) if n > 1 else float("nan")
    return m, sd / math.sqrt(n)


def suites(before: Path, after: Path, metric: str) -> None:
    a, b = _rows(before), _rows(after)
    print(f"| task | method | images | {metric} before | {metric} after | paired difference | difference / SE |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(set(a) & set(b)):
        common = sorted(set(a[key]) & set(b[key]))
        va = [a[key][i][metric] for i in common]
        vb = [b[key][i][metric] for i in common]
        if not common or any(v is None for v in va + vb):
            continue
        (ma, sa), (mb, sb) = _mean_se(va), _mean_se(vb)
        md, sd = _mean_se([q - p for p, q in zip(va, vb)])
        z = md / sd if sd > 0 else (0.0 if md == 0 else float("inf"))
        f = ".3f" if metric == "psnr" else ".4f"
        print(f"| {key[0]} | {key[1]} | {len(common)} | {ma:{f}} ± {sa:{f}} | {mb:{f}} ± {sb:{f}} | "
              f"{md:+{f}} ± {sd:{f}} | {z:+.2f} |")
    only = sorted(set(a) ^ set(b))
    if only:
        print(f"\nin one run only: {only}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--dump", type=Path, help="run the cases with the importable invdiff and save the outputs here")
    g.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    g.add_argument("--suites", nargs=2, type=Path, metavar=("BEFORE_DIR", "AFTER_DIR"))
    ap.add_argument("--cases", default=None, help="with --dump: comma-separated case names (default: all)")
    ap.add_argument("--metric", default="psnr", choices=("psnr", "ssim"), help="with --suites")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.dump:
        dump(args.dump, args.cases.split(",") if args.cases else None)
    elif args.compare:
        raise SystemExit(1 if compare(*args.compare) else 0)
    else:
        suites(*args.suites, args.metric)


if __name__ == "__main__":
    main()
