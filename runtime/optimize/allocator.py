"""Keep freed tensor memory in the process instead of returning it to the OS (glibc).

Why: a CPU training step allocates and frees the same activation buffers every step. With
glibc's default policy, large blocks are ``mmap``-ed and trimmed back to the OS when freed,
so every step touches fresh pages: measured here, plain eager ResNet-20 took 12,000-16,000
minor page faults per step (batch 64) and LeNet-5 3,300 (batch 128), costing 10-50 % of the
step. Fixing the thresholds makes glibc serve large blocks from its heap and never trim it,
so after the first step the step runs on pages it already owns: 0-250 faults per step.

The policy is process-wide and cannot be undone (glibc's adaptive thresholds stay off once
set), so it is applied by the program that owns the process (``cnnc train``), not by
library calls or the benchmark harness, whose ``eager`` baseline stays plain PyTorch. The
cost is memory: the process keeps its peak heap. ``CNNC_ALLOCATOR=default`` opts out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

log = logging.getLogger("runtime.optimize")

ENV = "CNNC_ALLOCATOR"
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 1 << 30  # blocks below 1 GiB come from the heap
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int: the largest one means "never trim"


@functools.cache
def keep_freed_memory() -> str:
    """Applies the policy once; returns what was done (for logs and run files)."""
    if os.environ.get(ENV, "") == "default":
        return f"allocator: glibc defaults ({ENV}=default)"
    if not sys.platform.startswith("linux"):
        return "allocator: unchanged (the policy is for glibc on Linux)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as error:
        return f"allocator: unchanged (no glibc mallopt: {error})"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX) and mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER)):
        return "allocator: unchanged (mallopt refused the thresholds)"
    log.info("allocator: freed blocks below 1 GiB stay in the heap; it is never trimmed")
    return "allocator: freed memory kept in the process (no page faults per step)"


__all__ = ["ENV", "keep_freed_memory"]
