"""All shape arithmetic of cnnc: pure integer functions with PyTorch's floor and ceil rules.

Layers, the graph traversal and tests import these; nothing else computes an output size.
The window arithmetic of convolution and pooling (``Window``, ``windows``, ``pair``,
``same_padding``) is ``runtime.geometry``'s, which the kernels use too; it is re-exported
here. A shape here never includes the batch dimension: ``(C, H, W)`` for images, ``(F,)``
for features.
"""

from __future__ import annotations

from math import prod

from runtime.geometry import Window, pair, same_padding, windows

Shape = tuple[int, ...]

__all__ = [
    "Shape",
    "ShapeProblem",
    "Window",
    "broadcast",
    "channel_groups",
    "check_windows",
    "flatten",
    "fmt",
    "numel",
    "pair",
    "permute",
    "reshape",
    "same_padding",
    "unflatten",
    "windows",
]


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


def numel(shape: Shape) -> int:
    """Number of elements in one sample of this shape."""
    return prod(shape)


def fmt(shape: Shape, *, batch: bool = False) -> str:
    """``(6, 28, 28)``, or ``(B, 6, 28, 28)`` with the batch axis written."""
    dims = (["B"] if batch else []) + [str(d) for d in shape]
    return "(" + ", ".join(dims) + (",)" if len(dims) == 1 else ")")


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


def permute(shape: Shape, dims: tuple[int, ...]) -> Shape:
    """torch.permute on a batched tensor of sample shape ``shape``; ``dims`` count the batch
    axis, which must stay first."""
    rank = len(shape) + 1
    if sorted(dims) != list(range(rank)):
        raise ShapeProblem(
            f"dims {list(dims)} is not an order of the {rank} axes 0..{rank - 1} of a "
            f"{rank}-D input {fmt(shape, batch=True)}",
            hint=f"list every axis once, the batch axis 0 first, e.g. {[0, *range(2, rank), 1]}",
        )
    if dims[0] != 0:
        raise ShapeProblem(
            f"dims {list(dims)} moves the batch axis; it must stay first",
            hint="start dims with 0 and order the other axes",
        )
    dims_of = (0, *shape)
    return tuple(dims_of[d] for d in dims[1:])


def _infer_one(sizes: tuple[int, ...], total: int, what: str) -> Shape:
    """``sizes`` with its one -1 (if any) replaced so their product is ``total``."""
    unknown = [i for i, size in enumerate(sizes) if size == -1]
    if len(unknown) > 1 or any(size < 1 and size != -1 for size in sizes):
        raise ShapeProblem(
            f"{what} {list(sizes)} may hold one -1 (inferred) and positive sizes only",
            hint="write every size but one, and -1 for that one",
        )
    known = prod(size for size in sizes if size != -1)
    if unknown and total % known == 0:
        return tuple(total // known if size == -1 else size for size in sizes)
    if not unknown and known == total:
        return sizes
    product = " x ".join(str(size) for size in sizes)
    raise ShapeProblem(
        f"{what} {list(sizes)} does not hold the {total} elements it reshapes "
        + (f"({total} is not a multiple of {known})" if unknown else f"({product} = {known})"),
        hint=f"choose sizes whose product is {total}",
    )


def reshape(shape: Shape, target: tuple[int, ...]) -> Shape:
    """A new sample shape for the same elements; one size may be -1 (inferred)."""
    return _infer_one(target, numel(shape), "shape")


def unflatten(shape: Shape, dim: int, sizes: tuple[int, ...]) -> Shape:
    """torch.unflatten of axis ``dim`` (counting the batch axis) into ``sizes``."""
    rank = len(shape) + 1
    if not -rank <= dim < rank or dim % rank == 0:
        raise ShapeProblem(
            f"dim={dim} is not an axis after the batch axis of a {rank}-D input "
            f"{fmt(shape, batch=True)}",
            hint=f"use 1..{rank - 1} (or -1 for the last axis)",
        )
    axis = dim % rank - 1
    return (*shape[:axis], *_infer_one(sizes, shape[axis], "unflattened_size"), *shape[axis + 1 :])


def channel_groups(shape: Shape, groups: int, what: str) -> None:
    """Check that ``groups`` divides the channels of ``shape`` (a ShapeProblem if not)."""
    if shape[0] % groups:
        raise ShapeProblem(
            f"{what} needs groups={groups} to divide the {shape[0]} channels of {fmt(shape)}",
            hint=f"choose groups among the divisors of {shape[0]}",
        )
