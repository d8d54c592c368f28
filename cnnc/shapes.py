"""All shape arithmetic of cnnc: pure integer functions with PyTorch's floor and ceil rules.

Layers, the graph traversal, kernels and tests import these; nothing else computes an output
size. A shape here never includes the batch dimension: ``(C, H, W)`` for images, ``(F,)`` for
features. Every window computation can explain itself as a formula with the numbers filled
in, which is what shape errors show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

Shape = tuple[int, ...]


class ShapeProblem(Exception):
    """Raised by a layer's shape rule; the traversal adds the layer, location and input shape.

    Attributes:
        message: what does not fit, e.g. "the kernel is larger than the padded input".
        formula: the arithmetic with numbers filled in, when there is one.
        hint: how to fix it.
        input_too_small: True when a larger input H×W would make the layer work, so the
            traversal can search for the smallest input that does.
    """

    def __init__(
        self,
        message: str,
        *,
        formula: str | None = None,
        hint: str | None = None,
        input_too_small: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.formula = formula
        self.hint = hint
        self.input_too_small = input_too_small


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``5`` → ``(5, 5)``; ``(3, 5)`` stays; the way torch reads kernel_size, stride, ..."""
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (first, second)


def numel(shape: Shape) -> int:
    """Number of elements in one sample of this shape."""
    return prod(shape)


def fmt(shape: Shape, *, batch: bool = False) -> str:
    """``(6, 28, 28)``, or ``(B, 6, 28, 28)`` with the batch axis written."""
    dims = (["B"] if batch else []) + [str(d) for d in shape]
    return "(" + ", ".join(dims) + (",)" if len(dims) == 1 else ")")


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
        numerator = self.padded - self.span
        if self.ceil_mode:
            out = -(-numerator // self.stride) + 1
            # torch: the last window must start inside the input or the left padding
            if (out - 1) * self.stride >= self.size + self.pad_before:
                out -= 1
            return out
        return numerator // self.stride + 1 if numerator >= 0 else 0

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


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """torch's padding="same" for stride 1: total ``dilation*(kernel-1)``, extra one after."""
    total = dilation * (kernel - 1)
    return (total // 2, total - total // 2)


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


def check_windows(h: Window, w: Window, what: str) -> tuple[int, int]:
    """Output (H, W) of a window pair, or a ShapeProblem naming the axis that does not fit."""
    for axis, window in (("H", h), ("W", w)):
        if window.padded < window.span and not window.ceil_mode:
            raise ShapeProblem(
                f"the {what} window ({window.span} after dilation) is larger than the padded "
                f"input {'height' if axis == 'H' else 'width'} ({window.size} + "
                f"{window.pad_before + window.pad_after} = {window.padded})",
                formula=window.formula(axis),
                hint="use a larger input, a smaller kernel_size or more padding",
                input_too_small=True,
            )
        if window.out < 1:
            raise ShapeProblem(
                f"the {what} produces an empty output along {axis}",
                formula=window.formula(axis),
                hint="use a larger input or a smaller stride",
                input_too_small=True,
            )
    return (h.out, w.out)


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """torch's broadcasting of two per-sample shapes (batch axes agree), or None if they clash.

    Shapes are right-aligned as torch aligns the batched tensors; both carry the same batch
    axis, so a shorter shape is aligned after the batch dimension of the longer one.
    """
    if len(a) != len(b):
        return None
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(out)


def flatten(shape: Shape, start_dim: int, end_dim: int) -> Shape:
    """torch.flatten on a batched tensor whose sample shape is ``shape`` (dims count the batch)."""
    rank = len(shape) + 1
    start = start_dim % rank
    end = end_dim % rank
    if start == 0 or end < start:
        raise ShapeProblem(
            f"flatten(start_dim={start_dim}, end_dim={end_dim}) must keep the batch dimension "
            f"and have start_dim <= end_dim on a {rank}-D input",
            hint="use the default start_dim: 1, which flattens everything but the batch",
        )
    dims = (0, *shape)
    merged = prod(dims[start : end + 1])
    return (*dims[1:start], merged, *dims[end + 1 :])
