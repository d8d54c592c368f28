"""Building and loading cnnc's C++ CPU kernels (``runtime/kernels/cpu/*.cpp``).

The sources are compiled on first use (all of them at once, one compiler per core) with
torch's own extension builder (the same C++ toolchain torch.compile's CPU backend needs) and
cached by torch under
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), so later processes load
them in milliseconds. AVX-512 code is compiled in only when this CPU has AVX-512; without it
the kernels run their scalar path. If nothing can be built (no compiler), the loader says
why once and returns None, and every user of a kernel falls back to ATen.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

log = logging.getLogger("runtime.kernels")

SOURCES = Path(__file__).resolve().parent / "cpu"
_AVX512 = ("avx512f", "avx512bw", "avx512vl")


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (empty when /proc/cpuinfo is unavailable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compile_flags() -> list[str]:
    """-O3 and OpenMP, plus AVX-512 when every instruction the kernels use is present."""
    flags = ["-O3", "-fopenmp"]
    if all(flag in cpu_flags() for flag in _AVX512):
        flags += [f"-m{flag}" for flag in _AVX512]
    return flags


def source_hash() -> str:
    """A digest of every kernel source and header: a change builds a fresh extension."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


@functools.cache
def load(name: str) -> ModuleType | None:
    """The compiled extension ``cpu/<name>.cpp``, or None (with a logged reason).

    The first call builds every kernel, in parallel (one compiler per core): a model that
    uses one usually uses several, and each takes ~40 s to compile on one core.
    """
    _build_all()
    return _load(name)


@functools.cache
def _build_all() -> None:
    names = sorted(path.stem for path in SOURCES.glob("*.cpp"))
    workers = max(1, min(len(names), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # the builds are subprocesses
        list(pool.map(_load, names))


@functools.cache
def _load(name: str) -> ModuleType | None:
    from torch.utils import cpp_extension

    source = SOURCES / f"{name}.cpp"
    try:
        module: ModuleType = cpp_extension.load(
            name=f"cnnc_{name}_{source_hash()}",
            sources=[str(source)],
            extra_cflags=compile_flags(),
            extra_include_paths=[str(SOURCES)],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # a missing compiler or ninja surfaces as many error types
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("cnnc's CPU kernel %s is unavailable, using ATen instead: %s", name, reason)
        return None
    return module
