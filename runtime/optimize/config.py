"""What can be switched on to make a step faster, as one immutable, validated record.

The fields are the registry's entries (``runtime.optimize.registry``), with their types
spelled out for type checkers; a test holds the two equal. The spec's ``optimize:`` section
is this class plus ``auto`` and ``precision``, so it validates the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Strict

from runtime.optimize import registry

CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
Amp = Literal["off", "bf16", "fp16"]
Bool = Annotated[bool, Strict()]


def _describe_fields(schema: dict[str, Any]) -> None:
    """Each field's JSON-schema description is its registry entry's documentation line."""
    for name, prop in schema.get("properties", {}).items():
        if name in registry.BY_NAME:
            prop["description"] = registry.BY_NAME[name].doc


class OptimizeConfig(BaseModel):
    """One configuration of the runtime's optimizations (see ``registry.REGISTRY``).

    Attributes:
        fused_conv_relu: conv2d+ReLU through the fused custom op (Triton on CUDA).
        rewrites: exact graph rewrites.
        cpu_kernels: cnnc's fused C++ CPU kernels.
        channels_last: NHWC memory format for the model and its inputs.
        amp: autocast precision: "bf16", "fp16" (with a GradScaler; CUDA only) or "off".
        compile: torch.compile mode, or "off".
        cuda_graphs: replay the step as a CUDA graph (CUDA only).
        cache_memory: a caching CPU allocator during the step (CPU only).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_describe_fields)

    fused_conv_relu: Bool = False
    rewrites: Bool = False
    cpu_kernels: Bool = False
    channels_last: Bool = False
    amp: Amp = "off"
    compile: CompileMode = "off"
    cuda_graphs: Bool = False
    cache_memory: Bool = False

    @property
    def name(self) -> str:
        """A short label: ``eager``, ``channels_last+bf16``, ``rewrites+compile``, ..."""
        return registry.name_of(self.to_dict())

    @property
    def exact(self) -> bool:
        """True when the configuration computes in fp32 (no reduced precision)."""
        return all(entry.exact for entry in registry.enabled(self.to_dict()))

    def with_(self, **changes: object) -> OptimizeConfig:
        """A copy with some fields changed (validated)."""
        return type(self).model_validate({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, object]:
        """The registry's settings only (a subclass's own fields are left out)."""
        return {name: getattr(self, name) for name in registry.NAMES}


EAGER = OptimizeConfig()
