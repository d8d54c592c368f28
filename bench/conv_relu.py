"""Benchmark of ``cnnc_runtime::conv2d_relu`` against aten ``F.relu(F.conv2d(...))``.

This file owns the measurement quoted in ``runtime.kernels.triton.op``'s docstring: one conv layer's
forward + backward (the weight and bias gradients, and the input gradient where a real net
needs it), both variants interleaved in one process, alternating which runs first, warm-up
apart from the timed rounds, medians over rounds. Run it with
``python -m bench.conv_relu [--batch 128] [--rounds 15] [--device cpu] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from runtime.kernels.triton.op import conv2d_relu


@dataclass(frozen=True)
class Layer:
    """A conv layer to time: input channels, output channels, kernel size, input size."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    size: int
    input_grad: bool


LENET_LAYERS: tuple[Layer, ...] = (
    Layer("3->6 5x5 on 32x32", 3, 6, 5, 32, input_grad=False),
    Layer("6->16 5x5 on 14x14", 6, 16, 5, 14, input_grad=True),
)


@dataclass(frozen=True)
class Timing:
    """Median milliseconds per forward + backward of both variants for one setting."""

    layer: str
    dtype: torch.dtype
    channels_last: bool
    fused_ms: float
    aten_ms: float

    @property
    def ratio(self) -> float:
        """Fused time / aten time: below 1.0 means the fused op is faster."""
        return self.fused_ms / self.aten_ms


def _step(fused: bool, x: Tensor, w: Tensor, b: Tensor, grad_y: Tensor) -> None:
    y = conv2d_relu(x, w, b, [1, 1], [0, 0], [1, 1]) if fused else F.relu(F.conv2d(x, w, b))
    torch.autograd.backward(y, grad_y)
    for leaf in (x, w, b):
        leaf.grad = None


def _inputs(
    layer: Layer, batch: int, dtype: torch.dtype, channels_last: bool, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = torch.randn(batch, layer.in_channels, layer.size, layer.size, device=device)
    w = torch.randn(layer.out_channels, layer.in_channels, layer.kernel, layer.kernel) * 0.1
    b = torch.randn(layer.out_channels)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x = x.to(dtype).requires_grad_(layer.input_grad)
    w, b = (t.to(device=device, dtype=dtype).requires_grad_() for t in (w, b))
    out = layer.size - layer.kernel + 1
    grad_y = torch.randn(batch, layer.out_channels, out, out, device=device, dtype=dtype)
    if channels_last:
        grad_y = grad_y.to(memory_format=torch.channels_last)
    return x, w, b, grad_y


def _timed(run: Callable[[], None], reps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / reps * 1e3


def time_layer(
    layer: Layer,
    batch: int,
    dtype: torch.dtype,
    channels_last: bool,
    rounds: int,
    device: torch.device,
    reps: int = 5,
) -> Timing:
    """Interleaved medians of fused vs aten forward + backward for one layer and setting."""
    x, w, b, grad_y = _inputs(layer, batch, dtype, channels_last, device)
    runs = {fused: (lambda fused=fused: _step(fused, x, w, b, grad_y)) for fused in (True, False)}
    for run in runs.values():
        _timed(run, reps, device)
    samples: dict[bool, list[float]] = {True: [], False: []}
    for index in range(rounds):
        for fused in (True, False) if index % 2 else (False, True):
            samples[fused].append(_timed(runs[fused], reps, device))
    fused_ms, aten_ms = (statistics.median(samples[key]) for key in (True, False))
    return Timing(layer.name, dtype, channels_last, fused_ms, aten_ms)


def format_table(timings: list[Timing]) -> str:
    """One line per setting: milliseconds of both variants and their ratio."""
    lines = [f"{'layer':<20} {'dtype':<9} {'layout':<8} {'fused ms':>9} {'aten ms':>8} ratio"]
    for t in timings:
        layout = "ch-last" if t.channels_last else "NCHW"
        dtype = str(t.dtype).removeprefix("torch.")
        lines.append(
            f"{t.layer:<20} {dtype:<9} {layout:<8} {t.fused_ms:>9.3f} {t.aten_ms:>8.3f} "
            f"{t.ratio:.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    """Time every LeNet layer in fp32 and bf16, NCHW and channels-last, and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    timings = [
        time_layer(layer, options.batch, dtype, channels_last, options.rounds, device)
        for layer in LENET_LAYERS
        for dtype in (torch.float32, torch.bfloat16)
        for channels_last in (False, True)
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(format_table(timings))


if __name__ == "__main__":
    main()
