"""linear: fully-connected layer (torch.nn.Linear); ``in_features`` is inferred."""

from __future__ import annotations

from typing import Literal

from cnnc.layers.base import Example, Layer, register
from cnnc.layers.types import Bool, PositiveInt
from cnnc.shapes import Shape, ShapeProblem, fmt, numel


@register("linear")
class Linear(Layer):
    """A fully-connected layer over a (features,) input, or with ``last_axis`` over the last
    axis of any input (per position, as ConvNeXt's blocks apply it to (H, W, C) maps)."""

    type: Literal["linear"]
    out_features: PositiveInt
    bias: Bool = True
    last_axis: Bool = False

    prefix = "fc"
    always_number = True
    torch_class = "Linear"
    summary = "fully-connected layer; in_features is inferred (last_axis: over the last axis)"
    examples = (
        Example({"type": "linear", "out_features": 10}, (400,)),
        Example({"type": "linear", "out_features": 3, "bias": False}, (5,)),
        Example({"type": "linear", "out_features": 12, "last_axis": True}, (4, 4, 6)),
    )

    def check_input(self, x: Shape) -> None:
        if not self.last_axis and len(x) != 1:
            raise ShapeProblem(
                f"linear expects a 2-D input (batch + features) but receives {len(x) + 1}-D "
                f"{fmt(x, batch=True)}",
                hint=(
                    f"a flatten is missing: add 'flatten' before this linear to turn "
                    f"{fmt(x, batch=True)} into (B, {numel(x)}); or, to apply it to the last "
                    f"axis ({x[-1]} features) at every position, set 'last_axis: true'"
                ),
            )

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        return (*x[:-1], self.out_features)

    def inferred_args(self, x: Shape) -> tuple[int, int]:
        return (x[-1], self.out_features)

    def torch_kwargs(self) -> dict[str, object]:
        kwargs = super().torch_kwargs()
        kwargs.pop("out_features")
        kwargs.pop("last_axis", None)
        return kwargs

    def params(self, x: Shape) -> int:
        return x[-1] * self.out_features + (self.out_features if self.bias else 0)

    def macs(self, x: Shape, y: Shape) -> int:
        return numel(x[:-1]) * x[-1] * self.out_features

    def flops(self, x: Shape, y: Shape) -> int:
        return 2 * self.macs(x, y) + (numel(y) if self.bias else 0)
