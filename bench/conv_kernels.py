"""cnnc's bf16 3x3 convolution kernels against oneDNN's (through ATen), shape by shape.

For each shape: the forward, the input gradient and the weight gradient. A training step
reads activations written long before, so each call starts from a cold cache (a 64 MiB
buffer is written in between); a warm column shows the in-cache case. cnnc's and oneDNN's
kernels alternate, and each figure is the median of the rounds. Shapes past the direct
convolution's size limit (``SMALL_WEIGHTS``) show the weight gradient only: there cnnc uses
oneDNN's forward and input gradient.

python bench/conv_kernels.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from runtime.kernels.cpu.conv3x3 import SMALL_WEIGHTS, conv3x3, kernel_available, weight_grad

# (batch, in, out, size, stride[, kernel size]): ResNet-20's layers at batch 64 (its 1x1
# projections last), then ImageNet-sized ones
SHAPES: list[tuple[int, ...]] = [
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
    (64, 16, 32, 32, 2, 1),
    (64, 32, 64, 16, 2, 1),
]

_FLUSH = torch.zeros(16 * 1024 * 1024)  # 64 MiB, more than the last-level cache


def _time(fn: Callable[[], object], cold: bool) -> float:
    if cold:
        _FLUSH.add_(1)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _kernels(shape: tuple[int, ...]) -> dict[str, tuple[Callable[[], object], ...]]:
    """(oneDNN, cnnc) callables per pass that cnnc runs on its own kernels for this shape."""
    n, ci, co, size, stride, k = (*shape, 3)[:6]
    out = (size - 1) // stride + 1
    layout = torch.channels_last
    x = torch.randn(n, ci, size, size).bfloat16().contiguous(memory_format=layout)
    grad = torch.randn(n, co, out, out).bfloat16().contiguous(memory_format=layout)
    weight = torch.randn(co, ci, k, k).bfloat16().contiguous(memory_format=layout)
    geometry = ([stride] * 2, [k // 2] * 2, [1, 1], False, [0, 0], 1)

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: torch.ops.aten.convolution_backward(grad, x, weight, None, *geometry, mask)

    passes: dict[str, tuple[Callable[[], object], ...]] = {}
    small = ci * co <= SMALL_WEIGHTS
    if small and co % 16 == 0:
        passes["forward"] = (
            lambda: torch.ops.aten.convolution(x, weight, None, *geometry),
            lambda: conv3x3(x, weight, None, stride),
        )
    if small:
        passes["input grad"] = (
            backward([True, False, False]),
            lambda: conv3x3(grad, weight, None, stride, True, (size, size)),
        )
    if k == 3:  # a 1x1 weight gradient is a plain GEMM, left to oneDNN
        passes["weight grad"] = (
            backward([False, True, False]),
            lambda: weight_grad(x, grad, stride),
        )
    return passes


def compare(shape: tuple[int, ...], rounds: int) -> dict[str, dict[str, float]]:
    """Median ms per pass: oneDNN's and cnnc's, cold and warm, for one shape."""
    result: dict[str, dict[str, float]] = {}
    for name, (onednn, cnnc) in _kernels(shape).items():
        kernels = {"onednn": onednn, "cnnc": cnnc}
        times: dict[str, list[float]] = {}
        for fn in kernels.values():
            fn()
        for _ in range(rounds):
            for cold in (True, False):
                for kernel, fn in kernels.items():
                    key = f"{kernel}_{'cold' if cold else 'warm'}"
                    times.setdefault(key, []).append(_time(fn, cold))
        result[name] = {key: statistics.median(values) for key, values in times.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not kernel_available():
        raise SystemExit("the kernels need a CPU with AVX512-BF16 (and a C++ compiler)")
    print("| batch, in, out, size, stride, kernel | pass | oneDNN cold ms | cnnc cold ms "
          "| cold speed-up | oneDNN warm ms | cnnc warm ms | warm speed-up |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        for name, t in compare(shape, args.rounds).items():
            print(
                f"| {', '.join(map(str, (*shape, 3)[:6]))} | {name} | {t['onednn_cold']:.3f} "
                f"| {t['cnnc_cold']:.3f} | {t['onednn_cold'] / t['cnnc_cold']:.2f}x "
                f"| {t['onednn_warm']:.3f} | {t['cnnc_warm']:.3f} "
                f"| {t['onednn_warm'] / t['cnnc_warm']:.2f}x |"
            )


if __name__ == "__main__":
    main()
