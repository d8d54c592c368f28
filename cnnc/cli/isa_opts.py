"""The ``--isa`` option: measure as on a CPU of a lower instruction-set level, and say which.

cnnc's kernels read their cap (``$CNNC_CPU_ISA``) at any time, but ATen and oneDNN read
theirs (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``) once, when torch loads. So a run
``--isa LEVEL`` is re-run in a new process with the variables of
``runtime.kernels.cpu.isa.measuring_env``, unless this process already has exactly them. Every
figure a command reports carries the level in use and ATen's capability (``isa_fields``).

``runtime.kernels.cpu.isa`` loads no torch, so ``cnnc --help`` lists the levels cheaply.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, NoReturn

import typer

from cnnc.cli.app import stderr, usage_error
from runtime.errors import ConfigError
from runtime.kernels.cpu import isa
from runtime.kernels.cpu.isa import CAP_VARIABLES

IsaOpt = Annotated[
    str | None,
    typer.Option(
        "--isa",
        help=f"Measure as on a CPU of this level ({', '.join(isa.all_levels())}), in a new "
        "process; `cnnc doctor` lists this CPU's.",
        show_default=False,
    ),
]


def checked_level(level: str) -> str:
    """``level`` lower-cased if this CPU supports it; otherwise a usage error (exit 2)."""
    try:
        return isa.check(level.strip().lower(), "--isa")
    except ConfigError as error:
        usage_error(error.message, error.hint)


def needs_new_process(level: str, environ: Mapping[str, str]) -> dict[str, str | None] | None:
    """The variables a new process needs to run as on a ``level`` CPU, or None when a
    process with ``environ`` already does.

    Values are what to set; None means unset (e.g. an ATen cap left over from the shell
    when ``level`` is this CPU's best). ``level`` must be a valid level here.
    """
    wanted: dict[str, str | None] = dict.fromkeys(CAP_VARIABLES)
    wanted.update(isa.measuring_env(level))
    changes = {name: value for name, value in wanted.items() if environ.get(name) != value}
    return changes or None


def child_environment(
    changes: Mapping[str, str | None], environ: Mapping[str, str]
) -> dict[str, str]:
    """``environ`` with ``changes`` applied (None removes a variable)."""
    env = dict(environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def describe_changes(changes: Mapping[str, str | None]) -> str:
    """``CNNC_CPU_ISA=avx2, ATEN_CPU_CAPABILITY=avx2 and unsets X`` for the notice line."""
    parts = [f"{name}={value}" for name, value in changes.items() if value is not None]
    unset = [name for name, value in changes.items() if value is None]
    text = ", ".join(parts) if parts else "no variables"
    return text + (f" and unsets {', '.join(unset)}" if unset else "")


def rerun_at(level: str, argv: Sequence[str]) -> None:
    """Return when this process already runs as on a ``level`` CPU; otherwise re-run
    ``argv`` (this command line) in a new process that does, and exit with its status."""
    changes = needs_new_process(level, os.environ)
    if changes is None:
        return
    stderr.print(
        f"measuring as on a CPU of level {level}, in a new process that sets "
        f"{describe_changes(changes)} (ATen and oneDNN read theirs when torch loads)",
        markup=False,
    )
    _exit_with_child([sys.executable, "-m", "cnnc", *argv], child_environment(changes, os.environ))


def _exit_with_child(command: list[str], env: dict[str, str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        done = subprocess.run(command, env=env, check=False)  # inherits stdout and stderr
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(done.returncode)


def aten_capability() -> str:
    """The vector level ATen's CPU kernels dispatch to in this process (e.g. AVX512)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def isa_fields() -> dict[str, Any]:
    """The instruction sets behind a measurement, for JSON documents."""
    return {
        "isa": isa.level(),
        "isa_detail": isa.describe(),
        "aten_cpu_capability": aten_capability(),
    }


def isa_line() -> str:
    """The instruction sets behind a measurement, as one line under a table."""
    return f"CPU ISA: cnnc's kernels at {isa.describe()}; ATen at {aten_capability()}"
