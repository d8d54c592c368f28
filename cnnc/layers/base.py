"""The layer registry and the base classes every layer type derives from.

A layer type is one class: its ``type`` tag, its fields (named exactly like the torch keyword
arguments, never the sizes that can be inferred), cross-field checks, a pure shape rule, the
torch module it becomes, and a few example configs. ``@register`` puts it in ``REGISTRY``;
the spec union, ``cnnc layers``, the JSON Schema, docs/spec.md and the parametrized tests
are all derived from that one dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, ConfigDict, model_validator

from cnnc.layers.types import Identifier, PositiveInt
from cnnc.lintcodes import LintSettings
from cnnc.shapes import Shape, ShapeProblem, fmt

if TYPE_CHECKING:
    from cnnc.graph import Node, Site
    from cnnc.infer import Inference

# Fields every layer accepts that are about the spec, not about torch.
COMMON_FIELDS = frozenset({"type", "name", "repeat", "first", "lint"})


@dataclass(frozen=True)
class Example:
    """A valid config of a layer type and an input shape it accepts (used by tests and docs)."""

    config: dict[str, Any]
    input: Shape


@dataclass(frozen=True)
class ModuleCall:
    """The torch constructor a layer becomes: ``nn.<cls>(*args, **kwargs)``.

    The builder instantiates it and codegen prints it, so both always agree. Arguments are
    plain literals (int, float, bool, str, None and tuples of them). ``local`` names a class
    of ``cnnc.modules`` (which codegen copies into the generated file) instead of torch.nn's.
    """

    cls: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    local: bool = False


class LayerSpec(BaseModel):
    """Base of every spec item: fields shared by leaves, composites and block uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: Identifier | None = None
    repeat: PositiveInt | None = None
    first: dict[str, Any] | None = None
    lint: LintSettings | None = None

    # Class metadata, overridden by each layer type.
    prefix: ClassVar[str] = "layer"
    always_number: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    examples: ClassVar[tuple[Example, ...]] = ()

    @model_validator(mode="after")
    def _first_needs_repeat(self) -> LayerSpec:
        if self.first is not None and self.repeat is None:
            raise ValueError("'first' overrides the first of several repeats; add 'repeat: N'")
        return self

    def name_prefix(self) -> tuple[str, bool]:
        """The prefix of generated names for this item and whether it is always numbered."""
        return type(self).prefix, type(self).always_number

    def torch_kwargs(self) -> dict[str, Any]:
        """The torch keyword arguments the user changed from their defaults, in field order."""
        out: dict[str, Any] = {}
        for key, info in type(self).model_fields.items():
            if key in COMMON_FIELDS:
                continue
            value = getattr(self, key)
            if value != info.default:
                out[key] = tuple(value) if isinstance(value, list) else value
        return out


class Layer(LayerSpec):
    """A leaf layer: one torch module with a pure shape rule."""

    torch_class: ClassVar[str] = ""
    local_class: ClassVar[bool] = False  # torch_class is cnnc.modules', not torch.nn's
    ranks: ClassVar[tuple[int, ...]] = ()  # accepted per-sample ranks; () accepts any
    # True for layers that may return their input tensor itself (or a view of it).
    passes_input: ClassVar[bool] = False

    @property
    def in_place(self) -> bool:
        """True when the layer overwrites its input (``inplace: true``)."""
        return bool(getattr(self, "inplace", False))

    def check_input(self, x: Shape) -> None:
        """Raise ShapeProblem if the per-sample rank is not one this layer accepts."""
        if self.ranks and len(x) not in self.ranks:
            wanted = " or ".join(f"{r + 1}-D (batch + {_rank_words(r)})" for r in self.ranks)
            raise ShapeProblem(
                f"{self.type} expects a {wanted} input but receives {len(x) + 1}-D "
                f"{fmt(x, batch=True)}",
                hint=self.rank_hint(x),
            )

    def rank_hint(self, x: Shape) -> str | None:
        """A fix suggestion for a wrong-rank input; layers override it."""
        return None

    def output_shape(self, x: Shape) -> Shape:
        """Per-sample output shape for per-sample input ``x``; pure integer arithmetic."""
        return x

    def module_call(self, x: Shape) -> ModuleCall:
        """The torch module for input ``x``: inferred sizes first, then the user's kwargs."""
        cls = type(self)
        return ModuleCall(
            cls.torch_class, self.inferred_args(x), self.torch_kwargs(), cls.local_class
        )

    def inferred_args(self, x: Shape) -> tuple[Any, ...]:
        """Positional constructor arguments inferred from the input (in_channels, ...)."""
        return ()

    def params(self, x: Shape) -> int:
        """Number of trainable parameters for input ``x``."""
        return 0

    def macs(self, x: Shape, y: Shape) -> int:
        """Multiply-accumulates of one forward pass for one sample."""
        return 0

    def flops(self, x: Shape, y: Shape) -> int:
        """Floating-point operations of one forward pass for one sample (2 per MAC + extras)."""
        return 2 * self.macs(x, y)


class Composite(LayerSpec):
    """A layer made of other layers (residual, branches, sequential); owns its merge rule."""

    def expand(self, inference: Inference, x: Shape, site: Site) -> Node:
        """Infer the children through ``inference`` and return this composite's node."""
        raise NotImplementedError


def _rank_words(rank: int) -> str:
    return {1: "features", 2: "C, L", 3: "C, H, W"}.get(rank, f"{rank} dims")


REGISTRY: dict[str, type[LayerSpec]] = {}
L = TypeVar("L", bound=type[LayerSpec])


def register(tag: str) -> Callable[[L], L]:
    """Class decorator adding a layer type to ``REGISTRY`` under ``tag``; twice raises."""

    def add(cls: L) -> L:
        if tag in REGISTRY:
            raise ValueError(f"layer type {tag!r} is registered twice")
        annotation = cast(type[LayerSpec], cls).model_fields["type"].annotation
        if getattr(annotation, "__args__", None) != (tag,):
            raise TypeError(f"{cls.__name__}.type must be Literal[{tag!r}]")
        REGISTRY[tag] = cls
        return cls

    return add
