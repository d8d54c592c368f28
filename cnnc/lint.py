"""Warnings for classic mistakes in networks that are valid but probably not meant.

- softmax as the last layer, before a loss that applies log_softmax itself;
- a conv2d bias right before batchnorm2d, which subtracts the mean and cancels the bias;
- a flatten whose size ties the following linear to one input resolution, where adaptive
  pooling would free it.
"""

from __future__ import annotations

from collections.abc import Iterator

from cnnc.errors import Problem, dotted
from cnnc.graph import Graph, Node
from cnnc.layers.conv import Conv2d
from cnnc.shapes import numel


def lint(graph: Graph, loss: str | None = None) -> list[Problem]:
    """All warnings for ``graph``; ``loss`` is the training loss when the spec has one."""
    return [*_softmax_last(graph, loss), *_bias_before_bn(graph), *_resolution_tied(graph)]


def _warn(node: Node, message: str, hint: str) -> Problem:
    return Problem(
        message, node.location, dotted(node.path), hint=hint, severity="warning", notes=node.via
    )


def _softmax_last(graph: Graph, loss: str | None) -> Iterator[Problem]:
    leaves = graph.leaves()
    last = leaves[-1] if leaves else None
    if last is None:
        return
    if last.tag == "softmax" and loss in (None, "cross_entropy", "nll"):
        yield _warn(
            last,
            f"the network ends with softmax ('{last.qualname}'); cross_entropy expects raw "
            "logits and applies log_softmax itself, so training on probabilities is slow",
            "remove the softmax (apply it when predicting), or end with log_softmax and use "
            "the nll loss",
        )
    elif last.tag == "log_softmax" and loss == "cross_entropy":
        yield _warn(
            last,
            f"the network ends with log_softmax ('{last.qualname}') but the loss is "
            "cross_entropy, which applies log_softmax again",
            "use loss: nll with a log_softmax output, or drop the log_softmax",
        )


def _adjacent(graph: Graph) -> Iterator[tuple[Node, Node]]:
    """Consecutive leaf children of one sequence (or one residual part)."""
    for node in graph.root.walk():
        pairs = zip(node.children, node.children[1:], strict=False)
        for (a, b), (ra, rb) in zip(
            pairs, zip(node.roles, node.roles[1:], strict=False), strict=False
        ):
            if a.kind == b.kind == "layer" and ra == rb:
                yield a, b


def _bias_before_bn(graph: Graph) -> Iterator[Problem]:
    for conv, norm in _adjacent(graph):
        if isinstance(conv.layer, Conv2d) and conv.layer.bias and norm.tag == "batchnorm2d":
            saved = conv.out_shape[0]
            yield _warn(
                conv,
                f"conv2d '{conv.qualname}' has a bias right before batchnorm2d "
                f"'{norm.qualname}', which subtracts the per-channel mean and cancels it",
                f"set 'bias: false' on this conv2d (saves {saved} parameters and their "
                "gradient work)",
            )


def _resolution_tied(graph: Graph) -> Iterator[Problem]:
    for flatten, nxt in _adjacent(graph):
        shape = flatten.in_shape
        if flatten.tag != "flatten" or nxt.tag != "linear" or len(shape) != 3:
            continue
        if shape[1] * shape[2] == 1:
            continue
        c, h, w = shape
        yield _warn(
            flatten,
            f"'{flatten.qualname}' turns {c}×{h}×{w} into {numel(shape)} features, so "
            f"'{nxt.qualname}' only works for the {graph.input_shape[1]}×"
            f"{graph.input_shape[2]} input size",
            f"add {{type: adaptive_avgpool2d, output_size: [{h}, {w}]}} before flatten to "
            "accept any input size with the same weights",
        )
