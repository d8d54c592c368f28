"""Warnings for classic mistakes in networks that are valid but probably not meant.

- softmax (or log_softmax) as the last layer, before a loss that applies log_softmax itself
  (``softmax-before-loss``, ``log-softmax-twice``);
- a conv2d bias right before batchnorm2d, which subtracts the mean and cancels the bias
  (``conv-bias-before-batchnorm``);
- a flatten whose size ties the following linear to one input resolution, where adaptive
  pooling would free it (``resolution-tied``).

Each warning carries its code (``cnnc.lintcodes``) and is reported once per place in the
spec: the copies of a block or a repeat are one place, listed in a note. ``lint: {ignore:
[CODE]}`` silences a code for the whole spec, or on one layer for that layer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import replace

from cnnc.errors import Problem, dotted
from cnnc.graph import Graph, Node
from cnnc.layers.conv import Conv2d
from cnnc.lintcodes import CODES
from cnnc.shapes import numel

MAX_COPIES_LISTED = 4


def lint(graph: Graph, loss: str | None = None, ignore: Collection[str] = ()) -> list[Problem]:
    """The warnings for ``graph``, one per place in the spec; ``loss`` is the training loss
    when the spec has one, ``ignore`` the codes the spec silences."""
    found = [*_softmax_last(graph, loss), *_bias_before_bn(graph), *_resolution_tied(graph)]
    kept = [
        (node, problem)
        for node, problem in found
        if problem.code not in ignore
        and not (node.layer and node.layer.lint and problem.code in node.layer.lint.ignore)
    ]
    places: dict[tuple[str, str], list[tuple[Node, Problem]]] = {}
    for node, problem in kept:
        places.setdefault((problem.code, str(problem.location)), []).append((node, problem))
    return [_once(copies) for copies in places.values()]


def _once(copies: list[tuple[Node, Problem]]) -> Problem:
    """The first copy's warning; a note lists the others (the same place in the spec)."""
    first = copies[0][1]
    if len(copies) == 1:
        return first
    others = [node.qualname for node, _ in copies[1:]]
    listed = ", ".join(f"'{name}'" for name in others[:MAX_COPIES_LISTED])
    more = f" and {len(others) - MAX_COPIES_LISTED} more" if len(others) > MAX_COPIES_LISTED else ""
    note = f"the same in {len(others)} more copies of this layer: {listed}{more}"
    return replace(first, notes=(*first.notes, note))


def _warn(node: Node, code: str, message: str, hint: str) -> tuple[Node, Problem]:
    assert code in CODES, code
    problem = Problem(
        message,
        node.location,
        dotted(node.path),
        hint=hint,
        severity="warning",
        notes=node.via,
        code=code,
    )
    return node, problem


Found = Iterator[tuple[Node, Problem]]


def _softmax_last(graph: Graph, loss: str | None) -> Found:
    leaves = graph.leaves()
    last = leaves[-1] if leaves else None
    if last is None:
        return
    if last.tag == "softmax" and loss in (None, "cross_entropy", "nll"):
        yield _warn(
            last,
            "softmax-before-loss",
            f"the network ends with softmax ('{last.qualname}'); cross_entropy expects raw "
            "logits and applies log_softmax itself, so training on probabilities is slow",
            "remove the softmax (apply it when predicting), or end with log_softmax and use "
            "the nll loss",
        )
    elif last.tag == "log_softmax" and loss == "cross_entropy":
        yield _warn(
            last,
            "log-softmax-twice",
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


def _bias_before_bn(graph: Graph) -> Found:
    for conv, norm in _adjacent(graph):
        if isinstance(conv.layer, Conv2d) and conv.layer.bias and norm.tag == "batchnorm2d":
            saved = conv.out_shape[0]
            yield _warn(
                conv,
                "conv-bias-before-batchnorm",
                f"conv2d '{conv.qualname}' has a bias right before batchnorm2d "
                f"'{norm.qualname}', which subtracts the per-channel mean and cancels it",
                f"set 'bias: false' on this conv2d (saves {saved} parameters and their "
                "gradient work)",
            )


def _resolution_tied(graph: Graph) -> Found:
    for flatten, nxt in _adjacent(graph):
        shape = flatten.in_shape
        if flatten.tag != "flatten" or nxt.tag != "linear" or len(shape) != 3:
            continue
        if shape[1] * shape[2] == 1:
            continue
        c, h, w = shape
        yield _warn(
            flatten,
            "resolution-tied",
            f"'{flatten.qualname}' turns {c}×{h}×{w} into {numel(shape)} features, so "
            f"'{nxt.qualname}' only works for the {graph.input_shape[1]}×"
            f"{graph.input_shape[2]} input size",
            f"add {{type: adaptive_avgpool2d, output_size: [{h}, {w}]}} before flatten to "
            "accept any input size with the same weights",
        )
