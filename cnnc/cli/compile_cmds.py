"""Compiler commands: build, check, summary, schema, layers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnc import catalog, codegen
from cnnc.analysis import (
    Summary,
    check_memory,
    human_bytes,
    human_count,
    memory_limit,
    parse_bytes,
    summarize,
)
from cnnc.cli.app import (
    EXIT_INVALID,
    JsonOpt,
    SpecArg,
    app,
    print_json,
    print_problems,
    stdout,
    user_errors,
)
from cnnc.compiler import Compiled, compile_spec, generate_code
from cnnc.errors import CnncError, Location, Problem, SourceError
from cnnc.schema import json_schema
from cnnc.shapes import fmt

BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Batch size for activation memory.")]
MemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        help="Refuse networks needing more (e.g. 8GiB); default $CNNC_MAX_MEMORY or 8GiB.",
    ),
]


def _limit(text: str | None) -> int:
    try:
        return memory_limit(parse_bytes(text) if text else None)
    except ValueError:
        raise typer.BadParameter(f"not a size: {text!r} (e.g. 512MiB, 8GiB)") from None


@app.command()
@user_errors
def build(
    spec: SpecArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Where to write the generated module (default build/<name>.py)."
        ),
    ] = None,
    json_out: JsonOpt = False,
    batch: BatchOpt = 1,
    max_memory: MemoryOpt = None,
) -> None:
    """Compile SPEC into a standalone PyTorch module and print its summary."""
    compiled = compile_spec(spec)
    check_memory(compiled.graph, _limit(max_memory), Location(str(spec), 1, 1))
    target = output or Path("build") / f"{codegen.module_name(compiled.spec.name)}.py"
    _write_atomically(target, generate_code(compiled))
    summary = summarize(compiled.graph, batch)
    if json_out:
        print_json(
            {
                **summary.to_dict(),
                "artifact": str(target),
                "warnings": [w.to_dict() for w in compiled.warnings],
            }
        )
        print_problems(compiled.warnings)
        return
    _print_summary(compiled, summary)
    print_problems(compiled.warnings)
    stdout.print(f"wrote {target}")


@app.command()
def check(
    specs: Annotated[
        list[Path], typer.Argument(help="Spec files to validate.", show_default=False)
    ],
    json_out: JsonOpt = False,
    max_memory: MemoryOpt = None,
) -> None:
    """Validate specs and infer their shapes (exit 0 valid, 1 invalid, 2 usage error)."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    limit = _limit(max_memory)
    for path in specs:
        try:
            compiled = compile_spec(path)
            check_memory(compiled.graph, limit, Location(str(path), 1, 1))
            warnings += compiled.warnings
        except CnncError as error:
            errors += error.problems
    if json_out:
        print_json(
            {
                "ok": not errors,
                "errors": [p.to_dict() for p in errors],
                "warnings": [p.to_dict() for p in warnings],
            }
        )
    else:
        print_problems([*errors, *warnings])
        if not errors:
            stdout.print(f"ok: {len(specs)} spec{'s' if len(specs) != 1 else ''} valid")
    if errors:
        raise typer.Exit(EXIT_INVALID)


@app.command()
@user_errors
def summary(spec: SpecArg, batch: BatchOpt = 1, json_out: JsonOpt = False) -> None:
    """Print the layer table and totals of SPEC: shapes, params, MACs, FLOPs, memory."""
    compiled = compile_spec(spec)
    result = summarize(compiled.graph, batch)
    if json_out:
        print_json(result.to_dict())
    else:
        _print_summary(compiled, result)
    print_problems(compiled.warnings)


@app.command()
def schema() -> None:
    """Print the JSON Schema of spec files (for editors and CI validation)."""
    print_json(json_schema())


@app.command()
def layers(json_out: JsonOpt = False) -> None:
    """List every layer type with its arguments and defaults."""
    entries = catalog.entries()
    if json_out:
        print_json(
            [
                {
                    "type": e.type,
                    "summary": e.summary,
                    "torch": e.torch,
                    "arguments": [vars(a) for a in e.arguments],
                }
                for e in entries
            ]
        )
        return
    table = Table(title="cnnc layer types", show_lines=False)
    for column in ("type", "torch", "arguments (default)", "what it does"):
        table.add_column(column)
    for e in entries:
        args = ", ".join(
            a.name if a.default is None else f"{a.name}={a.default}" for a in e.arguments
        )
        table.add_row(e.type, e.torch, args, e.summary)
    stdout.print(table)


WIDE_TABLE = 100  # console columns from which the summary shows full type names
TYPE_CHARS = 12  # the longest type name shown in full below that


def abbreviate(name: str, chars: int = TYPE_CHARS) -> str:
    """``name`` cut to ``chars`` characters with an ellipsis (adaptive_avgpool2d ->
    adaptive_av…), the same cut for every row."""
    return name if len(name) <= chars else name[: chars - 1] + "…"


def _print_summary(compiled: Compiled, summary: Summary) -> None:
    table = Table(
        title=f"{summary.name}  {fmt(summary.input_shape, batch=True)} -> "
        f"{fmt(summary.output_shape, batch=True)}"
    )
    # Shapes and numbers never wrap; at narrow widths long type names are cut the same way
    # everywhere (the full names are in --json) and layer names fold.
    table.add_column("layer", overflow="fold")
    table.add_column("type", no_wrap=True)
    table.add_column("output shape", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("MACs", justify="right", no_wrap=True)
    narrow = stdout.width < WIDE_TABLE
    for row in summary.rows:
        name = "  " * row.depth + (row.name.rsplit(".", 1)[-1] if row.depth else row.name)
        table.add_row(
            name,
            abbreviate(row.type) if narrow else row.type,
            fmt(row.output_shape, batch=True),
            f"{row.params:,}",
            human_count(row.macs) if row.macs else "-",
        )
    stdout.print(table)
    b = summary.batch
    stdout.print(f"params: {summary.params:,} ({human_bytes(summary.param_bytes)} fp32)")
    stdout.print(
        f"forward: {human_count(summary.macs)} MACs, {human_count(summary.flops)} FLOPs per image"
    )
    stdout.print(
        f"training: ~{human_count(summary.training_flops)} FLOPs per image "
        "(forward + backward, ~3x forward)"
    )
    stdout.print(
        f"activation memory: {human_bytes(summary.activation_bytes)} at batch {b} "
        "(fp32, outputs kept for backward)"
    )


def _write_atomically(target: Path, text: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        raise SourceError(
            [
                Problem(
                    f"cannot write the generated module: {exc.strerror}",
                    Location(str(target)),
                    hint="choose another path with -o",
                )
            ]
        ) from None
