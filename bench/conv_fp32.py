"""cnnc's fp32 convolutions (direct, and Winograd for 3x3 stride 1) against oneDNN's (through
ATen), layer by layer.

LeNet-5's two 5x5 layers at batch 128 and ResNet-20's 3x3 layers at batch 64, NCHW (as an
eager model runs them) or channels-last: forward, input gradient and weight gradient (+ bias
gradient), in ms and GFLOP/s (a direct convolution's FLOPs, so Winograd's figure is
effective). Cold: a 64 MiB buffer is written before each call (a training step reads
activations written long before); warm: the same call again. The algorithms' calls
alternate; each figure is the fastest of the rounds (``--stat median`` for the median: on a
shared machine a call of a few ms is often preempted, and the median then measures the
scheduler). One process per ISA level, capped as
``cnnc bench --isa`` does (``isa.measuring_env``: cnnc's, ATen's and oneDNN's caps).

python bench/conv_fp32.py [--levels avx2 avx512] [--rounds 15] [--channels-last]
    [--threads N] [--stat min|median]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from runtime.kernels.cpu import conv_choice, conv_fp32, isa

# (name, batch, in, out, size, kernel, stride, padding)
LAYERS: list[tuple[str, int, int, int, int, int, int, int]] = [
    ("LeNet conv1", 128, 3, 6, 32, 5, 1, 0),
    ("LeNet conv2", 128, 6, 16, 14, 5, 1, 0),
    ("ResNet-20 stem", 64, 3, 16, 32, 3, 1, 1),
    ("ResNet-20 16->16", 64, 16, 16, 32, 3, 1, 1),
    ("ResNet-20 16->32 s2", 64, 16, 32, 32, 3, 2, 1),
    ("ResNet-20 32->32", 64, 32, 32, 16, 3, 1, 1),
    ("ResNet-20 32->64 s2", 64, 32, 64, 16, 3, 2, 1),
    ("ResNet-20 64->64", 64, 64, 64, 8, 3, 1, 1),
]
PASS_NAMES = {"forward": "forward", "input_grad": "input grad", "weight_grad": "weight grad"}

_FLUSH = torch.zeros(16 * 1024 * 1024)  # 64 MiB, more than the last-level cache


def _time(fn: Callable[[], object], cold: bool) -> float:
    if cold:
        _FLUSH.add_(1)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def compare(g: conv_choice.Geometry, rounds: int, stat: str) -> dict[str, dict[str, float]]:
    """ms per pass (fastest or median of the rounds), per algorithm, cold and warm:
    ``{"forward": {"onednn_cold": ms, "direct_warm": ms, ...}}``."""
    pick = min if stat == "min" else statistics.median
    result: dict[str, dict[str, float]] = {}
    for name, kernels in conv_choice.calls(g).items():
        times: dict[str, list[float]] = {}
        for fn in kernels.values():
            fn()
        for _ in range(rounds):
            for cold in (True, False):
                for kernel, fn in kernels.items():
                    key = f"{kernel}_{'cold' if cold else 'warm'}"
                    times.setdefault(key, []).append(_time(fn, cold))
        result[name] = {key: pick(values) for key, values in times.items()}
    return result


def _cells(t: dict[str, float], heat: str, gflop: float) -> str:
    """oneDNN's ms, cnnc's best ms (and which), both GFLOP/s, and the speed-up."""
    onednn = t[f"onednn_{heat}"]
    ours = {
        k.rsplit("_", 1)[0]: ms for k, ms in t.items() if k.endswith(heat) and "onednn" not in k
    }
    best = min(ours, key=ours.__getitem__)
    ms = ours[best]
    return (
        f"{onednn:.3f} | {ms:.3f} {best} | {gflop / onednn:.0f} / {gflop / ms:.0f} | "
        f"{onednn / ms:.2f}x"
    )


def table(rounds: int, channels_last: bool, stat: str) -> None:
    """This process's table (at its ISA level)."""
    if not conv_fp32.kernel_available():
        raise SystemExit(f"conv_fp32 has no vector build at ISA level {isa.level()}")
    print(f"\nISA level {isa.describe()}; ATen {torch.backends.cpu.get_cpu_capability()}, "
          f"oneDNN cap {os.environ.get(isa.ONEDNN_ENV, '-')}; {torch.get_num_threads()} "
          f"threads; {'channels-last' if channels_last else 'NCHW'}; {stat} of {rounds} rounds\n")  # fmt: skip
    print("| layer (batch, in→out, size, k, stride) | pass | oneDNN cold ms | cnnc cold ms "
          "| cold GFLOP/s oneDNN / cnnc | cold speed-up | oneDNN warm ms | cnnc warm ms "
          "| warm GFLOP/s oneDNN / cnnc | warm speed-up |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, ci, co, size, k, s, p in LAYERS:
        g = conv_choice.Geometry(n, ci, co, size, size, k, s, p, True, channels_last)
        gflop = g.flops() / 1e6  # per ms
        for pass_name, t in compare(g, rounds, stat).items():
            if ci == 3 and pass_name == "input_grad":
                continue  # a first layer's input needs no gradient
            cells = " | ".join(_cells(t, heat, gflop) for heat in ("cold", "warm"))
            print(f"| {name} ({n}, {ci}→{co}, {size}, {k}, {s}) | {PASS_NAMES[pass_name]} | "
                  f"{cells} |")  # fmt: skip
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="*", default=None, help="ISA levels (a process each)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--stat", choices=("min", "median"), default="min")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.levels is None:  # this process, as it is
        table(args.rounds, args.channels_last, args.stat)
        return
    flags = sorted(isa.cpu_flags() & {"avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                                      "avx512dq", "avx512_bf16", "amx_tile"})  # fmt: skip
    print(f"CPU: {isa.cpu_model()}; flags: {' '.join(flags)}")
    for level in args.levels:
        env = {**os.environ, **isa.measuring_env(level)}
        command = [sys.executable, __file__, "--rounds", str(args.rounds), "--stat", args.stat]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.channels_last:
            command.append("--channels-last")
        subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
