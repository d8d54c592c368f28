"""Loss, optimizer and learning-rate schedule, built from their configs.

Schedules are torch's own classes, stepped once per batch: epoch-based options
(``step_size``, ``warmup_epochs``) are converted to steps here, so a schedule advances
smoothly within an epoch and a run resumed mid-epoch continues on the same curve.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import lr_scheduler

from runtime.train.config import (
    SGD,
    AdamW,
    CosineAnnealingLR,
    CrossEntropyLoss,
    LossConfig,
    NLLLoss,
    OneCycleLR,
    OptimizerConfig,
    SchedulerConfig,
    StepLR,
    TrainConfig,
)

if TYPE_CHECKING:
    from runtime.optimize.step import StepOptions

__all__ = ["ClassificationLoss", "build_loss", "build_optimizer", "build_scheduler"]


class ClassificationLoss(nn.Module):
    """(outputs (B, K), labels (B,) int64) -> mean loss; ``mse`` compares with one-hot labels."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        if isinstance(self.config, CrossEntropyLoss):
            return F.cross_entropy(outputs, labels, label_smoothing=self.config.label_smoothing)
        if isinstance(self.config, NLLLoss):
            return F.nll_loss(outputs, labels)
        target = F.one_hot(labels, num_classes=outputs.shape[1]).to(outputs.dtype)  # (B, K)
        return F.mse_loss(outputs, target)


def build_loss(config: LossConfig) -> ClassificationLoss:
    """The loss module named by ``config``."""
    return ClassificationLoss(config)


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """An optimizer over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(config, SGD):
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            dampening=config.dampening,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
        )
    adam = torch.optim.AdamW if isinstance(config, AdamW) else torch.optim.Adam
    return adam(
        params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: SchedulerConfig, epochs: int, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """The schedule of ``config`` over ``epochs * steps_per_epoch`` optimizer steps."""
    total = epochs * steps_per_epoch
    if isinstance(config, OneCycleLR):  # it warms up by itself
        return _main_schedule(optimizer, config, total, 0, steps_per_epoch)
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    main = _main_schedule(optimizer, config, total, warmup, steps_per_epoch)
    if warmup <= 0:
        return main
    ramp = lr_scheduler.LinearLR(
        optimizer, start_factor=config.warmup_start_factor, end_factor=1.0, total_iters=warmup
    )
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _main_schedule(
    optimizer: torch.optim.Optimizer,
    config: SchedulerConfig,
    total: int,
    warmup: int,
    steps_per_epoch: int,
) -> lr_scheduler.LRScheduler:
    if isinstance(config, StepLR):
        return lr_scheduler.StepLR(
            optimizer, step_size=config.step_size * steps_per_epoch, gamma=config.gamma
        )
    if isinstance(config, CosineAnnealingLR):
        return lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, total - warmup), eta_min=config.eta_min
        )
    if isinstance(config, OneCycleLR):
        max_lr = config.max_lr or optimizer.param_groups[0]["lr"]
        # Cycling momentum would switch momentum on for plain SGD (momentum=0).
        cycle = optimizer.defaults.get("momentum", 1.0) != 0
        return lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=max(2, total),
            pct_start=config.pct_start,
            cycle_momentum=cycle,
        )
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def step_options(config: TrainConfig, steps_per_epoch: int) -> StepOptions:
    """What ``config``'s run adds around forward and backward, for the tuner to time the
    step ``fit`` will run (its optimizer, loss, clipping and schedule)."""
    from runtime.optimize.step import StepOptions

    return StepOptions(
        optimizer=functools.partial(build_optimizer, config=config.optimizer),
        loss=build_loss(config.loss),
        clip_grad_norm=config.clip_grad_norm,
        scheduler=functools.partial(_scheduler_of, config=config, steps_per_epoch=steps_per_epoch),
    )


def _scheduler_of(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    return build_scheduler(optimizer, config.scheduler, config.epochs, steps_per_epoch)
