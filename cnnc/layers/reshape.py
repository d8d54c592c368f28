"""Layers that only rearrange or pass data: flatten and identity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnc.layers.base import Example, Layer, register
from cnnc.shapes import Shape, flatten as flatten_shape


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
