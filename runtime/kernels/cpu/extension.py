"""Building and loading cnnc's C++ CPU extensions (``runtime/kernels/cpu/*.cpp`` and the
allocator of ``runtime/memory/allocator.cpp``).

Each kernel is one source, compiled for a code path (an instruction set: ``scalar``,
``avx2``, ``avx512``, ``avx512_bf16``; ``neon`` on aarch64) with that path's compiler flags,
so its vector code, written once against ATen's ``at::vec::Vectorized`` (``cpu/vec.h``,
``cpu/paths.h``), becomes AVX2, AVX-512 or NEON code. A process builds and loads only the
path of the level in use (``runtime.kernels.cpu.isa``, capped by ``$CNNC_CPU_ISA``): the
highest path the kernel has that is not above it.

A build happens on a kernel's first use at a path on a machine, with torch's own extension
builder (the C++ toolchain torch.compile's CPU backend needs too), and is cached by torch
under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), so later processes
load it in milliseconds. Only the kernels a run uses are built, several at once (one
compiler per core). Before a build starts, one line on the ``runtime.kernels.build`` logger
says what is built, why and about how long it takes; a line per finished kernel follows.
Without a C++ compiler, or when a build fails, the loader says why once and returns None,
and every user of a kernel falls back to ATen.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from runtime.kernels.cpu import isa

log = logging.getLogger("runtime.kernels")
build_log = logging.getLogger("runtime.kernels.build")

SOURCES = Path(__file__).resolve().parent  # the kernels' .cpp files and shared headers
# extension name -> its .cpp: the kernels here, and the allocator beside runtime.memory
_CPP = {path.stem: path for path in SOURCES.glob("*.cpp")} | {
    "allocator": SOURCES.parents[1] / "memory" / "allocator.cpp"
}
KERNELS = tuple(sorted(_CPP))

# The code paths each kernel is built for, per architecture, lowest first. Vector kernels
# (at::vec) have one per level; the bf16 convolutions' vector path needs vdpbf16ps; the
# allocator has no vector code. On aarch64 NEON is the baseline, so it is the lowest path.
Paths = dict[str, tuple[str, ...]]  # architecture -> paths
_VEC: Paths = {"x86_64": ("scalar", "avx2", "avx512"), "aarch64": ("neon",)}
_BF16_DOT: Paths = {"x86_64": ("scalar", "avx512_bf16"), "aarch64": ("neon",)}
_PLAIN: Paths = {"x86_64": ("scalar",), "aarch64": ("neon",)}
_PATHS: dict[str, Paths] = {
    "pool2x2": _VEC,
    "batchnorm": _VEC,
    "dropout": _VEC,
    "conv3x3": _BF16_DOT,
    "conv_wgrad": _BF16_DOT,
    "conv_fp32": _VEC,
    "allocator": _PLAIN,
}

_AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]
# A path's compiler flags: its instructions and at::vec's matching CPU_CAPABILITY macros.
_PATH_FLAGS = {
    "scalar": ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"],
    "neon": ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "avx512": [*_AVX512, "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "avx512_bf16": [
        *_AVX512,
        "-mavx512bf16",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
        "-DCNNC_AVX512_BF16",
    ],
}
DEFAULT_BUILD_S = 45.0  # one kernel on one core, when this machine has no record yet
_TIMES_FILE = "cnnc_build_seconds.json"

_modules: dict[tuple[str, str], ModuleType | None] = {}  # (kernel, path) -> its build
_reasons: dict[str, str] = {}
_declined: dict[str, dict[str, str]] = {}  # kernel -> path -> why it may not run here


def paths(name: str) -> tuple[str, ...]:
    """The code paths kernel ``name`` is built for on this architecture, lowest first."""
    table = _PATHS[name]
    return table.get(isa.arch(), ("scalar",))


def path_at(name: str, level: str | None = None) -> str:
    """The path kernel ``name`` runs at ``level`` (default: the level in use): its highest
    path not above the level that has not been declined in this process."""
    declined = _declined.get(name, {})
    return isa.path_for([p for p in paths(name) if p not in declined], level)


def decline(name: str, path: str, reason: str) -> str | None:
    """Take ``path`` of kernel ``name`` out of this process (e.g. it failed its parity check
    here); returns the path that runs instead at the level in use, or None when the kernel
    has no vector path left below it."""
    _declined.setdefault(name, {})[path] = reason
    now = path_at(name)
    return None if now in _declined[name] or now == "scalar" else now


def undecline() -> None:
    """Every declined path may run again (tests that swap a kernel in and out)."""
    _declined.clear()


def compile_flags(path: str = "scalar") -> list[str]:
    """-O3, OpenMP, hidden symbols (builds of several paths share a process) and the
    path's instruction set."""
    return [
        "-O3",
        "-fopenmp",
        "-fvisibility=hidden",
        *_PATH_FLAGS[path],
        f"-DCNNC_PATH_NAME={path}",
    ]


