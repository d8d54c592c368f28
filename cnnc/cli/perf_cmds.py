"""Performance commands: ``cnnc bench`` (every variant side by side) and ``cnnc tune``.

A variant in reduced precision the device does not compute natively (bf16 on a CPU without
AVX512-BF16, AMX or ARM BF16) is left out and listed as skipped with the reason;
``--bf16`` times it anyway. ``bench --isa LEVEL`` measures as on a CPU of that level, and
every report states the instruction sets it was measured with.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cnnc.artifacts import ArtifactFailure
from cnnc.cli.app import JsonOpt, SpecArg, app, print_json, stderr, stdout, user_errors
from cnnc.cli.artifact_cmds import artifact_device, is_artifact, open_artifact
from cnnc.cli.isa_opts import IsaOpt, checked_level, isa_fields, isa_line, rerun_at
from cnnc.cli.optimize_opts import DeviceOpt, workload
from cnnc.compiler import Compiled, compile_spec
from cnnc.errors import Location, Problem
from cnnc.sections.optimize import OptimizeSection
from runtime.export import manifest_path
from runtime.optimize.config import EAGER, Amp, OptimizeConfig

if TYPE_CHECKING:
    import torch

    from runtime.autotune import TuneResult
    from runtime.benchmark import Measurement, Schedule, Variant, Workload
    from runtime.optimize.candidates import Skipped

BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Images per step.")]
RoundsOpt = Annotated[int, typer.Option(min=3, help="Interleaved rounds (the median is kept).")]
StepsOpt = Annotated[int, typer.Option(min=1, help="Steps timed per round.")]
RefreshOpt = Annotated[bool, typer.Option("--refresh", help="Re-tune even if a choice is cached.")]
Bf16Opt = Annotated[
    bool,
    typer.Option(
        "--bf16", help="Time bf16 even where this CPU has no native bf16 (it runs emulated)."
    ),
]


def _allowed_amp(compiled: Compiled) -> tuple[Amp, ...]:
    section = compiled.spec.optimize or OptimizeSection()
    return section.allowed_amp


def _tune(
    compiled: Compiled, work: Workload, refresh: bool, force_precision: bool = False
) -> TuneResult:
    from runtime.autotune import tune
    from runtime.benchmark import device_name

    stderr.print(
        f"tuning {compiled.spec.name} ({'training' if work.training else 'inference'}"
        f", batch {work.batch}, {device_name(work.device)}) ...",
        markup=False,
    )
    return tune(
        work,
        key=compiled.key,
        allowed_amp=_allowed_amp(compiled),
        refresh=refresh,
        force_precision=force_precision,
    )


# bench shows bf16 beside fp32 whatever the spec allows auto (fp16 is CUDA's own choice)
BENCH_PRECISIONS: tuple[Amp, ...] = ("off", "bf16")


def variants(
    compiled: Compiled | None,
    device: torch.device,
    auto: OptimizeConfig,
    force_precision: bool = False,
) -> tuple[list[Variant], list[Skipped]]:
    """Every candidate of the registry's lineup on ``device``, the tutorial's hand-written
    class (when the spec has one) and auto's choice; and the variants left out, with why.

    Reduced-precision variants the device cannot compute natively are skipped unless
    ``force_precision``; auto always stays (its choice already respects the device).
    """
    from cnnc.baselines import BASELINES
    from runtime.benchmark import Variant
    from runtime.optimize import candidates

    lineup = candidates.lineup(device, BENCH_PRECISIONS, force_precision=force_precision)
    runs = [Variant(config.name, config) for config in lineup.configs]
    baseline = BASELINES.get(compiled.spec.name) if compiled is not None else None
    if baseline is not None:
        runs.insert(1, Variant("handwritten", EAGER, baseline))
    return [*runs, Variant("auto", auto)], lineup.skipped


@app.command()
@user_errors
def bench(
    spec: SpecArg,
    batch: BatchOpt = 64,
    device: DeviceOpt = "auto",
    rounds: RoundsOpt = 11,
    steps: StepsOpt = 5,
    inference: Annotated[bool, typer.Option(help="Also time the forward pass.")] = True,
    refresh: RefreshOpt = False,
    isa_level: IsaOpt = None,
    bf16: Bf16Opt = False,
    json_out: JsonOpt = False,
) -> None:
    """Time SPEC's training step (and inference) under every optimization, side by side.

    Given an exported artifact instead of a spec, time its inference against the eager model.
    """
    import torch

    from runtime.benchmark import Schedule, matmul_peak
    from runtime.train.distributed import resolve_device

    if isa_level is not None:
        rerun_at(checked_level(isa_level), sys.argv[1:])
    if is_artifact(spec):
        _bench_artifact(spec, batch, device, Schedule(3, rounds, steps * 2), json_out)
        return
    compiled = compile_spec(spec)
    target = resolve_device(device)
    run = _BenchRun(
        compiled,
        batch,
        device,
        Schedule(warmup=3, rounds=rounds, steps=steps),
        refresh,
        bf16,
        (matmul_peak(target), matmul_peak(target, torch.bfloat16)),
    )
    document = _bench_training(run)
    if inference:
        document |= _bench_inference(run)
    if json_out:
        print_json(document)
        return
    _print_table(
        f"{compiled.spec.name}: training step, batch {batch}, {document['device']}",
        document["variants"],
        document["skipped"],
    )
    if inference:
        _print_table(
            "inference (forward only)", document["inference"], document["skipped_inference"]
        )
    stdout.print(isa_line(), markup=False)
    stdout.print(
        f"matmul peak measured in this run: {document['peak_gflops']:.0f} GFLOP/s fp32, "
        f"{document['peak_gflops_bf16']:.0f} GFLOP/s bf16; ratios are medians of {rounds} "
        "interleaved rounds against eager in the same process; compile time is reported apart."
    )


@dataclass(frozen=True)
class _BenchRun:
    """What both halves of ``bench`` take: the spec, the options, the matmul peaks."""

    compiled: Compiled
    batch: int
    device: str
    schedule: Schedule
    refresh: bool
    force_precision: bool
    peaks: tuple[float, float]  # fp32, bf16


def _bench_training(run: _BenchRun) -> dict[str, Any]:
    """The training-step half of ``bench``: tune, then time every variant side by side."""
    import torch

    from runtime.benchmark import device_name, measure

    compiled, force_precision = run.compiled, run.force_precision
    work = workload(compiled, run.batch, run.device)
    tuned = _tune(compiled, work, run.refresh, force_precision)
    stderr.print(f"auto: {tuned.reason}", markup=False)
    peak, peak_bf16 = run.peaks
    timed, skipped = variants(compiled, work.device, tuned.config, force_precision)
    train = measure(work, timed, run.schedule)
    return {
        "spec": compiled.spec.name,
        "device": device_name(work.device),
        **isa_fields(),
        "batch": run.batch,
        "torch": torch.__version__,
        "peak_gflops": round(peak, 1),
        "peak_gflops_bf16": round(peak_bf16, 1),
        "auto": {"config": tuned.config.to_dict(), "reason": tuned.reason},
        "variants": [_row(m, peak, peak_bf16) for m in train],
        "skipped": [left.to_dict() for left in skipped],
    }


def _bench_inference(run: _BenchRun) -> dict[str, Any]:
    """The forward-pass half of ``bench`` (twice the steps per round: steps are shorter)."""
    from runtime.benchmark import Schedule, measure

    work = workload(run.compiled, run.batch, run.device, training=False)
    tuned = _tune(run.compiled, work, run.refresh, run.force_precision)
    peak, peak_bf16 = run.peaks
    timed, skipped = variants(None, work.device, tuned.config, run.force_precision)
    schedule = Schedule(3, run.schedule.rounds, run.schedule.steps * 2)
    infer = measure(work, timed, schedule)
    return {
        "inference": [_row(m, peak, peak_bf16) for m in infer],
        "skipped_inference": [left.to_dict() for left in skipped],
        "auto_inference": {"config": tuned.config.to_dict(), "reason": tuned.reason},
    }


def _bench_artifact(
    path: Path, batch: int, device: str, schedule: Schedule, json_out: bool
) -> None:
    """Inference of an exported artifact against the eager model its manifest records."""
    from runtime.benchmark import Variant, device_name, matmul_peak, measure

    artifact = open_artifact(path, device)
    source = artifact.manifest.producer.get("spec", {}).get("source")
    if not isinstance(source, str):
        problem = Problem(
            "the artifact's manifest holds no spec to build the eager model from",
            Location(str(manifest_path(path))),
            hint="export it with `cnnc export`, which records the spec",
        )
        raise ArtifactFailure([problem])
    target = artifact_device(artifact)
    work = workload(compile_spec(source), batch, target.type, training=False)
    timed = [
        Variant("eager"),
        Variant(f"artifact ({artifact.format})", factory=artifact.as_module),
    ]
    peak = matmul_peak(work.device)
    rows = [_row(m, peak, peak) for m in measure(work, timed, schedule)]
    document = {
        "artifact": str(path),
        "device": device_name(work.device),
        **isa_fields(),
        "batch": batch,
    }
    if json_out:
        print_json({**document, "peak_gflops": round(peak, 1), "variants": rows})
        return
    _print_table(f"{path}: inference, batch {batch}, {document['device']}", rows)
    stdout.print(isa_line(), markup=False)
    stdout.print(
        f"medians of {schedule.rounds} interleaved rounds in one process; the eager model is "
        "built from the spec in the artifact's manifest (fp32 matmul peak: "
        f"{peak:.0f} GFLOP/s).",
        markup=False,
    )


def _row(m: Measurement, peak: float, peak_bf16: float) -> dict[str, Any]:
    reference = peak_bf16 if m.config.amp != "off" else peak
    return m.to_dict(reference)


def _print_table(
    title: str, rows: list[dict[str, Any]], skipped: list[dict[str, str]] | None = None
) -> None:
    """The variants side by side, then one dim line per variant left out."""
    table = Table(title=title)
    table.add_column("variant", overflow="fold", min_width=24)
    for column in ("ms/step", "images/s", "x eager", "GFLOP/s", "% peak", "compile s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['step_ms']:.2f}",
            f"{row['images_per_s']:.0f}",
            f"{row['ratio_vs_eager']:.2f}",
            f"{row['gflops']:.1f}" if row["gflops"] is not None else "-",
            f"{row['peak_percent']:.1f}" if row["peak_percent"] is not None else "-",
            f"{row['compile_s']:.1f}",
        )
    stdout.print(table)
    for left in skipped or []:
        stdout.print(f"skipped {left['name']}: {left['reason']}", style="dim", markup=False)


@app.command("tune")
@user_errors
def tune_command(
    spec: SpecArg,
    batch: BatchOpt = 64,
    device: DeviceOpt = "auto",
    inference: Annotated[bool, typer.Option(help="Tune the forward pass instead.")] = False,
    refresh: RefreshOpt = False,
    bf16: Bf16Opt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure the candidate configurations for SPEC on this device and cache the fastest."""
    compiled = compile_spec(spec)
    work = workload(compiled, batch, device, training=not inference)
    result = _tune(compiled, work, refresh, force_precision=bf16)
    if json_out:
        print_json(
            {
                "config": result.config.to_dict(),
                "name": result.config.name,
                "reason": result.reason,
                "cached": result.cached,
                "key": result.key,
                **isa_fields(),
                "measured": [m.to_dict() for m in result.measurements],
                "finals": [m.to_dict() for m in result.finals],
            }
        )
        return
    stdout.print(f"chosen: {result.config.name}", markup=False)
    stdout.print(result.reason, markup=False)
    stdout.print(isa_line(), markup=False)
