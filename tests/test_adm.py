"""guided-diffusion (ADM) compatible U-Net, foreign checkpoint loading and diffusers models."""

import math
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

import invdiff.operators as O
from invdiff.nets.adm import ADM, ADMConfig, FFHQ_DPS, IMAGENET256_UNCOND, infer_adm_config
from invdiff.nets.checkpoints import EpsOutput, load_foreign_checkpoint
from invdiff.prior import load
from invdiff.samplers import restore



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run big random networks once; one thread is enough. The setting is restored afterwards: no test
    may change process-wide state for the tests after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the guided-diffusion parameter layout, written out from the architecture --------------------------

def guided_diffusion_layout(*, in_ch, model_ch, mults, res_blocks, attention_ds, learn_sigma, scale_shift,
                            updown, class_cond=False):
    """(name -> shape) of guided-diffusion's UNetModel from first principles.

    Encoder: a 3x3 stem, then per level `res_blocks` ResBlocks (+ attention where the downsampling factor
    is in `attention_ds`) and, except at the last level, a downsampler (a ResBlock when `updown`, else a
    stride-2 conv `op`). Middle: ResBlock, attention, ResBlock. Decoder: per level (deepest first)
    res_blocks+1 ResBlocks on [h, skip] concatenations (+ attention), the last one of each level but the
    top followed by an upsampler. Head: norm, SiLU, 3x3 conv to 3 or 6 channels."""
    emb = 4 * model_ch
    p = {}

    def affine(name, c):  # GroupNorm32
        p[f"{name}.weight"], p[f"{name}.bias"] = (c,), (c,)

    def dense(name, i, o):
        p[f"{name}.weight"], p[f"{name}.bias"] = (o, i), (o,)

    def conv2(name, i, o, k):
        p[f"{name}.weight"], p[f"{name}.bias"] = (o, i, k, k), (o,)

    def conv1(name, i, o):
        p[f"{name}.weight"], p[f"{name}.bias"] = (o, i, 1), (o,)

    def resblock(name, i, o):
        affine(f"{name}.in_layers.0", i)
        conv2(f"{name}.in_layers.2", i, o, 3)
        dense(f"{name}.emb_layers.1", emb, 2 * o if scale_shift else o)
        affine(f"{name}.out_layers.0", o)
        conv2(f"{name}.out_layers.3", o, o, 3)
        if i != o:
            conv2(f"{name}.skip_connection", i, o, 1)

    def attention(name, c):
        affine(f"{name}.norm", c)
        conv1(f"{name}.qkv", c, 3 * c)
        conv1(f"{name}.proj_out", c, c)

    dense("time_embed.0", model_ch, emb)
    dense("time_embed.2", emb, emb)
    if class_cond:
        p["label_emb.weight"] = (1000, emb)

    widths = [int(m * model_ch) for m in mults]
    n_levels = len(mults)
    conv2("input_blocks.0.0", in_ch, widths[0], 3)
    skip_widths = [widths[0]]
    block, cur = 1, widths[0]
    for lv in range(n_levels):
        for _ in range(res_blocks):
            resblock(f"input_blocks.{block}.0", cur, widths[lv])
            cur = widths[lv]
            if 2 ** lv in attention_ds:
                attention(f"input_blocks.{block}.1", cur)
            skip_widths.append(cur)
            block += 1
        if lv < n_levels - 1:
            if updown:
                resblock(f"input_blocks.{block}.0", cur, cur)
            else:
                conv2(f"input_blocks.{block}.0.op", cur, cur, 3)
            skip_widths.append(cur)
            block += 1

    resblock("middle_block.0", cur, cur)
    attention("middle_block.1", cur)
    resblock("middle_block.2", cur, cur)

    block = 0
    for lv in reversed(range(n_levels)):
        for r in range(res_blocks + 1):
            resblock(f"output_blocks.{block}.0", cur + skip_widths.pop(), widths[lv])
            cur = widths[lv]
            sub = 1
            if 2 ** lv in attention_ds:
                attention(f"output_blocks.{block}.1", cur)
                sub = 2
            if lv > 0 and r == res_blocks:
                if updown:
                    resblock(f"output_blocks.{block}.{sub}", cur, cur)
                else:
                    conv2(f"output_blocks.{block}.{sub}.conv", cur, cur, 3)
            block += 1
    assert not skip_widths

    affine("out.0", cur)
    conv2("out.2", widths[0], in_ch * (2 if learn_sigma else 1), 3)
    return p


