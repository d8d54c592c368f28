"""``cnnc doctor``: what this machine gives cnnc's runtime, in one report.

The CPU and the flags cnnc's instruction-set levels need, the levels it supports and the one
in use, whether bf16 is native, ATen's own capability and caps, the state of each of cnnc's
C++ kernels, and the versions of the tools they depend on. ``--build`` builds every kernel
first, so a later run never waits for a compiler. The runtime's kernels (and torch) are
imported when the command runs, not when the command line starts.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from typing import Annotated, Any

import typer
from rich.table import Table

from cnnc.cli.app import EXIT_INVALID, JsonOpt, app, print_json, stdout
from cnnc.cli.isa_opts import aten_capability
from runtime.kernels.cpu.isa import ATEN_ENV, ONEDNN_ENV

# Flags no level needs but that tell what this CPU does with bf16 and int8.
_EXTRA_FLAGS = ("amx_bf16", "amx_tile", "avx512_fp16", "avx_vnni")
_NO_COMPILER_HINT = (
    "cnnc's kernels then run on ATen; install a C++ compiler (Debian/Ubuntu: apt install g++)"
)


def level_flags() -> tuple[str, ...]:
    """The flags this architecture's levels need, lowest level first."""
    from runtime.kernels.cpu import isa

    needed: list[str] = []
    for name in isa.all_levels():
        needed += [flag for flag in isa.requirements(name) if flag not in needed]
    return tuple(needed)


def cpu_report(every_flag: bool = False) -> dict[str, Any]:
    """The CPU, the flags cnnc cares about (and all of them with ``every_flag``), its
    instruction-set levels, the level in use and ATen's."""
    from runtime.kernels.cpu import isa

    flags = isa.cpu_flags()
    wanted = level_flags()
    report: dict[str, Any] = {
        "model": isa.cpu_model(),
        "arch": isa.arch(),
        "flags": [flag for flag in (*wanted, *_EXTRA_FLAGS) if flag in flags],
        "missing_flags": [flag for flag in wanted if flag not in flags],
        "levels": list(isa.cpu_levels()),
        "level": isa.level(),
        "level_detail": isa.describe(),
        "native_bf16": isa.native_bf16(),
        "aten_cpu_capability": aten_capability(),
        "env": {name: os.environ.get(name) for name in (isa.ENV, ATEN_ENV, ONEDNN_ENV)},
    }
    if every_flag:
        report["all_flags"] = sorted(flags)
    return report


def kernel_report() -> list[dict[str, Any]]:
    """Each kernel's state; kernels built earlier are loaded (milliseconds) to show their
    code paths."""
    from runtime.kernels.cpu import extension as cpu_ext

    cpu_ext.build([name for name in cpu_ext.KERNELS if cpu_ext.state(name).state == "cached"])
    rows = []
    for name in cpu_ext.KERNELS:
        state = cpu_ext.state(name)
        rows.append(
            {
                "name": name,
                "state": state.state,
                "paths": list(state.paths),
                "path": state.path,
                "reason": state.reason or None,
            }
        )
    return rows


def _first_line(command: list[str]) -> str | None:
    """The first line ``command`` prints, or None when it cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def _package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Python, torch, Triton, the C++ compiler and ninja (None: not found)."""
    import torch

    from runtime.kernels.cpu import extension as cpu_ext

    compiler = cpu_ext.compiler()
    ninja = shutil.which("ninja")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _package("triton"),
        "compiler": _first_line([compiler, "--version"]) if compiler else None,
        "ninja": _first_line([ninja, "--version"]) if ninja else None,
    }


@app.command()
def doctor(
    build: Annotated[
        bool,
        typer.Option("--build", help="Build every kernel now, then report (exit 1 if one fails)."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Report this machine's CPU levels, cnnc's C++ kernels and the tools they need."""
    from runtime.kernels.cpu import extension as cpu_ext

    if build:
        cpu_ext.build(cpu_ext.KERNELS, why="cnnc doctor --build")
    cpu = cpu_report(every_flag=json_out)
    kernels = kernel_report()
    found = versions()
    if json_out:
        print_json({"cpu": cpu, "kernels": kernels, "versions": found})
    else:
        _print_cpu(cpu)
        _print_kernels(kernels)
        _print_versions(found)
    if build and any(kernel["state"] != "loaded" for kernel in kernels):
        raise typer.Exit(EXIT_INVALID)  # asked to build them all, and one could not be


def _key_values(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    stdout.print(table)


def _print_cpu(cpu: dict[str, Any]) -> None:
    flags = " ".join(cpu["flags"]) or "none"
    if cpu["missing_flags"]:
        flags += f" (missing: {' '.join(cpu['missing_flags'])})"
    bf16 = "native"
    if not cpu["native_bf16"]:
        bf16 = "emulated: bench and auto leave bf16 out (--bf16 times it anyway)"
    caps = [f"{name}={value}" for name, value in cpu["env"].items() if value is not None]
    aten = cpu["aten_cpu_capability"] + (f" ({', '.join(caps)})" if caps else "")
    _key_values(
        "CPU",
        [
            ("model", f"{cpu['model']} ({cpu['arch']})"),
            ("flags", flags),
            ("levels", ", ".join(cpu["levels"])),
            ("in use", cpu["level_detail"]),
            ("bf16", bf16),
            ("ATen", aten),
        ],
    )


def kernel_detail(row: dict[str, Any]) -> str:
    """One kernel's state in words."""
    state = row["state"]
    if state == "loaded":
        paths = ", ".join(row["paths"]) or "scalar"
        return f"built: code paths {paths}; runs {row['path']}"
    if state == "cached":
        return "built: loads on first use"
    if state == "not built":
        return "not built: builds on first use (`cnnc doctor --build` builds it now)"
    return f"unavailable: {row['reason']}; runs on ATen"


def _print_kernels(rows: list[dict[str, Any]]) -> None:
    table = Table(title="cnnc's C++ CPU kernels", title_justify="left")
    table.add_column("kernel", no_wrap=True)
    table.add_column("state", overflow="fold")
    for row in rows:
        table.add_row(row["name"], kernel_detail(row))
    stdout.print(table)


def _print_versions(found: dict[str, str | None]) -> None:
    missing = {
        "compiler": f"none found: {_NO_COMPILER_HINT}",
        "ninja": "none found: torch builds C++ extensions with it (pip install ninja)",
    }
    rows = [
        (
            "C++ compiler" if name == "compiler" else name,
            value or missing.get(name, "not installed"),
        )
        for name, value in found.items()
    ]
    _key_values("versions", rows)
