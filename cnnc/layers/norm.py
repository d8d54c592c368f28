"""Normalization layers; the channel or feature count is always inferred."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cnnc.layers.base import Example, Layer, ModuleCall, register
from cnnc.layers.types import Bool, PositiveFloat, PositiveInt
from cnnc.shapes import Shape, ShapeProblem, fmt, numel


class PerChannel(Layer):
    """The shape rule of the norms that learn per channel: the output is the input, the
    channel count is the constructor's one inferred argument, two parameters per channel
    when the norm is affine."""

    def learns(self) -> bool:
        """Whether the norm has a weight and a bias per channel."""
        raise NotImplementedError

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        return x

    def inferred_args(self, x: Shape) -> tuple[int]:
        return (x[0],)

    def params(self, x: Shape) -> int:
        return 2 * x[0] if self.learns() else 0


class BatchNorm(PerChannel):
    """Shared fields of batchnorm1d/2d; ``num_features`` is the input's channel count."""

    eps: PositiveFloat = 1e-5
    momentum: float | None = Field(default=0.1, strict=True, ge=0, le=1)
    affine: Bool = True
    track_running_stats: Bool = True

    prefix = "bn"
    always_number = True

    def learns(self) -> bool:
        return self.affine

    def flops(self, x: Shape, y: Shape) -> int:
        return 2 * numel(y)


@register("batchnorm2d")
class BatchNorm2d(BatchNorm):
    type: Literal["batchnorm2d"]
    torch_class = "BatchNorm2d"
    ranks = (3,)
    summary = "batch normalization over (C, H, W) feature maps; num_features is inferred"
    examples = (
        Example({"type": "batchnorm2d"}, (16, 8, 8)),
        Example({"type": "batchnorm2d", "momentum": None, "affine": False}, (4, 3, 3)),
    )

    def rank_hint(self, x: Shape) -> str:
        return "after flatten use batchnorm1d" if len(x) == 1 else "batchnorm2d needs (C, H, W)"


@register("batchnorm1d")
class BatchNorm1d(BatchNorm):
    type: Literal["batchnorm1d"]
    torch_class = "BatchNorm1d"
    ranks = (1, 2)
    summary = "batch normalization over (features,) or (C, L); num_features is inferred"
    examples = (
        Example({"type": "batchnorm1d"}, (120,)),
        Example({"type": "batchnorm1d", "eps": 1e-3}, (6, 10)),
    )

    def rank_hint(self, x: Shape) -> str:
        return "for (C, H, W) feature maps use batchnorm2d"


@register("groupnorm")
class GroupNorm(Layer):
    """torch.nn.GroupNorm; num_channels is inferred and must be divisible by num_groups."""

    type: Literal["groupnorm"]
    num_groups: PositiveInt
    eps: PositiveFloat = 1e-5
    affine: Bool = True

    prefix = "gn"
    always_number = True
    torch_class = "GroupNorm"
    ranks = (1, 2, 3)
    summary = "normalizes groups of channels per sample; num_channels is inferred"
    examples = (Example({"type": "groupnorm", "num_groups": 4}, (16, 6, 6)),)

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        if x[0] % self.num_groups:
            raise ShapeProblem(
                f"num_groups={self.num_groups} must divide the {x[0]} input channels of {fmt(x)}",
                hint=f"choose num_groups among the divisors of {x[0]}",
            )
        return x

    def module_call(self, x: Shape) -> ModuleCall:
        kwargs = self.torch_kwargs()
        kwargs.pop("num_groups")
        return ModuleCall(self.torch_class, (self.num_groups, x[0]), kwargs)

    def params(self, x: Shape) -> int:
        return 2 * x[0] if self.affine else 0

    def flops(self, x: Shape, y: Shape) -> int:
        return 4 * numel(y)


@register("layernorm")
class LayerNorm(Layer):
    """torch.nn.LayerNorm; ``normalized_shape`` defaults to the whole per-sample shape."""

    type: Literal["layernorm"]
    normalized_shape: PositiveInt | list[PositiveInt] | None = None
    eps: PositiveFloat = 1e-5
    elementwise_affine: Bool = True
    bias: Bool = True

    prefix = "ln"
    always_number = True
    torch_class = "LayerNorm"
    summary = "normalizes the trailing axes per sample; normalized_shape defaults to all of them"
    examples = (
        Example({"type": "layernorm"}, (64,)),
        Example({"type": "layernorm", "normalized_shape": [4, 4]}, (3, 4, 4)),
    )

    def normalized(self, x: Shape) -> tuple[int, ...]:
        given = self.normalized_shape
        if given is None:
            return x
        return (given,) if isinstance(given, int) else tuple(given)

    def output_shape(self, x: Shape) -> Shape:
        trailing = self.normalized(x)
        if len(trailing) > len(x) or x[len(x) - len(trailing) :] != trailing:
            raise ShapeProblem(
                f"normalized_shape {list(trailing)} must equal the trailing axes of the input "
                f"{fmt(x)}",
                hint="omit normalized_shape to normalize over the whole sample",
            )
        return x

    def module_call(self, x: Shape) -> ModuleCall:
        kwargs: dict[str, Any] = self.torch_kwargs()
        kwargs.pop("normalized_shape", None)
        trailing = self.normalized(x)
        return ModuleCall(
            self.torch_class, (trailing[0] if len(trailing) == 1 else trailing,), kwargs
        )

    def params(self, x: Shape) -> int:
        if not self.elementwise_affine:
            return 0
        return numel(self.normalized(x)) * (2 if self.bias else 1)

    def flops(self, x: Shape, y: Shape) -> int:
        return 5 * numel(y)


@register("layernorm2d")
class LayerNorm2d(PerChannel):
    """LayerNorm over the channels of (C, H, W) maps (torchvision's LayerNorm2d, ConvNeXt's
    norm), in either memory format; the channel count is inferred."""

    type: Literal["layernorm2d"]
    eps: PositiveFloat = 1e-5
    elementwise_affine: Bool = True

    prefix = "ln"
    always_number = True
    torch_class = "LayerNorm2d"
    local_class = True
    ranks = (3,)
    summary = "normalizes the channels of each pixel of (C, H, W) maps (ConvNeXt's norm)"
    examples = (
        Example({"type": "layernorm2d", "eps": 1e-6}, (8, 4, 4)),
        Example({"type": "layernorm2d", "elementwise_affine": False}, (3, 2, 5)),
    )

    def learns(self) -> bool:
        return self.elementwise_affine

    def flops(self, x: Shape, y: Shape) -> int:
        return 5 * numel(y)


@register("layer_scale")
class LayerScale(Layer):
    """A learned scale per channel (ConvNeXt's layer scale), initialized to ``init``."""

    type: Literal["layer_scale"]
    init: PositiveFloat = 1e-6

    prefix = "layer_scale"
    torch_class = "LayerScale"
    local_class = True
    summary = "multiplies each channel by a learned scale, initialized to init"
    examples = (
        Example({"type": "layer_scale"}, (8, 4, 4)),
        Example({"type": "layer_scale", "init": 0.1}, (6,)),
    )

    def module_call(self, x: Shape) -> ModuleCall:
        return ModuleCall(self.torch_class, (x[0], len(x), self.init), local=True)

    def params(self, x: Shape) -> int:
        return x[0]

    def flops(self, x: Shape, y: Shape) -> int:
        return numel(y)
