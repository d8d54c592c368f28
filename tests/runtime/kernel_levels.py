"""The ISA levels kernel tests run at, and the code path each kernel must take at each.

``LEVELS`` is every level this machine supports, up to ``$CNNC_CPU_ISA`` when it is set (so
``CNNC_CPU_ISA=avx2 pytest`` tests as an AVX2 machine would). ``VECTOR_PATHS`` is written
out by hand, not read from the kernels: a kernel that loses a path fails the tests.
"""

from __future__ import annotations

from runtime.kernels.cpu import extension as cpu_ext, isa

LEVELS = isa.cpu_levels()[: isa.cpu_levels().index(isa.cap() or isa.best()) + 1]
BUILT = cpu_ext.compiler() is not None  # without a compiler every kernel is ATen's

# kernel -> its vector paths on x86-64 (aarch64 builds every kernel for NEON, its baseline)
VECTOR_PATHS = {
    "pool2x2": ("avx2", "avx512"),
    "batchnorm": ("avx2", "avx512"),
    "dropout": ("avx2", "avx512"),
    "conv3x3": ("avx512_bf16",),
    "conv_wgrad": ("avx512_bf16",),
    "conv_fp32": ("avx2", "avx512"),
}


def built_paths(kernel: str) -> tuple[str, ...]:
    """The paths ``kernel`` must be built for on this architecture."""
    if isa.arch() == "aarch64":
        return ("neon",)
    return ("scalar", *VECTOR_PATHS[kernel]) if isa.arch() == "x86_64" else ("scalar",)


def expected_path(kernel: str, level: str) -> str:
    """The path ``kernel`` must run at ``level``: its highest vector path not above it (on
    aarch64 NEON at every level)."""
    if isa.arch() == "aarch64":
        return "neon"
    order = isa.all_levels()
    fitting = [
        p for p in VECTOR_PATHS[kernel] if p in order and order.index(p) <= order.index(level)
    ]
    return max(fitting, key=order.index, default="scalar")


def vectorized_at(level: str, *kernels: str) -> bool:
    """True when ``kernels`` (default: the fused pooling and batch-norm kernels, which the
    cpu_kernels optimization needs) all run a vector path at ``level``."""
    return BUILT and all(
        expected_path(kernel, level) != "scalar" for kernel in kernels or ("pool2x2", "batchnorm")
    )
