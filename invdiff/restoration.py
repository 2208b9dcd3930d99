"""The restore step of ``invdiff solve`` and its report: run the method on the padded problem, crop back to the
input's size (grey again for a grey photo restored by an RGB prior), score against the truth when simulating, and
record everything that was run and where each part of the degradation came from."""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np
import torch
from torch import Tensor


def _peak_memory_mib(device: str) -> tuple[float | None, str]:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "GPU memory allocated by torch"
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak resident memory (CPU)"
    except (ImportError, OSError):  # pragma: no cover - not on Linux/macOS
        return None, "unavailable"


def _versions() -> dict:
    import platform

    from . import __version__

    v = {"invdiff": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        from importlib.metadata import version

        v["pillow"] = version("pillow")
    except Exception:  # pragma: no cover - metadata missing
        pass
    return v


def crop_result(res, size: tuple[int, int], grey: bool):
    """The restoration cut back to ``size`` (the padding removed), in grey (channel mean) when ``grey``."""
    h, w = size
    samples = res.samples[..., :h, :w]
    if grey:
        samples = samples.mean(2, keepdim=True)
    mean = samples.mean(1)
    std = samples.std(1, unbiased=False) if samples.shape[1] > 1 else torch.zeros_like(mean)
    if not grey:  # the sampler's own mean/std, cropped (identical up to float rounding; kept exact)
        mean, std = res.mean[..., :h, :w], res.std[..., :h, :w]
    elif getattr(res, "chosen", None) is not None:  # best-of-K: the chosen sample, not the mean
        mean = samples[torch.arange(samples.shape[0]), res.chosen.to(samples.device)]
    return dataclasses.replace(res, samples=samples, mean=mean, std=std)


def measurement_metrics(y: Tensor, x_true: Tensor, task, opts) -> dict | None:
    """PSNR/SSIM of the measurement itself against the truth, where it is an image of the truth's grid (SR:
    bicubic upsampling; colourisation: the grey image repeated); None for a Fourier measurement."""
    import torch.nn.functional as F

    from .metrics import psnr, ssim

    if task.measurement != "image":
        return None
    yy = y.detach().float().to(x_true.device)
    if task.upscale(opts) > 1:
        s = task.upscale(opts)
        yy = F.interpolate(yy, scale_factor=s, mode="bicubic", align_corners=False)
    yy = yy[..., : x_true.shape[-2], : x_true.shape[-1]]
    if tuple(yy.shape[-2:]) != tuple(x_true.shape[-2:]):
        return None
    if yy.shape[1] != x_true.shape[1]:
        if yy.shape[1] != 1:
            return None
        yy = yy.expand(-1, x_true.shape[1], -1, -1)
    yy = yy.clamp(-1, 1)
    return {"psnr": float(psnr(yy, x_true)[0]), "ssim": float(ssim(yy, x_true)[0])}


#: task options that only shape a simulated degradation (a random kernel's or mask's draw): a measured photo's
#: report leaves them out, since nothing drew them
SIMULATION_ONLY = ("motion_intensity", "motion_model", "shake_grid", "mask_fraction")


def operator_parameters(op, opts, req, task) -> dict:
    """The operator's entry of the report: its class and repr, and the task's own options (``Task.options``) as they
    were set; those that only shape a simulation (``SIMULATION_ONLY``) only with --simulate."""
    d = {"operator": type(op).__name__, "repr": repr(op).splitlines()[0][:300]}
    for k in task.options:
        if k not in ("kernel", "mask") and (req.simulate or k not in SIMULATION_ONLY):
            d[k] = getattr(opts, k)
    if "mask" in task.options:
        d["mask"] = req.mask if not isinstance(opts.mask, Tensor) else f"image {tuple(opts.mask.shape[-2:])}"
    if "kernel" in task.options:
        d["kernel"] = str(req.kernel) if req.kernel is not None else None
    k = getattr(op, "kernel", None)
    if isinstance(k, Tensor):
        d["kernel_shape"] = list(k.shape[-2:])
    m = getattr(op, "mask", None)
    if isinstance(m, Tensor):
        d["observed_fraction"] = round(float((m > 0).float().mean()), 6)
    return d


def _restore(plan, req, prob, callback):
    from .rng import make_generators
    from .samplers import restore

    for w in [*plan.warnings, *prob.warnings]:
        warnings.warn(w, stacklevel=3)
    from .measured import memory_plan
    from .samplers.registry import METHODS
    from .tiling import count_tiles

    blind = str(prob.degradation.get("kernel", {}).get("source", "")).startswith("estimated")
    preset, hp, steps = _run_settings(plan, req, prob, blind)
    if blind and plan.task.blind == "motion" and _kernel_em(plan, req, prob, preset, hp, steps, callback):
        preset, hp, steps = _refined_settings(plan, req, prob, preset)
    at_once = req.samples if not isinstance(req.batch_size, int) else min(req.samples, req.batch_size)
    xs = tuple(plan.task.x_shape(tuple(prob.y.shape), prob.opts))
    tile = memory_plan(plan.prior, xs, at_once, req.device, gradient=METHODS[plan.method].network_gradient,
                       tile=req.tile)
    if str(req.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if tile is not None:
        plan.prior.tiled(tile)
        prob.tiles = {"tile": tile, "overlap": plan.prior._tile[1], "count": count_tiles(xs[-2:], *plan.prior._tile),
                      "reason": "given (--tile)" if req.tile is not None else "the whole image would not fit in memory"}
    try:
        res = restore(prob.y.to(req.device), prob.op.to(req.device), plan.task.noise(prob.opts), plan.prior,
                      method=plan.method, steps=steps, samples=req.samples, callback=callback,
                      batch_size=req.batch_size, generator=make_generators(req.seed, 1, req.device, purpose="sample"),
                      select=req.select, symmetry=req.symmetry, **hp)
    finally:
        plan.prior.tiled(None)
    return res, hp, time.perf_counter() - t0


def _run_settings(plan, req, prob, blind: bool):
    """(preset variant, hyper-parameters, steps) of the restoration: the task's preset for this operator (its blind
    variant for an estimated kernel) under the request's --hp and --steps."""
    preset = plan.preset.for_operator(prob.op, blind=blind) if plan.preset is not None else None
    hp = {**(preset.run_hyper_parameters(plan.task) if preset else plan.task.hyper_parameters.get(plan.method, {})),
          **req.hyper_parameters}
    return preset, hp, req.steps if req.steps is not None else (preset.steps if preset else None)


def _refined_settings(plan, req, prob, blind_preset):
    """(preset, hyper-parameters, steps) of the final restoration of a kernel refined by EM: the refined kernel is
    restored as a known one (the task's preset), its remaining error taken as extra noise of the blind variant's
    level τ (benchmarks/blind/tuning_em_tau.json), which the report records."""
    from . import blind

    tau = blind_preset.kernel_error_tau if blind_preset is not None else 0.0
    preset, hp, steps = _run_settings(plan, req, prob, False)
    prob.degradation.setdefault("kernel", {})["kernel_error_tau"] = tau
    return preset, blind.with_kernel_error(hp, tau, float(prob.opts.noise_sigma), req.hyper_parameters), steps


def _wants_fast_em(plan, req, preset) -> bool:
    """Whether the blind motion kernel also gets Fast Diffusion EM's candidate (--fast-em, else the preset's); one
    clear error, before any work, for a method that cannot refit the kernel while it samples."""
    from .samplers.registry import METHODS

    wanted = req.fast_em if req.fast_em is not None else bool(preset is not None and preset.kernel_fast_em)
    if wanted and not METHODS[plan.method].operator_update:
        raise ValueError(f"--fast-em refits the kernel at every step, which method {plan.method!r} cannot; use "
                         f"{', '.join(n for n, v in METHODS.items() if v.operator_update)} or --no-fast-em")
    return wanted


def _kernel_em(plan, req, prob, preset, hp: dict, steps, callback) -> int:
    """Refine a blind motion-kernel estimate by EM with this request's own restoration with the blind settings (one
    sample, its own seeded stream), ``--kernel-em`` rounds or the preset's; the problem's operator takes the refined
    kernel and the report records the rounds and the E-step's settings. Returns the rounds. After them the kernel
    is restored as a known one, by the task's preset: on the tuning split the refined kernel gains from the preset's
    weight on the data (λ 4) over the blind variant's (λ 100) (benchmarks/blind/tuning_kernel_em.json)."""
    from . import blind
    from .rng import make_generators
    from .samplers import restore

    rounds = req.kernel_em if req.kernel_em is not None else (preset.kernel_em if preset is not None else 0)
    entry = prob.degradation.setdefault("kernel", {})
    entry["em_rounds"] = rounds
    if rounds == 0:
        return 0
    xs = tuple(plan.task.x_shape(tuple(prob.y.shape), prob.opts))
    y, operator = _em_window(plan, req, prob)
    noise = plan.task.noise(prob.opts)
    n = preset.kernel_em_samples if preset is not None else 1

    def e_step(k: Tensor, refit=None) -> Tensor:  # (n, C, H, W): the M-step fits the kernel to all n samples
        update = None if refit is None else lambda x0, t: operator(refit(x0))
        return restore(y, operator(k), noise, plan.prior, method=plan.method, steps=steps, samples=n,
                       callback=callback, generator=make_generators(req.seed, 1, req.device, purpose="kernel-em"),
                       operator_update=update, **hp).samples[0]

    k0 = prob.op.kernel.reshape(-1, *prob.op.kernel.shape[-2:])[0].detach().float().cpu()
    t0 = time.perf_counter()
    from .measured import kernel_prior_for

    kp, _ = kernel_prior_for(plan.task, plan.preset, req.kernel_prior)
    per_step = bool(preset is not None and preset.kernel_em_per_step)
    prior_rounds = preset.kernel_em_prior_rounds if preset is not None else None
    fast = _wants_fast_em(plan, req, preset)
    k, _ = blind.refine_kernel_em(y.cpu(), k0, e_step, rounds, callback=callback, prior=kp, per_step=per_step,
                                  prior_rounds=prior_rounds)
    if fast:
        k = _kernel_choice(plan, req, prob, preset, hp, k, kp, callback)
    prob.opts = prob.opts.with_(kernel=k)
    prob.op = plan.task.operator(xs, prob.opts)
    entry["em_change"] = round(float((k - k0).norm() / k0.norm()), 5)
    entry["em_seconds"] = round(time.perf_counter() - t0, 2)
    entry["em_hyper_parameters"] = {"steps": steps, **hp}
    entry["em_per_step"] = per_step
    entry["em_samples"] = n
    if kp is not None:  # the rounds whose M-step had the kernel prior
        entry["em_prior_rounds"] = rounds if prior_rounds is None else min(rounds, prior_rounds)
    return rounds


def _em_window(plan, req, prob):
    """(y, the operator of a kernel) that the kernel EM works on, on req's device: the window of the photo the blind
    estimate came from (its report's ``region``, ``invdiff.measured.estimate_window``), else the whole padded one."""
    y = prob.y
    region = prob.degradation.get("kernel", {}).get("region")
    if region is not None and tuple(region[2:]) != tuple(prob.size):
        t, left, h, w = region
        y = y[..., t: t + h, left: left + w]
    xs = tuple(plan.task.x_shape(tuple(y.shape), prob.opts))

    def operator(k: Tensor):
        return plan.task.operator(xs, prob.opts.with_(kernel=k)).to(req.device)

    return y.to(req.device), operator


def _kernel_choice(plan, req, prob, preset, hp: dict, k_em: Tensor, kp, callback) -> Tensor:
    """The EM's kernel or Fast Diffusion EM's (Laroche et al. 2024: one E-step from pure noise and a centred delta,
    the kernel refitted to the prior's x̂0 at every step, then the M-step), whichever gives the final restoration
    the lower score by the preset's rule (``invdiff.blind.choice_score``, ``invdiff.blind.choose``; rules joined by
    "+" keep the EM's unless all of them prefer the other; ``FAST_EM_RULE``, the residual and the sparsity, unless
    ``kernel_fast_em`` names another). The two fail on different photos (benchmarks/RESULTS.md, "Two kernels, and
    a rule to choose"). Both candidates, their scores, the rule and the choice go into the report."""
    from . import blind
    from .rng import make_generators
    from .samplers import restore

    entry = prob.degradation["kernel"]
    y, operator = _em_window(plan, req, prob)
    noise = plan.task.noise(prob.opts)
    fast = {**blind.FAST_EM_E_STEP, **((preset.kernel_fast_em or {}) if preset is not None else {})}
    fast_steps, rule = int(fast.pop("steps")), fast.pop("rule", blind.FAST_EM_RULE)
    fast_hp = {**hp, **fast}

    def e_step(k: Tensor, refit) -> Tensor:
        return restore(y, operator(k), noise, plan.prior, method=plan.method, steps=fast_steps, callback=callback,
                       generator=make_generators(req.seed, 1, req.device, purpose="fast-em"),
                       operator_update=lambda x0, t: operator(refit(x0)), **fast_hp).samples[0]

    t0 = time.perf_counter()
    delta = torch.zeros_like(k_em)
    delta[k_em.shape[-2] // 2, k_em.shape[-1] // 2] = 1.0
    k_fast, _ = blind.refine_kernel_em(y.cpu(), delta, e_step, 1, callback=callback, prior=kp, per_step=True)
    _, final_hp, final_steps = _refined_settings(plan, req, prob, preset)
    candidates, scores, parts = {}, {}, blind.choice_rules(rule)
    for name, k in (("em", k_em), ("fast_em", k_fast)):  # each restored as the final restoration will be
        op = operator(k)
        x = restore(y, op, noise, plan.prior, method=plan.method, steps=final_steps, callback=callback,
                    generator=make_generators(req.seed, 1, req.device, purpose="sample"), **final_hp).samples[0]
        candidates[name] = k
        scores[name] = {p: float(blind.choice_score(p, plan.prior, x, y, op)[0]) for p in parts}
    chosen = blind.choose(scores, rule, default="em")
    entry["candidates"] = {n: ({"score": round(v[parts[0]], 6)} if len(parts) == 1
                               else {"scores": {p: round(v[p], 6) for p in parts}}) for n, v in scores.items()}
    entry["candidates"]["fast_em"]["hyper_parameters"] = {"steps": fast_steps, **fast_hp}
    entry["choice_rule"] = rule
    entry["chosen"] = chosen
    entry["fast_em_seconds"] = round(time.perf_counter() - t0, 2)
    return candidates[chosen]


def _scores(req, plan, prob, res, x_true, obs) -> dict:
    from .metrics import lpips_or_none, score

    lp = lpips_or_none(req.lpips_backbone, device=req.device)
    sc = score(res.mean, x_true, lpips_model=lp)
    out = {"metrics": {k: (float(v[0]) if v is not None else "unavailable") for k, v in sc.items()}}
    if lp is None:
        out["metrics"]["lpips"] = "unavailable (AlexNet backbone not found; see invdiff.metrics or --lpips-backbone)"
    y = prob.y[..., : prob.input_shape[-2], : prob.input_shape[-1]]
    if obs.grey_input and y.shape[1] == 3:
        y = y.mean(1, keepdim=True)
    out["measurement_metrics"] = measurement_metrics(y, x_true, plan.task, prob.opts)
    return out


def _kernel_error(prob) -> float | None:
    true_k = prob.degradation.pop("simulated_kernel", None)
    prob.true_kernel = true_k
    k = getattr(prob.op, "kernel", None)
    if true_k is None or not isinstance(k, Tensor):
        return None
    from .blind import kernel_error

    return round(float(kernel_error(k.reshape(-1, *k.shape[-2:])[0].cpu(), true_k.cpu())), 5)


def run_restoration(plan, req, obs, prob, x_true, callback):
    """(cropped restoration, report) for one problem."""
    from .samplers.registry import METHODS

    res, hp, seconds = _restore(plan, req, prob, callback)
    peak, peak_kind = _peak_memory_mib(req.device)
    res = crop_result(res, prob.size, obs.grey_input)
    if obs.grey_input and x_true is not None:
        x_true = x_true.mean(1, keepdim=True)
    used_hp = dict(getattr(res, "hyper_parameters", hp))
    steps = int(used_hp.get("steps", req.steps or METHODS[plan.method].defaults["steps"]))
    nfe, vjps = int(res.nfe), int(getattr(res, "vjps", 0))
    kerr = _kernel_error(prob)
    if kerr is not None:
        prob.degradation["kernel"]["kernel_error"] = kerr
    report = {"task": plan.task.name, "method": plan.method, "prior": plan.prior_name, "palette": plan.palette,
              "image": str(req.image), "simulate": req.simulate, "seed": req.seed, "samples": req.samples,
              "noise_sigma": prob.opts.noise_sigma, "noise_scale": "[-1, 1]", "steps": steps, "hyper_parameters": used_hp,
              "nfe": nfe, "nfe_per_sample": nfe, "nfe_total": nfe * req.samples, "vjps": vjps,
              "vjps_total": vjps * req.samples, "seconds": round(seconds, 3), "device": req.device,
              "peak_memory_mib": None if peak is None else round(peak, 1), "peak_memory_kind": peak_kind,
              "image_shape": list(res.mean.shape[1:]), "measurement_shape": list(prob.input_shape[1:]),
              "measurement_kind": plan.task.measurement, "output_channels": int(res.mean.shape[1]),
              "grey_input": obs.grey_input, "degradation": prob.degradation,
              "operator": operator_parameters(prob.op, prob.opts, req, plan.task), "versions": _versions(),
              "warnings": [*plan.warnings, *prob.warnings]}
    if prob.tiles is not None:
        report["tiles"] = prob.tiles
    if getattr(res, "chosen", None) is not None:
        mbr = res.distances is not None
        report["selection"] = {"by": "RMS distance to the mean of the samples (mbr)" if mbr else "residual ||y - A(x)||",
                               "chosen": int(res.chosen[0]), "residuals": [round(float(r), 6) for r in res.residuals[0]],
                               **({"distances": [round(float(d), 6) for d in res.distances[0]]} if mbr else {})}
    if x_true is not None:
        report.update(_scores(req, plan, prob, res, x_true, obs))
    return res, report


__all__ = ["crop_result", "measurement_metrics", "operator_parameters", "run_restoration"]
