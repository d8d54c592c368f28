"""The conv+ReLU fusion: ``relu(conv(x))`` becomes one ``FusedConv2dReLU``, in one fx pass.

This file owns the nn.Module face of the fused op, ``FusedConv2dReLU`` (it shares the
conv's ``weight``/``bias`` Parameters, so ``state_dict`` keys and values do not change), and
the only pass that fuses: every ``nn.Conv2d`` whose single user is a ReLU in the model's
torch.fx graph. It serves two callers: ``rewrites.for_inference`` edits its traced graph
(``fuse_conv_relu_nodes``), and ``fuse_conv_relu`` (the ``fused_conv_relu`` optimization)
swaps modules in place in the model itself. Convs the op cannot express are left alone and
the reason is logged; nothing here raises on a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from runtime.kernels.conv_args import ConvArgs, conv_args_from_module
from runtime.kernels.parity import CONV_RELU, cached_verdict, trusted
from runtime.kernels.triton.op import conv2d_relu

LOG = logging.getLogger("runtime.kernels")
_RELU_FUNCTIONS: tuple[Callable[..., Any], ...] = (F.relu, torch.relu, torch.relu_)


class FusedConv2dReLU(nn.Module):
    """``relu(conv(x))`` as one ``cnnc_runtime::conv2d_relu`` call, built from a conv.

    The fused op runs only where the parity gate (``parity.trusted``) passed for the input's (device, dtype);
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
            trusted([CONV_RELU], self.weight.device, self.weight.dtype)

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
            y: Tensor = conv2d_relu(x, weight, bias, *self.args.as_lists())
            return y
        a = self.args
        return F.relu(F.conv2d(x, weight, bias, a.stride, a.padding, a.dilation))

    @staticmethod
    def _trusted(x: Tensor) -> bool:
        if x.device.type == "meta":
            return False
        if torch.compiler.is_compiling():
            return cached_verdict(CONV_RELU, x.device, x.dtype)
        return trusted([CONV_RELU], x.device, x.dtype)


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


def _relu(graph_module: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The ReLU ``node`` applies (a fresh ``nn.ReLU`` for ``F.relu``), or None."""
    if node.op == "call_function":
        single = node.target in _RELU_FUNCTIONS and len(node.args) == 1
        return nn.ReLU() if single else None
    if node.op == "call_module":
        module = graph_module.get_submodule(str(node.target))
        return module if isinstance(module, nn.ReLU) else None
    return None


def _pairs(graph_module: fx.GraphModule) -> Iterator[tuple[fx.Node, nn.Conv2d, fx.Node, nn.Module]]:
    """Every ``nn.Conv2d`` call whose only user is a ReLU, in execution order."""
    for conv_node in list(graph_module.graph.nodes):
        if conv_node.op != "call_module" or len(conv_node.users) != 1:
            continue
        conv = graph_module.get_submodule(str(conv_node.target))
        relu_node = next(iter(conv_node.users))
        relu = _relu(graph_module, relu_node)
        if isinstance(conv, nn.Conv2d) and relu is not None:
            yield conv_node, conv, relu_node, relu


def _in_place_reason(graph_module: fx.GraphModule, conv: fx.Node, relu: fx.Node) -> str | None:
    """Why swapping modules in the untraced model would not fuse this pair alone, or None."""
    if relu.op != "call_module":
        return "a functional ReLU is fused only in a traced graph (rewrites.for_inference)"
    calls = [node.target for node in graph_module.graph.nodes if node.op == "call_module"]
    for node in (conv, relu):
        if calls.count(node.target) > 1:
            return f"{node.target} is called more than once; swapping it would change every call"
    return None


def _fuse(root: nn.Module, graph_module: fx.GraphModule, prefix: str) -> list[FusionRecord]:
    """Fuse the pairs of ``graph_module``: by editing its graph when it is ``root``, else by
    swapping modules of ``root`` (the module it was traced from) in place."""
    records: list[FusionRecord] = []
    for conv_node, conv, relu_node, relu in _pairs(graph_module):
        conv_path = str(conv_node.target)
        relu_path = str(relu_node.target) if relu_node.op == "call_module" else relu_node.name
        paths = (f"{prefix}{conv_path}", f"{prefix}{relu_path}")
        reason = decline_reason(conv, relu)
        if reason is None and root is not graph_module:
            reason = _in_place_reason(graph_module, conv_node, relu_node)
        if reason is not None:
            LOG.info("fuse_conv_relu: %s + %s declined: %s", *paths, reason)
            records.append(FusionRecord(*paths, fused=False, reason=reason))
            continue
        root.set_submodule(conv_path, FusedConv2dReLU(conv))
        if root is graph_module:
            relu_node.replace_all_uses_with(conv_node)
            graph_module.graph.erase_node(relu_node)
        else:
            root.set_submodule(relu_path, nn.Identity())
        records.append(FusionRecord(*paths, fused=True))
    return records


class _Tracer(fx.Tracer):
    """fx's tracer, keeping subclasses of Conv2d and ReLU as calls (``decline_reason``
    judges them) instead of tracing into their forward."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d | nn.ReLU) or super().is_leaf_module(
            m, module_qualified_name
        )


def _traced(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, fx.GraphModule]]:
    """``model`` with its fx graph, or, where fx cannot trace it, each child's in turn."""
    if isinstance(model, fx.GraphModule):
        yield prefix, model, model
        return
    try:
        graph_module = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # fx raises many types for untraceable Python
        LOG.debug("fuse_conv_relu: tracing %s failed (%s); trying its children", prefix, exc)
        for name, child in model.named_children():
            yield from _traced(child, f"{prefix}{name}.")
        return
    yield prefix, model, graph_module


def fuse_conv_relu(model: nn.Module) -> tuple[nn.Module, list[FusionRecord]]:
    """Put every ``nn.Conv2d`` whose only user is a ReLU into one ``FusedConv2dReLU``, in place.

    The conv's slot gets a ``FusedConv2dReLU`` sharing its Parameters and the ReLU's slot an
    ``nn.Identity``, so parameter names, ``state_dict`` keys and values are unchanged. Pairs
    are found in the model's torch.fx graph (or, when fx cannot trace the model, in each
    traceable submodule's); a ``GraphModule`` has its graph edited instead, which also
    fuses functional ReLUs.

    Args:
        model: any module.

    Returns:
        ``(model, records)``: the same model, and one record per Conv2d -> ReLU pair found,
        fused or declined with its reason (declines are also logged at INFO).
    """
    records: list[FusionRecord] = []
    for prefix, root, graph_module in _traced(model):
        records.extend(_fuse(root, graph_module, prefix))
    if isinstance(model, fx.GraphModule):
        model.recompile()
    return model, records


def fuse_conv_relu_nodes(graph_module: fx.GraphModule) -> int:
    """``relu(conv(x))`` → one ``FusedConv2dReLU`` in a traced graph; returns how many.

    The caller lints and recompiles the graph (``rewrites.for_inference`` does).
    """
    return sum(record.fused for record in _fuse(graph_module, graph_module, ""))
