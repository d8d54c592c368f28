"""The parity gate: a kernel runs only where it matched ATen on this machine.

This file owns the decision "may this kernel replace ATen here?" for both kernel families,
checked once per process and cached, with the reason logged at WARNING on the
``runtime.kernels`` logger when the answer is no (callers then run ATen):

- ``conv2d_relu`` (the Triton family's custom op): per (device, dtype), a few small convs
  (3x3 with padding in NCHW, 5x5 stride 2 in channels-last, one without bias) run fused and
  unfused; the output and the input, weight and bias gradients must agree within
  ``TOLERANCES[dtype]``. The error metric and tolerances are the kernel tests' yardstick too.
- cnnc's C++ CPU kernels: compiled on the user's machine, so re-checked there for the code
  path the level in use runs (each is another build), in each layout and dtype they run,
  forward and backward. Pooling must agree bit for bit; batch norm within tolerance; the
  bf16 convolution kernels (forward, input and weight gradients) within bf16 rounding; the
  fp32 direct convolution (the same, and the bias gradient) within fp32 rounding. A path
  that fails is declined at that path only (``extension.decline``, reason logged) and the
  kernel's next path down is checked in its place.

``CHECKS`` names every gated kernel; ``trusted`` is the one entry point.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.geometry import output_hw
from runtime.kernels.cpu import isa
from runtime.kernels.triton.op import conv2d_relu

LOG = logging.getLogger("runtime.kernels")
CONV_RELU = "conv2d_relu"

# max |fused - reference| / max |reference|. fp32 allows for TF32 on CUDA (10-bit mantissa,
# cuDNN's default for convolutions); fp16/bf16 allow ~10 and ~5 roundings to 11 and 8 bits.
TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-6,
    torch.float32: 5e-3,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}

Check = Callable[[torch.device, torch.dtype], "str | None"]
Key = tuple[str, str, "int | None", "torch.dtype | None", str]
_verdicts: dict[Key, bool] = {}


# ---- the fused conv2d + ReLU op: one (device, dtype) per check ------------------------------


@dataclass(frozen=True)
class ParityCase:
    """One small conv the parity check runs: shapes, hyper-parameters and layout."""

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int
    padding: int
    channels_last: bool
    bias: bool = True


PARITY_CASES: tuple[ParityCase, ...] = (
    ParityCase((2, 8, 10, 10), (16, 8, 3, 3), stride=1, padding=1, channels_last=False),
    ParityCase((2, 3, 13, 13), (6, 3, 5, 5), stride=2, padding=0, channels_last=True),
    ParityCase((1, 4, 7, 7), (5, 4, 3, 3), stride=1, padding=0, channels_last=False, bias=False),
)


def max_relative_error(actual: Tensor, expected: Tensor) -> float:
    """``max |actual - expected| / max |expected|``, computed in fp32."""
    actual, expected = actual.detach().float(), expected.detach().float()
    scale = expected.abs().max().clamp_min(1e-6)
    return float((actual - expected).abs().max() / scale)


def _leaves(case: ParityCase, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(case.x_shape, generator=generator)
    fan_in = case.w_shape[1] * case.w_shape[2] * case.w_shape[3]
    w = torch.randn(case.w_shape, generator=generator) / fan_in**0.5
    b = torch.randn(case.w_shape[0], generator=generator)
    if case.channels_last:
        x = x.to(memory_format=torch.channels_last)
    tensors = [x, w, b] if case.bias else [x, w]
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in tensors]


def _outputs_and_grads(leaves: list[Tensor], case: ParityCase, fused: bool) -> list[Tensor]:
    x, w = leaves[0], leaves[1]
    b = leaves[2] if case.bias else None
    pad = [case.padding, case.padding]
    if fused:
        y = conv2d_relu(x, w, b, [case.stride] * 2, pad, [1, 1])
    else:
        y = F.relu(F.conv2d(x, w, b, case.stride, case.padding))
    grad_y = torch.linspace(-1.0, 1.0, y.numel(), device=y.device).view_as(y).to(y.dtype)
    grads = torch.autograd.grad(y, leaves, grad_y)
    return [y.detach(), *grads]


def _conv_relu_mismatch(device: torch.device, dtype: torch.dtype) -> str | None:
    """Every ``PARITY_CASES`` case fused and unfused, within ``TOLERANCES[dtype]``."""
    tolerance = TOLERANCES.get(dtype)
    if tolerance is None:
        return f"no parity tolerance for dtype {dtype}"
    names = ("output", "grad_input", "grad_weight", "grad_bias")
    for case in PARITY_CASES:
        try:
            fused = _outputs_and_grads(_leaves(case, device, dtype), case, fused=True)
        except Exception as error:  # any failure of the custom kernel means "do not trust"
            return f"{case}: the fused op raised {type(error).__name__}: {error}"
        reference = _outputs_and_grads(_leaves(case, device, dtype), case, fused=False)
        for name, got, want in zip(names, fused, reference, strict=False):
            relative = max_relative_error(got, want)
            if not relative <= tolerance:
                return f"{case}: {name} relative error {relative:.2e} > {tolerance:.0e}"
    return None


# ---- cnnc's C++ CPU kernels: every dtype and layout they run, at the ISA level in use ----------


def _pool_mismatch(dtype: torch.dtype, channels_last: bool) -> str | None:
    from runtime.kernels.cpu.pool import fused_maxpool2x2

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 9, generator=generator).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = F.max_pool2d(F.relu(x), 2)
    got = fused_maxpool2x2(x, True)
    grad = torch.randn(expected.shape, generator=generator).to(dtype)
    (want,) = torch.autograd.grad(expected, x, grad)
    (have,) = torch.autograd.grad(got, x, grad)
    if not torch.equal(got, expected) or not torch.equal(have, want):
        return f"fused max-pooling differs from ATen ({dtype}, channels_last={channels_last})"
    return None


def _batchnorm_mismatch(dtype: torch.dtype, channels_last: bool) -> str | None:
    from runtime.kernels.cpu.batchnorm import FusedBatchNorm2d

    torch.manual_seed(0)
    reference = nn.BatchNorm2d(6)
    fused = FusedBatchNorm2d.from_module(nn.BatchNorm2d(6), relu=True)
    x = torch.randn(4, 6, 5, 5).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    residual = torch.randn_like(x)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for with_residual in (False, True):
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        if with_residual:  # relu(bn(x) + r), the end of a residual block
            expected, got = F.relu(reference(x1) + residual), fused(x2, residual)
        else:
            expected, got = F.relu(reference(x1)), fused(x2)
        grad = torch.randn_like(expected)
        (want,) = torch.autograd.grad(expected, x1, grad)
        (have,) = torch.autograd.grad(got, x2, grad)
        close = torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)
        close = close and torch.allclose(have.float(), want.float(), atol=tol, rtol=tol)
        if not close:
            kind = "batch norm + add + ReLU" if with_residual else "batch norm"
            return f"fused {kind} differs from ATen ({dtype}, channels_last={channels_last})"
    return None


def _conv3x3_mismatch(_device: torch.device, _dtype: torch.dtype) -> str | None:
    from runtime.kernels.cpu.conv3x3 import conv3x3, weight_grad

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 16, 3, 3, generator=generator).bfloat16()
    bias = torch.randn(16, generator=generator).bfloat16()
    for stride in (1, 2):
        x = torch.randn(3, 16, 7, 6, generator=generator).bfloat16()
        oh, ow = output_hw(7, 6, kernel=(3, 3), stride=(stride, stride), padding=(1, 1))
        grad = torch.randn(3, 16, oh, ow, generator=generator).bfloat16()
        want = torch.ops.aten.convolution_backward(
            grad.float(), x.float(), weight.float(), None, [stride] * 2, [1, 1],
            [1, 1], False, [0, 0], 1, [True, True, False],
        )  # fmt: skip
        checks = [("weight gradient", weight_grad(x, grad, stride), want[1])]
        y = F.conv2d(x.float(), weight.float(), bias.float(), stride, 1)
        checks.append(("forward", conv3x3(x, weight, bias, stride), y))
        dx = conv3x3(grad, weight, None, stride, True, (7, 6))
        checks.append(("input gradient", dx, want[0]))
        for what, got, expected in checks:
            if not torch.allclose(got.float(), expected, rtol=2**-8, atol=1e-3):
                return f"the bf16 convolution {what} differs from ATen (stride {stride})"
    return None


def _conv_fp32_mismatch(_device: torch.device, _dtype: torch.dtype) -> str | None:
    """The fp32 convolutions' passes against ATen's, in both layouts: the direct one on a
    5x5 layer with a channel count that ends mid-vector and a 3x3 stride-2 one with
    padding; the row-vectorized one on a 5x5 and a 3x3 layer; both Winograds on a 3x3 stride-1
    layer with odd sizes."""
    from runtime.kernels.cpu.conv_choice import Algorithm
    from runtime.kernels.cpu.conv_fp32 import forward, input_grad, weight_grad

    generator = torch.Generator().manual_seed(0)
    layers: tuple[tuple[Algorithm, tuple[int, ...]], ...] = (
        ("direct", (2, 3, 6, 12, 5, 1, 0)),
        ("direct", (3, 8, 20, 9, 3, 2, 1)),
        ("direct_rows", (2, 3, 6, 12, 5, 1, 0)),
        ("direct_rows", (2, 12, 5, 9, 3, 1, 1)),
        ("winograd_2x2", (2, 12, 20, 9, 3, 1, 1)),
        ("winograd_4x4", (2, 12, 20, 9, 3, 1, 1)),
    )
    for algorithm, (n, ci, co, size, k, stride, padding) in layers:
        x = torch.randn(n, ci, size, size, generator=generator)
        weight = torch.randn(co, ci, k, k, generator=generator)
        bias = torch.randn(co, generator=generator)
        y = F.conv2d(x, weight, bias, stride, padding)
        grad = torch.randn(y.shape, generator=generator)
        dx, dw, db = torch.ops.aten.convolution_backward(
            grad, x, weight, [co], [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
            [True, True, True],
        )  # fmt: skip
        for layout in (torch.contiguous_format, torch.channels_last):
            xl, gl = x.contiguous(memory_format=layout), grad.contiguous(memory_format=layout)
            a = algorithm
            dw2, db2 = weight_grad(xl, gl, k, stride, padding, True, a)
            checks = [
                ("forward", forward(xl, weight, bias, stride, padding, a), y),
                ("input gradient", input_grad(gl, weight, stride, padding, (size, size), a), dx),
                ("weight gradient", dw2, dw),
                ("bias gradient", db2, db),
            ]
            for what, got, expected in checks:
                if got is None or not max_relative_error(got, expected) <= 1e-4:
                    return (
                        f"the fp32 {algorithm} convolution {what} differs from ATen "
                        f"({k}x{k}, {layout})"
                    )
    return None


def _each_layout(
    check: Callable[[torch.dtype, bool], str | None], _device: torch.device, _dtype: torch.dtype
) -> str | None:
    """``check`` in each dtype and memory format the CPU kernels run (any device asked)."""
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            problem = check(dtype, channels_last)
            if problem is not None:
                return problem
    return None


@dataclass(frozen=True)
class Gate:
    """One gated kernel: its check, and whether a verdict holds per (device, dtype) or, for
    the C++ CPU kernels (whose check covers every dtype), per code path; ``covers`` names
    the C++ kernels the check exercises when they are more than the gate's own."""

    check: Check
    per_isa_level: bool = False
    covers: tuple[str, ...] = ()


