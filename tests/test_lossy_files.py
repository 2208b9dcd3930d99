"""Measured photos from lossy files: what a JPEG's or lossy WebP's quantisation adds to the noise, and a Gaussian
blur read from the edges, which quantisation leaves alone."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from invdiff import operators as ops
from invdiff.io import compression_sigma, read_image, read_image_info


def _scene(n: int = 128, seed: int = 0) -> torch.Tensor:
    """Flat rectangles of random colours: step edges, whose blur the re-blur ratio reads exactly."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 3, n, n), -0.6)
    for _ in range(14):
        t, left = torch.randint(0, n - 28, (2,), generator=g).tolist()
        h, w = torch.randint(12, 40, (2,), generator=g).tolist()
        x[..., t: t + h, left: left + w] = torch.rand(3, 1, 1, generator=g) * 1.6 - 0.8
    return x


def _file(x: torch.Tensor, path, **save) -> None:
    a = ((x.clamp(-1, 1) + 1) / 2 * 255).round().byte()[0].permute(1, 2, 0).numpy()
    Image.fromarray(a if a.shape[-1] == 3 else a[..., 0]).save(path, **save)


def test_quantising_dct_coefficients_adds_mean_q2_over_12_to_the_pixels():
    """The error model behind compression_sigma: rounding each orthonormal DCT coefficient to a multiple of its
    step Q (coefficients much larger than Q) leaves a pixel error of variance mean(Q²)/12 (Parseval). 4,000 blocks
    of 64 pixels: the sample variance's relative standard error is about 1 %, so 5 % is the bound."""
    from invdiff.operators.jpeg import dct_matrix, quantisation_table

    d, q = dct_matrix(8), quantisation_table(80)
    g = torch.Generator().manual_seed(0)
    coef = (torch.rand(4000, 8, 8, generator=g, dtype=torch.float64) - 0.5) * 2000
    err = d.T @ (torch.round(coef / q) * q - coef) @ d
    assert abs(float(err.var()) / float((q**2).mean() / 12) - 1) < 0.05


def test_compression_sigma_reads_the_files_own_tables(tmp_path):
    rng = np.random.default_rng(0)
    luma = rng.integers(1, 30, 64).tolist()
    chroma = rng.integers(5, 60, 64).tolist()
    x = _scene(64)
    _file(x, tmp_path / "c.jpg", qtables=[luma, chroma])
    _file(x[:, :1], tmp_path / "g.jpg", qtables=[luma])
    _file(x, tmp_path / "c.png")
    vy, vc = np.mean(np.square(luma)) / 12, np.mean(np.square(chroma)) / 12
    assert compression_sigma(tmp_path / "c.jpg") == pytest.approx(2 * math.sqrt(vy + 2 * vc) / 255, rel=1e-12)
    assert compression_sigma(tmp_path / "c.jpg", "luma") == pytest.approx(2 * math.sqrt(vy) / 255, rel=1e-12)
    assert compression_sigma(tmp_path / "g.jpg") == pytest.approx(2 * math.sqrt(vy) / 255, rel=1e-12)  # no chroma
    assert compression_sigma(tmp_path / "c.png") is None


def test_lossy_files_are_told_apart(tmp_path):
    x = _scene(32)
    _file(x, tmp_path / "a.jpg", quality=90)
    _file(x, tmp_path / "b.webp", quality=80)
    _file(x, tmp_path / "c.webp", lossless=True)
    _file(x, tmp_path / "d.png")
    assert [read_image_info(tmp_path / n).lossy for n in ("a.jpg", "b.webp", "c.webp", "d.png")] == [True, True, False,
                                                                                                      False]


