"""``Fp32Conv2d``: a Conv2d whose fp32 CPU passes run cnnc's convolutions where they win.

``cpu/conv_fp32.cpp`` holds two fp32 (FMA) convolutions for small layers, each with forward,
input gradient and weight gradient (+ bias gradient), from NCHW or channels-last tensors:

- ``direct``: groups 1, dilation 1, square k x k kernels (k <= ``MAX_KERNEL``), equal
  strides and zero paddings on both axes, with or without bias; vectors over output channels;
- ``direct_rows``: the same for stride-1 3x3 and 5x5 layers, vectors along output rows, for
  layers with few output channels (LeNet's first layer, its second layer's input gradient);
- ``winograd_2x2`` and ``winograd_4x4``: Winograd F(2x2, 3x3) and F(4x4, 3x3) for the 3x3
  stride-1 layers among those (padding <= 2): 2.25x and 4x fewer multiplies than a direct
  convolution, for the layers where oneDNN's direct convolution already runs near the FMA
  peak (ResNet's 3x3 layers).

Both are written once against at::vec and built for x86-64's AVX2 and AVX-512 and aarch64's
NEON. Results equal ATen's within fp32 rounding (another summation order; Winograd's
transforms add rounding: a few units in the last place for F(2x2), about ten times that for
F(4x4)).

"Used only where it wins": which algorithm runs each pass of a layer (oneDNN's through ATen,
or one of cnnc's) is measured per layer geometry on its first call and cached
(``conv_choice``). The module takes the kernels only where they apply: eager
(torch.compile sees the plain convolution), CPU, 4-d fp32 input and weight, no CPU autocast
(a bf16 step runs the bf16 kernels of ``conv3x3`` or oneDNN), and a vector build of the
kernel at the level in use.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from runtime.kernels.cpu.conv_choice import Algorithm, Choice, Geometry, decide
from runtime.kernels.cpu.conv_module import SharedConv2d
from runtime.kernels.cpu.extension import load, vectorized

KERNEL = "conv_fp32"
MAX_KERNEL = 7
MAX_WEIGHTS = 128 * 128  # in x out channels: the packed weights of a larger layer leave L2
WINOGRAD_TILES: dict[str, int] = {"winograd_2x2": 2, "winograd_4x4": 4}  # output tile sizes


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


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int,
    padding: int,
    algorithm: Algorithm = "direct",
    sums: Tensor | None = None,
) -> Tensor:
    """fp32 ``conv2d(x, weight, bias, stride, padding)``, in x's memory format.

    ``sums``, a (2, out channels) fp64 tensor, receives the output's per-channel sum and sum
    of squares, taken image by image while each is in cache (a following batch norm's
    statistics)."""
    module = _module()
    if algorithm in WINOGRAD_TILES:
        tile = WINOGRAD_TILES[algorithm]
        result: Tensor = module.winograd_forward(x, weight, bias, padding, tile, sums)  # type: ignore[attr-defined]
    elif algorithm == "direct_rows":
        result = module.rows_forward(x, weight, bias, padding, sums)  # type: ignore[attr-defined]
    else:
        result = module.forward(x, weight, bias, stride, padding, sums)  # type: ignore[attr-defined]
    return result


def input_grad(
    grad: Tensor,
    weight: Tensor,
    stride: int,
    padding: int,
    size: tuple[int, int],
    algorithm: Algorithm = "direct",
) -> Tensor:
    """dx of ``conv2d(x, weight, stride=stride, padding=padding)`` for x of ``size`` (H, W),
    from the output gradient; in the gradient's memory format."""
    module = _module()
    if algorithm in WINOGRAD_TILES:
        tile = WINOGRAD_TILES[algorithm]
        result: Tensor = module.winograd_input_grad(grad, weight, padding, *size, tile)  # type: ignore[attr-defined]
    elif algorithm == "direct_rows":
        result = module.rows_input_grad(grad, weight, padding, *size)  # type: ignore[attr-defined]
    else:
        result = module.input_grad(grad, weight, stride, padding, *size)  # type: ignore[attr-defined]
    return result


