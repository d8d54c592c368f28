"""Conv2d hyper-parameters as the fused conv+ReLU op sees them.

This file owns the integer arithmetic every part of ``runtime.kernels`` shares: turning an
``nn.Conv2d``'s ``stride``/``padding``/``dilation`` into explicit pairs (or a reason why the
fused op cannot take that conv), the output shape (PyTorch floor semantics), and the output
memory format, which the Triton launchers, the CPU implementation and the fake
implementation must agree on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

Pair = tuple[int, int]


@dataclass(frozen=True)
class ConvArgs:
    """Explicit per-axis hyper-parameters of a groups=1, zero-padded conv2d.

    Attributes:
        stride: ``(stride_h, stride_w)``.
        padding: ``(pad_h, pad_w)``, applied symmetrically on both sides.
        dilation: ``(dil_h, dil_w)``.
    """

    stride: Pair
    padding: Pair
    dilation: Pair

    def as_lists(self) -> tuple[list[int], list[int], list[int]]:
        """The three pairs as lists, the form the custom op's schema takes."""
        return list(self.stride), list(self.padding), list(self.dilation)


def _pair(value: int | tuple[int, ...] | list[int]) -> Pair:
    if isinstance(value, int):
        return (value, value)
    if len(value) == 1:
        return (value[0], value[0])
    return (value[0], value[1])


def _same_padding(conv: nn.Conv2d) -> Pair | str:
    """Symmetric padding equal to ``padding="same"``, or why there is none."""
    pads: list[int] = []
    for kernel, dilation in zip(conv.kernel_size, _pair(conv.dilation), strict=True):
        total = dilation * (kernel - 1)
        if total % 2:
            return f"padding='same' needs asymmetric padding (total {total}) for this kernel"
        pads.append(total // 2)
    return (pads[0], pads[1])


def conv_args_from_module(conv: nn.Conv2d) -> ConvArgs | str:
    """The fused op's view of ``conv``, or the reason it cannot run as one fused op.

    Args:
        conv: the convolution to inspect.

    Returns:
        A ``ConvArgs`` when the conv is groups=1 with zero padding the op can express;
        otherwise a one-line reason, meant for a log message.
    """
    if conv.groups != 1:
        return f"groups={conv.groups}; the fused kernel supports groups=1 only"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}; the fused kernel pads with zeros only"
    padding: Pair | str
    if conv.padding == "valid":
        padding = (0, 0)
    elif conv.padding == "same":
        padding = _same_padding(conv)
    elif isinstance(conv.padding, str):
        padding = f"padding={conv.padding!r} is not a recognised padding string"
    else:
        padding = _pair(conv.padding)
    if isinstance(padding, str):
        return padding
    return ConvArgs(stride=_pair(conv.stride), padding=padding, dilation=_pair(conv.dilation))


def conv2d_output_shape(
    x_shape: torch.Size | tuple[int, ...],
    w_shape: torch.Size | tuple[int, ...],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> tuple[int, int, int, int]:
    """``(N, K, OH, OW)`` of a conv2d, with PyTorch's floor division.

    Args:
        x_shape: ``(N, C, H, W)`` of the input.
        w_shape: ``(K, C, KH, KW)`` of the weight.
        stride: ``[stride_h, stride_w]``.
        padding: ``[pad_h, pad_w]``.
        dilation: ``[dil_h, dil_w]``.
    """
    n, _, h, w = x_shape
    k, _, kh, kw = w_shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (n, k, oh, ow)


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """Channels-last when the input is strictly channels-last, else contiguous NCHW.

    A tensor that is both (C == 1 or H == W == 1) counts as NCHW, so the real kernels and
    the fake implementation agree on every input.
    """
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
