"""Reports of a suite run: results.csv (per image), report.md and report.csv (mean ± std per task × method),
one image grid per task and a PSNR-vs-NFE plot."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from ..io import atomic_path

METRICS = ("psnr", "ssim", "lpips", "nfe", "seconds", "peak_mem_mib")


def load_results(out: Path) -> list[dict]:
    """Every row of the folder's results files, one per (task, method, image); a (task, method) whose rows come from
    more than one configuration is an error (a table never mixes them)."""
    rows: dict[tuple, dict] = {}
    configs: dict[tuple, set] = defaultdict(set)
    for f in sorted(Path(out).glob("results.rank*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(r, dict) or not {"task", "method", "image"} <= set(r):
                continue
            rows[(r["task"], r["method"], r["image"])] = r
            configs[(r["task"], r["method"])].add(r.get("config_id"))
    mixed = [k for k, v in configs.items() if len(v) > 1]
    if mixed:
        raise ValueError(f"{out}: the results of {mixed[0][0]} / {mixed[0][1]} come from {len(configs[mixed[0]])} "
                         "configurations; keep one (another --out per configuration)")
    return sorted(rows.values(), key=lambda r: (r["task"], r["method"], r["image"]))


def _mean_std(v: list[float]) -> tuple[float, float]:
    m = sum(v) / len(v)
    return m, math.sqrt(sum((a - m) ** 2 for a in v) / len(v))


def summarise(rows: list[dict]) -> list[dict]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["method"])].append(r)
    out = []
    for (task, method), rs in sorted(groups.items()):
        s = {"task": task, "method": method, "images": len(rs)}
        for k in METRICS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            s[k] = _mean_std(vals) if vals else None
        out.append(s)
    return out


def _mem(s) -> str:
    return "n/a" if s["peak_mem_mib"] is None else f"{s['peak_mem_mib'][0]:.0f}"


def _fmt(v, digits):
    return "n/a" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def write_report(suite, out: Path) -> Path:
    out = Path(out)
    rows = load_results(out)
    summary = summarise(rows)
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["task", "method", "image", "prior", *METRICS, "vjps", "steps",
                                              "prior_sha256", "config_id"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with atomic_path(out / "report.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "method", "images"] + [f"{k}_{s}" for k in METRICS for s in ("mean", "std")])
        for s in summary:
            w.writerow([s["task"], s["method"], s["images"]] + [("" if s[k] is None else f"{s[k][j]:.6g}") for k in METRICS for j in (0, 1)])
    best = {}
    for s in summary:
        kind = "baseline" if s["method"].startswith("baseline:") else "diffusion"
        key = (s["task"], kind)
        if s["psnr"] and (key not in best or s["psnr"][0] > best[key][1]):
            best[key] = (s["method"], s["psnr"][0])
    priors = sorted({str(r.get("prior")) for r in rows if r.get("prior") and r["method"] != "palette"})
    lines = [f"# Suite `{suite.name}`", "", suite.description, "",
             f"Prior {', '.join(f'`{p}`' for p in priors) or 'n/a'}, noise σ = {suite.noise_sigma} on the [-1, 1] scale, seed {suite.seed}. PSNR/SSIM on "
             "[0, 1] (data range 1); LPIPS (AlexNet) n/a when its backbone is not available; time per image; "
             "peak GPU memory n/a on CPU. Mean ± std over images.", "",
             "| task | method | images | PSNR | SSIM | LPIPS | NFE | s / image | peak MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        star = " **best**" if best.get((s["task"], "diffusion" if not s["method"].startswith("baseline:") else "baseline"), (None,))[0] == s["method"] else ""
        lines.append(f"| {s['task']} | {s['method']}{star} | {s['images']} | {_fmt(s['psnr'], 2)} | {_fmt(s['ssim'], 3)} | "
                     f"{_fmt(s['lpips'], 3)} | {s['nfe'][0]:.0f} | {s['seconds'][0]:.3f} | {_mem(s)} |")
    lines += ["", "## Best diffusion method vs best classical baseline (PSNR)", "",
              "| task | best diffusion | PSNR | best baseline | PSNR | gain (dB) |", "|---|---|---|---|---|---|"]
    for task in sorted({s["task"] for s in summary}):
        d, b = best.get((task, "diffusion")), best.get((task, "baseline"))
        gain = f"{d[1] - b[1]:+.2f}" if d and b else "n/a"
        lines.append(f"| {task} | {d[0] if d else 'n/a'} | {d[1]:.2f} |" if d else f"| {task} | n/a | n/a |")
        lines[-1] += f" {b[0] if b else 'n/a'} | {f'{b[1]:.2f}' if b else 'n/a'} | {gain} |"
    lines += ["", "## Configurations", "", "Each row was computed with (and records) this configuration.", "",
              "| task | method | prior | weights SHA-256 | steps | hyper-parameters | seed | code | id |",
              "|---|---|---|---|---|---|---|---|---|"]
    firsts = {}
    for r in rows:
        firsts.setdefault((r["task"], r["method"]), r)
    for (task, method), r in sorted(firsts.items()):
        c = r.get("config") or {}
        sha = (c.get("prior_sha256") or "")[:12]
        hp = ", ".join(f"{k}={v}" for k, v in sorted((c.get("hyper_parameters") or {}).items()))
        lines.append(f"| {task} | {method} | {c.get('prior', r.get('prior')) or ''} | {sha} | {c.get('steps') or ''} | "
                     f"{hp} | {c.get('seed', '')} | {c.get('code_version', '')} | {r.get('config_id') or 'not recorded'} |")
    figs = write_figures(out, summary)
    if figs:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return out / "report.md"


def write_figures(out: Path, summary: list[dict]) -> list[Path]:
    """PSNR against network evaluations for every task, and a grid of examples per task (matplotlib's object API:
    the caller's backend is never changed)."""
    return [_psnr_vs_nfe(out, summary)] + [p for task in sorted({s["task"] for s in summary})
                                           if (p := _task_grid(out, task, [s["method"] for s in summary if s["task"] == task]))]


def _psnr_vs_nfe(out: Path, summary: list[dict]) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for task in sorted({s["task"] for s in summary}):
        pts = [(s["nfe"][0], s["psnr"][0], s["method"]) for s in summary if s["task"] == task and s["psnr"] and not s["method"].startswith("baseline:")]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=task)
            for p in pts:
                ax.annotate(p[2], (p[0], p[1]), fontsize=7)
    ax.set_xscale("symlog")
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    with atomic_path(out / "psnr_vs_nfe.png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return out / "psnr_vs_nfe.png"


def _task_grid(out: Path, task: str, methods: list[str]) -> Path | None:
    """Up to 4 example images of ``task``: ground truth, measurement and each method's restoration."""
    from matplotlib.figure import Figure

    from ..figures import display, magnitude_display

    ex = out / "examples"
    imgs = sorted({int(p.stem.rsplit("__", 1)[1]) for p in ex.glob("*.pt") if p.stem.split("__")[0] == task.replace("/", "_").replace(":", "-")})[:4]
    if not imgs:
        return None
    fig = Figure(figsize=(1.6 * (len(methods) + 2), 1.7 * len(imgs)))
    axes = fig.subplots(len(imgs), len(methods) + 2, squeeze=False)
    for r, i in enumerate(imgs):
        first = None
        for c, m in enumerate(methods):
            axes[r, c + 2].axis("off")
            f = ex / (f"{task}__{m.replace(':', '-')}__{i}.pt".replace("/", "_"))
            if not f.is_file():
                continue
            d = torch.load(f, weights_only=True)
            first = first or d
            axes[r, c + 2].imshow(display(d["restored"]))
            axes[r, c + 2].set_title(m.replace("baseline:", "") if r == 0 else "", fontsize=7)
        axes[r, 0].axis("off")
        axes[r, 1].axis("off")
        if first is not None:
            axes[r, 0].imshow(display(first["x"]))
            y = first["y"]
            if y.shape[-1] > first["x"].shape[-1]:  # phase retrieval: show the log-magnitude
                y = magnitude_display(y)
            axes[r, 1].imshow(display(y, first["x"]))
            if r == 0:
                axes[r, 0].set_title("ground truth", fontsize=7)
                axes[r, 1].set_title("measurement", fontsize=7)
    name = "grid_" + task.replace("[", "_").replace("]", "").replace(",", "_").replace("=", "") + ".png"
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return out / name
