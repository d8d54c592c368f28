"""The training step: the one ``fit`` runs and ``auto`` and ``cnnc bench`` time.

zero_grad -> forward -> loss -> (inspect) -> backward -> (clip) -> optimizer step ->
(scheduler step), under the prepared configuration's contexts (autocast, the caching
allocator) and, in fp16, a GradScaler. ``fit`` adds its bookkeeping through two hooks:
``inspect`` sees the loss before backward (the host sync, the NaN check, DDP's stop vote)
and ``after_backward`` sees the gradients (their norms for the logs). ``StepOptions`` holds
what a run adds around forward and backward, so the tuner times a run's own step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from runtime.optimize.prepare import Prepared

LossFn = Callable[[Tensor, Tensor], Tensor]


def _sgd(model: nn.Module) -> Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


@dataclass(frozen=True)
class StepOptions:
    """What surrounds forward and backward in a run: optimizer, loss, clipping, schedule.

    The defaults (SGD with momentum, cross-entropy, nothing else) are what ``cnnc bench``
    times for a spec without a ``train:`` section.
    """

    optimizer: Callable[[nn.Module], Optimizer] = _sgd
    loss: LossFn = F.cross_entropy
    clip_grad_norm: float | None = None
    scheduler: Callable[[Optimizer], LRScheduler] | None = None


def make_scaler(prepared: Prepared) -> torch.amp.GradScaler | None:
    """A GradScaler when the configuration trains in fp16 (bf16 needs none)."""
    if prepared.config.amp != "fp16":
        return None
    return torch.amp.GradScaler(prepared.device.type)


class TrainStep:
    """One optimizer step on a batch, under one prepared configuration."""

    def __init__(
        self,
        prepared: Prepared,
        optimizer: Optimizer,
        loss_fn: LossFn,
        *,
        clip_grad_norm: float | None = None,
        scheduler: LRScheduler | None = None,
        inspect: Callable[[Tensor], None] | None = None,
        after_backward: Callable[[], None] | None = None,
    ) -> None:
        self.prepared = prepared
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.clip_grad_norm = clip_grad_norm
        self.scheduler = scheduler
        self.inspect = inspect
        self.after_backward = after_backward
        self.scaler = make_scaler(prepared)

    @classmethod
    def of(cls, prepared: Prepared, options: StepOptions) -> TrainStep:
        """A step with its own optimizer and schedule, built from ``options``."""
        optimizer = options.optimizer(prepared.eager_model)
        scheduler = options.scheduler(optimizer) if options.scheduler is not None else None
        return cls(
            prepared, optimizer, options.loss, clip_grad_norm=options.clip_grad_norm,
            scheduler=scheduler,
        )  # fmt: skip

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One step on batch (x, y); returns the loss and the outputs (B, K), detached.

        An exception from ``inspect`` leaves the parameters as they were.
        """
        prepared = self.prepared
        with prepared.memory():
            x = prepared.input(x)
            y = y.to(prepared.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with prepared.autocast():
                outputs = prepared.run(x)  # (B, K)
                loss = self.loss_fn(outputs, y)
            if self.inspect is not None:
                self.inspect(loss)
            self._backward(loss)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            return loss.detach(), outputs.detach()

    def _backward(self, loss: Tensor) -> None:
        """Gradients, unscaled where anything reads them, then clipped if asked."""
        reads_grads = self.after_backward is not None or self.clip_grad_norm is not None
        if self.scaler is not None:
            torch.autograd.backward(self.scaler.scale(loss))
            if reads_grads:
                self.scaler.unscale_(self.optimizer)
        else:
            torch.autograd.backward(loss)
        if self.after_backward is not None:
            self.after_backward()
        if self.clip_grad_norm is not None:
            params = self.prepared.eager_model.parameters()
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
