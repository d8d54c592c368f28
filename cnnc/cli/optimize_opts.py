"""The optimization flags shared by train, bench and tune, and how they meet the spec.

CLI flags override the spec's ``optimize:`` section; ``--optimize auto`` (or ``optimize:
auto`` in the spec) measures the candidates on the device and picks the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnc.analysis import summarize
from cnnc.compiler import Compiled, build
from cnnc.sections.optimize import OptimizeSection
from runtime.optimize.config import EAGER, Amp, OptimizeConfig

if TYPE_CHECKING:
    from runtime.benchmark import Workload

DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
OptimizeOpt = Annotated[
    str | None,
    typer.Option(
        "--optimize",
        help="auto (measure and choose) or eager; default: the spec's optimize: section.",
    ),
]
CompileOpt = Annotated[
    str | None,
    typer.Option(
        "--compile", help="torch.compile mode: off, default, reduce-overhead, max-autotune."
    ),
]
ChannelsLastOpt = Annotated[
    bool | None, typer.Option("--channels-last/--no-channels-last", help="NHWC memory format.")
]
AmpOpt = Annotated[str | None, typer.Option("--amp", help="Autocast: off, bf16 or fp16.")]
RewritesOpt = Annotated[
    bool | None, typer.Option("--rewrites/--no-rewrites", help="Exact graph rewrites.")
]
CpuKernelsOpt = Annotated[
    bool | None,
    typer.Option("--cpu-kernels/--no-cpu-kernels", help="cnnc's fused C++ CPU kernels."),
]
CacheMemoryOpt = Annotated[
    bool | None,
    typer.Option("--cache-memory/--no-cache-memory", help="Keep CPU buffers across steps (CPU)."),
]
FusedConvReluOpt = Annotated[
    bool | None,
    typer.Option("--fused-conv-relu/--no-fused-conv-relu", help="Triton conv+ReLU (CUDA)."),
]
CudaGraphsOpt = Annotated[
    bool | None, typer.Option("--cuda-graphs/--no-cuda-graphs", help="Replay as CUDA graphs.")
]

_COMPILE = ("off", "default", "reduce-overhead", "max-autotune")
_AMP = ("off", "bf16", "fp16")


@dataclass(frozen=True)
class Choice:
    """The configuration to run and, when it was chosen automatically, why."""

    config: OptimizeConfig
    reason: str = ""


def workload(compiled: Compiled, batch: int, device: str, *, training: bool = True) -> Workload:
    """The benchmark workload of a compiled spec: synthetic batches of its input shape."""
    from runtime.benchmark import Workload
    from runtime.train.distributed import resolve_device

    summary = summarize(compiled.graph)
    return Workload(
        factory=lambda: build(compiled),
        input_shape=compiled.graph.input_shape,
        num_classes=compiled.graph.output_shape[0],
        batch=batch,
        device=resolve_device(device),
        training=training,
        flops_per_image=float(summary.training_flops),
    )


def _checked(value: str | None, allowed: tuple[str, ...], flag: str) -> str | None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=flag)
    return value


# Tuning times a dozen candidates (and compiles some); below this many seconds of eager
# training it cannot pay for itself, so auto keeps eager.
TUNE_WORTH_S = 60.0


def estimated_run_s(compiled: Compiled, batch: int, device: str, steps: int) -> float:
    """Seconds ``steps`` eager training steps take here, from a few timed steps."""
    from runtime.benchmark import Schedule, Variant, measure

    work = workload(compiled, batch, device)
    (eager,) = measure(work, [Variant("eager", EAGER)], Schedule(warmup=2, rounds=3, steps=2))
    return steps * eager.step_ms / 1000


def resolve_optimize(
    compiled: Compiled,
    batch: int,
    device: str,
    mode: str | None,
    flags: dict[str, Any],
    *,
    refresh: bool = False,
    steps: int | None = None,
) -> Choice:
    """The configuration for a training run: tuned, from flags, or from the spec.

    With ``steps`` (the run's length), a run too short to pay for tuning stays eager.
    """
    from runtime.optimize.autotune import tune

    _checked(mode, ("auto", "eager"), "--optimize")
    _checked(flags.get("compile"), _COMPILE, "--compile")
    _checked(flags.get("amp"), _AMP, "--amp")
    section = compiled.spec.optimize or OptimizeSection()
    given = {key: value for key, value in flags.items() if value is not None}
    if mode == "eager":
        return Choice(EAGER)
    if mode == "auto" or (section.auto and not given):
        if steps is not None and not refresh:
            seconds = estimated_run_s(compiled, batch, device, steps)
            if seconds < TUNE_WORTH_S:
                return Choice(
                    EAGER,
                    f"auto kept eager: the whole run takes about {seconds:.0f} s "
                    f"eager ({steps} steps), too short for tuning to pay off",
                )
        allowed: tuple[Amp, ...] = section.allowed_amp  # type: ignore[assignment]
        result = tune(
            workload(compiled, batch, device),
            key=compiled.key,
            allowed_amp=allowed,
            refresh=refresh,
        )
        return Choice(result.config, f"auto chose {result.reason}")
    return Choice(section.to_config().with_(**given))
