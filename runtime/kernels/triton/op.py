"""The ``cnnc_runtime::conv2d_relu`` custom op: registration, device dispatch, autograd.

This file owns the torch.library side of the fused conv2d + bias + ReLU: two functional
custom ops (forward, and a backward op so the backward is opaque to tracing too), their fake
implementations (shapes from ``conv_args``, so torch.compile and torch.export trace them
without graph breaks), the autograd formula, and which implementation runs where. Each op's
schema is written once, in a factory (``_forward_op``, ``_backward_op``) that turns the
schema's lists into a ``ConvArgs`` and calls the implementation a picker chooses; the real op
and its fake are the same factory with different pickers:

- CUDA tensors: the Triton kernels of ``triton.forward`` / ``triton.backward`` (forward,
  ReLU mask + bias grad, grad_input and grad_weight all in Triton) for fp32/fp16/bf16; other
  dtypes, or a missing ``triton``, take the aten path with a logged reason.
- CPU tensors: oneDNN's fused ``mkldnn._convolution_pointwise(..., "relu")`` where it supports
  the dtype (fp32; bf16 on CPUs with bf16 support; fp16 needs AVX-NE-CONVERT or AVX512-FP16),
  otherwise aten ``conv2d`` + ``relu_``. Backward: aten ``threshold_backward`` +
  ``convolution_backward``.
- Any other device: aten ``conv2d`` + ``relu_``.

Measured on CPU (``python -m bench.conv_relu``: 2 AMD EPYC cores, 2 threads, torch
2.14.1, batch 128, one layer's forward + backward (weight, bias, and the input gradient for
the second layer), both variants interleaved in one process, median of 21 rounds of 5
steps, runs kept only when no other process was busy). Time of this op / time of aten
``F.relu(F.conv2d(...))``; above 1.00 means the op is slower:

====================  =====  ============  =====  ============  ==========================
layer                 fp32   fp32 ch-last  bf16   bf16 ch-last  run
====================  =====  ============  =====  ============  ==========================
3->6 5x5 on 32x32     2.84   1.08          1.04   1.11          glibc malloc, run A
3->6 5x5 on 32x32     1.83   1.07          1.03   1.07          glibc malloc, run B
3->6 5x5 on 32x32     1.19   1.09          1.04   1.08          mmap threshold pinned
6->16 5x5 on 14x14    1.10   1.10          1.13   1.13          glibc malloc, run A
6->16 5x5 on 14x14    1.08   1.09          1.14   1.11          glibc malloc, run B
6->16 5x5 on 14x14    1.08   1.07          1.11   1.10          mmap threshold pinned
====================  =====  ============  =====  ============  ==========================

Absolute (pinned run, op / aten, ms): 1.99/1.68, 2.03/1.86, 8.22/7.92, 1.45/1.34 for the
first layer; 1.70/1.58, 1.54/1.45, 0.93/0.84, 1.22/1.11 for the second. The op is nowhere
faster on CPU. The compute is the same (oneDNN's fused conv+ReLU forward and aten's
conv2d + relu both take 1.35 ms on one thread for the first layer; the backward is the
same aten call); the ~0.1 ms per layer and step is the Python dispatch of two custom ops
and their autograd glue. The first layer's fp32 NCHW outlier is glibc handing freed
multi-MB buffers back to the OS and page-faulting them in again every step (the profiler
shows the same kernels taking 2-3x longer); with ``MALLOC_MMAP_THRESHOLD_=4294967296
MALLOC_TRIM_THRESHOLD_=4294967296`` it drops to 1.19. It depends on the allocation history,
not on the oneDNN kernel: in one probe the op with the aten forward was hit (3.0x) and the
op with the oneDNN forward was not (0.99x). On CPU the op is for portability (one fused
model runs everywhere, and compiles and exports with the op in the graph), not for speed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from runtime.kernels.conv_args import ConvArgs, conv2d_output_shape, output_memory_format

LOG = logging.getLogger("runtime.kernels")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_logged_reasons: set[str] = set()

Grads = tuple[Tensor | None, Tensor | None, Tensor | None]
# An implementation of each op, with the hyper-parameters as one ConvArgs.
ForwardKernel = Callable[[Tensor, Tensor, Tensor | None, ConvArgs], Tensor]
BackwardKernel = Callable[[Tensor, Tensor, Tensor, Tensor, ConvArgs, list[bool]], Grads]
# The ops' schemas: (x, weight, bias, stride, padding, dilation) and
# (grad_y, y, x, weight, stride, padding, dilation, output_mask).
ForwardSchema = Callable[[Tensor, Tensor, Tensor | None, list[int], list[int], list[int]], Tensor]
BackwardSchema = Callable[
    [Tensor, Tensor, Tensor, Tensor, list[int], list[int], list[int], list[bool]],
    tuple[Tensor, Tensor, Tensor],
]


def log_once(reason: str) -> None:
    """Log a fallback reason at INFO the first time it happens in this process."""
    if reason not in _logged_reasons:
        _logged_reasons.add(reason)
        LOG.info(reason)


@functools.cache
def _triton_kernels() -> tuple[ModuleType, ModuleType] | None:
    """The forward and backward Triton modules, or None when triton cannot be imported."""
    try:
        from runtime.kernels.triton import backward, forward
    except ImportError as error:
        log_once(f"conv2d_relu: triton unavailable ({error}); CUDA tensors use aten")
        return None
    return forward, backward


def _mkldnn_supports(dtype: torch.dtype) -> bool:
    if not (torch._C._has_mkldnn and torch.backends.mkldnn.enabled):
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


def _triton_declines(x: Tensor, weight: Tensor) -> str | None:
    """Why these CUDA inputs go to aten instead of Triton, or None.

    Mismatched dtypes or channel counts go to aten so its usual error message is raised.
    """
    if x.dtype not in TRITON_DTYPES:
        return f"no Triton kernel for dtype {x.dtype}"
    if weight.dtype != x.dtype or weight.shape[1] != x.shape[1]:
        return "input and weight disagree in dtype or channels"
    return None


def _aten_forward(x: Tensor, weight: Tensor, bias: Tensor | None, conv: ConvArgs) -> Tensor:
    y = torch.relu_(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation))
    return y.contiguous(memory_format=output_memory_format(x))


def _mkldnn_forward(x: Tensor, weight: Tensor, bias: Tensor | None, conv: ConvArgs) -> Tensor:
    y: Tensor = torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, conv.padding, conv.stride, conv.dilation, 1, "relu", [], ""
    )
    return y.contiguous(memory_format=output_memory_format(x))


def _fake_forward(x: Tensor, weight: Tensor, bias: Tensor | None, conv: ConvArgs) -> Tensor:
    shape = conv2d_output_shape(x.shape, weight.shape, *conv.as_lists())
    return x.new_empty(shape).contiguous(memory_format=output_memory_format(x))


def _forward_kernel(x: Tensor, weight: Tensor) -> ForwardKernel:
    """The forward for these inputs' device and dtype (see the module docstring)."""
    if x.device.type == "cpu":
        return _mkldnn_forward if _mkldnn_supports(x.dtype) else _aten_forward
    if x.device.type != "cuda":
        return _aten_forward
    kernels = _triton_kernels()
    reason = _triton_declines(x, weight)
    if kernels is None or reason is not None:
        log_once(f"conv2d_relu: {reason or 'triton unavailable'}; using aten")
        return _aten_forward
    triton_forward: ForwardKernel = kernels[0].triton_conv2d_relu
    return triton_forward


