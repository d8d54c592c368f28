"""CPU instruction-set levels: what this CPU has, the cap ``$CNNC_CPU_ISA``, the level in use.

cnnc's C++ kernels are built per code path (an instruction set) and run the best path at or
below the level in use. The cap works like ATen's ``ATEN_CPU_CAPABILITY`` and oneDNN's ``ONEDNN_MAX_CPU_ISA``:
``CNNC_CPU_ISA=avx2`` makes cnnc's kernels use at most AVX2, so an AVX-512 machine can test
and measure what an AVX2 user gets. ``measuring_env`` gives the variables that cap ATen and
oneDNN too (they are read when torch loads, so they apply to a new process).

Levels, lowest first: x86-64 ``scalar``, ``avx2`` (AVX2 + FMA), ``avx512`` (F, BW, VL, DQ),
``avx512_bf16`` (AVX512-BF16, native bf16 dot products), ``amx`` (AMX tiles for bf16
matmuls, which oneDNN uses: Sapphire Rapids and later); aarch64 ``scalar``, ``neon``,
``neon_bf16`` (the BF16 extension). An unknown level, or one above
what this CPU has, is a ``ConfigError`` that lists the levels this CPU supports.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from runtime.errors import ConfigError

ENV = "CNNC_CPU_ISA"
ATEN_ENV = "ATEN_CPU_CAPABILITY"  # ATen's own cap, read when torch loads
ONEDNN_ENV = "ONEDNN_MAX_CPU_ISA"  # oneDNN's, read when its first primitive is made
CAP_VARIABLES = (ENV, ATEN_ENV, ONEDNN_ENV)  # every variable that caps an instruction set

# What each level needs beyond the one below it, as /proc/cpuinfo names the flags.
_X86 = {
    "scalar": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_tile"),
}
_ARM = {"scalar": (), "neon": ("asimd",), "neon_bf16": ("bf16",)}

# ATen's and oneDNN's (x86) own caps for a level below this CPU's best.
_ATEN = {
    "scalar": "default",
    "avx2": "avx2",
    "avx512": "avx512",
    "avx512_bf16": "avx512",
    "amx": "avx512",
}
_ONEDNN = {
    "scalar": "SSE41",  # oneDNN's lowest x86 level
    "avx2": "AVX2",
    "avx512": "AVX512_CORE",
    "avx512_bf16": "AVX512_CORE_BF16",
    "amx": "AVX512_CORE_AMX",
}
_BF16_LEVELS = ("avx512_bf16", "amx", "neon_bf16")

_override: str | None = None


@functools.cache
def arch() -> str:
    """``x86_64`` or ``aarch64`` (``arm64`` is reported as ``aarch64``)."""
    machine = platform.machine().lower()
    return "aarch64" if machine in ("arm64", "aarch64") else machine


def _table(machine: str) -> dict[str, tuple[str, ...]]:
    """The levels of architecture ``machine`` and the flags each adds (scalar alone on
    architectures cnnc has no vector code for)."""
    return {"x86_64": _X86, "amd64": _X86, "aarch64": _ARM}.get(machine, {"scalar": ()})


def all_levels() -> tuple[str, ...]:
    """This architecture's levels, lowest first."""
    return tuple(_table(arch()))


def requirements(level: str) -> tuple[str, ...]:
    """The CPU flags ``level`` needs (its own and every level's below it)."""
    return _requirements(arch(), level)


