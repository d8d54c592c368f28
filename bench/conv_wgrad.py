"""cnnc's bf16 3x3 weight-gradient kernel against oneDNN's (through ATen), shape by shape.

A backward pass reads activations saved long before, so each call starts from a cold cache
(a 64 MiB buffer is written in between); a warm column shows the in-cache case. The two
kernels alternate, and each figure is the median of the rounds.

python bench/conv_wgrad.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from runtime.kernels.conv_wgrad import kernel_available, weight_grad

# (batch, in, out, size, stride): ResNet-20's layers at batch 64, then ImageNet-sized ones
SHAPES = [
    (64, 16, 16, 32, 1),
    (64, 32, 32, 16, 1),
    (64, 64, 64, 8, 1),
    (64, 16, 32, 32, 2),
    (64, 32, 64, 16, 2),
    (8, 64, 64, 56, 1),
    (8, 128, 128, 28, 1),
    (8, 256, 256, 14, 1),
    (8, 512, 512, 7, 1),
    (16, 64, 256, 13, 1),
    (2, 64, 64, 224, 1),
]

_FLUSH = torch.zeros(16 * 1024 * 1024)  # 64 MiB, more than the last-level cache


def _time(fn: Callable[[], object], cold: bool) -> float:
    if cold:
        _FLUSH.add_(1)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def compare(shape: tuple[int, ...], rounds: int) -> dict[str, float]:
    """Median ms of both kernels, cold and warm, for one shape."""
    n, ci, co, size, stride = shape
    out = (size - 1) // stride + 1
    layout = torch.channels_last
    x = torch.randn(n, ci, size, size).bfloat16().contiguous(memory_format=layout)
    grad = torch.randn(n, co, out, out).bfloat16().contiguous(memory_format=layout)
    weight = torch.randn(co, ci, 3, 3).bfloat16().contiguous(memory_format=layout)

    def onednn() -> object:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], 1,
            [False, True, False],
        )  # fmt: skip

    def cnnc() -> object:
        return weight_grad(x, grad, stride)

    kernels = {"onednn": onednn, "cnnc": cnnc}
    times: dict[str, list[float]] = {}
    for fn in kernels.values():
        fn()
    for _ in range(rounds):
        for cold in (True, False):
            for name, fn in kernels.items():
                key = f"{name}_{'cold' if cold else 'warm'}"
                times.setdefault(key, []).append(_time(fn, cold))
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not kernel_available():
        raise SystemExit("the kernel needs a CPU with AVX512-BF16 (and a C++ compiler)")
    print("| batch, in, out, size, stride | oneDNN cold ms | cnnc cold ms | cold speed-up "
          "| oneDNN warm ms | cnnc warm ms | warm speed-up |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        t = compare(shape, args.rounds)
        print(
            f"| {', '.join(map(str, shape))} | {t['onednn_cold']:.3f} | {t['cnnc_cold']:.3f} "
            f"| {t['onednn_cold'] / t['cnnc_cold']:.2f}x | {t['onednn_warm']:.3f} "
            f"| {t['cnnc_warm']:.3f} | {t['onednn_warm'] / t['cnnc_warm']:.2f}x |"
        )


if __name__ == "__main__":
    main()
