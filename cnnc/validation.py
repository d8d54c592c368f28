"""Turning pydantic's ValidationError into located, actionable ``Problem`` records.

Pydantic reports locations as tuples that include union tags (``('layers', 3, 'conv2d',
'kernel_size')``); this module walks those tuples along the raw spec data to recover the
dotted path the user wrote (``layers[3].kernel_size``), finds its line and column in the
source map, and rewrites the messages: unknown keys get "did you mean" and the accepted keys,
missing keys say what to add, and every value error says what was received.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from cnnc.errors import Problem, SpecPath, did_you_mean, dotted
from cnnc.layers.base import REGISTRY
from cnnc.source import SourceMap


def problems_from(
    exc: ValidationError,
    data: Any,
    source: SourceMap,
    *,
    base: SpecPath = (),
    root_model: type[BaseModel] | None = None,
    notes: Sequence[str] = (),
) -> list[Problem]:
    """One ``Problem`` per pydantic error, located in ``source``.

    Args:
        exc: the validation error.
        data: the raw data that was validated (used to resolve union tags in locations).
        source: positions of the document the data came from.
        base: the spec path of ``data`` inside the document (for block bodies).
        root_model: the model ``data`` was validated as, for listing accepted keys.
        notes: extra lines attached to every problem (e.g. which block use this came from).
    """
    problems = []
    for error in exc.errors(include_url=False):
        path, parent = _resolve(error, data)
        full = (*base, *path)
        is_key = error["type"] == "extra_forbidden" or "key" in (error.get("ctx") or {})
        key_path = full
        ctx = error.get("ctx") or {}
        if "key" in ctx and error["type"] != "extra_forbidden":
            key_path = (*full, str(ctx["key"]))
        location = source.locate(key_path, key=is_key)
        message, hint = _describe(error, path, parent, root_model)
        problems.append(Problem(message, location, dotted(full), hint=hint, notes=tuple(notes)))
    return problems


def _resolve(error: ErrorDetails, data: Any) -> tuple[SpecPath, Any]:
    """The user's path for a pydantic location and the mapping holding its last key."""
    path: list[str | int] = []
    node: Any = data
    parent: Any = None
    loc = list(error["loc"])
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if _has(node, part):
            parent, node = node, node[part]
            path.append(part)
        elif _is_tag(part, node):
            continue
        elif last and error["type"] == "missing" and isinstance(part, str):
            path.append(part)
            parent, node = (node if isinstance(node, dict) else {"type": node}), None
    return tuple(path), parent


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _is_tag(part: str | int, node: Any) -> bool:
    if isinstance(node, str):
        return part == node
    if isinstance(node, dict):
        return part in (node.get("type"), "block")
    return isinstance(part, str)  # union member labels such as 'constrained-int'


def _describe(
    error: ErrorDetails, path: SpecPath, parent: Any, root_model: type[BaseModel] | None
) -> tuple[str, str | None]:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        accepted = _accepted_keys(parent, root_model, path)
        return (
            f"unknown key '{key}'.{did_you_mean(key, accepted)} Accepted keys: "
            f"{', '.join(accepted)}",
            f"remove '{key}' or rename it to one of the accepted keys",
        )
    if kind == "missing":
        key = str(path[-1]) if path else "?"
        owner = _owner(parent, root_model, path)
        return f"missing required key '{key}'{owner}", f"add '{key}: <value>'"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message[:1].lower() + message[1:]
    if kind in ("unknown_type", "missing_type") or "input" not in error:
        return message, None
    return f"{message.rstrip('.')}. Received: {_show(error['input'])}", None


def _accepted_keys(parent: Any, root_model: type[BaseModel] | None, path: SpecPath) -> list[str]:
    model = _model_for(parent, root_model, path)
    if model is None:
        return []
    return list(model.model_fields)


def _owner(parent: Any, root_model: type[BaseModel] | None, path: SpecPath) -> str:
    if isinstance(parent, dict) and isinstance(parent.get("type"), str):
        return f" for {parent['type']}"
    return ""


def _model_for(
    parent: Any, root_model: type[BaseModel] | None, path: SpecPath
) -> type[BaseModel] | None:
    """The model that validates the mapping holding ``path[-1]``."""
    if isinstance(parent, dict) and parent.get("type") in REGISTRY:
        return REGISTRY[parent["type"]]
    annotation: Any = root_model
    for part in path[:-1]:
        annotation = _step(annotation, part)
    model = _unwrap(annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation one path step below ``annotation`` (a field, a dict value, a list item)."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and args:
        return args[1]
    if origin is list and args:
        return args[0]
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type inside."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."
