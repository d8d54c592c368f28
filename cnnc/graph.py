"""The compiled network: a tree of nodes, each with its name, shapes and spec origin.

Shape inference (``cnnc.infer``) produces this tree once; the builder, codegen and analysis
only read it. A node is a leaf layer, a sequence (the model itself, a repeat, a block
instance, a branch), a residual, or a merge of parallel branches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from cnnc.errors import Location, Problem, SpecPath, dotted
from cnnc.shapes import Shape

if TYPE_CHECKING:
    from cnnc.layers.base import Layer
    from cnnc.spec import ModelSpec

NodeKind = Literal["layer", "sequence", "residual", "merge"]
Role = Literal["body", "shortcut", "after", "branch", "item"]


@dataclass(frozen=True)
class Site:
    """Where an item sits while it is being inferred: spec path, module name, qualified name."""

    path: SpecPath
    name: str
    qualname: str
    via: tuple[str, ...] = ()

    def child(self, name: str, path: SpecPath | None = None) -> Site:
        """The site of a child module named ``name`` (at ``path`` in the spec, default ours)."""
        qualname = f"{self.qualname}.{name}" if self.qualname else name
        return Site(self.path if path is None else path, name, qualname, self.via)


@dataclass(frozen=True)
class Node:
    """One module of the compiled network.

    Attributes:
        name: attribute name in the parent module (``conv1``, ``0``, ``downsample``).
        qualname: dotted name from the model root, as in ``state_dict`` (``layer1.0.conv1``).
        tag: the spec ``type`` this node came from (``conv2d``, ``residual``, a block name).
        kind: how the builder and codegen treat it.
        in_shape, out_shape: per-sample shapes (no batch axis).
        location, path, via: where in the spec it was written, and through which block uses.
        layer: the validated leaf spec (leaves only).
        children: child nodes in execution order.
        roles: per child, its part in a residual (body, shortcut, after) or merge (branch).
        op: for merges, ``concat``, ``add`` or ``mul``.
        repeat: for sequences made by ``repeat: N``, N.
    """

    name: str
    qualname: str
    tag: str
    kind: NodeKind
    in_shape: Shape
    out_shape: Shape
    location: Location
    path: SpecPath
    via: tuple[str, ...] = ()
    layer: Layer | None = None
    children: tuple[Node, ...] = ()
    roles: tuple[Role, ...] = ()
    op: str | None = None
    repeat: int | None = None

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()

    def leaves(self) -> Iterator[Node]:
        """Every leaf layer below (or at) this node, in execution order."""
        return (node for node in self.walk() if node.kind == "layer")

    def part(self, role: Role) -> list[Node]:
        """The children playing ``role``."""
        return [c for c, r in zip(self.children, self.roles, strict=True) if r == role]

    @property
    def spec_path(self) -> str:
        return dotted(self.path)


@dataclass(frozen=True)
class Graph:
    """A compiled spec: the node tree plus what analysis and the CLI need alongside it."""

    spec: ModelSpec
    root: Node
    warnings: list[Problem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_shape(self) -> Shape:
        return self.root.in_shape

    @property
    def output_shape(self) -> Shape:
        return self.root.out_shape

    def leaves(self) -> list[Node]:
        return list(self.root.leaves())
