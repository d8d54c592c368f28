"""``Fp32Conv2d``: a Conv2d whose fp32 CPU passes run cnnc's direct convolution where it wins.

``cpu/conv_fp32.cpp`` is a direct fp32 (FMA) convolution for small layers: groups 1,
dilation 1, square k x k kernels (k <= ``MAX_KERNEL``), equal strides and zero paddings on
both axes, with or without bias; forward, input gradient and weight gradient (+ bias
gradient), from NCHW or channels-last tensors. It is written once against at::vec and built
for x86-64's AVX2 and AVX-512 and aarch64's NEON. Results equal ATen's within fp32 rounding
(another summation order).

"Used only where it wins": whether each of the three passes of a layer runs cnnc's kernel
or oneDNN's (through ATen) is measured, not assumed. The first call of a layer geometry
(batch, channels, size, kernel, stride, padding, bias, memory format) times both on
synthetic tensors of that geometry, interleaved (``ROUNDS`` rounds after a warm-up call,
the fastest of each), and takes cnnc's only if it beats oneDNN's by ``MARGIN``. The choice is kept in
memory and on disk (``$CNNC_CACHE_DIR/conv_fp32.json``, default ``~/.cache/cnnc/``) per CPU
model, ISA level (cnnc's, ATen's and oneDNN's caps), thread count and torch version, so a
later process reuses it; ``decision_seconds`` says what the measuring cost this process.

The module takes the kernel only where it applies: eager (torch.compile sees the plain
convolution), CPU, 4-d fp32 input and weight, no CPU autocast (a bf16 step runs the bf16
kernels of ``conv3x3`` or oneDNN), and a vector build of the kernel at the level in use.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from runtime.kernels.cpu import isa
from runtime.kernels.cpu.conv_module import SharedConv2d
from runtime.kernels.cpu.extension import load, vectorized

log = logging.getLogger("runtime.kernels")

KERNEL = "conv_fp32"
MAX_KERNEL = 7
MAX_WEIGHTS = 128 * 128  # in x out channels: the packed weights of a larger layer leave L2
PASSES = ("forward", "input_grad", "weight_grad")
MARGIN = 1.05  # cnnc's kernel must be 5 % faster than oneDNN's to be chosen
ROUNDS = 7  # interleaved timing rounds per pass (after one warm-up call each)
CACHE_FILE = "conv_fp32.json"


def kernel_available() -> bool:
    """True when the kernel is built and runs a vector path at the ISA level in use."""
    return vectorized(KERNEL)


def eligible(conv: nn.Conv2d) -> bool:
    """The convolutions the kernel covers (whatever their input size)."""
    k, stride, padding = conv.kernel_size, conv.stride, conv.padding
    return (
        conv.groups == 1
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(padding, str)
        and k[0] == k[1] <= MAX_KERNEL
        and stride[0] == stride[1]
        and padding[0] == padding[1]
        and conv.in_channels * conv.out_channels <= MAX_WEIGHTS
    )


# ---- the kernel's three passes --------------------------------------------------------------


def _module() -> object:
    module = load(KERNEL)
    assert module is not None, "conv_fp32 needs kernel_available()"
    return module


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """fp32 ``conv2d(x, weight, bias, stride, padding)``, in x's memory format."""
    result: Tensor = _module().forward(x, weight, bias, stride, padding)  # type: ignore[attr-defined]
    return result


def input_grad(
    grad: Tensor, weight: Tensor, stride: int, padding: int, size: tuple[int, int]
) -> Tensor:
    """dx of ``conv2d(x, weight, stride=stride, padding=padding)`` for x of ``size`` (H, W),
    from the output gradient; in the gradient's memory format."""
    result: Tensor = _module().input_grad(grad, weight, stride, padding, *size)  # type: ignore[attr-defined]
    return result


def weight_grad(
    x: Tensor, grad: Tensor, kernel: int, stride: int, padding: int, bias: bool
) -> tuple[Tensor, Tensor | None]:
    """(dW, db or None) of ``conv2d(x, W, b, stride, padding)`` for k x k W."""
    out = _module().weight_grad(x, grad, kernel, stride, padding, bias)  # type: ignore[attr-defined]
    return out[0], (out[1] if bias else None)


