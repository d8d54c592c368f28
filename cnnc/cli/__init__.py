"""The ``cnnc`` command line (typer). The only part of cnnc that prints.

Commands: build, check, summary, schema, layers (compiler); train, eval, predict (training);
bench, tune (performance); export (artifacts); doctor (this machine). ``python -m cnnc``
runs the same app.
"""

from __future__ import annotations

from cnnc.cli import (  # noqa: F401  (registers commands)
    artifact_cmds,
    compile_cmds,
    doctor_cmds,
    perf_cmds,
    train_cmds,
)
from cnnc.cli.app import app


def main() -> None:
    """Entry point of the ``cnnc`` console script."""
    app()


__all__ = ["app", "main"]
