"""``KernelConv2d``: a Conv2d whose bf16 CPU training step runs cnnc's convolution kernels.

Kernels for bf16, channels-last convolutions on AVX512-BF16 CPUs without AMX (with AMX,
oneDNN's are faster; see ``pays_here``): 3x3 with padding 1, and the 1x1, stride-2
projection shortcuts of residual networks:

- ``cpu/conv3x3.cpp``, the forward (stride 1 or 2) and, with transposed and flipped
  weights, the input gradient (stride 1, or stride 2 phase by phase): a direct convolution
  that reaches this CPU's bf16 peak at 16 channels, where oneDNN's runs at about 40 % of it,
  and that skips ATen's per-call glue (a oneDNN primitive descriptor is built on every
  call). A 1x1 convolution is the centre tap of the same window;
- ``cpu/conv_wgrad.cpp``, the 3x3 weight gradient, 1.2-2.4x faster than oneDNN's when the
  saved input is out of cache, as it is in a backward pass (a 1x1 one, a plain GEMM, stays
  with oneDNN).

docs/performance.md has the measurements. The direct convolution covers small layers only
(``in_channels * out_channels <= 4096``: the packed weights stay in L1/L2); larger ones
stay with ATen. Results equal ATen's within bf16 rounding (fp32 sums in another order,
rounded once to bf16 as oneDNN does).

The module takes the kernels only where they apply: CPU, 4-d channels-last input, and bf16
(the tensors' own dtype or CPU autocast to bf16); anything else, and torch.compile, which
sees the plain convolution, runs ``nn.Conv2d.forward``. Without autograd (``no_grad`` or
``inference_mode``, e.g. a validation pass under bf16 autocast) only the forward kernel runs;
cnnc's own evaluation runs in fp32 and so stays with ATen.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from runtime.kernels.cpu import isa
from runtime.kernels.cpu.conv_module import SharedConv2d
from runtime.kernels.cpu.extension import load, vectorized

SMALL_WEIGHTS = 64 * 64  # in x out channels the direct convolution takes (measured)


def pays_here() -> bool:
    """True when the ISA level in use is the one these kernels beat oneDNN at: AVX512-BF16
    without AMX. Below it they have only their scalar path (for tests, not fast); with AMX,
    oneDNN's convolutions are 3-8x faster than these (``bench/conv_kernels.py`` on a
    Sapphire Rapids-class Xeon), so oneDNN keeps them."""
    return isa.level() == "avx512_bf16"


def kernel_available() -> bool:
    """True when both kernels are built, run their AVX512-BF16 path, and pay at this level."""
    return pays_here() and vectorized("conv3x3") and vectorized("conv_wgrad")


def eligible(conv: nn.Conv2d) -> bool:
    """The convolutions the kernels cover: 3x3 ones the weight-gradient kernel takes
    (channels: its register blocking), and small 1x1 stride-2 projection shortcuts."""
    if conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        return False
    return (
        conv.kernel_size == (3, 3)
        and conv.padding == (1, 1)
        and conv.stride in ((1, 1), (2, 2))
        and conv.in_channels % 16 == 0
        and conv.out_channels % 8 == 0
    ) or _projection(conv)


def _projection(conv: nn.Conv2d) -> bool:
    """A 1x1, stride-2 convolution (a residual block's projection) the direct kernel takes."""
    return (
        conv.kernel_size == (1, 1)
        and conv.padding == (0, 0)
        and conv.stride == (2, 2)
        and conv.in_channels % 2 == 0
        and direct_forward(conv)
    )


def direct_forward(conv: nn.Conv2d) -> bool:
    """True when an eligible convolution's forward runs the direct kernel."""
    return conv.out_channels % 16 == 0 and conv.in_channels * conv.out_channels <= SMALL_WEIGHTS


def direct_input_grad(conv: nn.Conv2d) -> bool:
    """True when an eligible convolution's input gradient runs the direct kernel."""
    return conv.out_channels % 2 == 0 and conv.in_channels * conv.out_channels <= SMALL_WEIGHTS


def conv3x3(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int,
    transposed: bool = False,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """bf16 ``conv2d(x, weight, bias, stride, padding=1)`` for 3x3 weights (fp32 or bf16,
    rounded to bf16). ``transposed``: the input gradient of ``conv2d(·, weight, stride,
    padding=1)`` from its output gradient ``x`` (no bias); stride 2 needs the input's
    ``size`` (H, W), which the output gradient does not determine."""
    module = load("conv3x3")
    assert module is not None, "conv3x3 needs kernel_available()"
    result: Tensor = module.conv3x3(
        x.contiguous(memory_format=torch.channels_last), weight, bias, stride, transposed,
        list(size) if size is not None else [],
    )  # fmt: skip
    return result


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
    """A bf16 conv2d on cnnc's kernels (ATen where a kernel does not cover the layer).

    The weight and bias come in their own dtype (fp32 under autocast): the kernels round
    them to bf16 as ``.to(bfloat16)`` would, and their gradients are returned in it.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        conv: nn.Conv2d,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = conv  # type: ignore[attr-defined]
        stride = conv.stride[0]
        if direct_forward(conv):
            return conv3x3(x, weight, bias, stride)
        bf16 = torch.bfloat16
        result: Tensor = torch.ops.aten.convolution(
            x, weight.to(bf16), bias.to(bf16) if bias is not None else None,
            [stride] * 2, list(conv.padding), [1, 1], False, [0, 0], 1,
        )  # fmt: skip
        return result

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        conv: nn.Conv2d = ctx.conv  # type: ignore[attr-defined]
        stride = conv.stride[0]
        grad = grad.contiguous(memory_format=torch.channels_last)
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        grad_x = grad_w = grad_b = None
        aten_x = needs_x and not direct_input_grad(conv)
        aten_w = needs_w and conv.kernel_size == (1, 1)  # a GEMM: oneDNN's is as fast
        if aten_x or aten_w:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad, x, weight.to(torch.bfloat16), None, [stride] * 2, list(conv.padding),
                [1, 1], False, [0, 0], 1, [aten_x, aten_w, False],
            )  # fmt: skip
        if needs_x and not aten_x:
            grad_x = conv3x3(grad, weight, None, stride, True, (x.shape[2], x.shape[3]))
        if needs_w and not aten_w:
            grad_w = weight_grad(x, grad, stride)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if needs_b and conv.bias is not None:
            grad_b = grad.sum((0, 2, 3), dtype=torch.float32).to(torch.bfloat16)
            grad_b = grad_b.to(conv.bias.dtype)
        return grad_x, grad_w, grad_b, None


class KernelConv2d(SharedConv2d):
    """A Conv2d over another's Parameters whose bf16 CPU training step runs the kernels."""

    def _bf16(self, x: Tensor) -> bool:
        """True when this call computes in bf16: the inputs' dtype or CPU autocast's."""
        if torch.is_autocast_enabled("cpu"):
            return torch.get_autocast_dtype("cpu") == torch.bfloat16
        return x.dtype == torch.bfloat16 and self.weight.dtype == torch.bfloat16

    def _kernels_apply(self, x: Tensor) -> bool:
        """True when this call can run on the kernels: eager, CPU, channels-last, bf16."""
        return not (
            torch.compiler.is_compiling()
            or x.device.type != "cpu"
            or x.dim() != 4
            or not x.is_contiguous(memory_format=torch.channels_last)
            or not self._bf16(x)
            or not kernel_available()
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._kernels_apply(x):
            return super().forward(x)
        x = x.to(torch.bfloat16)
        if torch.is_grad_enabled():
            result: Tensor = _Conv3x3.apply(x, self.weight, self.bias, self)
            return result
        if direct_forward(self):  # evaluation (no autograd): the forward kernel alone
            return conv3x3(x, self.weight, self.bias, self.stride[0])
        return super().forward(x)
