"""Layers that only rearrange or pass data: flatten, unflatten, reshape, permute, channel
shuffle and identity."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict

from cnnc.layers.base import Example, Layer, register
from cnnc.layers.types import PositiveInt
from cnnc.shapes import (
    Shape,
    channel_groups,
    flatten as flatten_shape,
    permute as permute_shape,
    reshape as reshape_shape,
    unflatten as unflatten_shape,
)

Sizes = Annotated[list[Annotated[int, Strict()]], Field(min_length=1)]


@register("flatten")
class Flatten(Layer):
    """torch.nn.Flatten: (C, H, W) → (C*H*W,) by default; dims count the batch axis."""

    type: Literal["flatten"]
    start_dim: int = Field(default=1, strict=True)
    end_dim: int = Field(default=-1, strict=True)

    prefix = "flatten"
    passes_input = True
    torch_class = "Flatten"
    summary = "flattens every axis from start_dim to end_dim (the batch axis stays)"
    examples = (
        Example({"type": "flatten"}, (16, 5, 5)),
        Example({"type": "flatten", "start_dim": 2}, (4, 3, 3)),
    )

    def output_shape(self, x: Shape) -> Shape:
        return flatten_shape(x, self.start_dim, self.end_dim)


@register("identity")
class Identity(Layer):
    """torch.nn.Identity: returns its input (a placeholder, or a residual/SE branch)."""

    type: Literal["identity"]

    prefix = "identity"
    passes_input = True
    torch_class = "Identity"
    summary = "returns its input unchanged"
    examples = (Example({"type": "identity"}, (3, 4, 4)),)


@register("unflatten")
class Unflatten(Layer):
    """torch.nn.Unflatten: axis ``dim`` (counting the batch axis) into ``unflattened_size``;
    one size may be -1 (inferred)."""

    type: Literal["unflatten"]
    dim: int = Field(strict=True)
    unflattened_size: Sizes

    prefix = "unflatten"
    passes_input = True
    torch_class = "Unflatten"
    summary = "splits one axis into several (one size may be -1, inferred)"
    examples = (
        Example({"type": "unflatten", "dim": 1, "unflattened_size": [16, 5, 5]}, (400,)),
        Example({"type": "unflatten", "dim": -1, "unflattened_size": [2, -1]}, (3, 8)),
    )

    def output_shape(self, x: Shape) -> Shape:
        return unflatten_shape(x, self.dim, tuple(self.unflattened_size))


@register("reshape")
class Reshape(Layer):
    """A new per-sample ``shape`` for the same elements (the batch axis stays); one size may
    be -1 (inferred)."""

    type: Literal["reshape"]
    shape: Sizes

    prefix = "reshape"
    passes_input = True
    torch_class = "Reshape"
    local_class = True
    summary = "gives each sample a new shape (one size may be -1, inferred)"
    examples = (
        Example({"type": "reshape", "shape": [4, -1]}, (2, 4, 4)),
        Example({"type": "reshape", "shape": [32]}, (2, 4, 4)),
    )

    def output_shape(self, x: Shape) -> Shape:
        return reshape_shape(x, tuple(self.shape))


@register("permute")
class Permute(Layer):
    """Reorders the axes (torchvision's Permute): ``dims`` count the batch axis, which stays
    first; [0, 2, 3, 1] turns (C, H, W) maps into (H, W, C)."""

    type: Literal["permute"]
    dims: Sizes

    prefix = "permute"
    passes_input = True
    torch_class = "Permute"
    local_class = True
    summary = "reorders the axes; dims count the batch axis, which stays first"
    examples = (
        Example({"type": "permute", "dims": [0, 2, 3, 1]}, (3, 4, 5)),
        Example({"type": "permute", "dims": [0, 3, 1, 2]}, (4, 5, 3)),
    )

    def output_shape(self, x: Shape) -> Shape:
        return permute_shape(x, tuple(self.dims))


@register("channel_shuffle")
class ChannelShuffle(Layer):
    """torch.nn.ChannelShuffle: interleaves the channels of ``groups`` groups (ShuffleNet)."""

    type: Literal["channel_shuffle"]
    groups: PositiveInt

    prefix = "shuffle"
    torch_class = "ChannelShuffle"
    ranks = (3,)
    summary = "interleaves the channels of groups equal groups (ShuffleNet)"
    examples = (Example({"type": "channel_shuffle", "groups": 2}, (8, 4, 4)),)

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        channel_groups(x, self.groups, "channel_shuffle")
        return x
