"""The error hierarchy of cnnc and the located problem records every error carries.

Every user mistake becomes a ``CnncError`` holding one or more ``Problem`` records. A problem
knows where it is (file, line, column and the dotted path inside the spec), what happened,
and how to fix it. Only the CLI turns them into text on a terminal; library callers get the
exception with its structured ``problems``.

Message template: ``<file:line:col> <dotted path>: <what happened>. <expected>. Received:
<values>.`` followed by a ``hint:`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The runtime owns "did you mean" and dotted paths; cnnc re-exports them for its modules.
from runtime.errors import did_you_mean as did_you_mean, dotted as dotted, suggest as suggest

PathPart = str | int
SpecPath = tuple[PathPart, ...]


@dataclass(frozen=True)
class Location:
    """A position in a spec file; ``line`` and ``column`` are 1-based, 0 when unknown."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One located finding: an error, or a lint warning when ``severity`` is ``warning``."""

    message: str
    location: Location
    path: str = ""
    hint: str | None = None
    severity: str = "error"
    notes: tuple[str, ...] = ()
    code: str = ""  # a lint warning's code (``cnnc.lintcodes``), which silences it

    def render(self) -> str:
        """The finding as the lines a person reads: location, path, message [code], hint."""
        where = str(self.location)
        subject = f" {self.path}:" if self.path else ""
        code = f" [{self.code}]" if self.code else ""
        lines = [f"{where}:{subject} {self.message}{code}"]
        lines += [f"  note: {note}" for note in self.notes]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by ``cnnc check --json``."""
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "severity": self.severity,
            "code": self.code or None,
            "notes": list(self.notes),
        }


@dataclass
class CnncError(Exception):
    """Base of every error cnnc raises for a user mistake; carries all problems found."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        """All problems, one block each, in the order they were found."""
        return "\n".join(problem.render() for problem in self.problems)

    def __str__(self) -> str:
        return self.render()


class SourceError(CnncError):
    """The spec file cannot be read or parsed (missing file, malformed YAML/JSON)."""


class SpecError(CnncError):
    """The spec parses but is not valid: unknown keys or types, bad values, bad blocks."""


class ShapeError(CnncError):
    """Static shape inference found a layer whose input does not fit it."""


class ResourceError(CnncError):
    """The model would need more memory than the configured limit."""