def _aten_backward(
    grad_y: Tensor, y: Tensor, x: Tensor, weight: Tensor, conv: ConvArgs, output_mask: list[bool]
) -> Grads:
    g = torch.ops.aten.threshold_backward(grad_y, y, 0)
    bias_sizes = [weight.shape[0]] if output_mask[2] else None
    grads: Grads = torch.ops.aten.convolution_backward(
        g,
        x,
        weight,
        bias_sizes,
        conv.stride,
        conv.padding,
        conv.dilation,
        False,
        [0, 0],
        1,
        output_mask,
    )
    return grads


def _fake_backward(
    grad_y: Tensor, y: Tensor, x: Tensor, weight: Tensor, conv: ConvArgs, output_mask: list[bool]
) -> Grads:
    return (
        x.new_empty(x.shape) if output_mask[0] else None,
        weight.new_empty(weight.shape) if output_mask[1] else None,
        weight.new_empty(weight.shape[:1]) if output_mask[2] else None,
    )


def _backward_kernel(x: Tensor, weight: Tensor) -> BackwardKernel:
    """The backward for these inputs: Triton on CUDA where the forward took it, else aten."""
    kernels = _triton_kernels() if x.device.type == "cuda" else None
    if kernels is None or _triton_declines(x, weight) is not None:
        return _aten_backward
    triton_backward: BackwardKernel = kernels[1].triton_conv2d_relu_backward
    return triton_backward


