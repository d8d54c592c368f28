"""Parallel branches merged into one tensor: concat (channel axis), add and mul (broadcast),
and split (each branch on its own slice of the channels, then concatenated).

Each branch is a list of layers applied to the same input (to its slice, for split); the
module names them ``branch1``, ``branch2``, ... like torchvision's Inception. ``mul`` with a
gate branch that ends in (C, 1, 1) is a squeeze-and-excitation block; ``split`` with an
identity branch is ShuffleNetV2's channel split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field

from cnnc.graph import Node, Site
from cnnc.layers.base import Composite, Example, register
from cnnc.layers.residual import as_list
from cnnc.layers.types import PositiveInt
from cnnc.naming import scope_names
from cnnc.shapes import Shape, broadcast, fmt

if TYPE_CHECKING:
    from cnnc.infer import Inference
    from cnnc.spec import AnyLayer


class Merge(Composite):
    """Runs every branch on the input and combines the outputs with ``op``."""

    branches: Annotated[
        list[Annotated[list[AnyLayer], BeforeValidator(as_list), Field(min_length=1)]],
        Field(min_length=2),
    ]

    prefix = "branches"

    def expand(self, inference: Inference, x: Shape, site: Site) -> Node:
        nodes = []
        inputs = self.inputs(inference, x, site)
        for index, (branch, xi) in enumerate(zip(self.branches, inputs, strict=True)):
            path = (*site.path, "branches", index)
            items = inference.items(branch, path)
            inference.guard_shared_input(items, "the other branches")
            child = site.child(f"branch{index + 1}", path)
            children, y = inference.sequence(items, xi, child, scope_names(inference, [items])[0])
            nodes.append(inference.node(child, "branch", "sequence", xi, y, children))
        shapes = [node.out_shape for node in nodes]
        out = self.merge(shapes)
        if out is None:
            listing = ", ".join(f"branch{i + 1} gives {fmt(s)}" for i, s in enumerate(shapes))
            raise inference.merge_error(site, self.type, f"{self.rule()}; {listing}", self.fix())
        return inference.node(
            site, self.type, "merge", x, out, nodes, ["branch"] * len(nodes), op=self.type
        )

    def inputs(self, inference: Inference, x: Shape, site: Site) -> list[Shape]:
        """Each branch's input shape: all of ``x``, for every merge but split."""
        return [x] * len(self.branches)

    def merge(self, shapes: list[Shape]) -> Shape | None:
        """The merged shape, or None when the branch outputs cannot be combined."""
        raise NotImplementedError

    def rule(self) -> str:
        raise NotImplementedError

    def fix(self) -> str:
        raise NotImplementedError


@register("concat")
class Concat(Merge):
    """Concatenates branch outputs along the channel axis (Inception, SqueezeNet's fire)."""

    type: Literal["concat"]
    prefix = "concat"
    summary = "runs branches on the same input and concatenates them on the channel axis"
    examples = (
        Example(
            {
                "type": "concat",
                "branches": [
                    [{"type": "conv2d", "out_channels": 4, "kernel_size": 1}, "relu"],
                    [{"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1}],
                    [{"type": "maxpool2d", "kernel_size": 3, "stride": 1, "padding": 1}],
                ],
            },
            (3, 8, 8),
        ),
    )

    def merge(self, shapes: list[Shape]) -> Shape | None:
        return _concatenated(shapes)

    def rule(self) -> str:
        return _CONCAT_RULE

    def fix(self) -> str:
        return _CONCAT_FIX


_CONCAT_RULE = "concatenation joins channels, so every other axis of the branches must match"
_CONCAT_FIX = "give every branch the same stride and 'same'-style padding so H×W agree"


def _concatenated(shapes: list[Shape]) -> Shape | None:
    """The shape of branch outputs joined on the channel axis (None if other axes differ)."""
    first = shapes[0]
    if any(len(s) != len(first) or s[1:] != first[1:] for s in shapes):
        return None
    return (sum(s[0] for s in shapes), *first[1:])


@register("split")
class Split(Merge):
    """Splits the channels into one slice per branch (equal, or ``sizes``), runs each branch
    on its slice and concatenates the results (ShuffleNetV2's channel split)."""

    type: Literal["split"]
    sizes: list[PositiveInt] | None = None

    prefix = "split"
    summary = (
        "splits the channels into slices (equal, or sizes), runs each branch on its own "
        "slice, and concatenates the results"
    )
    examples = (
        Example(
            {
                "type": "split",
                "branches": [
                    ["identity"],
                    [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, "relu"],
                ],
            },
            (8, 6, 6),
        ),
        Example(
            {"type": "split", "sizes": [2, 6], "branches": [["identity"], ["relu"]]},
            (8, 3, 3),
        ),
    )

    def inputs(self, inference: Inference, x: Shape, site: Site) -> list[Shape]:
        count, channels = len(self.branches), x[0]
        if self.sizes is None and channels % count:
            raise inference.merge_error(
                site, self.type,
                f"{count} equal slices need the {channels} input channels of {fmt(x)} to be a "
                f"multiple of {count}",
                "give the slices' sizes: 'sizes: [a, b, ...]' adding up to the channels",
            )  # fmt: skip
        sizes = self.sizes or [channels // count] * count
        if len(sizes) != count or sum(sizes) != channels:
            listed = " + ".join(map(str, sizes))
            raise inference.merge_error(
                site, self.type,
                f"sizes {sizes} ({len(sizes)} slices, {listed} = {sum(sizes)} channels) must give "
                f"each of the {count} branches a slice and add up to the {channels} input "
                f"channels of {fmt(x)}",
                f"use {count} sizes that add up to {channels}, or leave sizes out for equal slices",
            )  # fmt: skip
        return [(size, *x[1:]) for size in sizes]

    def merge(self, shapes: list[Shape]) -> Shape | None:
        return _concatenated(shapes)

    def rule(self) -> str:
        return _CONCAT_RULE

    def fix(self) -> str:
        return _CONCAT_FIX


class Elementwise(Merge):
    """Shared rule of add and mul: torch broadcasting over the branch outputs."""

    def merge(self, shapes: list[Shape]) -> Shape | None:
        merged: Shape | None = shapes[0]
        for shape in shapes[1:]:
            merged = broadcast(merged, shape) if merged is not None else None
        return merged

    def rule(self) -> str:
        return (
            f"{self.type} needs branch outputs that broadcast (each axis equal, or 1 in "
            "one of them)"
        )

    def fix(self) -> str:
        return "make the branches end with the same channels, or a (C, 1, 1) gate for scaling"


@register("add")
class Add(Elementwise):
    type: Literal["add"]
    prefix = "add"
    summary = "runs branches on the same input and adds them (broadcasting)"
    examples = (
        Example(
            {
                "type": "add",
                "branches": [
                    ["identity"],
                    [{"type": "conv2d", "out_channels": 5, "kernel_size": 3, "padding": 1}],
                ],
            },
            (5, 6, 6),
        ),
    )


@register("mul")
class Mul(Elementwise):
    type: Literal["mul"]
    prefix = "mul"
    summary = "runs branches on the same input and multiplies them (squeeze-and-excitation)"
    examples = (
        Example(
            {
                "type": "mul",
                "branches": [
                    ["identity"],
                    [
                        {"type": "adaptive_avgpool2d", "output_size": 1},
                        {"type": "conv2d", "out_channels": 2, "kernel_size": 1},
                        "relu",
                        {"type": "conv2d", "out_channels": 8, "kernel_size": 1},
                        "hardsigmoid",
                    ],
                ],
            },
            (8, 5, 5),
        ),
    )