FFHQ_LAYOUT_FLAGS = dict(in_ch=3, model_ch=128, mults=(1, 1, 2, 2, 4, 4), res_blocks=1,
                         attention_ds={256 // 16}, learn_sigma=True, scale_shift=True, updown=True)


@pytest.fixture(scope="module")
def ffhq_layout():
    return guided_diffusion_layout(**FFHQ_LAYOUT_FLAGS)


@pytest.fixture(scope="module")
def ffhq_model():
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        return ADM(FFHQ_DPS)


def test_ffhq_dps_state_dict_matches_guided_diffusion(ffhq_model, ffhq_layout):
    got = {k: tuple(v.shape) for k, v in ffhq_model.state_dict().items()}
    assert set(got) == set(ffhq_layout), (sorted(set(got) - set(ffhq_layout))[:5], sorted(set(ffhq_layout) - set(got))[:5])
    wrong = {k: (got[k], s) for k, s in ffhq_layout.items() if got[k] != s}
    assert not wrong
    # a few spot checks of the layout itself
    assert ffhq_layout["out.2.weight"] == (6, 128, 3, 3)
    assert ffhq_layout["input_blocks.0.0.weight"] == (128, 3, 3, 3)
    assert ffhq_layout["middle_block.0.emb_layers.1.weight"] == (2 * 512, 512)
    assert "input_blocks.2.0.in_layers.2.weight" in ffhq_layout  # resblock_updown downsampler


def test_ffhq_dps_parameter_count(ffhq_model, ffhq_layout):
    n_layout = sum(math.prod(s) for s in ffhq_layout.values())
    n_model = sum(p.numel() for p in ffhq_model.parameters())
    assert n_model == n_layout
    # ballpark: the 3x3 convolutions of the ResBlocks dominate
    convs3 = sum(math.prod(s) for k, s in ffhq_layout.items() if len(s) == 4 and s[-1] == 3)
    assert convs3 < n_layout < 1.5 * convs3
    assert 5e7 < n_layout < 2e8


def test_infer_config_of_presets(ffhq_model):
    cfg = infer_adm_config(ffhq_model.state_dict())
    assert cfg.mults == FFHQ_DPS.mults and cfg.attention_ds == FFHQ_DPS.attention_ds
    for f in ("num_channels", "num_res_blocks", "learn_sigma", "class_cond", "use_scale_shift_norm",
              "resblock_updown", "num_head_channels", "in_channels"):
        assert getattr(cfg, f) == getattr(FFHQ_DPS, f), f
    with torch.device("meta"):
        imagenet = ADM(IMAGENET256_UNCOND)
    cfg = infer_adm_config(imagenet.state_dict())
    assert cfg.num_res_blocks == 2 and cfg.num_channels == 256 and cfg.attention_ds == {8, 16, 32}
    layout = guided_diffusion_layout(in_ch=3, model_ch=256, mults=(1, 1, 2, 2, 4, 4), res_blocks=2,
                                     attention_ds={8, 16, 32}, learn_sigma=True, scale_shift=True, updown=True)
    assert {k: tuple(v.shape) for k, v in imagenet.state_dict().items()} == layout


@pytest.mark.parametrize("flags", [
    dict(resblock_updown=False), dict(use_scale_shift_norm=False, learn_sigma=False),
    dict(channel_mult="1,2,2", num_res_blocks=2, attention_resolutions="16,8"), dict(class_cond=True),
])
def test_layout_variants(flags):
    cfg = ADMConfig(**{**TINY.__dict__, **flags})
    with torch.device("meta"):
        net = ADM(cfg)
    layout = guided_diffusion_layout(in_ch=3, model_ch=cfg.num_channels, mults=cfg.mults, res_blocks=cfg.num_res_blocks,
                                     attention_ds=cfg.attention_ds, learn_sigma=cfg.learn_sigma,
                                     scale_shift=cfg.use_scale_shift_norm, updown=cfg.resblock_updown,
                                     class_cond=cfg.class_cond)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout
    back = infer_adm_config(net.state_dict(), image_size=32, num_head_channels=cfg.num_head_channels)
    assert back == ADMConfig(**{**cfg.__dict__, "channel_mult": ",".join(str(int(m)) for m in cfg.mults)})


# ---- a tiny randomly initialised ADM through the public loaders ---------------------------------------

TINY = ADMConfig(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                 num_head_channels=16, learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True)


def _tiny_adm(cfg=TINY):
    torch.manual_seed(0)
    net = ADM(cfg)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
    return net.eval()


def _as_loaded(net):
    """``net`` with the head layout a loader infers: the head count is not stored in a state dict, and the
    loaders assume 64 channels per head (TINY has 16), which changes the attention but not the weights."""
    ref = ADM(replace(net.config, num_head_channels=64)).eval()
    ref.load_state_dict(net.state_dict())
    return ref


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    net = _tiny_adm()
    path = tmp_path_factory.mktemp("adm") / "tiny_adm.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_tiny_adm_loads_as_prior(tiny_ckpt):
    net, path = tiny_ckpt
    prior = load(str(path))
    assert prior.channels == 3 and prior.multiple == 2 and prior.config["arch"] == "adm"
    x = torch.randn(1, 3, 32, 32)
    t = torch.tensor([500])
    with torch.no_grad():
        eps = prior.eps(x, t)
        raw = _as_loaded(net)(x, t)
    assert eps.shape == (1, 3, 32, 32) and torch.isfinite(eps).all()
    assert eps.abs().mean() > 1e-3  # not the zero-initialised head
    torch.testing.assert_close(eps, raw[:, :3])
    torch.testing.assert_close(prior.net.variance_output(x, t), raw[:, 3:])
    prior.check_image(torch.zeros(1, 3, 24, 40))  # any multiple of 2
    with pytest.raises(ValueError, match="multiples of 2"):
        prior.check_image(torch.zeros(1, 3, 25, 40))


def test_infer_config_round_trip(tiny_ckpt):
    net, _ = tiny_ckpt
    cfg = infer_adm_config(net.state_dict(), image_size=32)
    # head count is not in the shapes: the default guess is 64 channels per head
    assert cfg.num_head_channels == 64
    assert cfg == ADMConfig(**{**TINY.__dict__, "num_head_channels": 64})
    assert infer_adm_config(net.state_dict(), image_size=32, num_head_channels=16) == TINY
    default = infer_adm_config(net.state_dict())  # image size unknown: the same levels, expressed for 256
    assert default.attention_ds == TINY.attention_ds and default.mults == TINY.mults


def test_containers_and_module_prefix(tiny_ckpt, tmp_path):
    net, _ = tiny_ckpt
    path = tmp_path / "wrapped.pth"
    torch.save({"ema": {f"module.{k}": v for k, v in net.state_dict().items()}, "step": 3}, path)
    loaded, info = load_foreign_checkpoint(path)
    assert info == {**info, "arch": "adm", "learn_sigma": True, "in_channels": 3, "image_size": None, "multiple": 2}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(EpsOutput(loaded, True)(x, torch.tensor([3, 900])),
                                   _as_loaded(net)(x, torch.tensor([3, 900]))[:, :3])


def test_tiny_adm_dps_restoration(tiny_ckpt):
    _, path = tiny_ckpt
    prior = load(str(path))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    mask = (torch.rand(1, 1, 32, 32, generator=g) > 0.5).float()
    op = O.Inpainting(mask)
    y = op(x)
    res = restore(y, op, 0.05, prior, method="dps", steps=2)
    assert res.mean.shape == (1, 3, 32, 32) and torch.isfinite(res.mean).all()
    assert res.vjps == 2


# ---- clear errors ---------------------------------------------------------------------------------------

def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load(str(path))


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"a": object()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load(str(path))


def test_unknown_architecture(tmp_path):
    path = tmp_path / "linear.pt"
    torch.save(nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(ValueError, match="unknown architecture"):
        load(str(path))
    with pytest.raises(ValueError, match="not an ADM / guided-diffusion checkpoint"):
        infer_adm_config(nn.Linear(3, 4).state_dict())


def test_diffusers_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    with pytest.raises(ValueError, match=r"pip install 'invdiff\[diffusers\]'"):
        load(str(tmp_path))


# ---- diffusers ------------------------------------------------------------------------------------------

def _tiny_unet():
    diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional dependency (pip install 'invdiff[diffusers]')")
    torch.manual_seed(0)
    return diffusers, diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8).eval()


def test_diffusers_folder_loads(tmp_path):
    diffusers, unet = _tiny_unet()
    folder = tmp_path / "tiny_unet"
    unet.save_pretrained(folder)
    sched = diffusers.DDPMScheduler()
    sched.save_pretrained(folder)
    prior = load(str(folder))
    assert prior.channels == 3 and prior.image_size == 32 and prior.multiple == 2
    torch.testing.assert_close(prior.schedule.betas, sched.betas.double(), rtol=1e-5, atol=1e-8)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        eps = prior.eps(x, torch.tensor([250]))
        ref = unet(x, torch.tensor([250])).sample
    assert eps.shape == (1, 3, 32, 32) and torch.isfinite(eps).all()
    torch.testing.assert_close(eps, ref)


def test_diffusers_pipeline_layout_and_schedules(tmp_path):
    diffusers, unet = _tiny_unet()
    folder = tmp_path / "pipe"
    unet.save_pretrained(folder / "unet")
    diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=500).save_pretrained(folder / "scheduler")
    prior = load(str(folder))
    assert prior.schedule.kind == "cosine" and prior.schedule.num_timesteps == 500
    with torch.no_grad():
        assert torch.isfinite(prior.eps(torch.randn(1, 3, 16, 16), torch.tensor([10]))).all()

    diffusers.DDPMScheduler(prediction_type="v_prediction").save_pretrained(folder / "scheduler")
    with pytest.raises(ValueError, match="prediction_type"):
        load(str(folder))
