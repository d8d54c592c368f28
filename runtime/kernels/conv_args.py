"""Conv2d hyper-parameters as the kernels see them, shared by both kernel families.

This file owns turning an ``nn.Conv2d``'s ``stride``/``padding``/``dilation`` into explicit
pairs (or a reason why a kernel cannot take that conv), the output shape of a batched
conv2d (its arithmetic is ``runtime.geometry``'s), and the output memory format, which the
Triton launchers, the CPU implementation and the fake implementations must agree on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from runtime.geometry import output_hw, pair, same_padding

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

    @classmethod
    def from_lists(cls, stride: list[int], padding: list[int], dilation: list[int]) -> ConvArgs:
        """The custom op's ``int[]`` arguments as pairs (a one-element list counts for both
        axes, as torch reads it)."""
        return cls(stride=pair(stride), padding=pair(padding), dilation=pair(dilation))

    def as_lists(self) -> tuple[list[int], list[int], list[int]]:
        """The three pairs as lists, the form the custom op's schema takes."""
        return list(self.stride), list(self.padding), list(self.dilation)

    def per_axis(self) -> tuple[int, int, int, int, int, int]:
        """``(stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)``, as the Triton kernels take them."""
        return (*self.stride, *self.padding, *self.dilation)


def _same_padding(conv: nn.Conv2d) -> Pair | str:
    """Symmetric padding equal to ``padding="same"``, or why there is none."""
    pads: list[int] = []
    for kernel, dilation in zip(conv.kernel_size, pair(conv.dilation), strict=True):
        before, after = same_padding(kernel, dilation)
        if before != after:
            total = before + after
            return f"padding='same' needs asymmetric padding (total {total}) for this kernel"
        pads.append(before)
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
        padding = pair(conv.padding)
    if isinstance(padding, str):
        return padding
    return ConvArgs(stride=pair(conv.stride), padding=padding, dilation=pair(conv.dilation))


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
    oh, ow = output_hw(h, w, (kh, kw), pair(stride), pair(padding), pair(dilation))
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
