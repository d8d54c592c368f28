"""The spec schema: the layer union derived from the registry, blocks, and the top-level model.

``AnyLayer`` is a discriminated union on ``type`` built from ``REGISTRY``; a ``type`` that is
not a registered layer is a use of a block defined under ``blocks:``. A layer without
arguments may be written as a bare string (``- relu``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cnnc import layers  # noqa: F401  (registers every layer type)
from cnnc.errors import did_you_mean
from cnnc.layers.base import REGISTRY, Composite, LayerSpec
from cnnc.layers.types import Identifier, PositiveInt
from cnnc.lintcodes import LintSettings
from cnnc.sections.optimize import OptimizeField
from cnnc.sections.train import TrainSection

BLOCK_TAG = "block"
# A block argument declared with one of these strings is required and has that type.
ARG_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "list": (list,),
}
# Keys a block use reads itself, so no argument may take their names.
RESERVED_ARGS = frozenset({"type", "name", "repeat", "first", "lint", "channels"})


def arg_types(declared: Any) -> tuple[type, ...]:
    """The types a declared argument accepts: ``int``, ``int | list``, ... (empty when the
    declaration is a default value, not type names)."""
    if not isinstance(declared, str):
        return ()
    names = [part.strip() for part in declared.split("|")]
    if not all(name in ARG_TYPES for name in names):
        return ()
    return tuple(dict.fromkeys(t for name in names for t in ARG_TYPES[name]))


def _arg_name(value: Any) -> str:
    """A block argument's name: what ``$name`` can spell, and not a key of a use itself."""
    if not isinstance(value, str) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is None:
        raise PydanticCustomError(
            "arg_name",
            "an argument name is letters, digits and '_', not starting with a digit (so that "
            "$name can refer to it)",
        )
    if value in RESERVED_ARGS:
        raise PydanticCustomError(
            "arg_name",
            "'{name}' cannot name an argument: a use reads '{name}' itself"
            + (" ($channels is built in)" if value == "channels" else ""),
            {"name": value},
        )
    return value


ArgName = Annotated[
    str,
    PlainValidator(_arg_name),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
]


class BlockUse(LayerSpec):
    """A use of a block defined under ``blocks:``; extra keys are the block's arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _known_block(self, info: ValidationInfo) -> BlockUse:
        blocks = (info.context or {}).get("blocks", {})
        if self.type not in blocks:
            known = sorted(REGISTRY) + sorted(blocks)
            raise PydanticCustomError(
                "unknown_type",
                "unknown layer type '{type}'.{suggestion} Known layer types: {known}{block_note}",
                {
                    "type": self.type,
                    "suggestion": did_you_mean(self.type, known),
                    "known": ", ".join(sorted(REGISTRY)),
                    "block_note": f"; blocks: {', '.join(sorted(blocks))}" if blocks else "",
                    "key": "type",
                },
            )
        return self

    def name_prefix(self) -> tuple[str, bool]:
        return self.type, True

    @property
    def args(self) -> dict[str, Any]:
        """The block arguments given at this use."""
        return dict(self.model_extra or {})


def _tag(value: Any) -> str:
    kind = (
        value if isinstance(value, str) else value.get("type") if isinstance(value, dict) else None
    )
    if isinstance(kind, str) and kind in REGISTRY:
        return kind
    return BLOCK_TAG


def _shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"type": value}
    if isinstance(value, dict) and "type" not in value:
        raise PydanticCustomError(
            "missing_type",
            "a layer needs a 'type' (e.g. {{type: conv2d, ...}}). Received keys: {keys}",
            {"keys": ", ".join(value) or "none"},
        )
    if not isinstance(value, dict | LayerSpec):
        raise PydanticCustomError(
            "layer_type",
            "a layer is a mapping with 'type' or a bare layer name such as relu",
        )
    return value


def _layer_union() -> Any:
    members = [Annotated[cls, Tag(tag)] for tag, cls in REGISTRY.items()]
    members.append(Annotated[BlockUse, Tag(BLOCK_TAG)])
    return Annotated[
        Union[tuple(members)],  # noqa: UP007  (built at run time from the registry)
        Discriminator(_tag),
        BeforeValidator(_shorthand),
    ]


if TYPE_CHECKING:
    AnyLayer: TypeAlias = LayerSpec
else:
    AnyLayer = _layer_union()
for _cls in REGISTRY.values():
    if issubclass(_cls, Composite):
        _cls.model_rebuild(_types_namespace={"AnyLayer": AnyLayer})

Layers = Annotated[list[AnyLayer], Field(min_length=1)]


class BlockDef(BaseModel):
    """A reusable block: declared arguments and a list of layers that may use ``$arg``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    args: dict[ArgName, Any] = Field(default_factory=dict)
    # Bodies hold $references in place of values, so their schema cannot be the layers'.
    layers: Annotated[
        list[Any],
        Field(min_length=1),
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": ["object", "string"]},
                "minItems": 1,
            }
        ),
    ]
    description: str | None = None

    @field_validator("args")
    @classmethod
    def _declarations(cls, args: dict[str, Any]) -> dict[str, Any]:
        for name, value in args.items():
            if isinstance(value, dict) or value is None:
                raise PydanticCustomError(
                    "block_arg",
                    "argument '{name}' must be a default value (e.g. 64) or a type name "
                    "({types}, or several joined by |, e.g. 'int | list') for a required "
                    "argument",
                    {"name": name, "types": ", ".join(ARG_TYPES), "key": name},
                )
        return args

    def required(self) -> dict[str, tuple[type, ...]]:
        """Arguments without defaults, with the types they accept."""
        return {k: accepted for k, v in self.args.items() if (accepted := arg_types(v))}

    def defaults(self) -> dict[str, Any]:
        """Arguments with defaults."""
        return {k: v for k, v in self.args.items() if k not in self.required()}


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class ModelSpec(BaseModel):
    """A whole network: its name, per-sample input shape, layers and reusable blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME.pattern, max_length=64)
    description: str | None = None
    input: Annotated[list[PositiveInt], Field(min_length=1, max_length=3)]
    blocks: dict[Identifier, BlockDef] = Field(default_factory=dict)
    layers: Layers
    train: TrainSection | None = None
    optimize: OptimizeField | None = None
    lint: LintSettings | None = None

    @field_validator("blocks")
    @classmethod
    def _not_a_layer_type(cls, blocks: dict[str, BlockDef]) -> dict[str, BlockDef]:
        for name in blocks:
            if name in REGISTRY:
                raise PydanticCustomError(
                    "block_name",
                    "block '{name}' has the name of a built-in layer type; rename the block",
                    {"name": name, "key": name},
                )
        return blocks

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input)