# ---- the measured decision ------------------------------------------------------------------


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
        """Multiply-adds x 2 of one pass (each pass does the same number)."""
        oh, ow = self.out_hw
        taps = self.in_channels * self.kernel * self.kernel
        return 2.0 * self.batch * self.out_channels * oh * ow * taps

    def label(self) -> str:
        layout = "NHWC" if self.channels_last else "NCHW"
        return (
            f"{self.batch}x{self.in_channels}x{self.height}x{self.width} -> "
            f"{self.out_channels} k{self.kernel} s{self.stride} p{self.padding}"
            f"{' +bias' if self.bias else ''} {layout}"
        )


@dataclass(frozen=True)
class Choice:
    """Which passes of a geometry run cnnc's kernel (True) rather than oneDNN's."""

    forward: bool
    input_grad: bool
    weight_grad: bool

    def any(self) -> bool:
        return self.forward or self.input_grad or self.weight_grad


Calls = dict[str, tuple[Callable[[], object], Callable[[], object]]]


def calls(g: Geometry) -> Calls:
    """Per pass: (oneDNN's call through ATen, cnnc's), on synthetic tensors of ``g``."""
    oh, ow = g.out_hw
    fmt = torch.channels_last if g.channels_last else torch.contiguous_format
    x = torch.randn(g.batch, g.in_channels, g.height, g.width).contiguous(memory_format=fmt)
    grad = torch.randn(g.batch, g.out_channels, oh, ow).contiguous(memory_format=fmt)
    weight = torch.randn(g.out_channels, g.in_channels, g.kernel, g.kernel)
    bias = torch.randn(g.out_channels) if g.bias else None
    s, p = g.stride, g.padding
    hyper = ([s, s], [p, p], [1, 1], False, [0, 0], 1)
    bias_sizes = [g.out_channels] if g.bias else None
    aten = torch.ops.aten

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: aten.convolution_backward(grad, x, weight, bias_sizes, *hyper, mask)

    return {
        "forward": (
            lambda: aten.convolution(x, weight, bias, *hyper),
            lambda: forward(x, weight, bias, s, p),
        ),
        "input_grad": (
            backward([True, False, False]),
            lambda: input_grad(grad, weight, s, p, (g.height, g.width)),
        ),
        "weight_grad": (
            backward([False, True, g.bias]),
            lambda: weight_grad(x, grad, g.kernel, s, p, g.bias),
        ),
    }


def measure(g: Geometry, rounds: int = ROUNDS) -> dict[str, tuple[float, float]]:
    """ms per pass, (oneDNN, cnnc): the fastest of ``rounds`` interleaved calls after a
    warm-up call each. The fastest, not the median: on a shared machine a call of a few
    milliseconds is often preempted, and the median then measures the scheduler."""
    result: dict[str, tuple[float, float]] = {}
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        for name, pair in calls(g).items():
            times: list[list[float]] = [[], []]
            for fn in pair:
                fn()
            for _ in range(rounds):
                for i, fn in enumerate(pair):
                    start = time.perf_counter()
                    fn()
                    times[i].append((time.perf_counter() - start) * 1000)
            result[name] = (min(times[0]), min(times[1]))
    return result


def choose(times: dict[str, tuple[float, float]], margin: float = MARGIN) -> Choice:
    """cnnc's kernel for each pass it runs ``margin`` times faster than oneDNN's."""
    wins = {name: onednn > margin * cnnc for name, (onednn, cnnc) in times.items()}
    return Choice(**wins)


def cache_file() -> Path:
    """``$CNNC_CACHE_DIR/conv_fp32.json``, default ``~/.cache/cnnc/conv_fp32.json`` (beside
    auto's choices)."""
    root = os.environ.get("CNNC_CACHE_DIR") or Path.home() / ".cache" / "cnnc"
    return Path(root) / CACHE_FILE


