"""Reusable blocks: static checks of their definitions, argument binding and substitution.

A block body is raw spec data in which a string ``$name`` stands for an argument, and a
string such as ``$planes * 4`` for a size expression over them (``cnnc.expressions``). The
built-in ``$channels`` is the channel count of the block's input, known only during shape
inference, which is why bodies are substituted and validated per use by the traversal
(``cnnc.graph``). Here: references that resolve nowhere, expressions outside the grammar,
blocks that use themselves, and argument lists that do not match the definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from cnnc import expressions
from cnnc.errors import Problem, SpecPath, did_you_mean, dotted, suggest
from cnnc.layers.base import COMMON_FIELDS
from cnnc.source import SourceMap
from cnnc.spec import ARG_TYPES, BlockDef, BlockUse, arg_types

BUILTINS = {"channels": "the channel count of the block's input"}
_REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


def reference(value: Any) -> str | None:
    """The argument name if ``value`` is a ``$name`` reference."""
    match = _REF.match(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def walk(value: Any, path: SpecPath) -> Iterator[tuple[Any, SpecPath]]:
    """Every node of raw data with its path, parents first."""
    yield value, path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from walk(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from walk(child, (*path, index))


def check_definitions(definitions: Mapping[str, BlockDef], source: SourceMap) -> list[Problem]:
    """Problems in ``blocks:`` that need no shapes: unknown ``$refs`` and recursion."""
    problems = []
    for name, block in definitions.items():
        base: SpecPath = ("blocks", name, "layers")
        known = [*block.args, *BUILTINS]
        for value, path in walk(block.layers, base):
            refs = [reference(value)]
            if expressions.is_expression(value):
                try:
                    refs = list(dict.fromkeys(expressions.parse(value).references()))
                except expressions.ExpressionError as exc:
                    problems.append(
                        Problem(str(exc), source.locate(path), dotted(path), hint=_GRAMMAR)
                    )
                    continue
            for ref in refs:
                if ref is None or ref in known:
                    continue
                best = suggest(ref, known)
                declared = ", ".join("$" + k for k in block.args) or "none"
                problems.append(
                    Problem(
                        f"unknown reference '${ref}' in block '{name}'."
                        + (f" Did you mean '${best}'?" if best else "")
                        + f" Declared arguments: {declared};"
                        f" built-in: $channels ({BUILTINS['channels']})",
                        source.locate(path),
                        dotted(path),
                        hint=f"declare it under blocks.{name}.args, e.g. '{ref}: 64'",
                    )
                )
    problems += _recursion(definitions, source)
    return problems


def _uses(block: BlockDef, names: set[str]) -> Iterator[tuple[str, SpecPath]]:
    for value, path in walk(block.layers, ()):
        if isinstance(value, dict) and value.get("type") in names:
            yield value["type"], path
        elif isinstance(value, str) and value in names and path and isinstance(path[-1], int):
            yield value, path


def _recursion(definitions: Mapping[str, BlockDef], source: SourceMap) -> list[Problem]:
    names = set(definitions)
    edges = {name: [used for used, _ in _uses(block, names)] for name, block in definitions.items()}
    problems: list[Problem] = []
    reported: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            if cycle[0] not in reported:
                reported.update(cycle)
                path: SpecPath = ("blocks", cycle[0])
                problems.append(
                    Problem(
                        f"block '{cycle[0]}' uses itself: {' -> '.join(cycle)}; blocks cannot be "
                        "recursive",
                        source.locate(path, key=True),
                        dotted(path),
                        hint="build depth with 'repeat: N' on a use instead of recursion",
                    )
                )
            return
        for used in edges.get(name, []):
            visit(used, [*trail, name])

    for name in definitions:
        visit(name, [])
    return problems


def check_use(
    block: BlockDef, use: BlockUse, path: SpecPath, source: SourceMap, *, static: bool = False
) -> list[Problem]:
    """Problems with the arguments of one use: unknown, missing, or of the wrong type.

    With ``static`` (before inference), values that are ``$refs`` or size expressions are
    skipped: they are known only per use.
    """
    return _check_arguments(block, use.type, use.args, use.first, path, source, static=static)


def check_nested_uses(definitions: Mapping[str, BlockDef], source: SourceMap) -> list[Problem]:
    """The argument problems of every use of a block inside another block's body, found
    before any shape is inferred, so that a file's argument mistakes come in one run."""
    problems: list[Problem] = []
    for name, block in definitions.items():
        for value, path in walk(block.layers, ("blocks", name, "layers")):
            used = value.get("type") if isinstance(value, dict) else None
            if not isinstance(used, str) or used not in definitions:
                continue
            args = {k: v for k, v in value.items() if k not in COMMON_FIELDS}
            first = value.get("first") if isinstance(value.get("first"), dict) else None
            problems += _check_arguments(
                definitions[used], used, args, first, path, source, static=True
            )
    return problems


