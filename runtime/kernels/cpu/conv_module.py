"""``SharedConv2d``: the base of the Conv2d subclasses that route passes to cnnc's kernels
(``conv3x3.KernelConv2d``, ``conv_fp32.Fp32Conv2d``), built over another Conv2d's own
Parameters so a rewrite keeps the model's state_dict keys and values."""

from __future__ import annotations

from typing import Self

from torch import nn

_ATTRIBUTES = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
    "transposed", "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice",
)  # fmt: skip


class SharedConv2d(nn.Conv2d):
    """A Conv2d whose subclass decides per call how to compute; ``from_module`` shares."""

    @classmethod
    def from_module(cls, conv: nn.Conv2d) -> Self:
        """The module over ``conv``'s own Parameters (same state_dict keys and values)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name in _ATTRIBUTES:
            setattr(new, name, getattr(conv, name))
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new
