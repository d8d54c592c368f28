"""Which algorithm runs each pass of a layer's fp32 convolution: measured, not assumed.

For each of the three passes (forward, input gradient, weight gradient) of a layer geometry
(batch, channels, size, kernel, stride, padding, bias, memory format) the candidates are
oneDNN's convolution (through ATen) and cnnc's (``conv_fp32``): the direct convolution
vectorized over output channels; for stride-1 3x3 and 5x5 layers, the direct convolution
vectorized along output rows; for 3x3 stride-1 layers, Winograd F(2x2, 3x3) and F(4x4,
3x3). The first call of a geometry times them on synthetic tensors of that geometry,
interleaved (``ROUNDS`` rounds after a warm-up call, the fastest of each), and takes cnnc's fastest only if it beats oneDNN's by ``MARGIN``. The
choice is kept in memory and on disk (``$CNNC_CACHE_DIR/conv_fp32.json``, default
``~/.cache/cnnc/``) per CPU model, ISA level (cnnc's, ATen's and oneDNN's caps), thread
count, torch version and kernel sources, so a later process reuses it and a changed kernel
is measured again; ``decision_seconds`` says what the measuring cost this process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from runtime import cachefile
from runtime.kernels.cpu import extension, isa

log = logging.getLogger("runtime.kernels")

Algorithm = Literal["onednn", "direct", "direct_rows", "winograd_2x2", "winograd_4x4"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
PASSES = ("forward", "input_grad", "weight_grad")
MARGIN = 1.05  # cnnc's kernel must be 5 % faster than oneDNN's to be chosen
ROUNDS = 7  # interleaved timing rounds per pass (after one warm-up call each)
CACHE_FILE = "conv_fp32.json"


def winograd_applies(kernel: int, stride: int, padding: int) -> bool:
    """Whether cnnc's Winograd convolutions compute a layer: 3x3, stride 1, padding <= 2."""
    return kernel == 3 and stride == 1 and padding <= 2


def rows_applies(kernel: int, stride: int, padding: int) -> bool:
    """Whether the row-vectorized direct convolution computes a layer: 3x3 or 5x5, stride 1,
    padding below the kernel."""
    return kernel in (3, 5) and stride == 1 and padding < kernel


@dataclass(frozen=True)
class Geometry:
    """One layer at one input shape and memory format: what a decision is made for."""

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: int
    stride: int
    padding: int
    bias: bool
    channels_last: bool

    @classmethod
    def of(cls, conv: nn.Conv2d, x: Tensor) -> Geometry:
        n, ci, h, w = x.shape
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return cls(
            n, ci, conv.out_channels, h, w, conv.kernel_size[0], conv.stride[0],
            int(conv.padding[0]), conv.bias is not None, channels_last,
        )  # fmt: skip

    @property
    def out_hw(self) -> tuple[int, int]:
        reach = 2 * self.padding - self.kernel
        return (self.height + reach) // self.stride + 1, (self.width + reach) // self.stride + 1

    def flops(self) -> float:
        """Multiply-adds x 2 of one pass, as a direct convolution counts them (each pass
        does the same number)."""
        oh, ow = self.out_hw
        taps = self.in_channels * self.kernel * self.kernel
        return 2.0 * self.batch * self.out_channels * oh * ow * taps

    def algorithms(self) -> tuple[Algorithm, ...]:
        """The candidates for this geometry, oneDNN's first."""
        k, s, p = self.kernel, self.stride, self.padding
        applies = {
            "direct_rows": rows_applies(k, s, p),
            "winograd_2x2": winograd_applies(k, s, p),
            "winograd_4x4": winograd_applies(k, s, p),
        }
        return tuple(a for a in ALGORITHMS if applies.get(a, True))

    def label(self) -> str:
        layout = "NHWC" if self.channels_last else "NCHW"
        return (
            f"{self.batch}x{self.in_channels}x{self.height}x{self.width} -> "
            f"{self.out_channels} k{self.kernel} s{self.stride} p{self.padding}"
            f"{' +bias' if self.bias else ''} {layout}"
        )


@dataclass(frozen=True)
class Choice:
    """The algorithm of each pass of a geometry."""

    forward: Algorithm = "onednn"
    input_grad: Algorithm = "onednn"
    weight_grad: Algorithm = "onednn"

    def any(self) -> bool:
        """True when some pass runs one of cnnc's kernels."""
        return any(self.cnnc(name) for name in PASSES)

    def cnnc(self, name: str) -> bool:
        """True when pass ``name`` runs one of cnnc's kernels."""
        return bool(getattr(self, name) != "onednn")


Calls = dict[str, dict[Algorithm, Callable[[], object]]]