def _requirements(machine: str, level: str) -> tuple[str, ...]:
    needed: list[str] = []
    for name, flags in _table(machine).items():
        needed += flags
        if name == level:
            return tuple(needed)
    raise KeyError(level)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, as /proc/cpuinfo names them (empty when unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return _darwin_flags()


def _darwin_flags() -> frozenset[str]:
    """macOS: Apple silicon has NEON; its sysctl says whether it has BF16."""
    if platform.system() != "Darwin" or arch() != "aarch64":
        return frozenset()
    try:
        out = subprocess.run(
            ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        out = ""
    return frozenset({"asimd", "bf16"} if out == "1" else {"asimd"})


@functools.cache
def cpu_model() -> str:
    """The CPU's model name, or the architecture when it is not known."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("model name", "Model", "CPU part")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or arch()


def cpu_levels() -> tuple[str, ...]:
    """The levels this CPU supports, lowest first (``scalar`` always)."""
    return _levels_of(arch(), cpu_flags())


@functools.cache
def _levels_of(machine: str, flags: frozenset[str]) -> tuple[str, ...]:
    """Cached: ``level()`` asks on every kernel call."""
    return tuple(level for level in _table(machine) if set(_requirements(machine, level)) <= flags)


def best() -> str:
    """This CPU's highest level."""
    return cpu_levels()[-1]


def check(level: str, source: str = f"${ENV}") -> str:
    """``level`` if this CPU supports it; otherwise a ConfigError naming the ones it does."""
    here = cpu_levels()
    if level in here:
        return level
    listed = ", ".join(here)
    if level not in all_levels():
        raise ConfigError(
            f"{source} must be one of this CPU's instruction-set levels. Received: {level!r}.",
            hint=f"use one of {listed} (this CPU supports these)",
        )
    raise ConfigError(
        f"{source} asks for {level}, which this CPU ({cpu_model()}) does not have.",
        hint=f"use one of {listed} (this CPU supports these)",
    )


@functools.cache
def cap() -> str | None:
    """The level ``$CNNC_CPU_ISA`` asks for (checked), or None when it is unset."""
    text = os.environ.get(ENV, "").strip().lower()
    return check(text) if text else None


def level() -> str:
    """The level cnnc's kernels use: ``use``'s, else ``$CNNC_CPU_ISA``'s, else the CPU's best."""
    return _override or cap() or best()


def describe() -> str:
    """The level in use and where it comes from, for notes and reports."""
    current = level()
    if _override is not None:
        return f"{current} (set for this block; this CPU's best is {best()})"
    if cap() is not None and current != best():
        return f"{current} (capped by {ENV}={current}; this CPU's best is {best()})"
    return f"{current} (this CPU's best)"


@contextlib.contextmanager
def use(name: str) -> Iterator[str]:
    """Run cnnc's kernels at ``name`` (at most this CPU's best) within this block."""
    global _override
    previous = _override
    _override = check(name, "the requested level")
    try:
        yield name
    finally:
        _override = previous


def path_for(paths: Sequence[str], at: str | None = None) -> str:
    """The code path a kernel built for ``paths`` runs at level ``at`` (default: in use):
    its highest path that is not above the level, else its lowest (an architecture's
    baseline, such as aarch64's NEON)."""
    order = all_levels()
    rank = order.index(at or level())
    known = [path for path in paths if path in order]
    usable = [path for path in known if order.index(path) <= rank]
    if usable:
        return max(usable, key=order.index)
    return min(known, key=order.index, default="scalar")


def native_bf16() -> bool:
    """True when the level in use computes bf16 natively (AVX512-BF16, AMX; ARM BF16)."""
    return level() in _BF16_LEVELS


def measuring_env(name: str) -> dict[str, str]:
    """Environment variables that make a new process run as on a CPU of level ``name``:
    cnnc's cap and, below this CPU's best, ATen's and oneDNN's (read when torch loads).

    Below the best level, inductor gets a cache directory of its own for the level: its
    on-disk cache does not tell code compiled under another ATen capability apart, and
    reusing such code fails at run time (seen with torch 2.14).
    """
    env = {ENV: check(name, "--isa")}
    if name != best():
        env[ATEN_ENV] = _ATEN.get(name, "default")
        if arch() != "aarch64":
            env[ONEDNN_ENV] = _ONEDNN[name]
        env["TORCHINDUCTOR_CACHE_DIR"] = _inductor_dir(name)
    return env


def _inductor_dir(name: str) -> str:
    """``$TORCHINDUCTOR_CACHE_DIR`` (or inductor's default) with a folder for level ``name``;
    unchanged when it already is that folder."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    base = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())
    folder = f"isa-{name}"
    return str(base if base.name == folder else base / folder)
