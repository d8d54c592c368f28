"""A caching CPU allocator for the training step (``cpu/allocator.cpp``).

glibc hands the top of its heap back to the kernel when it is freed, and a training step
frees and re-allocates the same buffers every time, so every step faults its pages back in
(thousands of minor faults per ResNet-20 step, each zeroing 4 KiB). Within
``caching_allocator()`` c10's CPU allocator is one that keeps freed buffers and hands them
out again by exact size, as CUDA's caching allocator does; outside it, torch allocates as
usual. Buffers allocated inside return to the cache whenever they are freed.

The free blocks kept are capped (``$CNNC_CPU_CACHE_BYTES``, default 4 GiB);
``empty_cache()`` hands them back to the system. Without the compiled extension the context
does nothing (``available()`` says so).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

from runtime.errors import ConfigError
from runtime.kernels.cpu.extension import load

LIMIT_ENV = "CNNC_CPU_CACHE_BYTES"
DEFAULT_LIMIT = 4 << 30


def available() -> bool:
    """True when the allocator extension is built."""
    return load("allocator") is not None


def limit() -> int:
    """The most bytes of free blocks kept: ``$CNNC_CPU_CACHE_BYTES`` or 4 GiB."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"${LIMIT_ENV} must be a whole number of bytes, 0 or more. Received: {text!r}.",
            hint=f"e.g. {LIMIT_ENV}={2 << 30} keeps at most 2 GiB of free CPU buffers; "
            "0 keeps none",
        )
    return value


def _module() -> ModuleType | None:
    module = load("allocator")
    if module is not None:
        module.set_limit(limit())
    return module


@contextlib.contextmanager
def caching_allocator() -> Iterator[bool]:
    """Allocate CPU tensors from the cache within this block (nested blocks are fine).

    Yields True when the cache is in use: False without the extension, or when another
    CPU allocator was registered with a higher priority and c10 kept it.
    """
    module = _module()
    if module is None:
        yield False
        return
    installed = bool(module.activate())
    try:
        yield installed
    finally:
        module.deactivate()


def stats() -> dict[str, int]:
    """hits, misses, cached_bytes, live_bytes, evictions (all zero without the extension)."""
    module = load("allocator")
    if module is None:
        return dict.fromkeys(("hits", "misses", "cached_bytes", "live_bytes", "evictions"), 0)
    return dict(module.stats())


def empty_cache() -> None:
    """Hand every cached free block back to the system.

    Blocks still in use go back to the system when they are freed, until the cache is used
    again.
    """
    module = load("allocator")
    if module is not None:
        module.empty_cache()
