"""``fit``: the training loop a tutorial writes by hand, with the parts tutorials leave out.

Each step is ``zero_grad(set_to_none=True)`` -> forward -> loss -> backward -> (clip) ->
``optimizer.step()`` -> ``scheduler.step()``. Around it: a seed for everything random,
validation after each epoch, a NaN/inf check that stops before the bad step is applied,
atomic checkpoints, exact resume, Ctrl-C that saves before exiting, and DDP when launched
under torchrun. One host sync per step reads the loss (plus, under DDP, one all-reduce
that carries the loss and the stop flags, so all processes stop at the same step).
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

import numpy as np
import torch
from torch import Tensor

from runtime.errors import RuntimeFailure, TrainingError
from runtime.optimize.config import EAGER, OptimizeConfig
from runtime.train.checkpoint import Checkpoint, capture_rng, find_checkpoint, save_weights
from runtime.train.config import TrainConfig
from runtime.train.data import DataSplits
from runtime.train.distributed import setup, teardown
from runtime.train.evaluation import score
from runtime.train.events import Callback, EpochRecord, FitInfo, StepInfo, TrainResult
from runtime.train.metrics import Totals
from runtime.train.session import Session, open_run_dir, open_session, resume_state

__all__ = ["fit", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seeds Python's, numpy's and torch's (CPU and CUDA) global RNGs.

    Call it before building the model so its initial weights are reproducible too.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _StopFlag:
    """Set by the first Ctrl-C; the loop saves and stops at the end of the current step."""

    requested = False


@contextlib.contextmanager
def _catch_sigint() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.requested:  # a second Ctrl-C stops at once, without saving
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _Trainer:
    """Runs the epochs of one ``Session`` and reports to its callbacks."""

    def __init__(self, session: Session, stop: _StopFlag, log_grads: bool) -> None:
        self.s = session
        self.stop = stop
        self.log_grads = log_grads
        self.config = session.config
        self.device = session.context.device
        self.totals = Totals(self.config.top_k, self.device)
        self.result = TrainResult(session.run_dir, history=session.history)
        self.grad_norms: dict[str, float] | None = None
        self.saved_step: int | None = None
        self.started = time.perf_counter()
        self.images = 0

    def _emit(self, hook: str, *args: object) -> None:
        for callback in self.s.callbacks:
            getattr(callback, hook)(*args)

    def run(self) -> TrainResult:
        s = self.s
        info = FitInfo(
            run_dir=s.run_dir,
            epochs=self.config.epochs,
            steps_per_epoch=s.steps_per_epoch,
            start_epoch=s.position.epoch + 1,
            start_step=s.position.step,
            num_train=len(s.data.train),
            num_val=len(s.data.val) if s.data.val is not None else 0,
            batch_size=self.config.batch_size,
            device=str(self.device),
            world_size=s.context.world_size,
            history=tuple(s.history),
        )
        self._emit("on_fit_start", info)
        while s.position.epoch < self.config.epochs:
            self._emit("on_epoch_start", s.position.epoch + 1, info)
            if self._train_epoch() or self._finish_epoch():
                self.result.interrupted = True
                if self.saved_step != s.position.step:
                    self._save()
                break
        if not self.result.interrupted and s.run_dir is not None and s.context.is_main:
            self.result.weights = s.run_dir / "model.safetensors"
            save_weights(s.model, self.result.weights, {"step": str(s.position.step)})
        self.result.steps = s.position.step
        self._emit("on_fit_end", self.result)
        return self.result

    def _train_epoch(self) -> bool:
        """Trains the rest of the current epoch; True when a stop was requested."""
        s, pos = self.s, self.s.position
        per_rank = self.config.batch_size // s.context.world_size
        s.sampler.set_position(pos.epoch, skip=pos.batch * per_rank)
        self.totals = Totals(self.config.top_k, self.device)
        if pos.batch and s.totals_state is not None:
            self.totals.load(s.totals_state)  # the part of this epoch run before the resume
        s.totals_state = None
        s.network.train()
        self.started, self.images = time.perf_counter(), 0
        for images, labels in s.loader:
            x = images.to(self.device, non_blocking=True)
            y = labels.to(self.device, non_blocking=True)
            x = s.data.preprocess(x, self._augment_generator())
            loss, stop = self._step(x, y)
            pos.batch += 1
            pos.step += 1
            self.images += len(y) * s.context.world_size
            self.result.step_losses.append(loss)
            if self._report_step(loss) or stop:
                return True
        return False

    def _augment_generator(self) -> torch.Generator | None:
        if not self.config.augment:
            return None
        # A fresh stream per (seed, step, rank): reproducible, and exact after a resume.
        seed = hash((self.config.seed, self.s.position.step, self.s.context.rank)) % 2**62
        return torch.Generator().manual_seed(seed)

    def _step(self, x: Tensor, y: Tensor) -> tuple[float, bool]:
        """The session's ``TrainStep``, with this loop's checks before and after backward."""
        sync: list[tuple[float, bool]] = []

        def inspect(loss: Tensor) -> None:
            value, stop, bad = self._sync(loss)
            if bad:
                raise self._nonfinite(value)
            sync.append((value, stop))

        def after_backward() -> None:
            self.grad_norms = self._grad_norms() if self._logs_grads() else None
            self.s.step_lr = self._lr()  # the lr this step uses; the scheduler moves it next

        step = self.s.step
        assert step is not None
        step.inspect, step.after_backward = inspect, after_backward
        loss, outputs = step(x, y)
        self.totals.add(loss, outputs, y)
        return sync[0]

    def _sync(self, loss: Tensor) -> tuple[float, bool, bool]:
        """(global mean loss, stop requested anywhere, loss non-finite anywhere)."""
        context = self.s.context
        if not context.enabled:
            value = loss.item()
            return value, self.stop.requested, not math.isfinite(value)
        detached = loss.detach().double()
        stop = torch.tensor(float(self.stop.requested), dtype=torch.float64, device=self.device)
        control = torch.stack([detached, stop, detached.isfinite().logical_not().double()])
        total, stops, bads = context.all_reduce_sum(control).tolist()
        return total / context.world_size, stops > 0, bads > 0

    def _nonfinite(self, value: float) -> TrainingError:
        pos = self.s.position
        kept = self.result.checkpoint or self.s.resumed_from
        where = "no checkpoint had been written yet"
        if kept is not None:
            where = f"the last good checkpoint (step {kept.step}) is kept in {kept.weights.parent}"
        return TrainingError(
            f"The loss became {value} at step {pos.step + 1} (epoch {pos.epoch + 1}, batch "
            f"{pos.batch + 1}); the step was not applied. A finite loss was expected. "
            f"Received: loss={value}, lr={self._lr():.3g}.",
            hint="lower optimizer.lr, set clip_grad_norm, or check the data for NaN/inf; " + where,
        )

    def _logs_grads(self) -> bool:
        return self.log_grads and (self.s.position.step + 1) % self.config.log_every == 0

    def _grad_norms(self) -> dict[str, float]:
        named = [(n, p.grad) for n, p in self.s.model.named_parameters() if p.grad is not None]
        norms = torch.stack([grad.detach().float().norm() for _, grad in named])  # (P,)
        values = [norms.norm().item(), *norms.tolist()]
        return dict(zip(["total", *(name for name, _ in named)], values, strict=True))

    def _lr(self) -> float:
        return float(self.s.optimizer.param_groups[0]["lr"])

    def _step_lr(self) -> float:
        return self.s.step_lr if self.s.step_lr is not None else self._lr()

    def _report_step(self, loss: float) -> bool:
        """Calls on_step_end; a KeyboardInterrupt raised by a callback counts as a stop."""
        if not self.s.callbacks:
            return False
        pos = self.s.position
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        info = StepInfo(
            epoch=pos.epoch + 1,
            batch=pos.batch,
            batches=self.s.steps_per_epoch,
            step=pos.step,
            loss=loss,
            lr=self._step_lr(),
            images=self.images,
            images_per_s=self.images / elapsed,
            running=self.totals.summary(self.config.metrics),
            grad_norms=self.grad_norms,
        )
        try:
            self._emit("on_step_end", info)
        except KeyboardInterrupt:
            # Like Ctrl-C; under DDP the other processes learn of it at the next step's sync.
            self.stop.requested = True
            return not self.s.context.enabled
        return False

    def _finish_epoch(self) -> bool:
        """Validates, records and checkpoints the finished epoch; True when a stop was asked."""
        s, pos = self.s, self.s.position
        seconds = time.perf_counter() - self.started
        train = Totals(self.config.top_k, self.device)
        train.values = s.context.all_reduce_sum(self.totals.values.clone())
        val = None
        if s.val_loader is not None:
            scores = score(
                s.model, s.val_loader, s.data.preprocess, s.loss_fn, s.data.class_names,
                self.config.top_k, self.device, s.context,
            )  # fmt: skip
            val = {k: v for k, v in scores.as_dict().items() if self._wanted(k)}
        record = EpochRecord(
            pos.epoch + 1, pos.step, train.summary(self.config.metrics), val, self._step_lr(),
            seconds, self.images / max(seconds, 1e-9),
        )  # fmt: skip
        s.history.append(record)
        pos.epoch, pos.batch = pos.epoch + 1, 0
        self._emit("on_epoch_end", record)
        if pos.epoch % self.config.checkpoint_every == 0 or pos.epoch == self.config.epochs:
            self._save()
        return self._agree(self.stop.requested) and pos.epoch < self.config.epochs

    def _wanted(self, key: str) -> bool:
        return key == "loss" or key in self.config.metrics

    def _agree(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any."""
        if not self.s.context.enabled:
            return flag
        votes = torch.tensor([float(flag)], device=self.device)
        return bool(self.s.context.all_reduce_sum(votes).item() > 0)

    def _save(self) -> None:
        """Writes a checkpoint on rank 0; any failure there is raised on every process."""
        s = self.s
        if s.manager is None:
            return
        totals = None
        if s.position.batch:  # mid-epoch: keep the epoch's global sums so far
            totals = s.context.all_reduce_sum(self.totals.values.clone()).tolist()
        checkpoint: Checkpoint | None = None
        failure: RuntimeFailure | None = None
        if s.context.is_main:
            try:
                state = resume_state(s, totals, capture_rng())
                checkpoint = s.manager.save(s.model, state, s.position.step)
            except RuntimeFailure as error:
                failure = error
        failure = s.context.broadcast(failure)
        if failure is not None:
            raise failure
        self.saved_step = s.position.step
        if checkpoint is not None:
            self.result.checkpoint = checkpoint
            self._emit("on_checkpoint", checkpoint)


