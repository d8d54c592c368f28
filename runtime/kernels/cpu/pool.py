"""``cnnc_runtime::maxpool2x2``: fused [ReLU +] 2x2 stride-2 max pooling, a torch custom op.

On CPU it runs the C++ kernel of ``cpu/pool2x2.cpp`` (vectorized with AVX2 or AVX-512 through
at::vec, scalar below AVX2; one byte of window index per output instead of int64 indices); ATen's CPU max-pooling is a scalar loop that takes about a
quarter of a LeNet training step. Elsewhere, or when the kernel cannot be built, the same
op computes through ATen. Values and gradients equal ``max_pool2d(relu(x), 2)`` and
``relu(max_pool2d(x, 2))`` bit for bit (tests check ties, NaN, odd sizes, both memory
formats and fp32/bf16/fp16). Registered with a fake implementation and autograd, so
torch.compile traces it without graph breaks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.geometry import output_hw
from runtime.kernels.cpu.extension import load, vectorized

NO_GRAD = 4  # window index meaning "the ReLU zeroed this output": no gradient


def _format(x: Tensor) -> torch.memory_format:
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def kernel_available() -> bool:
    """True when the C++ kernel is built and runs a vector path at the ISA level in use."""
    return vectorized("pool2x2")


@torch.library.custom_op("cnnc_runtime::maxpool2x2", mutates_args=())
def maxpool2x2(x: Tensor, relu: bool) -> tuple[Tensor, Tensor]:
    """(pooled values, window index 0-3 or 4 for "no gradient"), both in x's memory format."""
    module = load("pool2x2") if x.device.type == "cpu" else None
    if module is not None:
        y, index = module.forward(x.contiguous(memory_format=_format(x)), relu)
        return y, index
    return _aten_forward(x, relu)


@maxpool2x2.register_fake
def _(x: Tensor, relu: bool) -> tuple[Tensor, Tensor]:
    oh, ow = output_hw(x.shape[2], x.shape[3], kernel=(2, 2), stride=(2, 2))
    shape = (x.shape[0], x.shape[1], oh, ow)
    fmt = _format(x)
    y = x.new_empty(shape).contiguous(memory_format=fmt)
    return y, x.new_empty(shape, dtype=torch.uint8).contiguous(memory_format=fmt)


@torch.library.custom_op("cnnc_runtime::maxpool2x2_backward", mutates_args=())
def maxpool2x2_backward(grad: Tensor, index: Tensor, height: int, width: int) -> Tensor:
    """The input gradient of ``maxpool2x2``: each output's gradient at its window index."""
    module = load("pool2x2") if grad.device.type == "cpu" else None
    if module is not None:
        result: Tensor = module.backward(grad, index, height, width)
        return result
    return _aten_backward(grad, index, height, width)


@maxpool2x2_backward.register_fake
def _(grad: Tensor, index: Tensor, height: int, width: int) -> Tensor:
    shape = (grad.shape[0], grad.shape[1], height, width)
    return grad.new_empty(shape).contiguous(memory_format=_format(index))


def _setup(
    ctx: torch.autograd.function.FunctionCtx,
    inputs: tuple[Tensor, bool],
    output: tuple[Tensor, Tensor],
) -> None:
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.size = inputs[0].shape[-2:]  # type: ignore[attr-defined]


def _backward(
    ctx: torch.autograd.function.FunctionCtx, grad: Tensor, _grad_index: Tensor | None
) -> tuple[Tensor, None]:
    (index,) = ctx.saved_tensors  # type: ignore[attr-defined]
    height, width = ctx.size  # type: ignore[attr-defined]
    return maxpool2x2_backward(grad, index, height, width), None


maxpool2x2.register_autograd(_backward, setup_context=_setup)


class _EagerMaxPool(torch.autograd.Function):
    """The eager path: the op's C++ kernels and autograd without the custom-op machinery's
    per-call Python cost; torch.compile and torch.export still see the custom op."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, module: object, x: Tensor, relu: bool
    ) -> Tensor:
        y, index = module.forward(x.contiguous(memory_format=_format(x)), relu)  # type: ignore[attr-defined]
        ctx.save_for_backward(index)
        ctx.state = (module, x.shape[-2], x.shape[-1])  # type: ignore[attr-defined]
        result: Tensor = y
        return result

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[None, Tensor, None]:
        (index,) = ctx.saved_tensors  # type: ignore[attr-defined]
        module, height, width = ctx.state  # type: ignore[attr-defined]
        return None, module.backward(grad, index, height, width), None


def _eager_module(x: Tensor) -> object | None:
    """The C++ module when the call can skip the custom op: a plain CPU tensor."""
    return load("pool2x2") if type(x) is Tensor and x.device.type == "cpu" else None


def fused_maxpool2x2(x: Tensor, relu: bool = False) -> Tensor:
    """``relu(max_pool2d(x, 2))`` (or without the ReLU) through the fused op."""
    if not torch.compiler.is_compiling():  # compile and export trace the custom op
        module = _eager_module(x)
        if module is not None:
            eager: Tensor = _EagerMaxPool.apply(module, x, relu)
            return eager
    pooled: Tensor = maxpool2x2(x, relu)[0]
    return pooled


class FusedMaxPool2x2(nn.Module):
    """nn.MaxPool2d(2) [+ ReLU] as one module over the fused op."""

    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        return fused_maxpool2x2(x, self.relu)

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


# ---- the ATen path (other devices, or no compiler) ------------------------------------------


def _aten_forward(x: Tensor, relu: bool) -> tuple[Tensor, Tensor]:
    y, flat = torch.ops.aten.max_pool2d_with_indices(F.relu(x) if relu else x, [2, 2], [2, 2])
    width = x.shape[-1]
    index = ((flat // width) % 2 * 2 + (flat % width) % 2).to(torch.uint8)
    if relu:
        index = torch.where(y <= 0, NO_GRAD, index).to(torch.uint8)  # NaN keeps its index
    return y, index


def _aten_backward(grad: Tensor, index: Tensor, height: int, width: int) -> Tensor:
    parts = [torch.where(index == k, grad, 0) for k in range(4)]
    top = torch.stack(parts[:2], dim=-1).flatten(-2)  # (N, C, OH, 2*OW)
    bottom = torch.stack(parts[2:], dim=-1).flatten(-2)
    full = torch.stack([top, bottom], dim=-2).flatten(-3, -2)  # (N, C, 2*OH, 2*OW)
    full = F.pad(full, (0, width - full.shape[-1], 0, height - full.shape[-2]))
    return full.contiguous(memory_format=_format(index))
