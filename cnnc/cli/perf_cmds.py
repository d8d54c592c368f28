"""Performance commands: ``cnnc bench`` (every variant side by side) and ``cnnc tune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.table import Table

from cnnc.artifacts import ArtifactFailure
from cnnc.baselines import BASELINES
from cnnc.cli.app import JsonOpt, SpecArg, app, print_json, stderr, stdout, user_errors
from cnnc.cli.artifact_cmds import artifact_device, is_artifact, open_artifact
from cnnc.cli.optimize_opts import DeviceOpt, workload
from cnnc.compiler import Compiled, compile_spec
from cnnc.errors import Location, Problem
from cnnc.sections.optimize import OptimizeSection
from runtime.benchmark import (
    Measurement,
    Schedule,
    Variant,
    Workload,
    device_name,
    matmul_peak,
    measure,
)
from runtime.export import manifest_path
from runtime.optimize.autotune import TuneResult, tune
from runtime.optimize.config import EAGER, Amp, OptimizeConfig

BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Images per step.")]
RoundsOpt = Annotated[int, typer.Option(min=3, help="Interleaved rounds (the median is kept).")]
StepsOpt = Annotated[int, typer.Option(min=1, help="Steps timed per round.")]
RefreshOpt = Annotated[bool, typer.Option("--refresh", help="Re-tune even if a choice is cached.")]


def _allowed_amp(compiled: Compiled) -> tuple[Amp, ...]:
    section = compiled.spec.optimize or OptimizeSection()
    return section.allowed_amp  # type: ignore[return-value]


def _tune(compiled: Compiled, work: Workload, refresh: bool) -> TuneResult:
    stderr.print(
        f"tuning {compiled.spec.name} ({'training' if work.training else 'inference'}"
        f", batch {work.batch}, {device_name(work.device)}) ...",
        markup=False,
    )
    return tune(work, key=compiled.key, allowed_amp=_allowed_amp(compiled), refresh=refresh)


def training_variants(
    compiled: Compiled, device: torch.device, auto: OptimizeConfig
) -> list[Variant]:
    """Eager, the tutorial's class, each stock flag, cnnc's own optimizations, and auto."""
    variants = [Variant("eager", EAGER)]
    baseline = BASELINES.get(compiled.spec.name)
    if baseline is not None:
        variants.append(Variant("handwritten", EAGER, baseline))
    stock = [
        OptimizeConfig(channels_last=True),
        OptimizeConfig(amp="bf16"),
        OptimizeConfig(channels_last=True, amp="bf16"),
        OptimizeConfig(compile="default"),
    ]
    ours = [OptimizeConfig(rewrites=True, channels_last=True)]
    if device.type == "cpu":
        kernels = OptimizeConfig(rewrites=True, cpu_kernels=True, cache_memory=True)
        ours += [kernels, kernels.with_(channels_last=True, amp="bf16")]
    else:
        ours += [
            OptimizeConfig(fused_conv_relu=True, channels_last=True),
            OptimizeConfig(compile="default", cuda_graphs=True, channels_last=True),
        ]
    variants += [Variant(config.name, config) for config in stock + ours]
    return [*variants, Variant("auto", auto)]


def inference_variants(device: torch.device, auto: OptimizeConfig) -> list[Variant]:
    """Eager, stock flags, cnnc's rewrites and kernels, and auto, for the forward pass."""
    configs = [
        EAGER,
        OptimizeConfig(channels_last=True),
        OptimizeConfig(compile="default"),
        OptimizeConfig(rewrites=True, compile="default"),
    ]
    if device.type == "cpu":
        kernels = OptimizeConfig(rewrites=True, cpu_kernels=True, cache_memory=True)
        configs += [kernels, kernels.with_(amp="bf16")]
    return [*(Variant(c.name, c) for c in configs), Variant("auto", auto)]


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
    json_out: JsonOpt = False,
) -> None:
    """Time SPEC's training step (and inference) under every optimization, side by side.

    Given an exported artifact instead of a spec, time its inference against the eager model.
    """
    if is_artifact(spec):
        _bench_artifact(spec, batch, device, Schedule(3, rounds, steps * 2), json_out)
        return
    compiled = compile_spec(spec)
    work = workload(compiled, batch, device)
    schedule = Schedule(warmup=3, rounds=rounds, steps=steps)
    tuned = _tune(compiled, work, refresh)
    stderr.print(f"auto: {tuned.reason}", markup=False)
    peak = matmul_peak(work.device)
    peak_bf16 = matmul_peak(work.device, torch.bfloat16)
    train = measure(work, training_variants(compiled, work.device, tuned.config), schedule)
    document: dict[str, Any] = {
        "spec": compiled.spec.name,
        "device": device_name(work.device),
        "batch": batch,
        "torch": torch.__version__,
        "peak_gflops": round(peak, 1),
        "peak_gflops_bf16": round(peak_bf16, 1),
        "auto": {"config": tuned.config.to_dict(), "reason": tuned.reason},
        "variants": [_row(m, peak, peak_bf16) for m in train],
    }
    if inference:
        infer_work = workload(compiled, batch, device, training=False)
        infer_tuned = _tune(compiled, infer_work, refresh)
        infer = measure(
            infer_work,
            inference_variants(work.device, infer_tuned.config),
            Schedule(warmup=3, rounds=rounds, steps=steps * 2),
        )
        document["inference"] = [_row(m, peak, peak_bf16) for m in infer]
        document["auto_inference"] = {
            "config": infer_tuned.config.to_dict(),
            "reason": infer_tuned.reason,
        }
    if json_out:
        print_json(document)
        return
    _print_table(
        f"{compiled.spec.name}: training step, batch {batch}, {document['device']}",
        document["variants"],
    )
    if inference:
        _print_table("inference (forward only)", document["inference"])
    stdout.print(
        f"matmul peak measured in this run: {peak:.0f} GFLOP/s fp32, "
        f"{peak_bf16:.0f} GFLOP/s bf16; ratios are medians of {rounds} interleaved "
        "rounds against eager in the same process; compile time is reported apart."
    )


