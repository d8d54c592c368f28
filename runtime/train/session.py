"""Everything a training run needs, built and checked before the first step.

``open_session`` loads and checks the data, checks that the model's output fits the
classes, builds loss, optimizer, schedule and loaders, restores a checkpoint when resuming,
and wraps the model for DDP. Every check that can fail on user input runs here, so a bad
option fails in seconds, not after an epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from runtime.errors import CheckpointError, ConfigError
from runtime.optimize.config import EAGER, OptimizeConfig
from runtime.optimize.prepare import Prepared, prepare
from runtime.optimize.step import TrainStep
from runtime.train.checkpoint import (
    Checkpoint,
    CheckpointManager,
    atomic_write,
    load_weights,
    restore_rng,
)
from runtime.train.config import TrainConfig
from runtime.train.data import (
    DataSplits,
    EpochSampler,
    ShardSampler,
    check_batch_size,
    make_loader,
    prepare_data,
)
from runtime.train.distributed import DistContext
from runtime.train.events import Callback, EpochRecord
from runtime.train.logs import MetricsLogger, TensorBoardLogger, new_run_dir, require_tensorboard
from runtime.train.optim import build_loss, build_optimizer, build_scheduler

__all__ = ["Position", "Session", "open_session"]

Shape = tuple[int, ...]
Loader = DataLoader[tuple[Tensor, Tensor]]
_EVAL_BATCH = 256


@dataclass
class Position:
    """Where training stands: ``epoch`` (0-based) in progress, ``batch`` steps into it."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


@dataclass
class Session:
    """A run ready to train; ``network`` is what forward/backward use (DDP-wrapped or not)."""

    config: TrainConfig
    context: DistContext
    model: nn.Module
    network: nn.Module
    data: DataSplits
    loss_fn: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler
    sampler: EpochSampler
    loader: Loader
    val_loader: Loader | None
    steps_per_epoch: int
    run_dir: Path | None
    manager: CheckpointManager | None
    callbacks: list[Callback]
    position: Position = field(default_factory=Position)
    history: list[EpochRecord] = field(default_factory=list)
    prepared: Prepared | None = None
    step: TrainStep | None = None  # what each batch runs: the step auto and bench time
    totals_state: list[float] | None = None
    resumed_from: Checkpoint | None = None
    step_lr: float | None = None  # the lr the last step used


def check_outputs(
    model: nn.Module, input_shape: Shape, num_classes: int, device: torch.device
) -> None:
    """Runs two blank samples through the model: it must return (2, K), K >= num_classes."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            outputs = model(torch.zeros((2, *input_shape), device=device))
    except Exception as error:
        raise ConfigError(
            f"The model failed on a batch of shape (2, {', '.join(map(str, input_shape))}). "
            f"A model taking input_shape {list(input_shape)} was expected. Received: "
            f"{type(error).__name__}: {error}.",
            hint="check the model's input shape against the dataset's images",
        ) from error
    finally:
        model.train(was_training)
    if not isinstance(outputs, Tensor) or outputs.dim() != 2 or outputs.shape[1] < num_classes:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ConfigError(
            f"The model's output does not fit the dataset's {num_classes} classes. An output "
            f"of shape (batch, {num_classes}) was expected. Received: {shape}.",
            hint=f"end the model with a layer of {num_classes} outputs",
        )


def _observers(
    config: TrainConfig, context: DistContext, run_dir: Path | None, tensorboard: bool
) -> list[Callback]:
    """The run directory's loggers (rank 0 only); a missing tensorboard fails on every rank."""
    if tensorboard:
        require_tensorboard()
        if run_dir is None:
            raise ConfigError(
                "TensorBoard needs a run directory. run_dir or run_name was expected. "
                "Received: run_dir=None.",
                field="tensorboard",
            )
    if not context.is_main or run_dir is None:
        return []
    observers: list[Callback] = [MetricsLogger(run_dir, config.log_every)]
    if tensorboard:
        observers.append(TensorBoardLogger(run_dir, config.log_every))
    return observers


def _loaders(
    config: TrainConfig, data: DataSplits, context: DistContext
) -> tuple[EpochSampler, Loader, Loader | None]:
    """Training sampler and loader (per-process batch) and the sharded validation loader."""
    per_rank = config.batch_size // context.world_size
    sampler = EpochSampler(
        data.train, seed=config.seed, rank=context.rank, world_size=context.world_size
    )
    pin = context.device.type == "cuda"
    workers = config.num_workers
    loader = make_loader(data.train, sampler, per_rank, num_workers=workers, pin_memory=pin)
    if data.val is None:
        return sampler, loader, None
    val_sampler = ShardSampler(len(data.val), context.rank, context.world_size)
    eval_batch = config.eval_batch_size or max(per_rank, _EVAL_BATCH)
    val_loader = make_loader(data.val, val_sampler, eval_batch, num_workers=workers, pin_memory=pin)
    return sampler, loader, val_loader


