"""Parity check before trust: the fused conv+ReLU op runs only where it matched aten.

This file owns the decision "may ``cnnc_runtime::conv2d_relu`` replace
``F.relu(F.conv2d(...))`` on this (device, dtype)?". ``ensure_trusted`` runs the op once on
a small representative case (3x3 with padding in NCHW, 5x5 stride 2 in channels-last, one
case without bias), compares the output and the input, weight and bias gradients with
aten's unfused path on the same device, caches the verdict per (device, dtype), and logs
why when it refuses. The error metric and per-dtype tolerances live here too, so the
kernel tests judge with the same yardstick.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from runtime.kernels.conv_relu_op import conv2d_relu

LOG = logging.getLogger("runtime.kernels")

# max |fused - reference| / max |reference|. fp32 allows for TF32 on CUDA (10-bit mantissa,
# cuDNN's default for convolutions); fp16/bf16 allow ~10 and ~5 roundings to 11 and 8 bits.
TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-6,
    torch.float32: 5e-3,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}

_verdicts: dict[tuple[str, int | None, torch.dtype], bool] = {}


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


def parity_mismatch(device: torch.device, dtype: torch.dtype) -> str | None:
    """Run every ``PARITY_CASES`` case fused and unfused; describe the first mismatch.

    Args:
        device: where both paths run.
        dtype: the parameters' and inputs' dtype.

    Returns:
        None when every output and gradient is within ``TOLERANCES[dtype]``, otherwise a
        one-line description of what differed (or of the exception the fused op raised).
    """
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


def _autocast_disabled(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Autocast off while comparing, so both paths run in the dtype under test."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _key(device: torch.device, dtype: torch.dtype) -> tuple[str, int | None, torch.dtype]:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return (device.type, device.index, dtype)


def ensure_trusted(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the fused op may run on ``device`` with ``dtype``; checks once, then cached.

    On a mismatch the verdict is False, the reason is logged at WARNING on the
    ``runtime.kernels`` logger, and callers use ``F.relu(F.conv2d(...))`` instead.

    Args:
        device: the device the op would run on.
        dtype: the dtype it would run in.
    """
    key = _key(torch.device(device), dtype)
    if key not in _verdicts:
        with torch.inference_mode(False), torch.enable_grad(), _autocast_disabled(key[0]):
            reason = parity_mismatch(torch.device(device), dtype)
        if reason is not None:
            LOG.warning(
                "conv2d_relu is not trusted on %s/%s, using conv2d + relu: %s",
                device,
                dtype,
                reason,
            )
        _verdicts[key] = reason is None
    return _verdicts[key]


def cached_verdict(device: torch.device, dtype: torch.dtype) -> bool:
    """The cached verdict without running a check: False when none was recorded.

    Safe inside torch.compile tracing, where the check itself must not run.
    """
    return _verdicts.get(_key(device, dtype), False)


def set_verdict(device: torch.device | str, dtype: torch.dtype, trusted: bool | None) -> None:
    """Record a verdict by hand, or forget it with ``None`` so the next call re-checks."""
    key = _key(torch.device(device), dtype)
    if trusted is None:
        _verdicts.pop(key, None)
    else:
        _verdicts[key] = trusted
