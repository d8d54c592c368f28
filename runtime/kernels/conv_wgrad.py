"""``WgradConv2d``: a Conv2d whose bf16 weight gradient runs cnnc's CPU kernel.

Forward and the input gradient stay with ATen (oneDNN); the weight gradient of a 3x3,
padding-1 convolution (stride 1 or 2) in bf16 channels-last runs ``cpu/conv_wgrad.cpp``,
which is 1.3-2x faster than oneDNN's on AVX512-BF16 CPUs without AMX when the saved input
is out of cache, as it is in a backward pass (docs/performance.md has the measurements).

The module takes the path only where it applies: CPU, 4-d channels-last input, and bf16
(the tensors' own dtype or CPU autocast to bf16); anything else, and torch.compile, which
sees the plain convolution, runs ``nn.Conv2d.forward``. The result equals ATen's within
bf16 rounding (fp32 sums in a different order, rounded once to bf16 as oneDNN does).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from runtime.kernels.cpu_ext import load


@functools.cache
def kernel_available() -> bool:
    """True when the kernel is built and this CPU has AVX512-BF16."""
    module = load("conv_wgrad")
    return module is not None and bool(module.available())


def eligible(conv: nn.Conv2d) -> bool:
    """The convolutions the kernel covers (channel counts: its register blocking)."""
    return (
        conv.kernel_size == (3, 3)
        and conv.padding == (1, 1)
        and conv.stride in ((1, 1), (2, 2))
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels % 16 == 0
        and conv.out_channels % 8 == 0
    )


def weight_grad(x: Tensor, grad: Tensor, stride: int) -> Tensor:
    """dW of ``conv2d(x, W, stride=stride, padding=1)`` for 3x3 W, from the output's grad."""
    module = load("conv_wgrad")
    assert module is not None, "weight_grad needs kernel_available()"
    channels_last = torch.channels_last
    result: Tensor = module.weight_grad(
        x.contiguous(memory_format=channels_last),
        grad.contiguous(memory_format=channels_last),
        stride,
    )
    return result


class _Conv3x3(torch.autograd.Function):
    """bf16 conv2d through ATen, with the weight gradient from the kernel."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: int,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, bias is not None)  # type: ignore[attr-defined]
        result: Tensor = torch.ops.aten.convolution(
            x, weight, bias, [stride] * 2, [1, 1], [1, 1], False, [0, 0], 1
        )
        return result

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        stride, has_bias = ctx.geometry  # type: ignore[attr-defined]
        grad = grad.contiguous(memory_format=torch.channels_last)
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        grad_x = grad_b = None
        if needs_x or (has_bias and needs_b):
            grad_x, _, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if has_bias else None,
                [stride] * 2, [1, 1], [1, 1], False, [0, 0], 1,
                [needs_x, False, has_bias and needs_b],
            )  # fmt: skip
        grad_w = weight_grad(x, grad, stride) if needs_w else None
        return grad_x, grad_w, grad_b, None


class WgradConv2d(nn.Conv2d):
    """A Conv2d over another's Parameters whose bf16 CPU weight gradient runs the kernel."""

    @classmethod
    def from_module(cls, conv: nn.Conv2d) -> WgradConv2d:
        """The module over ``conv``'s own Parameters (same state_dict keys and values)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "transposed", "output_padding", "groups", "padding_mode",
                     "_reversed_padding_repeated_twice"):  # fmt: skip
            setattr(new, name, getattr(conv, name))
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new

    def _bf16(self, x: Tensor) -> bool:
        """True when this call computes in bf16: the inputs' dtype or CPU autocast's."""
        if torch.is_autocast_enabled("cpu"):
            return torch.get_autocast_dtype("cpu") == torch.bfloat16
        return x.dtype == torch.bfloat16 and self.weight.dtype == torch.bfloat16

    def forward(self, x: Tensor) -> Tensor:
        if (
            torch.compiler.is_compiling()
            or x.device.type != "cpu"
            or x.dim() != 4
            or not torch.is_grad_enabled()
            or not x.is_contiguous(memory_format=torch.channels_last)
            or not self._bf16(x)
            or not kernel_available()
        ):
            return super().forward(x)
        bf16 = torch.bfloat16
        bias = self.bias.to(bf16) if self.bias is not None else None
        result: Tensor = _Conv3x3.apply(x.to(bf16), self.weight.to(bf16), bias, self.stride[0])
        return result
