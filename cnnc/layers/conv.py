"""conv2d: 2-D convolution (torch.nn.Conv2d); ``in_channels`` is inferred."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from cnnc.layers.base import Example, Layer, ModuleCall, register
from cnnc.layers.types import Bool, Padding, PositiveInt, Size2
from cnnc.shapes import Shape, ShapeProblem, check_windows, fmt, numel, pair, same_padding, windows


@register("conv2d")
class Conv2d(Layer):
    """2-D convolution over (C, H, W). ``groups: depthwise`` means one group per channel."""

    type: Literal["conv2d"]
    out_channels: PositiveInt | None = None
    kernel_size: Size2
    stride: Size2 = 1
    padding: Padding = 0
    dilation: Size2 = 1
    groups: PositiveInt | Literal["depthwise"] = 1
    bias: Bool = True
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"

    prefix = "conv"
    always_number = True
    torch_class = "Conv2d"
    ranks = (3,)
    summary = (
        "2-D convolution; in_channels is inferred, groups: depthwise for one group per channel"
    )
    examples = (
        Example({"type": "conv2d", "out_channels": 6, "kernel_size": 5}, (3, 32, 32)),
        Example(
            {
                "type": "conv2d",
                "out_channels": 16,
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
                "bias": False,
            },
            (8, 15, 15),
        ),
        Example(
            {
                "type": "conv2d",
                "out_channels": 8,
                "kernel_size": [3, 5],
                "padding": "same",
                "dilation": 2,
                "padding_mode": "reflect",
            },
            (4, 12, 11),
        ),
        Example(
            {"type": "conv2d", "kernel_size": 3, "groups": "depthwise", "padding": 1}, (12, 9, 9)
        ),
        Example({"type": "conv2d", "out_channels": 12, "kernel_size": 1, "groups": 3}, (6, 5, 5)),
    )

    @model_validator(mode="after")
    def _check(self) -> Conv2d:
        if self.out_channels is None and self.groups != "depthwise":
            raise ValueError(
                "out_channels is required (it may be omitted only with "
                "groups: depthwise, where it defaults to the input channels)"
            )
        if self.padding == "same" and pair(self.stride) != (1, 1):
            raise ValueError(
                "padding 'same' needs stride 1 (torch does not support strided "
                "'same' convolutions); write the padding explicitly"
            )
        return self

    def rank_hint(self, x: Shape) -> str:
        if len(x) == 1:
            return "conv2d needs (C, H, W) feature maps; move 'flatten' after the last conv2d"
        return "conv2d needs a (C, H, W) input; check the spec's input shape"

    def resolved(self, x: Shape) -> tuple[int, int, int]:
        """(in_channels, out_channels, groups) for input ``x``."""
        channels = x[0]
        groups = channels if self.groups == "depthwise" else self.groups
        out = self.out_channels if self.out_channels is not None else channels
        return channels, out, groups

    def _padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        kh, kw = pair(self.kernel_size)
        dh, dw = pair(self.dilation)
        if self.padding == "same":
            return same_padding(kh, dh), same_padding(kw, dw)
        ph, pw = (0, 0) if self.padding == "valid" else pair(self.padding)  # type: ignore[arg-type]
        return (ph, ph), (pw, pw)

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        channels, out, groups = self.resolved(x)
        for what, count in (("input channels", channels), ("out_channels", out)):
            if count % groups:
                raise ShapeProblem(
                    f"groups={groups} must divide the {what} ({count}); input is {fmt(x)}",
                    hint=f"choose groups among the divisors of {count}, or 'depthwise'",
                )
        h, w = windows(
            x[1],
            x[2],
            pair(self.kernel_size),
            pair(self.stride),
            self._padding(),
            pair(self.dilation),
        )
        return (out, *check_windows(h, w, "convolution"))

    def module_call(self, x: Shape) -> ModuleCall:
        channels, out, groups = self.resolved(x)
        kwargs = self.torch_kwargs()
        kwargs.pop("out_channels", None)
        kwargs.pop("groups", None)
        if groups != 1:
            kwargs["groups"] = groups
        return ModuleCall(self.torch_class, (channels, out), kwargs)

    def params(self, x: Shape) -> int:
        channels, out, groups = self.resolved(x)
        kh, kw = pair(self.kernel_size)
        return out * (channels // groups) * kh * kw + (out if self.bias else 0)

    def macs(self, x: Shape, y: Shape) -> int:
        channels, _, groups = self.resolved(x)
        kh, kw = pair(self.kernel_size)
        return numel(y) * (channels // groups) * kh * kw

    def flops(self, x: Shape, y: Shape) -> int:
        return 2 * self.macs(x, y) + (numel(y) if self.bias else 0)
