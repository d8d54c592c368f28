"""The one traversal that names every module and assigns every shape, before any tensor exists.

``infer(spec, source)`` walks the validated spec in execution order. Leaves apply their pure
shape rule; composites (residual, branches, sequential) call back into this traversal for
their children and own only their merge rule; block uses are substituted and validated here,
per use, because ``$channels`` is the input's channel count. A shape problem becomes a
``ShapeError`` naming the layer, its location, its input shape, the formula, and, when the
input is too small, the smallest input that works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cnnc import blocks
from cnnc.errors import Problem, ShapeError, SpecError, SpecPath, dotted
from cnnc.graph import Graph, Node, NodeKind, Role, Site
from cnnc.layers.base import Composite, Layer, LayerSpec
from cnnc.naming import Item, scope_names
from cnnc.shapes import Shape, ShapeProblem, fmt
from cnnc.source import SourceMap
from cnnc.spec import AnyLayer, BlockUse, ModelSpec
from cnnc.validation import problems_from

_LAYERS: TypeAdapter[list[Any]] = TypeAdapter(list[AnyLayer])
_LAYER: TypeAdapter[Any] = TypeAdapter(AnyLayer)


class Inference:
    """State of one traversal: the spec, its source map, and the block context."""

    def __init__(self, spec: ModelSpec, source: SourceMap) -> None:
        self.spec = spec
        self.source = source
        self.context = {"blocks": spec.blocks}

    # -- the traversal ------------------------------------------------------------------

    def run(self, x: Shape) -> Node:
        """Infer the whole network for per-sample input ``x``; returns the root node."""
        root = Site((), "", "")
        items = self.items(self.spec.layers, ("layers",))
        children, y = self.sequence(items, x, root, scope_names(self, [items])[0])
        return self.node(root, self.spec.name, "sequence", x, y, children)

    def items(self, layers: Sequence[LayerSpec], base: SpecPath) -> list[Item]:
        """Pair each spec item with its path (``base + (index,)``)."""
        return [(layer, (*base, index)) for index, layer in enumerate(layers)]

    def sequence(
        self, items: Sequence[Item], x: Shape, parent: Site, names: Sequence[str]
    ) -> tuple[list[Node], Shape]:
        """Infer items one after another; returns their nodes and the final shape."""
        nodes = []
        for (spec, path), name in zip(items, names, strict=True):
            node = self.item(spec, x, parent.child(name, path))
            nodes.append(node)
            x = node.out_shape
        return nodes, x

    def item(self, spec: LayerSpec, x: Shape, site: Site) -> Node:
        """One spec item, expanding ``repeat`` into a numbered sequence."""
        if spec.repeat is None:
            return self.single(spec, x, site)
        children, y = [], x
        for index in range(spec.repeat):
            variant = self.variant(spec, first=index == 0, site=site)
            child = self.single(variant, y, site.child(str(index)))
            children.append(child)
            y = child.out_shape
        node = self.node(site, spec.type, "sequence", x, y, children)
        return _with(node, repeat=spec.repeat)

    def single(self, spec: LayerSpec, x: Shape, site: Site) -> Node:
        """One module: a leaf, a composite, or a block instance."""
        if isinstance(spec, BlockUse):
            return self.block(spec, x, site)
        if isinstance(spec, Composite):
            return spec.expand(self, x, site)
        assert isinstance(spec, Layer), spec
        try:
            y = spec.output_shape(x)
        except ShapeProblem as problem:
            raise self.shape_error(problem, spec.type, site, x) from None
        return _with(self.node(site, spec.type, "layer", x, y), layer=spec)

    def block(self, use: BlockUse, x: Shape, site: Site) -> Node:
        """Substitute a block's arguments, validate its layers, and infer them."""
        definition = self.spec.blocks[use.type]
        problems = blocks.check_use(definition, use, site.path, self.source)
        if problems:
            raise SpecError(_with_notes(problems, site.via))
        base: SpecPath = ("blocks", use.type, "layers")
        via = (
            *site.via,
            f"in block '{use.type}' used at {self.source.locate(site.path)} ({dotted(site.path)})",
        )
        try:
            raw = blocks.substitute(definition.layers, blocks.bind(definition, use, x[0]))
        except blocks.ExpressionProblem as exc:
            where = (*base, *exc.path)
            problem = Problem(
                exc.message, self.source.locate(where), dotted(where), hint=exc.hint, notes=via
            )
            raise SpecError([problem]) from None
        try:
            layers = _LAYERS.validate_python(raw, context=self.context)
        except ValidationError as exc:
            raise SpecError(problems_from(exc, raw, self.source, base=base, notes=via)) from None
        items = self.items(layers, base)
        inner = Site(base, site.name, site.qualname, via)
        if len(items) == 1:
            return self.item(items[0][0], x, Site(items[0][1], site.name, site.qualname, via))
        children, y = self.sequence(items, x, inner, scope_names(self, [items])[0])
        return self.node(site, use.type, "sequence", x, y, children)

    def variant(self, spec: LayerSpec, *, first: bool, site: Site) -> LayerSpec:
        """One repeat of ``spec``: without repeat/first, with ``first`` applied to repeat 0."""
        data = spec.model_dump(exclude_unset=True, exclude={"repeat", "first", "name"})
        data["type"] = spec.type
        if first and spec.first:
            data.update(spec.first)
        try:
            validated: LayerSpec = _LAYER.validate_python(data, context=self.context)
        except ValidationError as exc:
            notes = ("in the first repeat, with the 'first' overrides applied", *site.via)
            raise SpecError(
                problems_from(exc, data, self.source, base=site.path, notes=notes)
            ) from None
        return validated

    def guard_shared_input(self, items: Sequence[Item], what: str) -> None:
        """Refuse an in-place layer that would overwrite an input other branches still read.

        A residual's body and every merge branch receive the same tensor; an in-place layer
        reached before anything allocates a new tensor would corrupt the shortcut or the other
        branches.
        """
        for spec, path in items:
            if isinstance(spec, Layer) and spec.in_place:
                where = (*path, "inplace")
                raise SpecError(
                    [
                        Problem(
                            f"{spec.type} with inplace: true would overwrite the input that {what} "
                            "also reads",
                            self.source.locate(where),
                            dotted(where),
                            hint="set 'inplace: false' here, or move this layer after one that "
                            "produces a new tensor (a conv2d, linear, batchnorm, ...)",
                        )
                    ]
                )
            if not (isinstance(spec, Layer) and type(spec).passes_input):
                return

    # -- building nodes and errors ------------------------------------------------------

    def node(
        self,
        site: Site,
        tag: str,
        kind: NodeKind,
        x: Shape,
        y: Shape,
        children: Sequence[Node] = (),
        roles: Sequence[Role] = (),
        op: str | None = None,
    ) -> Node:
        """A node at ``site``; children default to the role 'item'."""
        return Node(
            name=site.name,
            qualname=site.qualname,
            tag=tag,
            kind=kind,
            in_shape=x,
            out_shape=y,
            location=self.source.locate(site.path),
            path=site.path,
            via=site.via,
            children=tuple(children),
            roles=tuple(roles) if roles else tuple("item" for _ in children),
            op=op,
        )

    def shape_error(self, problem: ShapeProblem, tag: str, site: Site, x: Shape) -> ShapeError:
        """A located ShapeError for a layer whose rule refused input ``x``."""
        notes = [f"input: {fmt(x, batch=True)}"]
        if problem.formula:
            notes.append(f"formula: {problem.formula}")
        notes += site.via
        error = ShapeError(
            [
                Problem(
                    f"{tag} '{site.qualname}': {problem.message}",
                    self.source.locate(site.path),
                    dotted(site.path),
                    hint=problem.hint,
                    notes=tuple(notes),
                )
            ]
        )
        error.input_too_small = problem.input_too_small  # type: ignore[attr-defined]
        return error

    def merge_error(self, site: Site, tag: str, message: str, hint: str) -> ShapeError:
        """A located ShapeError for branches (or a residual) whose outputs cannot be merged."""
        return ShapeError(
            [
                Problem(
                    f"{tag} '{site.qualname or tag}': {message}",
                    self.source.locate(site.path),
                    dotted(site.path),
                    hint=hint,
                    notes=site.via,
                )
            ]
        )