@pytest.mark.parametrize("blur", [1.5, 3.0])
@pytest.mark.parametrize("quality", [None, 85])
def test_the_edges_read_a_gaussian_blur_through_jpeg(tmp_path, blur, quality):
    """Zhuo & Sim's re-blur ratio on step edges: σ = σ₀/√(R² − 1). Pixels, Sobel and neighbouring edges leave it
    within about 0.3 px on these scenes (measured 1.61-1.63 and 2.74-2.87), as on the tuning split (0.29 on
    average), so 0.4 px is the bound; JPEG quality 85 moves it by less than 0.15 px."""
    from invdiff.blind import estimate_gaussian_blur

    x = _scene()
    g = torch.Generator().manual_seed(1)
    y = ops.Blur(ops.gaussian_kernel(2 * math.ceil(3 * blur) + 1, blur), padding="reflect")(x)
    y = y + 0.01 * torch.randn(y.shape, generator=g)
    buf = io.BytesIO()
    _file(y, buf, format="PNG" if quality is None else "JPEG", **({} if quality is None else {"quality": quality}))
    (tmp_path / "y").write_bytes(buf.getvalue())
    est = estimate_gaussian_blur(read_image(tmp_path / "y"), 0.01, method="edges")
    assert abs(est.blur_sigma - blur) < 0.4 and est.history[0]["edges"] > 20
    assert est.kernel.shape[-1] == 2 * math.ceil(3 * est.blur_sigma) + 1
    with pytest.raises(ValueError, match="unknown Gaussian blur estimator"):
        estimate_gaussian_blur(read_image(tmp_path / "y"), 0.01, method="wavelet")


class _BoolEncoder:
    """VP8's boolean entropy encoder, written from RFC 6386 section 7.3, to write frame headers with known fields."""

    def __init__(self):
        self.out, self.range, self.bottom, self.count = bytearray(), 255, 0, 24

    def put(self, bit: int, prob: int = 128) -> None:
        split = 1 + (((self.range - 1) * prob) >> 8)
        if bit:
            self.bottom, self.range = self.bottom + split, self.range - split
        else:
            self.range = split
        while self.range < 128:
            self.range <<= 1
            if self.bottom & (1 << 31):  # carry into the bytes written
                i = len(self.out) - 1
                while self.out[i] == 255:
                    self.out[i], i = 0, i - 1
                self.out[i] += 1
            self.bottom = (self.bottom << 1) & 0xFFFFFFFF
            self.count -= 1
            if self.count == 0:
                self.out.append(self.bottom >> 24)
                self.bottom, self.count = self.bottom & 0xFFFFFF, 8

    def literal(self, v: int, n: int) -> None:
        for b in range(n - 1, -1, -1):
            self.put((v >> b) & 1)

    def signed(self, v: int, n: int) -> None:
        self.literal(1, 1)
        self.literal(abs(v), n)
        self.put(int(v < 0))

    def bytes(self) -> bytes:
        for _ in range(32):  # flush
            self.put(0)
        return bytes(self.out)


def _webp(path, base: int, deltas=(0, 0, 0, 0, 0), segments=None, absolute=False) -> None:
    """A WebP file whose VP8 key frame header holds these quantiser fields (and no picture data after them)."""
    e = _BoolEncoder()
    e.literal(0, 2)
    e.literal(int(segments is not None), 1)
    if segments is not None:
        e.literal(1, 1), e.literal(1, 1), e.literal(int(absolute), 1)
        for q in segments:
            e.signed(q, 7)
        for lf in (3, 0, -2, 0):  # loop-filter levels: present or not
            e.signed(lf, 6) if lf else e.literal(0, 1)
        for p in (120, None, 30):  # the segment map's probabilities
            (e.literal(1, 1), e.literal(p, 8)) if p else e.literal(0, 1)
    e.literal(0, 1), e.literal(40, 6), e.literal(3, 3)
    e.literal(1, 1), e.literal(1, 1)  # loop-filter deltas
    for d in (2, 0, -1, 0, 0, 5, 0, 0):
        e.signed(d, 6) if d else e.literal(0, 1)
    e.literal(0, 2)
    e.literal(base, 7)
    for d in deltas:
        e.signed(d, 4) if d else e.literal(0, 1)
    part = e.bytes()
    tag = (len(part) << 5) | (1 << 4)  # key frame, version 0, shown
    frame = tag.to_bytes(3, "little") + b"\x9d\x01\x2a" + (64).to_bytes(2, "little") * 2 + part
    chunk = b"VP8 " + len(frame).to_bytes(4, "little") + frame + b"\0" * (len(frame) & 1)
    path.write_bytes(b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"WEBP" + chunk)


