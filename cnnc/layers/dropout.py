"""Dropout layers (torch.nn.Dropout, Dropout2d) and stochastic depth: identity shapes, active
only in training."""

from __future__ import annotations

from typing import Literal

from cnnc.layers.base import Example, Layer, register
from cnnc.layers.types import Bool, Probability
from cnnc.shapes import Shape


class DropoutBase(Layer):
    p: Probability = 0.5
    inplace: Bool = False
    prefix = "dropout"
    passes_input = True


@register("dropout")
class Dropout(DropoutBase):
    """Zeroes each element with probability p during training."""

    type: Literal["dropout"]
    torch_class = "Dropout"
    summary = "zeroes elements with probability p while training"
    examples = (
        Example({"type": "dropout"}, (100,)),
        Example({"type": "dropout", "p": 0.2}, (3, 4, 4)),
    )


@register("dropout2d")
class Dropout2d(DropoutBase):
    """Zeroes whole channels with probability p during training."""

    type: Literal["dropout2d"]
    torch_class = "Dropout2d"
    ranks = (3,)
    summary = "zeroes whole channels with probability p while training"
    examples = (Example({"type": "dropout2d", "p": 0.1}, (8, 4, 4)),)

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        return x


@register("stochastic_depth")
class StochasticDepth(Layer):
    """Drops a residual branch per sample (``row``) or for the whole batch (``batch``) with
    probability p while training (torchvision's StochasticDepth); identity in eval."""

    type: Literal["stochastic_depth"]
    p: Probability
    mode: Literal["row", "batch"] = "row"

    prefix = "stochastic_depth"
    passes_input = True
    torch_class = "StochasticDepth"
    local_class = True
    summary = "drops a residual branch per sample (row) or batch with probability p in training"
    examples = (
        Example({"type": "stochastic_depth", "p": 0.1}, (8, 4, 4)),
        Example({"type": "stochastic_depth", "p": 0.2, "mode": "batch"}, (5,)),
    )
