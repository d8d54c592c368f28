"""Window arithmetic of convolution and pooling: pure integers, PyTorch's floor and ceil rules.

This file owns every output-size computation of a sliding window: ``cnnc``'s shape
inference (``cnnc.shapes``), the kernels' argument checks and fake implementations, and the
parity gate all import it, so they cannot disagree. It never imports torch: ``cnnc check``
imports it on its fast path. Every window can explain itself as a formula with the
numbers filled in, which is what shape errors show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``5`` → ``(5, 5)``; ``(3, 5)`` stays; ``(3,)`` → ``(3, 3)``, as torch reads them."""
    if isinstance(value, int):
        return (value, value)
    if len(value) == 1:
        return (value[0], value[0])
    first, second = value
    return (first, second)


def output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of one axis of a convolution or pooling window (PyTorch's rule).

    Args:
        size: input length.
        kernel: kernel length before dilation.
        stride: step between windows.
        padding: zeros on each side, or ``(before, after)`` when they differ.
        dilation: spacing of the kernel taps.
        ceil_mode: round up (pooling's ``ceil_mode``), where the last window must still
            start inside the input or the left padding.

    Returns:
        The output length; 0 when the window does not fit (floor mode).
    """
    before, after = pair(padding)
    numerator = size + before + after - (dilation * (kernel - 1) + 1)
    if ceil_mode:
        out = -(-numerator // stride) + 1
        # torch: the last window must start inside the input or the left padding
        if (out - 1) * stride >= size + before:
            out -= 1
        return out
    return numerator // stride + 1 if numerator >= 0 else 0


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """torch's padding="same" for stride 1: total ``dilation*(kernel-1)``, extra one after."""
    total = dilation * (kernel - 1)
    return (total // 2, total - total // 2)


@dataclass(frozen=True)
class Window:
    """One spatial axis of a convolution or pooling window.

    ``pad_before``/``pad_after`` are the zeros added on each side (equal unless padding is
    "same" with an even effective kernel, where torch pads one more after).
    """

    size: int
    kernel: int
    stride: int = 1
    pad_before: int = 0
    pad_after: int = 0
    dilation: int = 1
    ceil_mode: bool = False

    @property
    def span(self) -> int:
        """The dilated kernel extent: ``dilation * (kernel - 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

    @property
    def padded(self) -> int:
        return self.size + self.pad_before + self.pad_after

    @property
    def out(self) -> int:
        """Output length, PyTorch's rule (``pooling_output_shape`` when ``ceil_mode``)."""
        padding = (self.pad_before, self.pad_after)
        return output_size(
            self.size, self.kernel, self.stride, padding, self.dilation, self.ceil_mode
        )

    def formula(self, axis: str) -> str:
        """The output-length formula for ``axis`` ("H" or "W") with the numbers filled in."""
        rounding = "ceil" if self.ceil_mode else "floor"
        pad = (
            f"2*{self.pad_before}"
            if self.pad_before == self.pad_after
            else (f"{self.pad_before}+{self.pad_after}")
        )
        symbolic = f"{rounding}(({axis} + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1"
        filled = (
            f"{rounding}(({self.size} + {pad} - {self.dilation}*({self.kernel} - 1) - 1)"
            f" / {self.stride}) + 1"
        )
        return f"{axis}_out = {symbolic} = {filled} = {self.out}"


def windows(
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int] = (1, 1),
    ceil_mode: bool = False,
) -> tuple[Window, Window]:
    """The H and W windows of one 2-D convolution or pooling layer."""
    return (
        Window(height, kernel[0], stride[0], *padding[0], dilation[0], ceil_mode),
        Window(width, kernel[1], stride[1], *padding[1], dilation[1], ceil_mode),
    )


def output_hw(
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> tuple[int, int]:
    """``(OH, OW)`` of a 2-D window with symmetric padding per axis, floor mode."""
    h, w = windows(height, width, kernel, stride, (pair(padding[0]), pair(padding[1])), dilation)
    return (h.out, w.out)