# kernel -> its gate; the two convolution kernels of the CPU family are checked together
CHECKS: dict[str, Gate] = {
    CONV_RELU: Gate(_conv_relu_mismatch),
    "pool2x2": Gate(functools.partial(_each_layout, _pool_mismatch), per_isa_level=True),
    "batchnorm": Gate(functools.partial(_each_layout, _batchnorm_mismatch), per_isa_level=True),
    "conv3x3": Gate(_conv3x3_mismatch, per_isa_level=True, covers=("conv3x3", "conv_wgrad")),
    "conv_fp32": Gate(_conv_fp32_mismatch, per_isa_level=True),
}


def mismatch(
    kernel: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> str | None:
    """Run ``kernel``'s check now, uncached.

    Returns:
        None when the kernel matches ATen, otherwise a one-line description of what differed
        (or of the exception the kernel raised).
    """
    return CHECKS[kernel].check(torch.device(device), dtype)


def _autocast_disabled(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Autocast off while comparing, so both paths run in the dtype under test."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _key(kernel: str, device: torch.device, dtype: torch.dtype) -> Key:
    if CHECKS[kernel].per_isa_level:
        from runtime.kernels.cpu import extension

        return (kernel, "cpu", None, None, extension.path_at(kernel))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return (kernel, device.type, device.index, dtype, "")


def trusted(
    kernels: Iterable[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> bool:
    """Whether every gated kernel of ``kernels`` may run; each is checked once, then cached.

    Names ``CHECKS`` does not hold (kernels without a gate) are skipped. On a mismatch the
    verdict is False and the reason is logged at WARNING on ``runtime.kernels``.

    Args:
        kernels: kernel names, e.g. ``["pool2x2", "batchnorm"]`` or ``[CONV_RELU]``.
        device: the device the kernels would run on (the CPU kernels' is the CPU).
        dtype: the dtype they would run in (the CPU kernels' checks cover every dtype).
    """
    device = torch.device(device)
    return all(_verdict(name, device, dtype) for name in sorted(set(kernels) & set(CHECKS)))


def _verdict(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    key = _key(kernel, device, dtype)
    while key not in _verdicts:
        with torch.inference_mode(False), torch.enable_grad(), _autocast_disabled(device.type):
            reason = mismatch(kernel, device, dtype)
        _verdicts[key] = reason is None
        if reason is None:
            break
        if not CHECKS[kernel].per_isa_level:
            LOG.warning(
                "%s is not trusted on %s/%s: %s; ATen runs instead", kernel, device, dtype, reason
            )
            break
        key = _step_down(kernel, key[4], reason)
    return _verdicts[key]


def _step_down(kernel: str, path: str, reason: str) -> Key:
    """Declines ``path`` of the kernels ``kernel``'s check covers; the key of the path that
    runs instead (checked next), or the failed one's when no vector path is left."""
    from runtime.kernels.cpu import extension

    after = [extension.decline(name, path, reason) for name in CHECKS[kernel].covers or (kernel,)]
    below = after[0]
    then = f"its {below} path is checked instead" if below else "ATen runs instead"
    LOG.warning(
        "%s is not trusted at ISA level %s (its %s path): %s; %s",
        kernel, isa.level(), path, reason, then,
    )  # fmt: skip
    return (kernel, "cpu", None, None, below) if below else (kernel, "cpu", None, None, path)


def cached_verdict(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    """The cached verdict without running a check: False when none was recorded.

    Safe inside torch.compile tracing, where the check itself must not run.
    """
    return _verdicts.get(_key(kernel, device, dtype), False)


def set_verdict(
    kernel: str, device: torch.device | str, dtype: torch.dtype, verdict: bool | None
) -> None:
    """Record a verdict by hand, or forget it with ``None`` so the next call re-checks."""
    key = _key(kernel, torch.device(device), dtype)
    if verdict is None:
        _verdicts.pop(key, None)
    else:
        _verdicts[key] = verdict


def forget() -> None:
    """Forget every verdict: the next ``trusted`` call checks again (for tests that swap a
    kernel), and every C++ kernel path a failed check declined runs again."""
    from runtime.kernels.cpu import extension

    _verdicts.clear()
    extension.undecline()
