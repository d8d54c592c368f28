"""The ISA levels kernel tests run at, and the code path each kernel must take at each.

``LEVELS`` is every level this machine supports, up to ``$CNNC_CPU_ISA`` when it is set (so
``CNNC_CPU_ISA=avx2 pytest`` tests as an AVX2 machine would). ``VECTOR_PATHS`` is written
out by hand, not read from the kernels: a kernel that loses a path fails the tests.
"""

from __future__ import annotations

from runtime.kernels.cpu import extension as cpu_ext, isa

LEVELS = isa.cpu_levels()[: isa.cpu_levels().index(isa.cap() or isa.best()) + 1]
BUILT = cpu_ext.compiler() is not None  # without a compiler every kernel is ATen's

# kernel -> its vector paths (x86-64; other architectures have the scalar path alone)
VECTOR_PATHS = {
    "pool2x2": ("avx2", "avx512"),
    "batchnorm": ("avx512",),
    "dropout": ("avx2", "avx512"),
    "conv3x3": ("avx512_bf16",),
    "conv_wgrad": ("avx512_bf16",),
}


def expected_path(kernel: str, level: str) -> str:
    """The path ``kernel`` must run at ``level``: its highest vector path not above it."""
    order = isa.all_levels()
    fitting = [
        p for p in VECTOR_PATHS[kernel] if p in order and order.index(p) <= order.index(level)
    ]
    return max(fitting, key=order.index, default="scalar")


def vectorized_at(level: str, kernels: tuple[str, ...] = ("pool2x2", "batchnorm")) -> bool:
    """True when every kernel in ``kernels`` runs a vector path at ``level``; by default the
    fused pooling and batch-norm kernels, which ``cpu_kernels`` needs both of."""
    return BUILT and all(expected_path(kernel, level) != "scalar" for kernel in kernels)