def calls(g: Geometry) -> Calls:
    """Per pass and algorithm, the call on synthetic tensors of ``g``."""
    from runtime.kernels.cpu import conv_fp32  # the kernel's calls (conv_fp32 imports this)

    oh, ow = g.out_hw
    fmt = torch.channels_last if g.channels_last else torch.contiguous_format
    x = torch.randn(g.batch, g.in_channels, g.height, g.width).contiguous(memory_format=fmt)
    grad = torch.randn(g.batch, g.out_channels, oh, ow).contiguous(memory_format=fmt)
    weight = torch.randn(g.out_channels, g.in_channels, g.kernel, g.kernel)
    bias = torch.randn(g.out_channels) if g.bias else None
    s, p, k, size = g.stride, g.padding, g.kernel, (g.height, g.width)
    hyper = ([s, s], [p, p], [1, 1], False, [0, 0], 1)
    bias_sizes = [g.out_channels] if g.bias else None
    aten = torch.ops.aten

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: aten.convolution_backward(grad, x, weight, bias_sizes, *hyper, mask)

    def ours(name: str, algorithm: Algorithm) -> Callable[[], object]:
        if name == "forward":
            return lambda: conv_fp32.forward(x, weight, bias, s, p, algorithm)
        if name == "input_grad":
            return lambda: conv_fp32.input_grad(grad, weight, s, p, size, algorithm)
        return lambda: conv_fp32.weight_grad(x, grad, k, s, p, g.bias, algorithm)

    onednn = {
        "forward": lambda: aten.convolution(x, weight, bias, *hyper),
        "input_grad": backward([True, False, False]),
        "weight_grad": backward([False, True, g.bias]),
    }
    return {
        name: {a: onednn[name] if a == "onednn" else ours(name, a) for a in g.algorithms()}
        for name in PASSES
    }


Times = dict[str, dict[Algorithm, float]]


def measure(g: Geometry, rounds: int = ROUNDS) -> Times:
    """ms per pass and algorithm: the fastest of ``rounds`` interleaved calls after a warm-up
    call each. The fastest, not the median: on a shared machine a call of a few
    milliseconds is often preempted, and the median then measures the scheduler."""
    result: Times = {}
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        for name, candidates in calls(g).items():
            times: dict[Algorithm, list[float]] = {a: [] for a in candidates}
            for fn in candidates.values():
                fn()
            for _ in range(rounds):
                for algorithm, fn in candidates.items():
                    start = time.perf_counter()
                    fn()
                    times[algorithm].append((time.perf_counter() - start) * 1000)
            result[name] = {a: min(t) for a, t in times.items()}
    return result


def choose(times: Times, margin: float = MARGIN) -> Choice:
    """Per pass, cnnc's fastest algorithm if it runs ``margin`` times faster than oneDNN's."""
    picks: dict[str, Algorithm] = {}
    for name, by_algorithm in times.items():
        ours = sorted((ms, a) for a, ms in by_algorithm.items() if a != "onednn")
        wins = bool(ours) and by_algorithm["onednn"] > margin * ours[0][0]
        picks[name] = ours[0][1] if wins else "onednn"
    return Choice(**picks)


def cache_file() -> Path:
    """``$CNNC_CACHE_DIR/conv_fp32.json``, default ``~/.cache/cnnc/conv_fp32.json`` (beside
    auto's choices)."""
    root = os.environ.get("CNNC_CACHE_DIR") or Path.home() / ".cache" / "cnnc"
    return Path(root) / CACHE_FILE


def machine_key() -> str:
    """What a decision depends on besides the geometry: the CPU, the ISA level of cnnc,
    ATen and oneDNN, the threads, torch's version and the kernel's sources."""
    onednn = os.environ.get(isa.ONEDNN_ENV) or os.environ.get("DNNL_MAX_CPU_ISA") or "-"
    aten = torch.backends.cpu.get_cpu_capability()
    kernel = extension.source_hash("conv_fp32")
    return (
        f"{isa.cpu_model()} | isa {isa.level()}, ATen {aten}, oneDNN {onednn} | "
        f"{torch.get_num_threads()} threads | torch {torch.__version__} | "
        f"kernel {kernel}"
    )


# (cnnc's level, threads, geometry) -> choice: what varies within a process (the CPU, ATen's
# and oneDNN's caps and torch do not), so a step's lookups skip building machine_key()
_choices: dict[tuple[str, int, Geometry], Choice] = {}
_lock = threading.Lock()
_spent = [0.0]  # seconds spent measuring in this process


def decision_seconds() -> float:
    """Seconds this process spent timing geometries (0 when every choice was cached)."""
    return _spent[0]


def forget() -> None:
    """Forget the in-memory choices (tests; the disk cache stays)."""
    _choices.clear()
    _spent[0] = 0.0


def _stored(entry: object) -> Choice | None:
    """A cached entry as a Choice (None if it is not one: another version's format)."""
    names = [f.name for f in fields(Choice)]
    if not isinstance(entry, dict) or sorted(entry) != sorted(names):
        return None
    if not all(entry[name] in ALGORITHMS for name in names):
        return None
    return Choice(**entry)


def decide(g: Geometry) -> Choice:
    """The algorithm of each pass of ``g`` here: cached, else measured once."""
    key = (isa.level(), torch.get_num_threads(), g)
    known = _choices.get(key)  # every call of a step: no lock once decided
    if known is not None:
        return known
    with _lock:
        if key in _choices:
            return _choices[key]
        path, text = cache_file(), f"{machine_key()} | {g.label()}"
        choice = _stored(cachefile.load(path).get(text))
        if choice is None:
            start = time.perf_counter()
            times = measure(g)
            choice = choose(times)
            spent = time.perf_counter() - start
            _spent[0] += spent
            log.info(
                "conv_fp32 %s: %s (ms: %s; measured in %.0f ms)",
                g.label(),
                ", ".join(f"{name} {getattr(choice, name)}" for name in PASSES),
                "; ".join(
                    f"{name} " + ", ".join(f"{a} {ms:.3f}" for a, ms in by.items())
                    for name, by in times.items()
                ),
                spent * 1000,
            )
            error = cachefile.store(path, text, asdict(choice))
            if error is not None:  # unwritten, the next process measures again
                log.warning("cannot write the conv_fp32 choices to %s: %s", path, error)
        _choices[key] = choice
        return choice
