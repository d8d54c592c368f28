"""What ``fit`` tells the outside world: the callback interface and the records it passes.

The runtime never prints or plots by itself; everything a user sees (progress bars, epoch
lines, metrics files, TensorBoard) is a ``Callback`` reacting to these records. Under DDP
callbacks run on rank 0 only, and every number they receive is global (all processes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.train.checkpoint import Checkpoint

__all__ = ["Callback", "EpochRecord", "FitInfo", "StepInfo", "TrainResult"]


@dataclass(frozen=True)
class FitInfo:
    """The run about to start (or resume).

    Attributes:
        run_dir: Where logs and checkpoints go, or None when nothing is written.
        epochs: Total epochs of the run.
        steps_per_epoch: Optimizer steps per epoch.
        start_epoch: First epoch to run, 1-based (> 1 after a resume).
        start_step: Global steps already done (0 unless resumed).
        num_train: Training images.
        num_val: Validation images (0 without a validation split).
        batch_size: Global batch size.
        device: Device the model trains on, e.g. ``"cpu"`` or ``"cuda:0"``.
        world_size: Number of processes (1 without DDP).
        history: Records of the epochs finished before a resume.
    """

    run_dir: Path | None
    epochs: int
    steps_per_epoch: int
    start_epoch: int
    start_step: int
    num_train: int
    num_val: int
    batch_size: int
    device: str
    world_size: int
    history: tuple[EpochRecord, ...] = ()

    @property
    def resumed(self) -> bool:
        return self.start_step > 0


@dataclass(frozen=True)
class StepInfo:
    """One optimizer step. ``epoch``, ``batch`` and ``step`` are 1-based.

    ``running`` holds this epoch's running averages so far (``loss``, ``accuracy``, ...).
    ``grad_norms`` maps parameter names (and ``"total"``) to gradient L2 norms before
    clipping, on logged steps when ``log_grads`` is on; otherwise it is None.
    """

    epoch: int
    batch: int
    batches: int
    step: int
    loss: float
    lr: float
    images: int
    images_per_s: float
    running: dict[str, float]
    grad_norms: dict[str, float] | None = None


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: training averages, validation scores, learning rate and speed."""

    epoch: int
    step: int
    train: dict[str, float]
    val: dict[str, float] | None
    lr: float
    seconds: float
    images_per_s: float

    def flat(self) -> dict[str, float | int]:
        """``{"epoch", "step", "train_loss", "val_accuracy", "lr", ...}`` for logs."""
        row: dict[str, float | int] = {"epoch": self.epoch, "step": self.step}
        row.update({f"train_{key}": value for key, value in self.train.items()})
        row.update({f"val_{key}": value for key, value in (self.val or {}).items()})
        row.update({"lr": self.lr, "seconds": self.seconds, "images_per_s": self.images_per_s})
        return row

    def to_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "train": dict(self.train),
            "val": None if self.val is None else dict(self.val),
            "lr": self.lr,
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochRecord:
        return cls(**state)


@dataclass
class TrainResult:
    """What ``fit`` returns.

    Attributes:
        run_dir: The run directory, or None when nothing was written.
        history: One record per finished epoch, including those before a resume.
        step_losses: The loss of every step this call ran (global mean under DDP).
        steps: Global steps done in total.
        interrupted: True when Ctrl-C stopped training (a checkpoint was saved first).
        checkpoint: The newest checkpoint written, or None.
        weights: The final weights file (``model.safetensors``), or None.
    """

    run_dir: Path | None
    history: list[EpochRecord] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    steps: int = 0
    interrupted: bool = False
    checkpoint: Checkpoint | None = None
    weights: Path | None = None

    @property
    def epochs_completed(self) -> int:
        return self.history[-1].epoch if self.history else 0

    @property
    def last(self) -> EpochRecord | None:
        return self.history[-1] if self.history else None


class Callback:
    """Base class of everything that watches training; override the hooks you need."""

    def on_fit_start(self, info: FitInfo) -> None:
        """Before the first step (after data, model and resume state are ready)."""

    def on_epoch_start(self, epoch: int, info: FitInfo) -> None:
        """Before an epoch's first step; ``epoch`` is 1-based."""

    def on_step_end(self, step: StepInfo) -> None:
        """After each optimizer step."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        """After an epoch's validation, before its checkpoint is written."""

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        """After a checkpoint was written completely."""

    def on_fit_end(self, result: TrainResult) -> None:
        """When training finished or was interrupted with Ctrl-C."""

    def on_exception(self, error: BaseException) -> None:
        """When ``fit`` is about to raise ``error``."""
