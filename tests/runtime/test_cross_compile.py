"""cnnc's C++ kernels compile for aarch64 (NEON), checked on an x86-64 machine.

Every kernel source that has an aarch64 path in ``extension._PATHS`` is compiled with
Debian's cross compiler (``aarch64-linux-gnu-g++``, package g++-aarch64-linux-gnu, which
.ci/run installs) the way ``extension._compile`` builds it on an ARM machine: torch's
extension flags, ``extension.compile_flags(path)``, torch's include directories and the
kernel directory. So a change to a kernel, its body, vec.h or paths.h that breaks ARM
fails here, in the same suite, with the compiler's message.

Compile only (``-c``): nothing is linked or run. Two differences from a real build:

* ``-O1`` instead of ``-O3``: the same headers, preprocessed alike (``__OPTIMIZE__`` is
  defined at both), the same templates instantiated, and every function still goes
  through the back end, so the compiler's errors are the same (an intrinsic's immediate
  that must be a constant after inlining, an always_inline that fails); -O3's extra
  optimizations are left out (about 15% of each build's time; most is the front end).
* Python's headers (``<torch/extension.h>`` includes pybind11 and so ``Python.h``) get a
  ``pyconfig.h`` for aarch64 made from this Python's own: configure's answers for an LP64
  little-endian Linux with glibc are the same on both, except the x86 assembly switches
  (``HAVE_GCC_ASM_FOR_X87``/``X64``), which are dropped. ``test_pyconfig_fits_aarch64``
  checks every ``SIZEOF_*`` / ``ALIGNOF_*`` value against the cross compiler's own
  ``sizeof`` / ``alignof``, and that Python.h's own platform checks pass.

Without the cross compiler the tests skip, saying why; with ``$CNNC_REQUIRE_CROSS=1`` (as
.ci/run sets) they fail instead, so CI never passes without having compiled for ARM. On an
aarch64 machine the kernel build tests compile the NEON path natively, so these skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime.kernels.cpu import extension, isa

CROSS_CXX = "aarch64-linux-gnu-g++"
REQUIRE_ENV = "CNNC_REQUIRE_CROSS"
EM_AARCH64 = 183  # an ELF header's e_machine for AArch64

# (kernel, path) for every aarch64 path of every kernel, from the build table itself
BUILDS = [
    (name, path)
    for name, table in sorted(extension._PATHS.items())
    for path in table.get("aarch64", ())
]

# pyconfig.h's SIZEOF_* / ALIGNOF_* suffixes -> the C++ type each measures
_TYPES = {
    "DOUBLE": "double",
    "FLOAT": "float",
    "FPOS_T": "fpos_t",
    "INT": "int",
    "LONG": "long",
    "LONG_DOUBLE": "long double",
    "LONG_LONG": "long long",
    "MAX_ALIGN_T": "max_align_t",
    "OFF_T": "off_t",
    "PID_T": "pid_t",
    "PTHREAD_KEY_T": "pthread_key_t",
    "PTHREAD_T": "pthread_t",
    "SHORT": "short",
    "SIZE_T": "size_t",
    "TIME_T": "time_t",
    "UINTPTR_T": "uintptr_t",
    "VOID_P": "void*",
    "WCHAR_T": "wchar_t",
    "_BOOL": "bool",  # C's _Bool
}
_X86_ONLY = ("HAVE_GCC_ASM_FOR_X64", "HAVE_GCC_ASM_FOR_X87", "X87_DOUBLE_ROUNDING")


def _cross_compiler() -> str:
    """The cross compiler's path; skips (or, under $CNNC_REQUIRE_CROSS, fails) without it."""
    if isa.arch() == "aarch64":
        pytest.skip("an aarch64 machine: the kernel build tests compile the NEON path natively")
    found = shutil.which(CROSS_CXX)
    if found is None:
        reason = (
            f"no aarch64 cross compiler ({CROSS_CXX} is not on PATH; Debian/Ubuntu: "
            "apt-get install g++-aarch64-linux-gnu)"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and ${REQUIRE_ENV}=1 requires it")
        pytest.skip(reason)
    return found


def _host_pyconfig() -> Path:
    """This Python's pyconfig.h; behind Debian's multiarch wrapper, the x86-64 one."""
    path = Path(sysconfig.get_config_h_filename())
    text = path.read_text(encoding="utf-8")
    multiarch = sysconfig.get_config_var("MULTIARCH")
    wrapped = re.search(rf"#\s*include\s*<({re.escape(str(multiarch))}/[^>]*pyconfig\.h)>", text)
    if multiarch and wrapped:
        return Path(sysconfig.get_config_var("INCLUDEDIR")) / wrapped.group(1)
    return path


def _aarch64_pyconfig(host: str) -> str:
    """The host's pyconfig.h with the x86-only switches undefined."""
    pattern = rf"^#define ({'|'.join(_X86_ONLY)})\b.*$"
    return re.sub(pattern, r"/* #undef \1 (x86 only; cnnc's aarch64 check) */", host, flags=re.M)


@pytest.fixture(scope="session")
def python_include(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of Python's include directory with an aarch64 pyconfig.h. A copy, because
    Python.h includes "pyconfig.h" from its own directory before any -I/-isystem one."""
    source = Path(sysconfig.get_path("include", scheme="posix_prefix"))
    target = tmp_path_factory.mktemp("aarch64-python") / source.name
    shutil.copytree(source, target, symlinks=False)
    host = _host_pyconfig().read_text(encoding="utf-8")
    (target / "pyconfig.h").unlink()
    (target / "pyconfig.h").write_text(_aarch64_pyconfig(host), encoding="utf-8")
    return target


def _command(
    compiler: str, source: Path, output: Path, name: str, path: str, pyinc: Path
) -> list[str]:
    """The compile command torch's builder runs for extension ``name`` (see
    cpp_extension._write_ninja_file_to_build_library), for aarch64 and compile only."""
    from torch.utils import cpp_extension

    flags = ["-O1" if flag == "-O3" else flag for flag in extension.compile_flags(path)]
    includes = [*cpp_extension.include_paths(), str(pyinc)]
    return [
        compiler,
        f"-DTORCH_EXTENSION_NAME={extension.extension_name(name, path)}",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        f"-I{extension.SOURCES}",
        *[arg for include in includes for arg in ("-isystem", include)],
        "-fPIC",
        "-std=c++20",  # torch 2.14's builder
        *flags,
        "-Wno-psabi",  # GCC's note that C++17 changed how std::pair is passed on aarch64
        "-c",
        str(source),
        "-o",
        str(output),
    ]


@pytest.fixture(scope="session")
def cross_builds(
    tmp_path_factory: pytest.TempPathFactory, python_include: Path
) -> Iterator[dict[tuple[str, str], Future[tuple[subprocess.CompletedProcess[str], Path]]]]:
    """Every (kernel, path) compiled for aarch64, started at once, one compiler per core:
    the tests run one at a time, the builds in parallel."""
    compiler = _cross_compiler()
    out = tmp_path_factory.mktemp("aarch64-objects")

    def compile_one(name: str, path: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        obj = out / f"{name}_{path}.o"
        command = _command(compiler, extension._CPP[name], obj, name, path, python_include)
        return subprocess.run(command, capture_output=True, text=True), obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {(name, path): pool.submit(compile_one, name, path) for name, path in BUILDS}
        yield futures
        for future in futures.values():
            future.cancel()


def _elf_machine(obj: Path) -> int:
    header = obj.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{obj.name} is not an ELF object"
    return int.from_bytes(header[18:20], "little")


def test_every_kernel_has_an_aarch64_path() -> None:
    assert set(extension._PATHS) == set(extension.KERNELS)
    for name, table in extension._PATHS.items():
        assert table.get("aarch64") == ("neon",), name


def test_every_aarch64_level_runs_the_neon_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isa, "arch", lambda: "aarch64")
    assert isa.all_levels() == ("scalar", "neon", "neon_bf16")
    for name in extension.KERNELS:
        assert extension.paths(name) == ("neon",)
        for level in isa.all_levels():
            assert extension.path_at(name, level) == "neon", (name, level)


def test_the_neon_flags_have_no_x86_option() -> None:
    flags = extension.compile_flags("neon")
    assert "-DCPU_CAPABILITY=DEFAULT" in flags  # at::vec's NEON vectors on aarch64
    x86 = [f for f in flags if f.startswith("-m") or "AVX" in f or "SSE" in f]
    assert not x86, f"x86-only flags in the neon path's: {x86}"


def test_pyconfig_fits_aarch64(python_include: Path, tmp_path: Path) -> None:
    compiler = _cross_compiler()
    config = (python_include / "pyconfig.h").read_text(encoding="utf-8")
    assert not re.search(rf"^#define ({'|'.join(_X86_ONLY)})\b", config, flags=re.M)
    values = re.findall(r"^#define (SIZEOF|ALIGNOF)_(\w+) (\d+)$", config, flags=re.M)
    assert values, "no SIZEOF_* in pyconfig.h"
    unknown = sorted({suffix for _, suffix, _ in values} - set(_TYPES))
    assert not unknown, f"pyconfig.h measures types this test does not know: {unknown}"
    checks = [
        f'static_assert({kind.lower()}({_TYPES[suffix]}) == {value}, "{kind}_{suffix}");'
        for kind, suffix, value in values
    ]
    probe = tmp_path / "probe.cpp"
    # Python.h first, as extensions include it; its pyport.h has its own platform checks
    headers = ["<Python.h>", "<cstddef>", "<cstdint>", "<cstdio>", "<ctime>", "<pthread.h>"]
    endianness = [
        "#if defined(WORDS_BIGENDIAN) || !defined(DOUBLE_IS_LITTLE_ENDIAN_IEEE754)",
        '#error "pyconfig.h is not little-endian"',
        "#endif",
        "static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);",
    ]
    lines = [f"#include {h}" for h in headers] + endianness + checks
    probe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [compiler, "-std=c++20", "-fsyntax-only", "-isystem", str(python_include)]
    command += [str(probe)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_neon_build_uses_at_vec_neon_vectors(tmp_path: Path) -> None:
    compiler = _cross_compiler()
    from torch.utils import cpp_extension

    probe = tmp_path / "probe.cpp"
    probe.write_text(
        '#include "vec.h"\n'
        "#include <arm_neon.h>\n"
        "static_assert(cnnc_vec::kWidth == 4);\n"
        "static_assert(std::is_constructible_v<cnnc_vec::Vec, float32x4_t>);\n",
        encoding="utf-8",
    )
    includes = [arg for inc in cpp_extension.include_paths() for arg in ("-isystem", inc)]
    command = [compiler, "-std=c++20", *extension.compile_flags("neon"), "-fsyntax-only"]
    command += [f"-I{extension.SOURCES}", *includes, str(probe)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("name", "path"), BUILDS)
def test_kernel_compiles_for_aarch64(
    name: str,
    path: str,
    cross_builds: dict[tuple[str, str], Future[tuple[subprocess.CompletedProcess[str], Path]]],
) -> None:
    result, obj = cross_builds[name, path].result()
    assert result.returncode == 0, (
        f"{extension._CPP[name].name} does not compile for aarch64 ({path}):\n"
        f"{' '.join(result.args)}\n{result.stderr}"
    )
    assert _elf_machine(obj) == EM_AARCH64
