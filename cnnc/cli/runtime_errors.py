"""Runtime failures (data, checkpoints, training) shown like spec errors, at the spec line.

A ``RuntimeFailure`` names the option it blames as a dotted path inside ``train:``
(``optimizer.lr``, ``augment[0].padding``); this module finds that option's line in the
spec so the message reads like every other cnnc error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from cnnc.compiler import Compiled
from cnnc.errors import CnncError, Problem, SpecPath, dotted
from runtime.errors import RuntimeFailure

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
# Fields that are command-line options rather than spec keys.
_CLI_FIELDS = {
    "resume": "--resume",
    "device": "--device",
    "input_shape": "input",
    "tensorboard": "--tensorboard",
    "weights": "--weights",
}


class TrainFailure(CnncError):
    """A runtime failure while training, evaluating or predicting, located in the spec."""


def field_path(field: str) -> SpecPath:
    """``optimizer.lr`` → ``('train', 'optimizer', 'lr')``; ``augment[0]`` → (..., 0)."""
    parts: list[str | int] = ["train"]
    for name, index in _PART.findall(field):
        parts.append(int(index) if index else name)
    return tuple(parts)


def problem_of(error: RuntimeFailure, compiled: Compiled) -> Problem:
    """The located problem for one runtime failure."""
    source = compiled.document.source
    if error.field in _CLI_FIELDS or error.field is None:
        location = source.locate(("train",)) if error.field is None else source.locate(())
        subject = _CLI_FIELDS.get(error.field or "", "")
        if error.field == "input_shape":
            location, subject = source.locate(("input",)), "input"
        return Problem(error.message, location, subject, hint=error.hint)
    path = field_path(error.field)
    return Problem(error.message, source.locate(path), dotted(path), hint=error.hint)


@contextmanager
def runtime_errors(compiled: Compiled) -> Iterator[None]:
    """Re-raise runtime failures as located cnnc errors (exit 1, no traceback)."""
    try:
        yield
    except RuntimeFailure as error:
        raise TrainFailure([problem_of(error, compiled)]) from None
