"""Graph → plain ``nn.Module``: concrete torch layers, deterministic names, no shape math.

Every size comes from the graph (the traversal computed it); each leaf's constructor comes
from its ``ModuleCall``, the same record codegen prints.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnc import modules
from cnnc.graph import Graph, Node
from cnnc.layers.base import ModuleCall
from cnnc.modules import Branches, Network, Residual, Split


def instantiate(call: ModuleCall) -> nn.Module:
    """``nn.<cls>(*args, **kwargs)`` for a leaf's module call (``cnnc.modules``' when local)."""
    cls = getattr(modules if call.local else nn, call.cls)
    module: nn.Module = cls(*call.args, **call.kwargs)
    return module


def build_graph(graph: Graph) -> Network:
    """The nn.Module for a compiled graph, parameters freshly initialized by torch."""
    layers = OrderedDict((child.name, build_node(child)) for child in graph.root.children)
    return Network(layers, graph.name, graph.input_shape)


def build_node(node: Node) -> nn.Module:
    """The module for one node and everything below it."""
    if node.kind == "layer":
        assert node.layer is not None
        return instantiate(node.layer.module_call(node.in_shape))
    if node.kind == "residual":
        return Residual(
            body=_named(node.part("body")),
            shortcut=_named(node.part("shortcut")) or None,
            after=_named(node.part("after")) or None,
        )
    if node.kind == "merge" and node.op == "split":  # each branch's input is its slice
        return Split(tuple(child.in_shape[0] for child in node.children), **_named(node.children))
    if node.kind == "merge":
        assert node.op is not None
        return Branches(node.op, **_named(node.children))
    return nn.Sequential(OrderedDict(_named(node.children)))


def _named(nodes: list[Node] | tuple[Node, ...]) -> dict[str, nn.Module]:
    return {node.name: build_node(node) for node in nodes}
