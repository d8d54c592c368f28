"""The optimization flags of ``cnnc train``, derived from the runtime's registry, and how
they meet the spec.

One flag per registry entry (its dashed name; a switch has a ``--no-`` form, a mode takes
its value), added by ``optimization_flags``; they override the spec's ``optimize:`` section.
``--optimize auto`` (or ``optimize: auto`` in the spec) measures the candidates on the
device and picks the fastest; whether a run is long enough for that to pay is the
runtime's call (``runtime.autotune.TUNE_WORTH_S``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from runtime.optimize import registry
from runtime.optimize.config import EAGER, OptimizeConfig

if TYPE_CHECKING:
    from cnnc.compiler import Compiled
    from runtime.benchmark import Workload
    from runtime.optimize.step import StepOptions

DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
OptimizeOpt = Annotated[
    str | None,
    typer.Option(
        "--optimize",
        help="auto (measure and choose) or eager; default: the spec's optimize: section.",
    ),
]
_PREFIX = "opt_"  # the flags' parameter names, apart from the command's own


def _sentence(doc: str) -> str:
    return f"{doc[0].upper()}{doc[1:]}."


def _option(entry: registry.Optimization) -> inspect.Parameter:
    if entry.choices:
        kind: Any = str | None
        help_text = f"{_sentence(entry.doc)} One of: {', '.join(entry.choices)}."
        option = typer.Option(entry.flag, help=help_text)
    else:
        kind = bool | None
        names = f"{entry.flag}/--no-{entry.flag[2:]}"
        option = typer.Option(names, help=_sentence(entry.doc))
    return inspect.Parameter(
        _PREFIX + entry.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind, option],
    )


def optimization_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` one flag per registry entry; it receives them as ``flags``, a dict
    of the registry names to the values given (None where a flag is absent)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "flags"]
    params = own + [_option(entry) for entry in registry.REGISTRY]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        flags = {name: kwargs.pop(_PREFIX + name) for name in registry.NAMES}
        command(**kwargs, flags=flags)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@dataclass(frozen=True)
class Choice:
    """The configuration to run and, when it was chosen automatically, why."""

    config: OptimizeConfig
    reason: str = ""


def workload(
    compiled: Compiled,
    batch: int,
    device: str,
    *,
    training: bool = True,
    step: StepOptions | None = None,
) -> Workload:
    """The benchmark workload of a compiled spec: synthetic batches of its input shape,
    and (for a training run) the run's own step options."""
    from cnnc.analysis import summarize
    from cnnc.compiler import build
    from runtime.benchmark import Workload
    from runtime.optimize.step import StepOptions
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
        step=step or StepOptions(),
    )


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags given, checked against their entries' choices."""
    given = {key: value for key, value in flags.items() if value is not None}
    for name, value in given.items():
        entry = registry.entry(name)
        if entry.choices and value not in entry.choices:
            raise typer.BadParameter(
                f"{value!r} is not one of {', '.join(entry.choices)}", param_hint=entry.flag
            )
    return given


def resolve_optimize(
    compiled: Compiled,
    work: Workload,
    mode: str | None,
    flags: dict[str, Any],
    *,
    refresh: bool = False,
    steps: int | None = None,
) -> Choice:
    """The configuration for a training run: tuned, from flags, or from the spec.

    With ``steps`` (the run's length), a run too short to pay for tuning stays eager.
    """
    from cnnc.sections.optimize import OptimizeSection

    if mode is not None and mode not in ("auto", "eager"):
        raise typer.BadParameter(f"{mode!r} is not one of auto, eager", param_hint="--optimize")
    section = compiled.spec.optimize or OptimizeSection()
    given = _given(flags)
    if mode == "eager":
        return Choice(EAGER)
    if mode == "auto" or (section.auto and not given):
        from runtime.autotune import tune

        result = tune(
            work, key=compiled.key, allowed_amp=section.allowed_amp, refresh=refresh,
            run_steps=steps,
        )  # fmt: skip
        verb = "kept eager:" if result.skipped else "chose"
        return Choice(result.config, f"auto {verb} {result.reason}")
    return Choice(section.to_config().with_(**given))