def weight_grad(
    x: Tensor,
    grad: Tensor,
    kernel: int,
    stride: int,
    padding: int,
    bias: bool,
    algorithm: Algorithm = "direct",
) -> tuple[Tensor, Tensor | None]:
    """(dW, db or None) of ``conv2d(x, W, b, stride, padding)`` for k x k W."""
    module = _module()
    if algorithm in WINOGRAD_TILES:
        tile = WINOGRAD_TILES[algorithm]
        out = module.winograd_weight_grad(x, grad, padding, bias, tile)  # type: ignore[attr-defined]
    elif algorithm == "direct_rows":
        out = module.rows_weight_grad(x, grad, kernel, padding, bias)  # type: ignore[attr-defined]
    else:
        out = module.weight_grad(x, grad, kernel, stride, padding, bias)  # type: ignore[attr-defined]
    return out[0], (out[1] if bias else None)


# ---- autograd and the module ----------------------------------------------------------------


class _ConvFp32(torch.autograd.Function):
    """An fp32 conv2d whose passes run cnnc's kernels or ATen's, as ``choice`` says."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        conv: nn.Conv2d,
        choice: Choice,
        sums: Tensor | None,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv, ctx.choice = conv, choice  # type: ignore[attr-defined]
        s, p = conv.stride[0], int(conv.padding[0])
        if choice.cnnc("forward"):
            return forward(x, weight, bias, s, p, choice.forward, sums)
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
        aten_x = needs_x and not choice.cnnc("input_grad")
        aten_w = needs_w and not choice.cnnc("weight_grad")
        aten_b = needs_b and has_bias and (aten_w or not needs_w)
        grad_x = grad_w = grad_b = None
        if aten_x or aten_w or aten_b:
            bias_sizes = [conv.out_channels] if has_bias else None
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                [aten_x, aten_w, aten_b],
            )  # fmt: skip
        if needs_x and not aten_x:
            size = (x.shape[2], x.shape[3])
            grad_x = input_grad(grad, weight, s, p, size, choice.input_grad)
        if needs_w and not aten_w:
            grad_w, db = weight_grad(x, grad, k, s, p, needs_b and has_bias, choice.weight_grad)
            if db is not None:
                grad_b = db
        return grad_x, grad_w, grad_b, None, None, None


class Fp32Conv2d(SharedConv2d):
    """A Conv2d over another's Parameters whose fp32 CPU passes run cnnc's direct or
    Winograd convolution where one measured faster than oneDNN for the layer's geometry."""

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
        return self.forward_with_sums(x, False)[0]

    def forward_with_sums(self, x: Tensor, want_sums: bool = True) -> tuple[Tensor, Tensor | None]:
        """The output and, where cnnc's kernel computed it and ``want_sums``, its per-channel
        sum and sum of squares as a (2, out channels) fp64 tensor (else None): what a batch
        norm right after needs, taken while each image's output was in cache."""
        if not self._kernel_applies(x):
            return super().forward(x), None
        choice = decide(Geometry.of(self, x))
        if not choice.any():
            return super().forward(x), None
        sums = None  # only a training step's batch norm reads them
        if want_sums and self.training and choice.cnnc("forward"):
            sums = torch.empty((2, self.out_channels), dtype=torch.float64)
        grads = x.requires_grad or self.weight.requires_grad
        if torch.is_grad_enabled() and grads:
            result: Tensor = _ConvFp32.apply(x, self.weight, self.bias, self, choice, sums)
            return result, sums
        if choice.cnnc("forward"):  # no autograd (evaluation): the forward kernel alone
            s, p = self.stride[0], int(self.padding[0])
            return forward(x, self.weight, self.bias, s, p, choice.forward, sums), sums
        return super().forward(x), None


def conv_with_sums(conv: Fp32Conv2d, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``conv.forward_with_sums(x)``, as a function a torch.fx graph can call."""
    return conv.forward_with_sums(x)