def test_the_bool_decoder_reads_what_the_encoder_wrote():
    from invdiff.io import _BoolDecoder

    rng = np.random.default_rng(0)
    bits, probs = rng.integers(0, 2, 4000), rng.integers(1, 256, 4000)
    bits[:1000] = rng.random(1000) < 0.02  # long runs of one symbol: long renormalisations
    bits[1000:1500] = 1  # carries into the bytes already written
    e = _BoolEncoder()
    for b, p in zip(bits, probs):
        e.put(int(b), int(p))
    d = _BoolDecoder(e.bytes())
    assert [d.bool(int(p)) for p in probs] == bits.tolist()


@pytest.mark.parametrize("segments,absolute", [(None, False), ((-6, 0, 9, 20), False), ((30, 45, 60, 127), True)])
def test_the_vp8_header_gives_each_segments_quantiser_steps(tmp_path, segments, absolute):
    from invdiff.io import VP8_AC_STEPS, VP8_DC_STEPS, vp8_quantisers

    base, deltas = 50, (3, -2, 4, 15, -7)  # y dc, y2 dc, y2 ac, uv dc, uv ac
    _webp(tmp_path / "h.webp", base, deltas, segments, absolute)
    got = vp8_quantisers(tmp_path / "h.webp")
    indices = sorted(set(segments)) if segments else [0]
    assert len(got) == len(indices)
    for q, steps in zip(indices, got):
        qi = q if absolute else base + q
        at = lambda table, d=0: table[min(max(qi + d, 0), 127)]  # noqa: E731
        assert steps == {"ydc": at(VP8_DC_STEPS, 3), "yac": at(VP8_AC_STEPS), "y2dc": 2 * at(VP8_DC_STEPS, -2),
                         "y2ac": max(8, at(VP8_AC_STEPS, 4) * 155 // 100), "uvdc": min(132, at(VP8_DC_STEPS, 15)),
                         "uvac": at(VP8_AC_STEPS, -7)}


def test_the_vp8_steps_predict_a_real_webps_luma_error(tmp_path):
    """On uniform noise every coefficient is large against its step, where rounding errs by Q²/12: the model's
    luma variance (half-scale 4×4 transforms) meets libwebp's actual error within 15 % (its rounding bias, the loop
    filter and the 8-bit planes' own rounding are what the model leaves out)."""
    from invdiff.io import _vp8_variances, vp8_quantisers

    img = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)

    def luma(a):  # limited-range BT.601, as VP8 stores it
        a = a.astype(np.float64)
        return (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255

    for q in (50, 75, 90):
        Image.fromarray(img).save(tmp_path / "n.webp", quality=q)
        model = _vp8_variances(vp8_quantisers(tmp_path / "n.webp"))[0]
        actual = np.var(luma(np.asarray(Image.open(tmp_path / "n.webp").convert("RGB"))) - luma(img))
        assert model == pytest.approx(actual, rel=0.15)


def test_a_lossy_webp_counts_its_quantisation_and_a_lossless_one_none(tmp_path):
    x = _scene(64)
    for q in (50, 90):
        _file(x, tmp_path / f"q{q}.webp", quality=q)
    _file(x, tmp_path / "l.webp", lossless=True)
    assert compression_sigma(tmp_path / "q50.webp") > compression_sigma(tmp_path / "q90.webp") > 0
    assert compression_sigma(tmp_path / "q90.webp", "luma") < compression_sigma(tmp_path / "q90.webp")
    assert compression_sigma(tmp_path / "l.webp") is None