def _check_arguments(
    block: BlockDef,
    used: str,
    args: Mapping[str, Any],
    first: Mapping[str, Any] | None,
    path: SpecPath,
    source: SourceMap,
    *,
    static: bool,
) -> list[Problem]:
    problems: list[Problem] = []
    given = {**args, **(first or {})}
    for key, value in given.items():
        where = (*path, key) if key in args else (*path, "first", key)
        if key not in block.args:
            accepted = ", ".join(block.args) or "none"
            problems.append(
                Problem(
                    f"block '{used}' has no argument '{key}'.{did_you_mean(key, block.args)} "
                    f"Its arguments: {accepted}",
                    source.locate(where, key=True),
                    dotted(where),
                    hint=f"arguments are declared under blocks.{used}.args",
                )
            )
        elif not (static and (reference(value) or expressions.is_expression(value))):
            problem = _type_problem(block, used, key, value)
            if problem:
                message, hint = problem
                problems.append(Problem(message, source.locate(where), dotted(where), hint=hint))
    for key in block.required():
        if key not in args:
            problems.append(
                Problem(
                    f"block '{used}' needs the argument '{key}'",
                    source.locate(path),
                    dotted(path),
                    hint=f"add '{key}: <value>' to this use",
                )
            )
    return problems


def _type_problem(
    block: BlockDef, used: str, key: str, value: Any
) -> tuple[str, str | None] | None:
    """(message, hint) when ``value`` is not of the type ``key`` was declared with."""
    declared = block.args[key]
    accepted = arg_types(declared)
    if accepted:
        wanted = " | ".join(part.strip() for part in declared.split("|"))
    else:
        accepted = (int, float) if type(declared) is float else (type(declared),)
        wanted = type(declared).__name__
    wrong_bool = isinstance(value, bool) and bool not in accepted
    if isinstance(value, accepted) and not wrong_bool:
        return None
    got = "bool" if isinstance(value, bool) else type(value).__name__
    union = f"{wanted} | {got}" if got in ARG_TYPES else None
    required = "" if arg_types(declared) else " (a required argument: uses then give it)"
    hint = f"to accept both, declare it as '{key}: {union}'{required} under blocks.{used}.args"
    return f"argument '{key}' must be {wanted}. Received: {value!r}", hint if union else None


def bind(block: BlockDef, use: BlockUse, channels: int) -> dict[str, Any]:
    """Values of every ``$name`` in one instance: the defaults, then the use's arguments."""
    return {**block.defaults(), **use.args, "channels": channels}


_GRAMMAR = (
    "a size expression combines $arguments, $channels and whole numbers with + - * // / % "
    "and parentheses, min(...), max(...) and make_divisible(x, d); see docs/spec.md"
)


class ExpressionProblem(Exception):
    """A size expression that failed while a block use was substituted, and where it is."""

    def __init__(self, path: SpecPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.hint = "check the values the use passes (the note says where it is)"


def substitute(value: Any, bindings: dict[str, Any], path: SpecPath = ()) -> Any:
    """A copy of raw data with each ``$name`` replaced by its bound value and each size
    expression by its value (``ExpressionProblem``, with the path under ``value``, if it
    fails)."""
    ref = reference(value)
    if ref is not None:
        return bindings.get(ref, value)
    if expressions.is_expression(value):
        try:
            return expressions.evaluate(value, bindings)
        except expressions.ExpressionError as exc:
            raise ExpressionProblem(path, str(exc)) from None
    if isinstance(value, dict):
        return {key: substitute(child, bindings, (*path, key)) for key, child in value.items()}
    if isinstance(value, list):
        return [substitute(child, bindings, (*path, i)) for i, child in enumerate(value)]
    return value
