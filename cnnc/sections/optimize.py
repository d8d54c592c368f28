"""The spec's ``optimize:`` section: how the training step is made fast.

Either a fixed choice of optimizations, or ``auto``: cnnc times the candidates on the actual
device and keeps the fastest (never slower than plain eager). Reduced precision is a change
of numerics, so ``auto`` considers it only when ``precision`` allows it::

    optimize: auto                      # fp32 candidates only
    optimize: {auto: true, precision: [fp32, bf16]}
    optimize: {channels_last: true, amp: bf16, compile: default}
    optimize: {rewrites: true, cpu_kernels: true}   # exact rewrites + cnnc's CPU kernels
    optimize: {cpu_kernels: true, cache_memory: true}  # ... and CPU buffers kept across steps
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from runtime.optimize.config import OptimizeConfig

Bool = Annotated[bool, Strict()]
Precision = Literal["fp32", "bf16", "fp16"]
FIXED = (
    "compile",
    "channels_last",
    "amp",
    "fused_conv_relu",
    "cuda_graphs",
    "rewrites",
    "cpu_kernels",
    "cache_memory",
)


def _shorthand(value: Any) -> Any:
    if value == "auto":
        return {"auto": True}
    if value in ("eager", "off"):
        return {}
    return value


class OptimizeSection(BaseModel):
    """Fixed optimizations, or ``auto: true`` to let cnnc measure and choose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto: Bool = False
    precision: Annotated[list[Precision], Field(min_length=1)] = ["fp32"]
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    channels_last: Bool = False
    amp: Literal["off", "bf16", "fp16"] = "off"
    fused_conv_relu: Bool = False
    cuda_graphs: Bool = False
    rewrites: Bool = False
    cpu_kernels: Bool = False
    cache_memory: Bool = False

    @model_validator(mode="after")
    def _auto_or_fixed(self) -> OptimizeSection:
        chosen = [key for key in FIXED if key in self.model_fields_set]
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
        return OptimizeConfig(
            compile=self.compile,
            channels_last=self.channels_last,
            amp=self.amp,
            fused_conv_relu=self.fused_conv_relu,
            cuda_graphs=self.cuda_graphs,
            rewrites=self.rewrites,
            cpu_kernels=self.cpu_kernels,
            cache_memory=self.cache_memory,
        )

    @property
    def allowed_amp(self) -> tuple[str, ...]:
        """Autocast precisions ``auto`` may pick ("off" is fp32)."""
        return tuple("off" if p == "fp32" else p for p in self.precision)


OptimizeField = Annotated[OptimizeSection, BeforeValidator(_shorthand)]
