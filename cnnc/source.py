"""Reading spec text safely and remembering where every key and value came from.

YAML and JSON go through one loader (ruamel.yaml's round-trip parser, YAML 1.2; JSON is a
subset of it), because it keeps line and column numbers. Loading is safe by construction:
explicit tags are refused (nothing is ever constructed from a tag), duplicate keys are an
error, scalars follow YAML 1.2 (``1e-3`` is a number, ``on`` is a string) and nothing from a
spec is evaluated. The result is plain Python data plus a ``SourceMap`` from spec paths to
positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from cnnc.errors import Location, PathPart, Problem, SourceError, SpecPath, dotted

# A spec is a few hundred nodes; a document far beyond that is an alias bomb or a mistake.
MAX_NODES = 200_000


@dataclass
class SourceMap:
    """Positions of keys and values in one spec document, keyed by spec path."""

    file: str
    values: dict[SpecPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[SpecPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: SpecPath, *, key: bool = False) -> Location:
        """The position of ``path``'s value (or its key), else of its nearest located parent."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                line, column = table[probe]
                return Location(self.file, line + 1, column + 1)
            if not key and probe in self.keys:
                line, column = self.keys[probe]
                return Location(self.file, line + 1, column + 1)
            probe = probe[:-1]
        return Location(self.file, 1, 1)


@dataclass
class Document:
    """A loaded spec: plain data (dicts, lists, scalars) and where each piece came from."""

    data: Any
    source: SourceMap


def load(spec: str | Path | Mapping[str, Any]) -> Document:
    """Load a spec from a file path, a YAML/JSON string, or an already-parsed mapping.

    Raises:
        SourceError: the file cannot be read, or its text is not valid YAML/JSON.
    """
    if isinstance(spec, Mapping):
        return Document(_plain_copy(spec), SourceMap("<dict>"))
    if isinstance(spec, Path) or _looks_like_path(spec):
        path = Path(spec)
        return load_text(_read(path), str(path))
    return load_text(spec, "<string>")


def load_text(text: str, file: str) -> Document:
    """Parse YAML or JSON ``text``; ``file`` names it in every error message."""
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    yaml.allow_duplicate_keys = False
    try:
        root = yaml.load(text)
    except DuplicateKeyError as exc:
        raise _syntax_error(exc, file, "duplicate key") from None
    except MarkedYAMLError as exc:
        raise _syntax_error(exc, file, "malformed YAML/JSON") from None
    except YAMLError as exc:
        problem = Problem(f"cannot parse the spec: {exc}", Location(file))
        raise SourceError([problem]) from None
    source = SourceMap(file)
    data = _Converter(source).convert(root, ())
    if not isinstance(data, dict):
        where = Location(file, 1, 1)
        kind = type(data).__name__ if data is not None else "an empty document"
        problem = Problem(
            f"a spec must be a mapping with name, input and layers. Received: {kind}",
            where,
            hint="start the file with 'name:', 'input:' and 'layers:' (see specs/lenet.yaml)",
        )
        raise SourceError([problem])
    return Document(data, source)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or text.lstrip().startswith(("{", "[")):
        return False
    return text.endswith((".yaml", ".yml", ".json")) or Path(text).exists()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "check the path; specs shipped with cnnc live in specs/"
        raise SourceError(
            [Problem("spec file not found", Location(str(path)), hint=hint)]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise SourceError(
            [Problem(f"cannot read the spec: {reason}", Location(str(path)))]
        ) from None


def _syntax_error(exc: MarkedYAMLError, file: str, what: str) -> SourceError:
    mark = exc.problem_mark or exc.context_mark
    location = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
    detail = (exc.problem or str(exc)).strip()
    context = (exc.context or "").strip()
    message = f"{what}: {detail}" + (f" ({context})" if context else "")
    hint = {
        "duplicate key": "each key may appear once in a mapping; remove or rename one of them",
    }.get(what, "check brackets, indentation and ':' separators near this position")
    return SourceError([Problem(message, location, hint=hint)])


class _Converter:
    """Turns ruamel's commented nodes into plain data, recording positions as it goes."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.nodes = 0

    def convert(self, node: Any, path: SpecPath) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SourceError(
                [
                    Problem(
                        f"the spec expands to more than {MAX_NODES} nodes (aliases?)",
                        self.source.locate(path),
                        dotted(path),
                        hint="write the network with blocks and repeat instead of YAML aliases",
                    )
                ]
            )
        self._refuse_tag(node, path)
        if isinstance(node, CommentedMap):
            return self._mapping(node, path)
        if isinstance(node, CommentedSeq):
            return self._sequence(node, path)
        if node is None or isinstance(node, str | int | float):
            return _scalar(node)
        raise SourceError(
            [
                Problem(
                    f"YAML tags are not allowed in a spec. Received: a {type(node).__name__} value",
                    self.source.locate(path),
                    dotted(path),
                    hint="remove the '!!' tag; a spec holds plain mappings, lists, strings and numbers",
                )
            ]
        )

    def _mapping(self, node: CommentedMap, path: SpecPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in node:
            child: SpecPath = (*path, str(key))
            key_pos, value_pos = node.lc.key(key), node.lc.value(key)
            self.source.keys[child] = (key_pos[0], key_pos[1])
            self.source.values[child] = (value_pos[0], value_pos[1])
            if not isinstance(key, str):
                raise SourceError(
                    [
                        Problem(
                            f"keys must be strings. Received: {key!r}",
                            self.source.locate(child, key=True),
                            dotted(path),
                            hint="quote the key, e.g. '\"1\": ...'",
                        )
                    ]
                )
            out[key] = self.convert(node[key], child)
        return out

    def _sequence(self, node: CommentedSeq, path: SpecPath) -> list[Any]:
        items: list[Any] = []
        for index, item in enumerate(node):
            child: SpecPath = (*path, index)
            line, column = node.lc.item(index)
            self.source.values[child] = (line, column)
            items.append(self.convert(item, child))
        return items

    def _refuse_tag(self, node: Any, path: SpecPath) -> None:
        tag = getattr(node, "tag", None)
        value = getattr(tag, "value", tag) if tag is not None else None
        if isinstance(node, TaggedScalar) or (isinstance(value, str) and value):
            raise SourceError(
                [
                    Problem(
                        f"YAML tags are not allowed in a spec. Received: {value}",
                        self.source.locate(path),
                        dotted(path),
                        hint="remove the '!' tag; a spec holds plain mappings, lists, strings and numbers",
                    )
                ]
            )


def _scalar(node: Any) -> Any:
    """ruamel's scalar subclasses (ScalarFloat, ScalarInt, ...) as plain Python values."""
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _plain_copy(value: Any, path: tuple[PathPart, ...] = ()) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_copy(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(v, (*path, i)) for i, v in enumerate(value)]
    return value
