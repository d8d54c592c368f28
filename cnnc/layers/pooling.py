"""Pooling layers: max/avg pooling with PyTorch's ceil_mode rule, and adaptive pooling."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from cnnc.layers.base import Example, Layer, register
from cnnc.layers.types import Bool, OutputSize, PoolPadding, PositiveInt, Size2
from cnnc.shapes import Shape, check_windows, numel, pair, windows


class Pool2d(Layer):
    """Shared rule of max and average pooling; ``stride`` defaults to ``kernel_size``."""

    kernel_size: Size2
    stride: Size2 | None = None
    padding: PoolPadding = 0
    ceil_mode: Bool = False

    ranks = (3,)

    def rank_hint(self, x: Shape) -> str:
        return "pooling needs (C, H, W) feature maps; move 'flatten' after the last pooling"

    def _dilation(self) -> tuple[int, int]:
        return (1, 1)

    def _check_padding(self) -> None:
        # torch: "pad should be smaller than or equal to half of kernel size"
        for pad, extent in zip(pair(self.padding), pair(self.kernel_size), strict=True):
            if pad > extent // 2:
                raise ValueError(
                    f"padding {pad} is more than half the kernel_size ({extent}); torch "
                    f"allows at most {extent // 2}"
                )

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        ph, pw = pair(self.padding)
        stride = pair(self.stride if self.stride is not None else self.kernel_size)
        h, w = windows(
            x[1],
            x[2],
            pair(self.kernel_size),
            stride,
            ((ph, ph), (pw, pw)),
            self._dilation(),
            self.ceil_mode,
        )
        return (x[0], *check_windows(h, w, "pooling"))

    def flops(self, x: Shape, y: Shape) -> int:
        kh, kw = pair(self.kernel_size)
        return numel(y) * kh * kw


@register("maxpool2d")
class MaxPool2d(Pool2d):
    """Maximum over each window (torch.nn.MaxPool2d)."""

    type: Literal["maxpool2d"]
    dilation: Size2 = 1

    prefix = "pool"
    torch_class = "MaxPool2d"
    summary = "maximum over each window; stride defaults to kernel_size"
    examples = (
        Example({"type": "maxpool2d", "kernel_size": 2}, (6, 28, 28)),
        Example({"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1}, (4, 15, 15)),
        Example(
            {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "ceil_mode": True}, (3, 14, 14)
        ),
        Example({"type": "maxpool2d", "kernel_size": 2, "dilation": 2}, (2, 9, 9)),
    )

    def _dilation(self) -> tuple[int, int]:
        return pair(self.dilation)

    @model_validator(mode="after")
    def _padding_fits(self) -> MaxPool2d:
        self._check_padding()
        return self


@register("avgpool2d")
class AvgPool2d(Pool2d):
    """Mean over each window (torch.nn.AvgPool2d)."""

    type: Literal["avgpool2d"]
    count_include_pad: Bool = True
    divisor_override: PositiveInt | None = None

    prefix = "avgpool"
    torch_class = "AvgPool2d"
    summary = "mean over each window; stride defaults to kernel_size"
    examples = (
        Example({"type": "avgpool2d", "kernel_size": 2}, (6, 8, 8)),
        Example(
            {
                "type": "avgpool2d",
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
                "ceil_mode": True,
                "count_include_pad": False,
            },
            (4, 10, 10),
        ),
    )

    @model_validator(mode="after")
    def _padding_fits(self) -> AvgPool2d:
        self._check_padding()
        return self


class AdaptivePool2d(Layer):
    """Pools any H×W down to ``output_size`` (``null`` keeps that axis)."""

    output_size: OutputSize

    ranks = (3,)

    def output_shape(self, x: Shape) -> Shape:
        self.check_input(x)
        size = self.output_size
        oh, ow = (size, size) if isinstance(size, int) else size
        return (x[0], oh if oh is not None else x[1], ow if ow is not None else x[2])

    def flops(self, x: Shape, y: Shape) -> int:
        return numel(x)


@register("adaptive_avgpool2d")
class AdaptiveAvgPool2d(AdaptivePool2d):
    type: Literal["adaptive_avgpool2d"]
    prefix = "avgpool"
    torch_class = "AdaptiveAvgPool2d"
    summary = "average pooling to a fixed output_size, whatever the input H×W"
    examples = (
        Example({"type": "adaptive_avgpool2d", "output_size": 1}, (512, 7, 7)),
        Example({"type": "adaptive_avgpool2d", "output_size": [7, None]}, (8, 10, 9)),
    )


@register("adaptive_maxpool2d")
class AdaptiveMaxPool2d(AdaptivePool2d):
    type: Literal["adaptive_maxpool2d"]
    prefix = "maxpool"
    torch_class = "AdaptiveMaxPool2d"
    summary = "max pooling to a fixed output_size, whatever the input H×W"
    examples = (Example({"type": "adaptive_maxpool2d", "output_size": [2, 3]}, (4, 7, 8)),)