def open_session(
    model: nn.Module,
    config: TrainConfig,
    input_shape: Sequence[int],
    context: DistContext,
    *,
    run_dir: Path | None,
    resume: Checkpoint | None,
    callbacks: Sequence[Callback],
    tensorboard: bool,
    optimize: OptimizeConfig = EAGER,
    data: DataSplits | None = None,
) -> Session:
    """Builds and checks everything; restores ``resume`` when given. See module docstring.

    ``data`` is the dataset of ``config`` when the caller has loaded it already."""
    input_shape = check_input_shape(input_shape)
    observers = _observers(config, context, run_dir, tensorboard)
    data = data or prepare_data(config, input_shape)
    check_batch_size(config.batch_size, len(data.train), context.world_size)
    model.to(context.device)
    check_outputs(model, input_shape, data.num_classes, context.device)
    sampler, loader, val_loader = _loaders(config, data, context)
    steps_per_epoch = math.ceil(
        sampler.samples_per_epoch / (config.batch_size // context.world_size)
    )
    optimizer = build_optimizer(model, config.optimizer)
    session = Session(
        config=config,
        context=context,
        model=model,
        network=model,
        data=data,
        loss_fn=build_loss(config.loss),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.scheduler, config.epochs, steps_per_epoch),
        sampler=sampler,
        loader=loader,
        val_loader=val_loader,
        steps_per_epoch=steps_per_epoch,
        run_dir=run_dir,
        manager=CheckpointManager(run_dir / "checkpoints") if run_dir is not None else None,
        callbacks=[*observers, *callbacks] if context.is_main else [],
    )
    if resume is not None:
        restore(session, resume)
    session.prepared = prepare(model, optimize, context.device, wrap=context.wrap)
    session.network = session.prepared.model
    session.step = TrainStep(
        session.prepared, optimizer, session.loss_fn, clip_grad_norm=config.clip_grad_norm,
        scheduler=session.scheduler,
    )  # fmt: skip
    return session


def data_identity(session: Session) -> dict[str, int]:
    """What fixes the order of batches; a run resumed mid-epoch must match it exactly."""
    return {
        "seed": session.config.seed,
        "batch_size": session.config.batch_size,
        "num_train": len(session.data.train),
    }


def restore(session: Session, checkpoint: Checkpoint) -> None:
    """Loads weights, optimizer, schedule, RNG states and position from ``checkpoint``."""
    load_weights(session.model, checkpoint.weights)
    state = checkpoint.load_state()
    position = Position(state["epoch"], state["batch"], state["step"])
    identity = data_identity(session)
    if position.batch and state["data"] != identity:
        raise CheckpointError(
            "The checkpoint was taken mid-epoch with another batch order. The same seed, "
            f"batch_size and training set were expected. Received: checkpoint {state['data']}, "
            f"now {identity}.",
            hint="resume with the configuration the run started with",
            field="resume",
        )
    try:
        session.optimizer.load_state_dict(state["optimizer"])
        session.scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"The optimizer state in {checkpoint.state} does not fit this run. The optimizer "
            f"and schedule the run started with were expected. Received: {error}.",
            hint="resume with the configuration the run started with",
            field="resume",
        ) from error
    restore_rng(state["rng"])
    session.position = position
    session.history = [EpochRecord.from_state(r) for r in state["history"]]
    session.totals_state = state["totals"] if session.context.is_main else None
    session.step_lr = state["step_lr"]
    session.resumed_from = checkpoint


def resume_state(
    session: Session, totals: list[float] | None, rng: dict[str, Any]
) -> dict[str, Any]:
    """The resume state saved next to the weights; see ``checkpoint.py`` for the format."""
    return {
        "format": 1,
        "epoch": session.position.epoch,
        "batch": session.position.batch,
        "step": session.position.step,
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "rng": rng,
        "data": data_identity(session),
        "totals": totals,
        "step_lr": session.step_lr,
        "history": [record.to_state() for record in session.history],
    }


def open_run_dir(
    context: DistContext, run_dir: str | Path | None, run_name: str | None, runs_root: str | Path,
    resume: Checkpoint | None, run_files: Mapping[str, str | bytes],
) -> Path | None:  # fmt: skip
    """The run's directory (given, a fresh ``<runs_root>/<run_name>/<n>``, or the resumed
    run's), created with ``run_files`` written in it on rank 0; None: nothing is written."""
    if run_dir is None and run_name is not None:
        # Only rank 0 allocates runs/<name>/<n>; the others learn which n it took.
        run_dir = context.broadcast(new_run_dir(run_name, runs_root) if context.is_main else None)
    if run_dir is None and resume is not None:
        run_dir = resume.weights.parent.parent  # <run>/checkpoints/step-N.safetensors
    if run_dir is None:
        return None
    path = Path(run_dir)
    if context.is_main:
        path.mkdir(parents=True, exist_ok=True)
        for name, content in run_files.items():
            atomic_write(path / name, content.encode() if isinstance(content, str) else content)
    return path


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    if len(input_shape) == 0 or min(input_shape) < 1:
        raise ConfigError(
            "Invalid input_shape. [channels, height, width] (or [features]), all >= 1, was "
            f"expected. Received: {list(input_shape)}.",
            field="input_shape",
        )
    return tuple(int(size) for size in input_shape)
