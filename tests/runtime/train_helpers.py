"""Tiny models, configs and callbacks shared by the training-runtime tests.

Everything here is small on purpose: digits (1x8x8) or a few hundred synthetic samples and
models of a few thousand parameters, so one epoch takes a fraction of a second on 2 cores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from runtime.train import (
    SGD,
    Callback,
    EpochRecord,
    StepInfo,
    Synthetic,
    TrainConfig,
)
from runtime.train.checkpoint import Checkpoint

DIGITS = (1, 8, 8)


def tiny_cnn(seed: int = 0, *, channels: int = 1, size: int = 8, classes: int = 10,
             dropout: float = 0.0) -> nn.Module:  # fmt: skip
    """conv(4) -> relu -> maxpool -> flatten -> [dropout] -> linear; seeded init."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * (size // 2) ** 2, classes),
    )


def mlp(seed: int = 0, features: int = 64, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, classes))


def digits_config(**overrides: Any) -> TrainConfig:
    """Digits, 2 epochs of batch 64, SGD with momentum: ~21 steps per epoch."""
    base = TrainConfig(
        epochs=2,
        batch_size=64,
        optimizer=SGD(lr=0.05, momentum=0.9),
        log_every=5,
    )
    return base.with_(**overrides)


def synthetic_config(shape: tuple[int, ...] = DIGITS, **overrides: Any) -> TrainConfig:
    """320 synthetic samples (256 train / 64 validation), 4 classes, batch 32."""
    base = TrainConfig(
        dataset=Synthetic(num_samples=320, num_classes=4),
        epochs=2,
        batch_size=32,
        val_split=0.2,
        optimizer=SGD(lr=0.05),
        log_every=4,
    )
    return base.with_(**overrides)


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    left, right = parameters(a), parameters(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


class Recorder(Callback):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        self.steps: list[StepInfo] = []
        self.epochs: list[EpochRecord] = []
        self.checkpoints: list[Checkpoint] = []
        self.hooks: list[str] = []

    def on_fit_start(self, info: Any) -> None:
        self.hooks.append("fit_start")

    def on_step_end(self, step: StepInfo) -> None:
        self.steps.append(step)

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.epochs.append(record)

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.append(checkpoint)

    def on_fit_end(self, result: Any) -> None:
        self.hooks.append("fit_end")

    def on_exception(self, error: BaseException) -> None:
        self.hooks.append("exception")


class InterruptAt(Callback):
    """Raises KeyboardInterrupt after global step ``step``, as a Ctrl-C there would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: StepInfo) -> None:
        if step.step == self.step:
            raise KeyboardInterrupt
