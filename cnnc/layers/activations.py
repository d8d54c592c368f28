"""Element-wise activations and the softmax family (torch.nn.ReLU, GELU, Softmax, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnc.layers.base import Example, Layer, register
from cnnc.layers.types import Bool, Float
from cnnc.shapes import Shape, ShapeProblem, fmt, numel

_IMAGE = (6, 4, 4)


class Activation(Layer):
    """An element-wise function: the output shape is the input shape."""

    prefix = "act"

    def flops(self, x: Shape, y: Shape) -> int:
        return numel(y)


@register("relu")
class ReLU(Activation):
    type: Literal["relu"]
    inplace: Bool = False
    prefix = "relu"
    torch_class = "ReLU"
    summary = "max(x, 0)"
    examples = (Example({"type": "relu"}, _IMAGE), Example({"type": "relu", "inplace": True}, (7,)))


@register("relu6")
class ReLU6(Activation):
    type: Literal["relu6"]
    inplace: Bool = False
    prefix = "relu"
    torch_class = "ReLU6"
    summary = "min(max(x, 0), 6), as in MobileNet"
    examples = (Example({"type": "relu6"}, _IMAGE),)


@register("leaky_relu")
class LeakyReLU(Activation):
    type: Literal["leaky_relu"]
    negative_slope: Float = 0.01
    inplace: Bool = False
    prefix = "relu"
    torch_class = "LeakyReLU"
    summary = "x if x > 0 else negative_slope * x"
    examples = (Example({"type": "leaky_relu", "negative_slope": 0.2}, _IMAGE),)


@register("gelu")
class GELU(Activation):
    type: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"
    prefix = "gelu"
    torch_class = "GELU"
    summary = "Gaussian error linear unit"
    examples = (
        Example({"type": "gelu"}, (5,)),
        Example({"type": "gelu", "approximate": "tanh"}, _IMAGE),
    )


@register("silu")
class SiLU(Activation):
    type: Literal["silu"]
    inplace: Bool = False
    prefix = "silu"
    torch_class = "SiLU"
    summary = "x * sigmoid(x) (swish)"
    examples = (Example({"type": "silu"}, _IMAGE),)


@register("sigmoid")
class Sigmoid(Activation):
    type: Literal["sigmoid"]
    prefix = "sigmoid"
    torch_class = "Sigmoid"
    summary = "1 / (1 + exp(-x))"
    examples = (Example({"type": "sigmoid"}, (3,)),)


@register("hardsigmoid")
class Hardsigmoid(Activation):
    type: Literal["hardsigmoid"]
    inplace: Bool = False
    prefix = "hardsigmoid"
    torch_class = "Hardsigmoid"
    summary = "piecewise-linear sigmoid, as in MobileNetV3's squeeze-and-excitation"
    examples = (Example({"type": "hardsigmoid"}, _IMAGE),)


@register("hardswish")
class Hardswish(Activation):
    type: Literal["hardswish"]
    inplace: Bool = False
    prefix = "hardswish"
    torch_class = "Hardswish"
    summary = "x * hardsigmoid(x), as in MobileNetV3"
    examples = (Example({"type": "hardswish"}, _IMAGE),)


@register("tanh")
class Tanh(Activation):
    type: Literal["tanh"]
    prefix = "tanh"
    torch_class = "Tanh"
    summary = "hyperbolic tangent"
    examples = (Example({"type": "tanh"}, (4,)),)


class SoftmaxBase(Activation):
    """Softmax-like layers normalize along ``dim`` (counted on the batched tensor, like torch)."""

    dim: int = Field(default=1, strict=True)

    def output_shape(self, x: Shape) -> Shape:
        rank = len(x) + 1
        if not -rank <= self.dim < rank or self.dim % rank == 0:
            raise ShapeProblem(
                f"dim={self.dim} is not a non-batch axis of the {rank}-D input {fmt(x, batch=True)}",
                hint=f"use dim 1..{rank - 1} (or -1 for the last axis); dim 0 is the batch",
            )
        return x

    def torch_kwargs(self) -> dict[str, object]:
        return {"dim": self.dim}  # always written: torch's implicit-dim default is deprecated

    def flops(self, x: Shape, y: Shape) -> int:
        return 3 * numel(y)


@register("softmax")
class Softmax(SoftmaxBase):
    type: Literal["softmax"]
    prefix = "softmax"
    torch_class = "Softmax"
    summary = "exp(x) / sum(exp(x)) along dim (default 1, the class axis)"
    examples = (
        Example({"type": "softmax"}, (10,)),
        Example({"type": "softmax", "dim": -1}, _IMAGE),
    )


@register("log_softmax")
class LogSoftmax(SoftmaxBase):
    type: Literal["log_softmax"]
    prefix = "log_softmax"
    torch_class = "LogSoftmax"
    summary = "log(softmax(x)) along dim, paired with the nll loss"
    examples = (Example({"type": "log_softmax"}, (10,)),)
