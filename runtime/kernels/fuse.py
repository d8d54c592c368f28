"""Module swap: ``nn.Conv2d`` followed by ``nn.ReLU`` becomes one ``FusedConv2dReLU``.

This file owns the nn.Module face of the fused op: ``FusedConv2dReLU`` (shares the conv's
``weight``/``bias`` Parameters, so ``state_dict`` keys and values do not change) and the
``fuse_conv_relu`` pass that walks every ``nn.Sequential`` of any model, at any nesting,
puts the fused module in the conv's slot and ``nn.Identity`` in the ReLU's. Convs the op
cannot express are left alone and the reason is logged; nothing here raises on a model.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.kernels.conv_args import ConvArgs, conv_args_from_module
from runtime.kernels.conv_relu_op import conv2d_relu
from runtime.kernels.parity import cached_verdict, ensure_trusted

LOG = logging.getLogger("runtime.kernels")


class FusedConv2dReLU(nn.Module):
    """``relu(conv(x))`` as one ``cnnc_runtime::conv2d_relu`` call, built from a conv.

    The fused op runs only where ``ensure_trusted`` passed for the input's (device, dtype);
    elsewhere ``F.relu(F.conv2d(...))`` runs with the same parameters. The check runs here
    for the parameters' (device, dtype) and in eager ``forward`` for any other. Inside
    torch.compile or torch.export it cannot run, so there only a cached verdict enables the
    fused op (after ``model.to(...)``, run one eager forward before compiling). Under
    autocast the inputs are cast to the autocast dtype first, as autocast does for ``conv2d``.

    Args:
        conv: a groups=1, zero-padded ``nn.Conv2d``; its Parameters are shared, not copied.

    Raises:
        ValueError: when ``conv`` cannot be expressed by the fused op (the message says why).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        args = conv_args_from_module(conv)
        if isinstance(args, str):
            raise ValueError(
                f"FusedConv2dReLU cannot express this conv: {args}. Expected a groups=1, "
                f"zero-padded nn.Conv2d. Received: {conv}."
            )
        super().__init__()
        self.args: ConvArgs = args
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = conv.kernel_size
        self.weight = conv.weight
        self.bias = conv.bias
        if self.weight.device.type != "meta":
            ensure_trusted(self.weight.device, self.weight.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.args.stride}, padding={self.args.padding}, "
            f"dilation={self.args.dilation}, bias={self.bias is not None}"
        )

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight, self.bias
        device_type = x.device.type
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        if self._trusted(x):
            return conv2d_relu(x, weight, bias, *self.args.as_lists())
        a = self.args
        return F.relu(F.conv2d(x, weight, bias, a.stride, a.padding, a.dilation))

    @staticmethod
    def _trusted(x: Tensor) -> bool:
        if x.device.type == "meta":
            return False
        if torch.compiler.is_compiling():
            return cached_verdict(x.device, x.dtype)
        return ensure_trusted(x.device, x.dtype)


@dataclass(frozen=True)
class FusionRecord:
    """What ``fuse_conv_relu`` did with one Conv2d -> ReLU pair.

    Attributes:
        conv: dotted module path of the conv.
        relu: dotted module path of the ReLU.
        fused: whether the pair was replaced.
        reason: why it was declined; empty when fused.
    """

    conv: str
    relu: str
    fused: bool
    reason: str = ""

    def __str__(self) -> str:
        verdict = "fused" if self.fused else f"declined: {self.reason}"
        return f"{self.conv} + {self.relu}: {verdict}"


def decline_reason(conv: nn.Module, relu: nn.Module) -> str | None:
    """Why this Conv2d -> ReLU pair must stay unfused, or None."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} subclasses nn.Conv2d; its forward may differ"
    if type(relu) is not nn.ReLU:
        return f"{type(relu).__name__} subclasses nn.ReLU; its forward may differ"
    for module in (conv, relu):
        if module._forward_hooks or module._forward_pre_hooks:
            return f"{type(module).__name__} has forward hooks that fusion would skip"
    args = conv_args_from_module(conv)
    return args if isinstance(args, str) else None


def _fuse_sequential(prefix: str, seq: nn.Sequential) -> list[FusionRecord]:
    """Fuse the Conv2d -> ReLU neighbours among ``seq``'s direct children, in place."""
    records: list[FusionRecord] = []
    children = list(seq.named_children())
    for (conv_name, conv), (relu_name, relu) in itertools.pairwise(children):
        if not (isinstance(conv, nn.Conv2d) and isinstance(relu, nn.ReLU)):
            continue
        paths = (f"{prefix}{conv_name}", f"{prefix}{relu_name}")
        reason = decline_reason(conv, relu)
        if reason is not None:
            LOG.info("fuse_conv_relu: %s + %s declined: %s", *paths, reason)
            records.append(FusionRecord(*paths, fused=False, reason=reason))
            continue
        setattr(seq, conv_name, FusedConv2dReLU(conv))
        setattr(seq, relu_name, nn.Identity())
        records.append(FusionRecord(*paths, fused=True))
    return records


def fuse_conv_relu(model: nn.Module) -> tuple[nn.Module, list[FusionRecord]]:
    """Replace every ``nn.Conv2d`` directly followed by ``nn.ReLU`` inside an ``nn.Sequential``.

    The conv's slot gets a ``FusedConv2dReLU`` sharing its Parameters and the ReLU's slot an
    ``nn.Identity``, so parameter names, ``state_dict`` keys and values are unchanged. The
    model is modified in place. Pairs outside an ``nn.Sequential`` are not visible to this
    pass (their order is only known to ``forward``).

    Args:
        model: any module; ``nn.Sequential`` containers are found at any depth.

    Returns:
        ``(model, records)``: the same model, and one record per Conv2d -> ReLU pair found,
        fused or declined with its reason (declines are also logged at INFO).
    """
    records: list[FusionRecord] = []
    sequentials = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Sequential)]
    for name, seq in sequentials:
        records.extend(_fuse_sequential(f"{name}." if name else "", seq))
    return model, records
