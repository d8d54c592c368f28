"""The trust check cnnc's CPU kernels pass once per process before a model uses them.

The kernels are compiled on the user's machine with that machine's compiler and instruction
set, so correctness is re-checked there, for the kernels a run uses, at the ISA level in use
(each level runs another code path): small cases in each supported layout and dtype,
forward and backward, against ATen. The pooling kernel must agree bit for bit; batch norm
within tolerance; the bf16 convolution kernels (forward, input and weight gradients) within
bf16 rounding. A mismatch declines the kernels (with the level and the reason logged), and
every model keeps running on ATen.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from runtime.kernels import isa

log = logging.getLogger("runtime.kernels")


def _pool_mismatch(dtype: torch.dtype, channels_last: bool) -> str | None:
    from runtime.kernels.pool import fused_maxpool2x2

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
    from runtime.kernels.batchnorm import FusedBatchNorm2d

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


def _conv_mismatch() -> str | None:
    from runtime.kernels.conv3x3 import conv3x3, weight_grad

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 16, 3, 3, generator=generator).bfloat16()
    bias = torch.randn(16, generator=generator).bfloat16()
    for stride in (1, 2):
        x = torch.randn(3, 16, 7, 6, generator=generator).bfloat16()
        oh, ow = (7 - 1) // stride + 1, (6 - 1) // stride + 1
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


def _each_layout(check: Callable[[torch.dtype, bool], str | None]) -> str | None:
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            problem = check(dtype, channels_last)
            if problem is not None:
                return problem
    return None


# kernel -> its check; the two convolution kernels are checked together, under conv3x3
CHECKS: dict[str, Callable[[], str | None]] = {
    "pool2x2": functools.partial(_each_layout, _pool_mismatch),
    "batchnorm": functools.partial(_each_layout, _batchnorm_mismatch),
    "conv3x3": _conv_mismatch,
}


def trusted(kernels: Iterable[str] = ("pool2x2", "batchnorm")) -> bool:
    """True when each of ``kernels`` matches ATen at the ISA level in use (checked once per
    process and level)."""
    return _trusted(isa.level(), tuple(sorted(set(kernels) & set(CHECKS))))


@functools.cache
def _trusted(level: str, kernels: tuple[str, ...]) -> bool:
    for name in kernels:
        problem = CHECKS[name]()
        if problem is not None:
            log.warning("cnnc's CPU kernels are not used (ISA level %s): %s", level, problem)
            return False
    return True


def forget() -> None:
    """Check again at the next ``trusted`` call (for tests that swap a kernel)."""
    _trusted.cache_clear()
