"""Field types shared by layer classes: strict numbers, size pairs, padding, identifiers.

Numbers are strict (``"5"`` and ``true`` are not integers in a spec) and every custom type
fails with one readable message instead of one message per union member. Each carries its
JSON Schema so ``cnnc schema`` gives editors the same rules.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Any

from pydantic import Field, PlainValidator, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, Strict()]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
Bool = Annotated[bool, Strict()]

_INT_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(value: Any, minimum: int, what: str) -> int | tuple[int, int]:
    if _is_int(value) and value >= minimum:
        return int(value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(_is_int(v) and v >= minimum for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise PydanticCustomError("size", "expected {what} or a pair [h, w] of them", {"what": what})


def _positive_size(value: Any) -> int | tuple[int, int]:
    return _size(value, 1, "a positive integer")


def _padding(value: Any) -> int | tuple[int, int] | str:
    if value in ("same", "valid"):
        return str(value)
    try:
        return _size(value, 0, "an integer >= 0")
    except PydanticCustomError:
        raise PydanticCustomError(
            "padding", "expected an integer >= 0, a pair [h, w] of them, 'same' or 'valid'"
        ) from None


def _optional_size(value: Any) -> int | tuple[int | None, int | None] | None:
    if value is None or (_is_int(value) and value >= 1):
        return value  # type: ignore[no-any-return]
    pair_ok = isinstance(value, list | tuple) and len(value) == 2
    if pair_ok and all(v is None or (_is_int(v) and v >= 1) for v in value):
        return (value[0], value[1])
    raise PydanticCustomError(
        "output_size", "expected a positive integer or a pair [h, w] (null keeps that axis)"
    )


# Names a layer cannot take: the public attributes of every nn.Module (forward, training,
# ...); names starting with '_' are refused anyway. Written out so that validating a spec
# does not load torch; tests/test_cli_imports.py checks it against ``dir(nn.Module())``.
# fmt: off
MODULE_ATTRIBUTES = frozenset((
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr",
    "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule",
    "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad",
))
# fmt: on


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier() or not value.isascii():
        raise PydanticCustomError(
            "identifier",
            "a name must be a Python identifier (letters, digits and '_', not starting with "
            "a digit)",
        )
    if keyword.iskeyword(value) or value.startswith("_"):
        raise PydanticCustomError(
            "identifier", "a name cannot be a Python keyword or start with '_'"
        )
    if value in MODULE_ATTRIBUTES:
        raise PydanticCustomError(
            "identifier",
            "'{name}' is an attribute of torch.nn.Module and cannot name a layer",
            {"name": value},
        )
    return value


_PAIR_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": _INT_SCHEMA,
    "minItems": 2,
    "maxItems": 2,
}

Size2 = Annotated[
    int | tuple[int, int],
    PlainValidator(_positive_size),
    WithJsonSchema({"anyOf": [_INT_SCHEMA, _PAIR_SCHEMA]}),
]


def _nonnegative_size(value: Any) -> int | tuple[int, int]:
    return _size(value, 0, "an integer >= 0")


PoolPadding = Annotated[
    int | tuple[int, int],
    PlainValidator(_nonnegative_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 2,
                    "maxItems": 2,
                },
            ]
        }
    ),
]
Padding = Annotated[
    int | tuple[int, int] | str,
    PlainValidator(_padding),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 2,
                    "maxItems": 2,
                },
                {"enum": ["same", "valid"]},
            ]
        }
    ),
]
OutputSize = Annotated[
    int | tuple[int | None, int | None],
    PlainValidator(_optional_size),
    WithJsonSchema(
        {
            "anyOf": [
                _INT_SCHEMA,
                {
                    "type": "array",
                    "items": {"anyOf": [_INT_SCHEMA, {"type": "null"}]},
                    "minItems": 2,
                    "maxItems": 2,
                },
            ]
        }
    ),
]
Identifier = Annotated[
    str,
    PlainValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"}),
]
