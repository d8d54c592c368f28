"""linear: fully-connected layer (torch.nn.Linear); ``in_features`` is inferred."""

from __future__ import annotations

from typing import Literal

from cnnc.layers.base import Example, Layer, register
from cnnc.layers.types import Bool, PositiveInt
from cnnc.shapes import Shape, fmt, numel


@register("linear")
class Linear(Layer):
    """A fully-connected layer over a (features,) input."""

    type: Literal["linear"]
    out_features: PositiveInt
    bias: Bool = True

    prefix = "fc"
    always_number = True
    torch_class = "Linear"
    ranks = (1,)
    summary = "fully-connected layer; in_features is inferred"
    examples = (
        Example({"type": "linear", "out_features": 10}, (400,)),
        Example({"type": "linear", "out_features": 3, "bias": False}, (5,)),
    )

    def rank_hint(self, x: Shape) -> str:
        return (
            f"a flatten is missing: add 'flatten' before this linear to turn {fmt(x, batch=True)}"
            f" into (B, {numel(x)})"
        )

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        return (self.out_features,)

    def inferred_args(self, x: Shape) -> tuple[int, int]:
        return (x[0], self.out_features)

    def torch_kwargs(self) -> dict[str, object]:
        kwargs = super().torch_kwargs()
        kwargs.pop("out_features")
        return kwargs

    def params(self, x: Shape) -> int:
        return x[0] * self.out_features + (self.out_features if self.bias else 0)

    def macs(self, x: Shape, y: Shape) -> int:
        return x[0] * self.out_features

    def flops(self, x: Shape, y: Shape) -> int:
        return 2 * self.macs(x, y) + (self.out_features if self.bias else 0)