def machine_key() -> str:
    """What a decision depends on besides the geometry: the CPU, the ISA level of cnnc,
    ATen and oneDNN, the threads and torch's version."""
    onednn = os.environ.get(isa.ONEDNN_ENV) or os.environ.get("DNNL_MAX_CPU_ISA") or "-"
    aten = torch.backends.cpu.get_cpu_capability()
    return (
        f"{isa.cpu_model()} | isa {isa.level()}, ATen {aten}, oneDNN {onednn} | "
        f"{torch.get_num_threads()} threads | torch {torch.__version__}"
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


def decide(g: Geometry) -> Choice:
    """The passes of ``g`` that run cnnc's kernel here: cached, else measured once."""
    key = (isa.level(), torch.get_num_threads(), g)
    known = _choices.get(key)  # every call of a step: no lock once decided
    if known is not None:
        return known
    with _lock:
        if key in _choices:
            return _choices[key]
        path, text = cache_file(), f"{machine_key()} | {g.label()}"
        stored = _load(path).get(text)
        if isinstance(stored, dict) and set(stored) == set(PASSES):
            choice = Choice(**{name: bool(stored[name]) for name in PASSES})
        else:
            start = time.perf_counter()
            times = measure(g)
            choice = choose(times)
            spent = time.perf_counter() - start
            _spent[0] += spent
            log.info(
                "conv_fp32 %s: %s (oneDNN vs cnnc ms: %s; measured in %.0f ms)",
                g.label(),
                ", ".join(f"{n} {'cnnc' if getattr(choice, n) else 'oneDNN'}" for n in PASSES),
                ", ".join(f"{n} {a:.3f}/{b:.3f}" for n, (a, b) in times.items()),
                spent * 1000,
            )
            _store(path, text, asdict(choice))
        _choices[key] = choice
        return choice


def _load(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: Path, key: str, entry: dict[str, bool]) -> None:
    data = _load(path)
    data[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # unwritten, the next process measures again
        log.warning("cannot write the conv_fp32 choices to %s: %s", path, exc)


# ---- autograd and the module ----------------------------------------------------------------


class _ConvFp32(torch.autograd.Function):
    """An fp32 conv2d whose passes run cnnc's kernel or ATen's, as ``choice`` says."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        conv: nn.Conv2d,
        choice: Choice,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv, ctx.choice = conv, choice  # type: ignore[attr-defined]
        s, p = conv.stride[0], int(conv.padding[0])
        if choice.forward:
            return forward(x, weight, bias, s, p)
        result: Tensor = torch.ops.aten.convolution(
            x, weight, bias, [s, s], [p, p], [1, 1], False, [0, 0], 1
        )
        return result

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        conv: nn.Conv2d = ctx.conv  # type: ignore[attr-defined]
        choice: Choice = ctx.choice  # type: ignore[attr-defined]
        s, p, k = conv.stride[0], int(conv.padding[0]), conv.kernel_size[0]
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        has_bias = conv.bias is not None
        aten_x = needs_x and not choice.input_grad
        aten_w = needs_w and not choice.weight_grad
        aten_b = needs_b and has_bias and (aten_w or not needs_w)
        grad_x = grad_w = grad_b = None
        if aten_x or aten_w or aten_b:
            bias_sizes = [conv.out_channels] if has_bias else None
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                [aten_x, aten_w, aten_b],
            )  # fmt: skip
        if needs_x and not aten_x:
            grad_x = input_grad(grad, weight, s, p, (x.shape[2], x.shape[3]))
        if needs_w and not aten_w:
            grad_w, db = weight_grad(x, grad, k, s, p, needs_b and has_bias)
            if db is not None:
                grad_b = db
        return grad_x, grad_w, grad_b, None, None


class Fp32Conv2d(SharedConv2d):
    """A Conv2d over another's Parameters whose fp32 CPU passes run cnnc's direct
    convolution where it measured faster than oneDNN for the layer's geometry."""

    def _kernel_applies(self, x: Tensor) -> bool:
        """True when this call may run the kernel: eager, CPU, 4-d fp32, no autocast."""
        return not (
            torch.compiler.is_compiling()
            or x.device.type != "cpu"
            or x.dim() != 4
            or x.dtype != torch.float32
            or self.weight.dtype != torch.float32
            or (self.bias is not None and self.bias.dtype != torch.float32)
            or torch.is_autocast_enabled("cpu")
            or not kernel_available()
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._kernel_applies(x):
            return super().forward(x)
        choice = decide(Geometry.of(self, x))
        if not choice.any():
            return super().forward(x)
        grads = x.requires_grad or self.weight.requires_grad
        if torch.is_grad_enabled() and grads:
            result: Tensor = _ConvFp32.apply(x, self.weight, self.bias, self, choice)
            return result
        if choice.forward:  # no autograd (evaluation): the forward kernel alone
            s, p = self.stride[0], int(self.padding[0])
            return forward(x, self.weight, self.bias, s, p)
        return super().forward(x)