def _or_empty(grad: Tensor | None, layout_of: Tensor) -> Tensor:
    """``grad`` in ``layout_of``'s memory format, or a fresh empty tensor when not computed
    (a custom op's outputs may not alias each other, so each gets its own)."""
    if grad is None:
        return layout_of.new_empty(0)
    if grad.dim() != 4:
        return grad.contiguous()
    return grad.contiguous(memory_format=output_memory_format(layout_of))


def _forward_op(kernel_for: Callable[[Tensor, Tensor], ForwardKernel]) -> ForwardSchema:
    """The forward op's body in its schema's terms, run by ``kernel_for(x, weight)``."""

    def conv2d_relu(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
    ) -> Tensor:
        """``relu(conv2d(x, weight, bias, stride, padding, dilation))`` as one custom op.

        Differentiable, traceable by torch.compile (``fullgraph=True``) and kept by
        torch.export as ``torch.ops.cnnc_runtime.conv2d_relu``. groups=1 and zero padding.

        Args:
            x: ``(N, C, H, W)`` input, NCHW or channels-last.
            weight: ``(K, C, KH, KW)`` filters of ``x``'s dtype.
            bias: ``(K,)`` or None.
            stride: ``[stride_h, stride_w]``.
            padding: ``[pad_h, pad_w]``, zeros on each side.
            dilation: ``[dil_h, dil_w]``.

        Returns:
            ``(N, K, OH, OW)`` in ``x``'s dtype; channels-last exactly when ``x`` is.
        """
        conv = ConvArgs.from_lists(stride, padding, dilation)
        return kernel_for(x, weight)(x, weight, bias, conv)

    return conv2d_relu


def _backward_op(kernel_for: Callable[[Tensor, Tensor], BackwardKernel]) -> BackwardSchema:
    """The backward op's body in its schema's terms, run by ``kernel_for(x, weight)``."""

    def conv2d_relu_backward(
        grad_y: Tensor,
        y: Tensor,
        x: Tensor,
        weight: Tensor,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        output_mask: list[bool],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(grad_x, grad_weight, grad_bias) of ``conv2d_relu`` for ``output_mask``; the three
        gradients the schema returns, laid out as the fake promises (empty where unmasked)."""
        conv = ConvArgs.from_lists(stride, padding, dilation)
        grad_x, grad_w, grad_b = kernel_for(x, weight)(grad_y, y, x, weight, conv, output_mask)
        return _or_empty(grad_x, x), _or_empty(grad_w, weight), _or_empty(grad_b, weight)

    return conv2d_relu_backward


_conv2d_relu_op = torch.library.custom_op(
    "cnnc_runtime::conv2d_relu", _forward_op(_forward_kernel), mutates_args=()
)
_conv2d_relu_op.register_fake(_forward_op(lambda x, weight: _fake_forward))
_conv2d_relu_backward_op = torch.library.custom_op(
    "cnnc_runtime::conv2d_relu_backward", _backward_op(_backward_kernel), mutates_args=()
)
_conv2d_relu_backward_op.register_fake(_backward_op(lambda x, weight: _fake_backward))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    """Save the input, the weight and the post-ReLU output (its sign is the ReLU mask)."""
    x, weight, bias, stride, padding, dilation = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.conv_args = (stride, padding, dilation)
    ctx.has_bias = bias is not None


def _backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
    """Gradients through the backward op, computing only those autograd asks for."""
    x, weight, y = ctx.saved_tensors
    wanted = ctx.needs_input_grad
    mask = [wanted[0], wanted[1], ctx.has_bias and wanted[2]]
    grads = torch.ops.cnnc_runtime.conv2d_relu_backward(grad_y, y, x, weight, *ctx.conv_args, mask)
    grad_x, grad_w, grad_b = (
        grad if keep else None for grad, keep in zip(grads, mask, strict=True)
    )
    return grad_x, grad_w, grad_b, None, None, None


_conv2d_relu_op.register_autograd(_backward, setup_context=_setup_context)

# The public entry point is the op itself (documented on ``_forward_op``'s body): called
# through ``torch.ops`` so that torch.compile and torch.export record the op packet.
conv2d_relu = torch.ops.cnnc_runtime.conv2d_relu
