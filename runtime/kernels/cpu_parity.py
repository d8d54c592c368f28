"""The trust check cnnc's CPU kernels pass once per process before a model uses them.

The kernels are compiled on the user's machine with that machine's compiler and instruction
set, so correctness is re-checked there: small cases in each supported layout and dtype,
forward and backward, against ATen. The pooling kernel must agree bit for bit; batch norm
within tolerance; the bf16 convolution kernels (where the CPU has AVX512-BF16: forward,
input and weight gradients) within bf16 rounding. A mismatch declines the kernels (with
the reason logged), and every model keeps running on ATen.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

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
    from runtime.kernels.conv3x3 import conv3x3, kernel_available, weight_grad

    if not kernel_available():
        return None  # the convolutions keep ATen's kernels
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


@functools.cache
def trusted() -> bool:
    """True when every kernel matches ATen on this machine (checked once per process)."""
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            for check in (_pool_mismatch, _batchnorm_mismatch):
                problem = check(dtype, channels_last)
                if problem is not None:
                    log.warning("cnnc's CPU kernels are not used: %s", problem)
                    return False
    problem = _conv_mismatch()
    if problem is not None:
        log.warning("cnnc's CPU kernels are not used: %s", problem)
        return False
    return True