def _bench_artifact(
    path: Path, batch: int, device: str, schedule: Schedule, json_out: bool
) -> None:
    """Inference of an exported artifact against the eager model its manifest records."""
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
    variants = [
        Variant("eager"),
        Variant(f"artifact ({artifact.format})", factory=artifact.as_module),
    ]
    peak = matmul_peak(work.device)
    rows = [_row(m, peak, peak) for m in measure(work, variants, schedule)]
    document = {"artifact": str(path), "device": device_name(work.device), "batch": batch}
    if json_out:
        print_json({**document, "peak_gflops": round(peak, 1), "variants": rows})
        return
    _print_table(f"{path}: inference, batch {batch}, {document['device']}", rows)
    stdout.print(
        f"medians of {schedule.rounds} interleaved rounds in one process; the eager model is "
        "built from the spec in the artifact's manifest (fp32 matmul peak: "
        f"{peak:.0f} GFLOP/s).",
        markup=False,
    )


def _row(m: Measurement, peak: float, peak_bf16: float) -> dict[str, Any]:
    reference = peak_bf16 if m.config.amp != "off" else peak
    return m.to_dict(reference)


def _print_table(title: str, rows: list[dict[str, Any]]) -> None:
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


@app.command("tune")
@user_errors
def tune_command(
    spec: SpecArg,
    batch: BatchOpt = 64,
    device: DeviceOpt = "auto",
    inference: Annotated[bool, typer.Option(help="Tune the forward pass instead.")] = False,
    refresh: RefreshOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure the candidate configurations for SPEC on this device and cache the fastest."""
    compiled = compile_spec(spec)
    result = _tune(compiled, workload(compiled, batch, device, training=not inference), refresh)
    if json_out:
        print_json(
            {
                "config": result.config.to_dict(),
                "name": result.config.name,
                "reason": result.reason,
                "cached": result.cached,
                "key": result.key,
                "measured": [m.to_dict() for m in result.measurements],
                "finals": [m.to_dict() for m in result.finals],
            }
        )
        return
    stdout.print(f"chosen: {result.config.name}", markup=False)
    stdout.print(result.reason, markup=False)