def compiler() -> str | None:
    """The C++ compiler torch's builder runs (``$CXX``, default ``c++``), or None if absent."""
    return shutil.which(os.environ.get("CXX", "c++"))


@functools.cache
def source_hash(name: str) -> str:
    """A digest of kernel ``name``'s sources: its .cpp, its body and the shared headers (a
    change to one kernel's body rebuilds that kernel only)."""
    digest = hashlib.sha256()
    shared = [path for path in SOURCES.glob("*.h") if not path.name.endswith("_body.h")]
    files = [_CPP[name], *SOURCES.glob(f"{name}*_body.h"), *shared]
    for path in sorted(files, key=lambda path: path.name):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def all_sources_hash() -> str:
    """A digest of every kernel's sources: what a choice measured with them depends on."""
    digest = hashlib.sha256("".join(source_hash(name) for name in KERNELS).encode())
    return digest.hexdigest()[:10]


def extension_name(name: str, path: str | None = None) -> str:
    """The build's name: kernel, code path (default: the one for the level in use), sources."""
    return f"cnnc_{name}_{path or path_at(name)}_{source_hash(name)}"


def _cpp_extension() -> ModuleType:
    """torch's extension builder, imported without its CUDA_HOME warning (cnnc builds for
    the CPU only)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    return cpp_extension


def _build_dir(name: str, path: str | None = None) -> Path:
    cpp_extension = _cpp_extension()
    return Path(cpp_extension._get_build_directory(extension_name(name, path), False))


def cached(name: str, path: str | None = None) -> bool:
    """True when this version of kernel ``name`` is already built for ``path`` (default:
    the level in use's) on this machine."""
    return (_build_dir(name, path) / f"{extension_name(name, path)}.so").exists()


def _check(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in KERNELS]
    if unknown:
        raise ValueError(f"no CPU kernel named {', '.join(unknown)}; known: {', '.join(KERNELS)}")
    return names


def build(names: Iterable[str], why: str = "") -> None:
    """Build (or load from the cache) every kernel in ``names`` not loaded yet, in parallel.

    ``why`` (e.g. "the cpu_kernels optimization") goes into the line announcing a build.
    """
    wanted = [name for name in _check(names) if (name, path_at(name)) not in _modules]
    if not wanted:
        return
    if compiler() is None:
        _no_compiler(wanted)
        return
    fresh = [name for name in wanted if not cached(name)]
    workers = max(1, min(len(wanted), os.cpu_count() or 1))
    times = _recorded_times()
    if fresh:
        _announce(fresh, why, workers, times)
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each build is a subprocess
        futures = {pool.submit(_compile, name, path_at(name)): name for name in wanted}
        for future in as_completed(futures):
            name = futures[future]
            module, seconds = future.result()
            _modules[name, path_at(name)] = module
            if name in fresh and module is not None:
                done += 1
                times[name] = round(seconds, 1)
                build_log.info(
                    "built cnnc's %s kernel (%d/%d, %.0f s)", name, done, len(fresh), seconds
                )
    if fresh:
        _record_times(times)


def _compile(name: str, path: str) -> tuple[ModuleType | None, float]:
    cpp_extension = _cpp_extension()
    start = time.perf_counter()
    try:
        module: ModuleType = cpp_extension.load(
            name=extension_name(name, path),
            sources=[str(_CPP[name])],
            extra_cflags=compile_flags(path),
            extra_include_paths=[str(SOURCES)],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # a failed build surfaces as many error types
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        _reasons[name] = f"the build failed: {reason}"
        log.warning("cnnc's CPU kernel %s is unavailable, using ATen instead: %s", name, reason)
        return None, time.perf_counter() - start
    return module, time.perf_counter() - start


def _no_compiler(names: list[str]) -> None:
    command = os.environ.get("CXX", "c++")
    reason = f"no C++ compiler ({command!r} is not on PATH)"
    if not any(name in _reasons for name in KERNELS):
        log.warning(
            "cnnc's CPU kernels need a C++ compiler and %r was not found, so cnnc runs on "
            "ATen's kernels; install one (Debian/Ubuntu: apt install g++) to use them",
            command,
        )
    for name in names:
        _modules[name, path_at(name)] = None
        _reasons[name] = reason


def _announce(names: list[str], why: str, workers: int, times: dict[str, float]) -> None:
    total = sum(times.get(name, DEFAULT_BUILD_S) for name in names)
    longest = max(times.get(name, DEFAULT_BUILD_S) for name in names)
    estimate = max(longest, total / workers)
    build_log.warning(
        "compiling cnnc's CPU kernel%s %s for this machine%s, once: about %s on %d core%s; "
        "later runs load %s from %s",
        "s" if len(names) > 1 else "",
        ", ".join(names),
        f" ({why})" if why else "",
        _duration(estimate),
        workers,
        "s" if workers > 1 else "",
        "them" if len(names) > 1 else "it",
        _build_dir(names[0]).parent,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(10, round(seconds / 10) * 10):.0f} s"
    return f"{seconds / 60:.0f} min"


def _times_path() -> Path:
    return _build_dir("allocator").parent / _TIMES_FILE


def _recorded_times() -> dict[str, float]:
    """Seconds each kernel's last build took on this machine (one core)."""
    try:
        data = json.loads(_times_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record_times(times: dict[str, float]) -> None:
    with contextlib.suppress(OSError):  # unwritten, the next estimate takes the default
        _times_path().write_text(json.dumps(times, sort_keys=True), encoding="utf-8")


def load(name: str) -> ModuleType | None:
    """The compiled extension ``<name>.cpp`` for the path of the level in use (built on
    first use); None when it cannot be built (the reason is logged)."""
    key = (name, path_at(name))
    if key not in _modules:
        build([name])
    return _modules.get(key)


def path(name: str) -> str | None:
    """The code path kernel ``name`` runs at the level in use (None: unavailable)."""
    return None if load(name) is None else path_at(name)


def vectorized(name: str) -> bool:
    """True when kernel ``name`` is built and runs a vector path at the level in use."""
    return path(name) not in (None, "scalar")


@dataclass(frozen=True)
class KernelState:
    """What ``cnnc doctor`` reports of one kernel."""

    name: str
    state: str  # "loaded", "cached", "not built" or "unavailable"
    paths: tuple[str, ...] = ()
    path: str | None = None
    reason: str = ""


def state(name: str) -> KernelState:
    """The kernel's state in this process at the level in use, without building it."""
    key = (name, path_at(name))
    if key in _modules and _modules[key] is None:
        return KernelState(name, "unavailable", reason=_reasons.get(name, "see the log"))
    if key not in _modules:
        if compiler() is None:
            return KernelState(name, "unavailable", reason="no C++ compiler")
        return KernelState(name, "cached" if cached(name) else "not built", paths(name))
    return KernelState(name, "loaded", paths(name), key[1])
