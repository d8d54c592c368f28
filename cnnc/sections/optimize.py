"""The spec's ``optimize:`` section: how the training step is made fast.

Either a fixed choice of optimizations, or ``auto``: cnnc times the candidates on the actual
device and keeps the fastest (never slower than plain eager). Reduced precision is a change
of numerics, so ``auto`` considers it only when ``precision`` allows it::

    optimize: auto                      # fp32 candidates only
    optimize: {auto: true, precision: [fp32, bf16]}
    optimize: {channels_last: true, amp: bf16, compile: default}
    optimize: {rewrites: true, cpu_kernels: true}   # exact rewrites + cnnc's CPU kernels

The keys of a fixed choice are the runtime's ``OptimizeConfig``, whose fields are the
registry's optimizations (``runtime.optimize.registry``): this section adds only ``auto``
and ``precision``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from runtime.optimize import registry
from runtime.optimize.config import Amp, Bool, OptimizeConfig

Precision = Literal["fp32", "bf16", "fp16"]


def _shorthand(value: Any) -> Any:
    if value == "auto":
        return {"auto": True}
    if value in ("eager", "off"):
        return {}
    return value


class OptimizeSection(OptimizeConfig):
    """Fixed optimizations, or ``auto: true`` to let cnnc measure and choose."""

    auto: Bool = False
    precision: list[Precision] = Field(default=["fp32"], min_length=1)

    @model_validator(mode="after")
    def _auto_or_fixed(self) -> OptimizeSection:
        chosen = [key for key in registry.NAMES if key in self.model_fields_set]
        if self.auto and chosen:
            raise ValueError(
                f"auto chooses the optimizations itself; remove {', '.join(chosen)} or set "
                "auto: false"
            )
        if not self.auto and "precision" in self.model_fields_set:
            raise ValueError("precision lists what auto may choose; use amp for a fixed choice")
        return self

    def to_config(self) -> OptimizeConfig:
        """The runtime configuration of a fixed choice (``auto`` is resolved by tuning)."""
        return OptimizeConfig.model_validate(self.to_dict())

    @property
    def allowed_amp(self) -> tuple[Amp, ...]:
        """Autocast precisions ``auto`` may pick ("off" is fp32)."""
        return tuple("off" if p == "fp32" else p for p in self.precision)


OptimizeField = Annotated[OptimizeSection, BeforeValidator(_shorthand)]