def fit(
    model: torch.nn.Module,
    config: TrainConfig,
    input_shape: Sequence[int],
    *,
    device: str | torch.device = "auto",
    run_dir: str | Path | None = None,
    run_name: str | None = None,
    runs_root: str | Path = "runs",
    run_files: Mapping[str, str | bytes] | None = None,
    resume: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    log_grads: bool = False,
    tensorboard: bool = False,
    optimize: OptimizeConfig = EAGER,
    data: DataSplits | None = None,
) -> TrainResult:
    """Trains ``model`` in place as ``config`` says.

    Args:
        model: Any module mapping (B, *input_shape) images to (B, num_classes) scores.
        config: Data, loss, optimizer, schedule and bookkeeping; validated first.
        input_shape: The model's input without the batch dimension: (C, H, W), or
            (features,) with ``dataset.flatten`` or synthetic data.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; under torchrun
            each process takes ``cuda:LOCAL_RANK``.
        run_dir: Directory for logs, checkpoints and final weights. With neither run_dir,
            run_name nor resume, nothing is written to disk.
        run_name: Allocate a fresh ``<runs_root>/<run_name>/<n>/`` instead of run_dir.
        runs_root: Parent of run_name directories.
        run_files: Extra files written into the run directory first, e.g.
            ``{"spec.yaml": resolved_spec}``.
        resume: A run directory (or its ``checkpoints/``) to continue from; training goes
            on exactly where it stopped, in that directory unless run_dir says otherwise.
        callbacks: Observers, e.g. ``ConsoleReporter()``; called on rank 0 only.
        log_grads: Report per-parameter gradient norms every ``log_every`` steps.
        tensorboard: Also write TensorBoard event files (needs the tensorboard package).
        optimize: How to run the training step (channels-last, autocast, torch.compile,
            rewrites, ...); see ``runtime.optimize``. Evaluation always runs in fp32 eager.
        data: The dataset of ``config``, when the caller has loaded it already (from
            ``prepare_data``); otherwise it is loaded here.

    Returns:
        History, per-step losses, final weights path; ``interrupted`` after Ctrl-C.

    Raises:
        ConfigError: An invalid option, or a model that does not fit the data.
        DataError: The dataset is missing, unreadable, or its images do not fit the model.
        CheckpointError: A checkpoint cannot be written, read, or does not fit the model.
        TrainingError: The loss became NaN or infinite.
    """
    context = setup(device)
    clean = False
    try:
        seed_everything(config.seed)
        checkpoint = find_checkpoint(resume) if resume is not None else None
        path = open_run_dir(context, run_dir, run_name, runs_root, checkpoint, run_files or {})
        session = open_session(
            model, config, input_shape, context, run_dir=path, resume=checkpoint,
            callbacks=callbacks, tensorboard=tensorboard, optimize=optimize, data=data,
        )  # fmt: skip
        with _catch_sigint() as stop:
            trainer = _Trainer(session, stop, log_grads)
            try:
                result = trainer.run()
            except BaseException as error:
                trainer._emit("on_exception", error)
                raise
        clean = True
        return result
    finally:
        teardown(context, clean=clean)
        if optimize.cache_memory:
            from runtime.memory import empty_cache

            empty_cache()  # the step's cached buffers are no use after training
