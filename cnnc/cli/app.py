"""The typer application object and what every command shares: consoles and error exits.

Results go to stdout; diagnostics (errors, warnings, progress) go to stderr, so
``cnnc build --json spec.yaml | jq`` always sees one JSON document. A user mistake exits
with status 1 and located messages, never a Python traceback; usage errors exit with 2.
Before any command runs, the app checks ``$CNNC_CPU_ISA`` (a bad level is a usage error)
and routes the runtime's kernel-build progress to stderr as ``cnnc: `` lines.

Command modules import torch and the runtime's heavy parts inside the commands that use
them, so ``cnnc --help``, ``check``, ``summary``, ``schema`` and ``layers`` never load torch
(tests/test_cli_imports.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cnnc.errors import CnncError, Problem
from runtime.errors import ConfigError
from runtime.kernels.cpu import isa

app = typer.Typer(
    name="cnnc",
    help="A declarative CNN model-spec compiler with a performance-focused runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_INVALID = 1
EXIT_USAGE = 2
BUILD_LOGGER = "runtime.kernels.build"
SpecArg = Annotated[Path, typer.Argument(help="A spec file (YAML or JSON).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
P = ParamSpec("P")
R = TypeVar("R")


def print_problems(problems: Iterable[Problem]) -> None:
    """Errors in red and warnings in yellow, with their notes and hints, on stderr."""
    for problem in problems:
        style = "red" if problem.severity == "error" else "yellow"
        label = "error" if problem.severity == "error" else "warning"
        head, *rest = problem.render().splitlines()
        stderr.print(f"[{style}]{label}[/]: {escape(head)}")
        for line in rest:
            stderr.print(escape(line), style="dim" if "note:" in line else None)


def fail(problems: Iterable[Problem]) -> NoReturn:
    """Print ``problems`` and exit with status 1."""
    print_problems(problems)
    raise typer.Exit(EXIT_INVALID)


def print_json(document: Any) -> None:
    """One JSON document on stdout (plain, so pipes and jq read it)."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn CnncError (any user mistake) into located messages and exit status 1."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CnncError as error:
            fail(error.problems)

    return run


def usage_error(message: str, hint: str | None = None) -> NoReturn:
    """Print a usage error (and its hint) on stderr and exit with status 2."""
    stderr.print(f"[red]error[/]: {escape(message)}")
    if hint:
        stderr.print(f"  hint: {hint}", markup=False)
    raise typer.Exit(EXIT_USAGE)


class ProgressLines(logging.Handler):
    """Writes each record as one plain ``cnnc: <message>`` line on stderr.

    The console is looked up at every record, so a redirected ``sys.stderr`` (tests, pipes)
    receives the line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stderr.print(f"cnnc: {record.getMessage()}", markup=False)
        except Exception:  # a broken stderr must not break a build
            self.handleError(record)


def show_build_progress() -> None:
    """Route the kernel builder's announcement and progress lines to stderr, once.

    The logger stops propagating, so a root handler (or logging's last resort) cannot print
    a record a second time.
    """
    logger = logging.getLogger(BUILD_LOGGER)
    if not any(isinstance(handler, ProgressLines) for handler in logger.handlers):
        logger.addHandler(ProgressLines())
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.callback()
def startup() -> None:
    """Shared start of every command: build progress on stderr, and ``$CNNC_CPU_ISA`` checked."""
    show_build_progress()
    if not os.environ.get(isa.ENV, "").strip():
        return  # no cap to check
    try:
        isa.cap()
    except ConfigError as error:
        usage_error(error.message, error.hint)
