"""Blur's two ways of applying a kernel: the FFT (any kernel) and, for a rank-1 kernel shared by the batch
(Gaussian, box), two products with 1-D matrices. Prints milliseconds per call of A x and AᵀA x (what a
conjugate-gradient iteration costs) for each way and which one ``Blur`` picks at that size.

    python benchmarks/blur_speed.py [--sizes 32,64,128,256,512,1024] [--kernels 9,61] [--batch 1] [--channels 3]"""

from __future__ import annotations

import argparse
import time

import torch

from invdiff.operators import Blur, gaussian_kernel


def ms_per_call(fn, x, repeats: int) -> float:
    for _ in range(2):
        fn(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64,128,256,512,1024")
    ap.add_argument("--kernels", default="9,61")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--padding", default="reflect")
    a = ap.parse_args()
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, batch {a.batch} x {a.channels} channels, "
          f"{a.padding} padding, float32\n")
    print("| side | kernel | separable A ms | FFT A ms | separable AᵀA ms | FFT AᵀA ms | Blur uses |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(v) for v in a.sizes.split(",")]:
        for k in [int(v) for v in a.kernels.split(",")]:
            if k > n:
                continue
            x = torch.randn(a.batch, a.channels, n, n, generator=torch.Generator().manual_seed(0))
            blur = Blur(gaussian_kernel(k, k / 6), padding=a.padding)
            fft = Blur(blur.kernel, padding=a.padding, separable=False)
            sep = blur.as_separable()
            blur.validate = fft.validate = sep.validate = False
            repeats = max(3, int(2e7 // (a.batch * a.channels * n * n * 8)))
            row = [ms_per_call(sep.forward_unchecked, x, repeats), ms_per_call(fft.forward, x, repeats),
                   ms_per_call(sep.normal, x, repeats), ms_per_call(fft.normal, x, repeats)]
            used = "separable" if blur._fast(x.shape) is not None else "FFT"
            print(f"| {n} | {k}×{k} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {used} |", flush=True)


if __name__ == "__main__":
    main()
