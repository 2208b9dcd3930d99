import math
from dataclasses import replace

import torch

from invdiff.nets.unet import UNetConfig
from invdiff.train import TrainConfig, Trainer

TINY = UNetConfig(in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(), groups=8)


def toy_batches(n, g):
    """A toy distribution: a bright square at a random position on a dark 8x8 background."""
    x = -torch.ones(n, 1, 8, 8)
    pos = torch.randint(0, 5, (n, 2), generator=g)
    for i in range(n):
        r, c = pos[i].tolist()
        x[i, :, r: r + 4, c: c + 4] = 1.0
    return x


def _cfg(tmp_path, steps):
    return TrainConfig(name="toy", data="toy", unet=TINY, batch_size=32, lr=2e-3, warmup=10, steps=steps,
                       ckpt_dir=str(tmp_path), ckpt_every=1000, sample_every=0, schedule={"kind": "linear", "num_timesteps": 100})


def _eval_loss(trainer, n=256):
    from invdiff.train import diffusion_loss

    g = torch.Generator().manual_seed(123)
    x = toy_batches(n, g)
    with torch.no_grad():
        return float(diffusion_loss(trainer.net, trainer.schedule, x, g))


def test_training_lowers_the_loss(tmp_path):
    tr = Trainer(_cfg(tmp_path, 200), batches=toy_batches, quiet=True)
    before = _eval_loss(tr)
    tr.run()
    after = _eval_loss(tr)
    # an untrained (zero-output) net has loss E‖ε‖² = 1; a trained one must do much better
    assert math.isclose(before, 1.0, rel_tol=0.15)
    assert after < 0.6 * before


def test_exact_resume(tmp_path):
    a = Trainer(_cfg(tmp_path / "a", 20), batches=toy_batches, quiet=True).run()
    half = Trainer(replace(_cfg(tmp_path / "b", 10)), batches=toy_batches, quiet=True).run()
    half.save_state()
    resumed = Trainer(_cfg(tmp_path / "b", 20), batches=toy_batches, quiet=True)
    assert resumed.step == 10
    resumed.run()
    for (k, p), (_, q) in zip(a.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(p, q), k
    for p, q in zip(a.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(p, q)


def test_export_records_training(tmp_path):
    tr = Trainer(_cfg(tmp_path, 5), batches=toy_batches, quiet=True).run()
    path = tr.export(tmp_path / "toy.safetensors")
    from invdiff.prior import load

    p = load(path)
    assert p.config["training"]["steps"] == 5 and p.config["training"]["images_seen"] == 160
