"""The torch modules compiled networks are made of, beyond torch.nn's own layers.

This file imports only torch: codegen copies these classes verbatim into every generated
module that needs them, so a generated file and ``cnnc.build`` run the same code and have
the same ``state_dict`` keys.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Network(nn.Sequential):
    """A compiled spec: named layers run in order, with the spec's name and input shape."""

    def __init__(
        self, layers: OrderedDict[str, nn.Module], name: str, input_shape: tuple[int, ...]
    ) -> None:
        super().__init__(layers)
        self.spec_name = name
        self.input_shape = input_shape

    def extra_repr(self) -> str:
        return f"name={self.spec_name!r}, input_shape={self.input_shape}"


class Residual(nn.Module):
    """``after(body(x) + shortcut(x))``; body layers are direct children, as in torchvision."""

    def __init__(
        self,
        body: dict[str, nn.Module],
        shortcut: dict[str, nn.Module] | None = None,
        after: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.body_names = tuple(body)
        self.shortcut_names = tuple(shortcut or {})
        self.after_names = tuple(after or {})
        for name, module in {**body, **(shortcut or {}), **(after or {})}.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        for name in self.body_names:
            x = self._modules[name](x)  # type: ignore[misc]
        for name in self.shortcut_names:
            identity = self._modules[name](identity)  # type: ignore[misc]
        x = x + identity
        for name in self.after_names:
            x = self._modules[name](x)  # type: ignore[misc]
        return x


class Branches(nn.Module):
    """Runs every branch on the same input; merges by channel concat, sum or product."""

    def __init__(self, op: str, **branches: nn.Module) -> None:
        super().__init__()
        if op not in ("concat", "add", "mul"):
            raise ValueError(f"unknown merge {op!r}")
        self.op = op
        for name, module in branches.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = [branch(x) for branch in self.children()]
        if self.op == "concat":
            return torch.cat(outs, dim=1)
        merged = outs[0]
        for out in outs[1:]:
            merged = merged + out if self.op == "add" else merged * out
        return merged

    def extra_repr(self) -> str:
        return f"op={self.op!r}"


class Split(nn.Module):
    """Splits the channels into consecutive slices of ``sizes``, runs each branch on its own
    slice, and concatenates the results on the channel axis (ShuffleNetV2's channel split)."""

    def __init__(self, sizes: tuple[int, ...], **branches: nn.Module) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        for name, module in branches.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, list(self.sizes), dim=1)
        outs = [branch(part) for branch, part in zip(self.children(), parts, strict=True)]
        return torch.cat(outs, dim=1)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


class Permute(nn.Module):
    """``x.permute(*dims)``; ``dims`` count the batch axis, which stays first (torchvision's
    ``Permute``, as ConvNeXt uses it)."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Reshape(nn.Module):
    """``x.reshape(batch, *shape)``: a new per-sample shape (one size may be -1)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (C, H, W) maps, in either memory format (torchvision's
    ``LayerNorm2d``, as ConvNeXt uses it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """Multiplies each channel by a learned scale, initialized to ``init`` (ConvNeXt's
    layer scale)."""

    def __init__(self, channels: int, rank: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels, *[1] * (rank - 1)), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class StochasticDepth(nn.Module):
    """Drops the whole input of a sample (``row``) or of the batch (``batch``) with
    probability ``p`` while training, scaling the rest by 1 / (1 - p); identity in eval
    (torchvision's ``StochasticDepth``)."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        if mode not in ("row", "batch"):
            raise ValueError(f"mode must be 'row' or 'batch', not {mode!r}")
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"
