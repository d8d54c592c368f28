"""Training commands: train, eval, predict. The spec's ``train:`` section drives them.

``torchrun --nproc-per-node=N -m cnnc train SPEC`` runs the same command under DDP; only
rank 0 prints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnc.cli.app import JsonOpt, SpecArg, app, print_json, stderr, stdout, user_errors
from cnnc.cli.artifact_cmds import is_artifact, predict_artifact
from cnnc.cli.optimize_opts import (
    Choice,
    DeviceOpt,
    OptimizeOpt,
    optimization_flags,
    resolve_optimize,
    workload,
)
from cnnc.cli.runtime_errors import runtime_errors
from cnnc.compiler import Compiled, build, compile_spec
from runtime.train.config import TrainConfig

if TYPE_CHECKING:
    from runtime.optimize.config import OptimizeConfig
    from runtime.train.events import TrainResult
    from runtime.train.metrics import EvalResult

WeightsOpt = Annotated[
    Path,
    typer.Option(
        "--weights", "-w", help="A .safetensors file or a run directory.", show_default=False
    ),
]


def is_main_process() -> bool:
    """False on every torchrun rank but 0, which alone prints."""
    return int(os.environ.get("RANK", "0")) == 0


def train_config(
    compiled: Compiled, epochs: int | None = None, batch_size: int | None = None
) -> TrainConfig:
    """The spec's train section (defaults when it has none) with the command line's overrides."""
    config = compiled.spec.train or TrainConfig()
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes["epochs"] = epochs
    if batch_size is not None:
        changes["batch_size"] = batch_size
    return config.with_(**changes) if changes else config


@app.command()
@user_errors
@optimization_flags
def train(
    spec: SpecArg,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Override train.batch_size.")
    ] = None,
    device: DeviceOpt = "auto",
    resume: Annotated[Path | None, typer.Option(help="Continue a run (its directory).")] = None,
    runs: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    log_grads: Annotated[bool, typer.Option(help="Log per-parameter gradient norms.")] = False,
    tensorboard: Annotated[bool, typer.Option(help="Write TensorBoard event files.")] = False,
    optimize: OptimizeOpt = None,
    json_out: JsonOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """Train SPEC as its train: section says; writes runs/<name>/<n>/."""
    from runtime.train import ConsoleReporter, evaluate, fit, prepare_data, seed_everything

    compiled = compile_spec(spec)
    with runtime_errors(compiled):
        config = train_config(compiled, epochs, batch_size)
        data = prepare_data(config, compiled.graph.input_shape)  # loaded once per command
        choice = _choose(compiled, config, len(data.train), device, optimize, flags)
        if choice.reason and is_main_process():
            stderr.print(f"optimize: {choice.reason}", markup=False)
        seed_everything(config.seed)
        model = build(compiled)
        reporter = ConsoleReporter(stderr if json_out else stdout)
        result = fit(
            model, config, compiled.graph.input_shape, device=device,
            run_name=None if resume else compiled.spec.name, runs_root=runs,
            run_files=_run_files(compiled, choice.config.to_dict()), resume=resume,
            callbacks=[reporter], log_grads=log_grads, tensorboard=tensorboard,
            optimize=choice.config, data=data,
        )  # fmt: skip
        if not is_main_process():
            return
        scores = evaluate(model, config, compiled.graph.input_shape, device=device, data=data)
    document = _document(compiled, result, scores, choice.config)
    if json_out:
        print_json(document)
    else:
        stdout.print(
            f"test accuracy {scores.accuracy:.2%}, loss {scores.loss:.4f} "
            f"({scores.num_samples} images); run: {document['run_dir']}"
        )


def _choose(
    compiled: Compiled, config: TrainConfig, images: int, device: str, mode: str | None,
    flags: dict[str, Any],
) -> Choice:  # fmt: skip
    """The run's configuration; ``auto`` times the step this run will take (its optimizer,
    loss, clipping and schedule) and weighs tuning against the run's length."""
    from runtime.train.optim import step_options

    steps_per_epoch = -(-images // config.batch_size)
    options = step_options(config, steps_per_epoch)
    work = workload(compiled, config.batch_size, device, step=options)
    return resolve_optimize(compiled, work, mode, flags, steps=config.epochs * steps_per_epoch)


def _document(
    compiled: Compiled, result: TrainResult, scores: EvalResult, optimize: OptimizeConfig
) -> dict[str, Any]:
    """What ``train --json`` prints: the scores, the run's files and the configuration."""
    last = result.last
    return {
        "name": compiled.spec.name,
        "test_accuracy": scores.accuracy,
        "test_loss": scores.loss,
        "train_loss": last.train.get("loss") if last else None,
        "val_accuracy": (last.val or {}).get("accuracy") if last else None,
        "epochs": result.epochs_completed,
        "steps": result.steps,
        "seconds": sum(record.seconds for record in result.history),
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "checkpoint": str(result.checkpoint.weights) if result.checkpoint else None,
        "weights": str(result.weights) if result.weights else None,
        "interrupted": result.interrupted,
        "optimize": optimize.to_dict(),
    }


def _run_files(compiled: Compiled, optimize: dict[str, Any]) -> dict[str, str]:
    resolved = compiled.spec.model_dump(mode="json", exclude_none=True, serialize_as_any=True)
    resolved["optimize_resolved"] = optimize
    files = {"spec.resolved.json": json.dumps(resolved, indent=2) + "\n"}
    if not compiled.file.startswith("<"):
        files["spec.yaml"] = Path(compiled.file).read_text(encoding="utf-8")
    return files


@app.command("eval")
@user_errors
def evaluate_command(
    spec: SpecArg,
    weights: WeightsOpt,
    split: Annotated[str, typer.Option(help="test, val or train.")] = "test",
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Accuracy, per-class accuracy and the confusion matrix of trained weights."""
    from runtime.train import evaluate

    compiled = compile_spec(spec)
    with runtime_errors(compiled):
        config = train_config(compiled)
        scores = evaluate(
            build(compiled),
            config,
            compiled.graph.input_shape,
            split=split,
            device=device,
            weights=weights,
        )
    if json_out:
        print_json(_scores_json(scores, split))
        return
    _print_scores(scores, split)


def _scores_json(scores: EvalResult, split: str) -> dict[str, Any]:
    return {
        "split": split,
        "accuracy": scores.accuracy,
        "loss": scores.loss,
        "top_k": {str(k): v for k, v in scores.top_k.items()},
        "num_samples": scores.num_samples,
        "per_class_accuracy": dict(zip(scores.class_names, scores.per_class_accuracy, strict=True)),
        "confusion_matrix": scores.confusion_matrix.tolist(),
        "class_names": list(scores.class_names),
    }


def _print_scores(scores: EvalResult, split: str) -> None:
    from rich.table import Table

    stdout.print(
        f"{split}: accuracy {scores.accuracy:.2%}, loss {scores.loss:.4f} on "
        f"{scores.num_samples} images"
    )
    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("class")
    for name in scores.class_names:
        table.add_column(name, justify="right")
    table.add_column("accuracy", justify="right")
    for name, row, acc in zip(
        scores.class_names, scores.confusion_matrix.tolist(), scores.per_class_accuracy, strict=True
    ):
        table.add_row(name, *[str(v) for v in row], f"{acc:.1%}")
    stdout.print(table)


@app.command("predict")
@user_errors
def predict_command(
    spec: Annotated[
        Path,
        typer.Argument(
            help="A spec file (with --weights) or an exported artifact (.pt2, .onnx, .py).",
            show_default=False,
        ),
    ],
    images: Annotated[
        list[Path], typer.Argument(help="Image files (PNG, JPEG).", show_default=False)
    ],
    weights: Annotated[
        Path | None,
        typer.Option("--weights", "-w", help="A .safetensors file or a run directory."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="How many classes to show.")] = 3,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Classify image files with trained weights, or with an exported artifact."""
    if is_artifact(spec):
        names, probabilities = predict_artifact(spec, images, device)
    elif weights is None:
        raise typer.BadParameter("a spec needs --weights (or give an exported artifact)")
    else:
        names, probabilities = _predict_spec(spec, weights, images, device)
    rows = [
        _prediction(path, probs, names, top)
        for path, probs in zip(images, probabilities, strict=True)
    ]
    if json_out:
        print_json({"predictions": rows})
        return
    for row in rows:
        alternatives = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in row["top"])
        stdout.print(f"{row['image']}: {row['label']}  ({alternatives})", markup=False)


def _predict_spec(
    spec: Path, weights: Path, images: list[Path], device: str
) -> tuple[list[str], Any]:
    from cnnc.artifacts import resolve_weights
    from cnnc.cli.images import read_images
    from runtime.train import load_weights, predict, prepare_data

    compiled = compile_spec(spec)
    with runtime_errors(compiled):
        config = train_config(compiled)
        data = prepare_data(config, compiled.graph.input_shape)
        batch = read_images(images, tuple(data.train[0][0].shape))
        model = build(compiled)
        load_weights(model, resolve_weights(weights))
        result = predict(model, batch, preprocess=data.preprocess, device=device)
    return list(data.class_names), result.probabilities


def _prediction(path: Path, probs: Any, names: list[str], top: int) -> dict[str, Any]:
    values, indices = probs.topk(min(top, len(names)))
    return {
        "image": str(path),
        "label": names[int(indices[0])],
        "top": [
            {"label": names[int(i)], "probability": float(v)}
            for v, i in zip(values, indices, strict=True)
        ],
    }
