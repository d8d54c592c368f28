"""The building blocks of every training setting: the base model, number types, choices.

Each training setting is defined once, as a pydantic model built from these pieces, and that
one definition serves both the runtime (``TrainConfig(...)`` in Python) and the spec's
``train:`` section (cnnc validates the YAML with the same classes and maps pydantic's error
locations to file:line:column). A choice (dataset, loss, optimizer, schedule, augmentation
step) is a tagged union with one class per variant (``type: Literal[...]``); ``choice``
lets a variant without options be written as its bare name (``"sgd"``) and says "did you
mean" for a misspelt one. ``config_error`` turns a ``ValidationError`` into the runtime's
``ConfigError`` named by the option's dotted path. This module imports only pydantic.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic_core import PydanticCustomError

from runtime.errors import ConfigError, did_you_mean, dotted

__all__ = [
    "Bool",
    "Fraction",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Options",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "choice",
    "config_error",
]

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Fraction = Annotated[float, Strict(), Field(ge=0, lt=1)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
Bool = Annotated[bool, Strict()]

# Every variant tag of every choice; they appear in pydantic's error locations
# (('optimizer', 'sgd', 'lr')) but not in the option's dotted path (optimizer.lr).
_TAGS: set[str] = set()


class Options(BaseModel):
    """Base of every settings class: immutable, and unknown options are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def choice(what: str, *variants: type[Options]) -> BeforeValidator:
    """Accepts a bare name (``"sgd"`` -> ``{"type": "sgd"}``) and checks the tag is known.

    Args:
        what: The choice's name in messages ("optimizer").
        variants: One class per variant, each with a ``type: Literal[...]`` tag.
    """
    tags = [str(variant.model_fields["type"].default) for variant in variants]
    _TAGS.update(tags)

    def check(value: Any) -> Any:
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            return value  # an instance of a variant, or a wrong type pydantic reports
        tag = value.get("type")
        if tag is None:
            raise PydanticCustomError(
                "missing_type",
                "{what} needs a 'type', one of: {known}",
                {"what": what, "known": ", ".join(tags), "key": "type"},
            )
        if tag not in tags:
            raise PydanticCustomError(
                "unknown_type",
                "unknown {what} '{tag}'.{suggestion} Known: {known}",
                {
                    "what": what,
                    "tag": tag,
                    "suggestion": did_you_mean(str(tag), tags),
                    "known": ", ".join(tags),
                    "key": "type",
                },
            )
        return value

    return BeforeValidator(check)


def config_error(error: ValidationError) -> ConfigError:
    """The first problem of ``error`` as a ``ConfigError`` naming the option's dotted path.

    Example: ``optimizer.lr: Input should be greater than 0. Received: 0.0.``
    """
    first = error.errors(include_url=False)[0]
    kind, loc, value = first["type"], first["loc"], first.get("input")
    path = [part for part in loc[:-1] if not _is_label(part)]
    if kind == "extra_forbidden" or not _is_label(loc[-1]):  # an unknown key is kept as is
        path.append(loc[-1])
    key = (first.get("ctx") or {}).get("key")
    if isinstance(key, str) and path[-1:] != [key]:  # e.g. the 'type' of a choice
        path.append(key)
        value = value.get(key) if isinstance(value, dict) else value
    tags = [part for part in loc if isinstance(part, str) and part in _TAGS]
    owner = f" for {tags[-1]}" if tags else ""
    if kind == "extra_forbidden":
        message = f"Unknown option{owner}. Received: {loc[-1]}={value!r}."
    elif kind == "missing":
        message = f"Missing option{owner}. A value was expected. Received: none."
    else:
        message = first["msg"][:1].upper() + first["msg"][1:].rstrip(".") + "."
        if "Received:" not in message:
            message += f" Received: {value!r}."
    return ConfigError(message, field=dotted(path) or None)


def _is_label(part: str | int) -> bool:
    # Tags, and the member labels of plain unions ('Normalize', "literal['auto']"), which
    # option names (lower-case identifiers) and list indices never look like.
    if isinstance(part, int):
        return False
    return part in _TAGS or not (part.isidentifier() and part.islower())
