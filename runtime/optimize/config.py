"""What can be switched on to make a training step faster, as one immutable record."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
Amp = Literal["off", "bf16", "fp16"]


@dataclass(frozen=True)
class OptimizeConfig:
    """One configuration of the runtime's optimizations.

    Attributes:
        compile: torch.compile mode, or "off".
        channels_last: NHWC memory format for the model and its inputs.
        amp: autocast precision: "bf16", "fp16" (with a GradScaler; CUDA only) or "off".
        fused_conv_relu: conv2d+ReLU through the fused custom op (Triton on CUDA).
        cuda_graphs: replay the step as a CUDA graph (CUDA only).
        rewrites: exact graph rewrites (ReLU after max-pooling; for inference also dropout
            removal and conv+batchnorm folding).
        cpu_kernels: cnnc's fused C++ CPU kernels: [ReLU +] 2x2 max-pooling (exact),
            BatchNorm2d [+ ReLU] (within floating-point tolerance) and, in bf16 training on
            AVX512-BF16 CPUs, the forward and gradients of 3x3 convolutions and 1x1
            stride-2 projections (within bf16 rounding); dropout masks from a vectorized
            hash (another random stream). CPU only.
        cache_memory: a caching CPU allocator during the step: freed buffers are reused
            instead of going back to glibc (which returns them to the kernel, so the next
            step faults every page in again). CPU only.
    """

    compile: CompileMode = "off"
    channels_last: bool = False
    amp: Amp = "off"
    fused_conv_relu: bool = False
    cuda_graphs: bool = False
    rewrites: bool = False
    cpu_kernels: bool = False
    cache_memory: bool = False

    @property
    def name(self) -> str:
        """A short label: ``eager``, ``channels_last+bf16``, ``compile+rewrites``, ..."""
        parts = []
        if self.rewrites:
            parts.append("rewrites")
        if self.fused_conv_relu:
            parts.append("fused")
        if self.cpu_kernels:
            parts.append("cpu_kernels")
        if self.channels_last:
            parts.append("channels_last")
        if self.amp != "off":
            parts.append(self.amp)
        if self.compile != "off":
            parts.append("compile" if self.compile == "default" else f"compile-{self.compile}")
        if self.cuda_graphs:
            parts.append("cuda_graphs")
        if self.cache_memory:
            parts.append("cache_memory")
        return "+".join(parts) or "eager"

    @property
    def exact(self) -> bool:
        """True when the configuration computes in fp32 (no reduced precision)."""
        return self.amp == "off"

    def with_(self, **changes: object) -> OptimizeConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


EAGER = OptimizeConfig()
