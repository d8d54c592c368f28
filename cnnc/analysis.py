"""What a compiled network costs, from the spec alone: params, MACs, FLOPs and memory.

MACs count the multiply-accumulates of convolutions and linear layers; FLOPs count every
floating-point operation of a forward pass (2 per MAC, plus bias adds, activations,
normalization and pooling), so the two are reported apart. Training FLOPs per image use the
standard estimate of 3x forward (forward, input gradients, weight gradients). Memory is fp32:
parameters, and activations kept for backward at a batch size.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from cnnc.errors import Location, Problem, ResourceError
from cnnc.graph import Graph, Node
from cnnc.shapes import Shape, numel

BYTES_PER_VALUE = 4  # fp32
DEFAULT_MAX_MEMORY = 8 * 2**30
MAX_MEMORY_ENV = "CNNC_MAX_MEMORY"


@dataclass(frozen=True)
class Row:
    """One line of the summary table: a module with its output shape and costs."""

    name: str
    type: str
    output_shape: Shape
    params: int
    macs: int
    flops: int
    depth: int
    kind: str


@dataclass(frozen=True)
class Summary:
    """Totals and per-module rows of one compiled network at one batch size."""

    name: str
    input_shape: Shape
    output_shape: Shape
    batch: int
    params: int
    macs: int
    flops: int
    training_flops: int
    param_bytes: int
    activation_bytes: int
    rows: list[Row] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``cnnc build --json`` (shapes as lists)."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["output_shape"] = list(self.output_shape)
        data["layers"] = [
            {**asdict(row), "output_shape": list(row.output_shape)} for row in self.rows
        ]
        del data["rows"]
        return data


def node_costs(node: Node) -> tuple[int, int, int]:
    """(params, macs, flops) of a node, summed over its leaves."""
    params = macs = flops = 0
    for leaf in node.leaves():
        assert leaf.layer is not None
        params += leaf.layer.params(leaf.in_shape)
        macs += leaf.layer.macs(leaf.in_shape, leaf.out_shape)
        flops += leaf.layer.flops(leaf.in_shape, leaf.out_shape)
    flops += _merge_flops(node)
    return params, macs, flops


def _merge_flops(node: Node) -> int:
    """One op per output element for each residual addition and add/mul merge."""
    total = 0
    for inner in node.walk():
        if inner.kind == "residual" or inner.op in ("add", "mul"):
            total += numel(inner.out_shape) * max(1, len(inner.part("branch")) - 1)
    return total


def summarize(graph: Graph, batch: int = 1) -> Summary:
    """Per-module rows and totals for ``graph`` at ``batch`` images."""
    rows = []
    for node, depth in _with_depth(graph.root, 0):
        params, macs, flops = node_costs(node)
        rows.append(
            Row(node.qualname, node.tag, node.out_shape, params, macs, flops, depth, node.kind)
        )
    params, macs, flops = node_costs(graph.root)
    saved = numel(graph.input_shape) + sum(numel(n.out_shape) for n in graph.root.leaves())
    return Summary(
        name=graph.name,
        input_shape=graph.input_shape,
        output_shape=graph.output_shape,
        batch=batch,
        params=params,
        macs=macs,
        flops=flops,
        training_flops=3 * flops,
        param_bytes=params * BYTES_PER_VALUE,
        activation_bytes=saved * BYTES_PER_VALUE * batch,
        rows=rows,
    )


def _with_depth(node: Node, depth: int) -> list[tuple[Node, int]]:
    out = []
    for child in node.children:
        out.append((child, depth))
        out += _with_depth(child, depth + 1)
    return out


def memory_limit(explicit: int | None = None) -> int:
    """The memory limit in bytes: ``explicit``, else $CNNC_MAX_MEMORY, else 8 GiB."""
    if explicit is not None:
        return explicit
    env = os.environ.get(MAX_MEMORY_ENV)
    return parse_bytes(env) if env else DEFAULT_MAX_MEMORY


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"512MB"``, ``"1e9"`` → bytes; ValueError on anything else."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(cleaned[-1:], 1)
    number = cleaned[:-1] if cleaned[-1:] in units else cleaned
    return int(float(number) * scale)


def check_memory(graph: Graph, limit: int, location: Location) -> None:
    """Refuse, before anything is allocated, a network whose batch-1 memory exceeds ``limit``."""
    summary = summarize(graph, batch=1)
    needed = summary.param_bytes + summary.activation_bytes
    if needed <= limit:
        return
    raise ResourceError(
        [
            Problem(
                f"building '{graph.name}' would need about {human_bytes(needed)} "
                f"({human_bytes(summary.param_bytes)} of fp32 parameters for {summary.params:,} "
                f"parameters, {human_bytes(summary.activation_bytes)} of activations per image), "
                f"more than the limit of {human_bytes(limit)}",
                location,
                hint=f"shrink the layers, or raise the limit with --max-memory or ${MAX_MEMORY_ENV}",
            )
        ]
    )


def human_bytes(count: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def human_count(count: float) -> str:
    """``62006`` → ``62.0K``; ``1.8e9`` → ``1.80G``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f}{unit}" if unit != "K" else f"{count / scale:.1f}K"
    return str(int(count))
