"""The compiler pipeline: load → validate → check blocks → infer shapes → lint → build/codegen.

Every public entry point of cnnc goes through ``compile_spec``; the CLI adds only printing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from cnnc import blocks, codegen
from cnnc.analysis import check_memory, memory_limit, summarize
from cnnc.errors import Location, Problem, SpecError, SpecPath
from cnnc.graph import Graph
from cnnc.infer import infer
from cnnc.layers.base import LayerSpec
from cnnc.layers.types import Identifier
from cnnc.lint import lint
from cnnc.shapes import Shape
from cnnc.source import Document, load
from cnnc.spec import BlockDef, BlockUse, ModelSpec
from cnnc.validation import problems_from

if TYPE_CHECKING:
    from torch import nn

SpecInput = str | Path | Mapping[str, Any]
_BLOCKS: TypeAdapter[dict[str, BlockDef]] = TypeAdapter(dict[Identifier, BlockDef])


@dataclass(frozen=True)
class Compiled:
    """A validated spec, its source document, and the inferred graph with lint warnings."""

    spec: ModelSpec
    document: Document
    graph: Graph
    warnings: list[Problem] = field(default_factory=list)

    @property
    def file(self) -> str:
        return self.document.source.file

    @property
    def key(self) -> str:
        """A hash of what determines the network (layers, blocks, input): the tune cache's
        key and the spec hash in an exported artifact's manifest."""
        spec = self.spec.model_dump(
            mode="json", include={"input", "layers", "blocks"}, serialize_as_any=True
        )
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def parse(spec: SpecInput) -> tuple[ModelSpec, Document]:
    """Load and validate a spec, reporting every problem found (not only the first).

    Raises:
        SourceError: unreadable or malformed file.
        SpecError: the spec does not follow the schema, or its blocks are inconsistent.
    """
    document = load(spec)
    raw_blocks = document.data.get("blocks")
    context = {"blocks": raw_blocks if isinstance(raw_blocks, dict) else {}}
    problems: list[Problem] = []
    model: ModelSpec | None = None
    try:
        model = ModelSpec.model_validate(document.data, context=context)
    except ValidationError as exc:
        problems += problems_from(exc, document.data, document.source, root_model=ModelSpec)
    definitions = model.blocks if model else _valid_blocks(raw_blocks)
    problems += blocks.check_definitions(definitions, document.source)
    problems += blocks.check_nested_uses(definitions, document.source)
    for use, path in _block_uses(model.layers if model else [], ("layers",)):
        problems += blocks.check_use(definitions[use.type], use, path, document.source, static=True)
    if problems or model is None:
        raise SpecError(problems)
    return model, document


def _valid_blocks(raw: Any) -> dict[str, BlockDef]:
    """The block definitions alone, when they validate, so their checks run even when
    another part of the spec is invalid."""
    try:
        return _BLOCKS.validate_python(raw if raw is not None else {})
    except ValidationError:
        return {}


def compile_spec(spec: SpecInput, *, input_shape: Shape | None = None) -> Compiled:
    """Parse, infer every shape, and lint; raises SpecError or ShapeError on bad specs."""
    model, document = parse(spec)
    graph = infer(model, document.source, input_shape)
    ignore = model.lint.ignore if model.lint else ()
    return Compiled(model, document, graph, lint(graph, _loss_name(model), ignore))


def build(
    spec: SpecInput | Compiled,
    *,
    input_shape: Shape | None = None,
    max_memory: int | None = None,
) -> nn.Module:
    """A plain ``nn.Module`` for a spec (a path, a YAML/JSON string, or a dict).

    Sizes are concrete (no lazy modules) and parameter names deterministic (``conv1``,
    ``bn1``, ``layer1.0.conv1``). A network needing more memory than ``max_memory`` bytes
    (default $CNNC_MAX_MEMORY or 8 GiB) is refused before anything is allocated.
    """
    from cnnc.builder import build_graph  # torch loads here, not with the compiler

    compiled = spec if isinstance(spec, Compiled) else compile_spec(spec, input_shape=input_shape)
    check_memory(compiled.graph, memory_limit(max_memory), Location(compiled.file, 1, 1))
    return build_graph(compiled.graph)


def generate_code(spec: SpecInput | Compiled) -> str:
    """The standalone PyTorch source of a spec's network (see ``cnnc.codegen``)."""
    compiled = spec if isinstance(spec, Compiled) else compile_spec(spec)
    source = compiled.file if not compiled.file.startswith("<") else None
    params = summarize(compiled.graph).params
    return codegen.generate(compiled.graph, source=source, params=params)


def _loss_name(model: ModelSpec) -> str | None:
    train = getattr(model, "train", None)
    loss = getattr(train, "loss", None)
    return getattr(loss, "type", None) if loss is not None else None


def _block_uses(layers: list[Any], base: SpecPath) -> Iterator[tuple[BlockUse, SpecPath]]:
    """Every block use in validated layers, composites included (block bodies are raw)."""
    for index, layer in enumerate(layers):
        path = (*base, index)
        if isinstance(layer, BlockUse):
            yield layer, path
        elif isinstance(layer, LayerSpec):
            for key in type(layer).model_fields:
                yield from _nested(getattr(layer, key), (*path, key))


def _nested(value: Any, path: SpecPath) -> Iterator[tuple[BlockUse, SpecPath]]:
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        for index, branch in enumerate(value):
            yield from _block_uses(branch, (*path, index))
    elif isinstance(value, list):
        yield from _block_uses(value, path)
