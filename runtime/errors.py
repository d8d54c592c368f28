"""The runtime's error hierarchy: every failure a user can cause or fix is one of these.

Messages follow one template, so the cnnc CLI can render them next to the spec line they
come from::

    <what happened>. <what was expected>. Received: <values>.
    hint: <how to fix it>

``field`` is the dotted path of the offending option inside the spec's ``train:`` section
(``"batch_size"``, ``"optimizer.lr"``, ``"dataset.root"``), or ``None`` when no single
option is to blame. The runtime never imports cnnc; the CLI maps ``field`` to file:line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "ArtifactError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "RuntimeFailure",
    "TrainingError",
    "did_you_mean",
    "dotted",
    "suggest",
]


class RuntimeFailure(Exception):
    """Base class of every error the runtime raises on purpose.

    Attributes:
        message: One or more sentences: what happened, what was expected, what was received.
        hint: How to fix it, or ``None``.
        field: Dotted path inside the spec's ``train:`` section, or ``None``.
    """

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling (multiprocessing, DDP).
        return (_rebuild, (type(self), self.message, self.hint, self.field))


def _rebuild(
    cls: type[RuntimeFailure], message: str, hint: str | None, field: str | None
) -> RuntimeFailure:
    return cls(message, hint=hint, field=field)


class ConfigError(RuntimeFailure):
    """An option is invalid on its own or does not fit the model or the data."""


class DataError(RuntimeFailure):
    """A dataset is missing, unreadable, or its images do not fit the model."""


class CheckpointError(RuntimeFailure):
    """A checkpoint cannot be written, read, or loaded into the model."""


class ArtifactError(RuntimeFailure):
    """An exported artifact cannot be written, read, or run here (see ``runtime.export``)."""


class TrainingError(RuntimeFailure):
    """Training cannot go on, e.g. the loss became NaN or infinite."""


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest choice to ``word``, or ``None`` when nothing is close.

    The one "did you mean" of the project: the runtime's options, cnnc's spec keys, layer
    types, block names and arguments all use it.
    """
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    best = suggest(word, choices)
    return f" Did you mean '{best}'?" if best else ""


def dotted(path: Sequence[str | int]) -> str:
    """A path the way a reader writes it: ``('layers', 3, 'kernel_size')`` -> ``layers[3].kernel_size``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