def infer(spec: ModelSpec, source: SourceMap, input_shape: Shape | None = None) -> Graph:
    """Compile a validated spec into a ``Graph``; raises SpecError or ShapeError."""
    x = input_shape or spec.input_shape
    try:
        root = Inference(spec, source).run(x)
    except ShapeError as error:
        if getattr(error, "input_too_small", False) and len(x) == 3:
            _add_smallest_input(error, spec, source, x)
        raise
    return Graph(spec, root)


def _add_smallest_input(error: ShapeError, spec: ModelSpec, source: SourceMap, x: Shape) -> None:
    smallest = smallest_input(spec, source, x)
    problem = error.problems[0]
    if smallest is None:
        advice = "no input up to 4096×4096 works; the layers shrink the image too far"
    else:
        advice = (
            f"the smallest input that works is {smallest[1]}×{smallest[2]} "
            f"(the spec's input is {x[1]}×{x[2]}): set input: [{x[0]}, {smallest[1]}, "
            f"{smallest[2]}], or {problem.hint or 'change the layer'}"
        )
    error.problems[0] = Problem(
        problem.message, problem.location, problem.path, hint=advice, notes=problem.notes
    )


def smallest_input(spec: ModelSpec, source: SourceMap, x: Shape) -> Shape | None:
    """The smallest (C, max(H, n), max(W, n)) the network accepts, by doubling then bisection."""

    def works(n: int) -> bool:
        try:
            Inference(spec, source).run((x[0], max(x[1], n), max(x[2], n)))
        except ShapeError:
            return False
        return True

    low, high = max(x[1], x[2]), max(x[1], x[2], 1) * 2
    while not works(high):
        if high >= 4096:
            return None
        low, high = high, min(high * 2, 4096)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if works(mid) else (mid, high)
    return (x[0], max(x[1], high), max(x[2], high))


def _with(node: Node, **changes: Any) -> Node:
    return replace(node, **changes)


def _with_notes(problems: list[Problem], via: Sequence[str]) -> list[Problem]:
    return [replace(p, notes=(*p.notes, *via)) for p in problems]
