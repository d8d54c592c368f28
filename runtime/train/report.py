"""Console output for ``fit``: a live progress bar on a terminal, plain lines otherwise.

On a TTY each epoch shows a rich progress bar with loss, accuracy and images/s that
disappears when the epoch ends, leaving one Keras-style line::

    Epoch 3/10 - 0.4s - loss: 0.1234 - accuracy: 0.9650 - val_loss: 0.1000 - val_accuracy: 0.9700 - lr: 1.0e-03 - 5123 img/s

When stdout is piped or redirected only those lines are written (no bar redraws), plus
one progress line every ``every`` seconds inside long epochs, so logs stay readable. The
runtime never prints; the caller passes a ``ConsoleReporter``.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from runtime.train.events import Callback, EpochRecord, FitInfo, StepInfo, TrainResult

__all__ = ["ConsoleReporter", "epoch_line"]


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def epoch_line(record: EpochRecord, epochs: int) -> str:
    """``Epoch 3/10 - 0.4s - loss: … - val_accuracy: … - lr: … - N img/s``."""
    parts = [f"Epoch {record.epoch}/{epochs}", f"{record.seconds:.1f}s"]
    parts += [f"{key}: {_number(value)}" for key, value in record.train.items()]
    parts += [f"val_{key}: {_number(value)}" for key, value in (record.val or {}).items()]
    parts += [f"lr: {record.lr:.1e}", f"{record.images_per_s:.0f} img/s"]
    return " - ".join(parts)


class ConsoleReporter(Callback):
    """Prints training progress to a rich ``Console`` (stdout by default).

    Args:
        console: Where to print; its ``is_terminal`` decides between bar and plain lines.
        progress: Force the live bar on or off; None follows ``console.is_terminal``.
        every: Without the bar, seconds between progress lines inside an epoch.
    """

    def __init__(
        self, console: Console | None = None, *, progress: bool | None = None, every: float = 30.0
    ) -> None:
        self.console = console or Console()
        self.live = self.console.is_terminal if progress is None else progress
        self.every = every
        self.epochs = 0
        self.started = time.perf_counter()
        self._last_line = self.started
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def on_fit_start(self, info: FitInfo) -> None:
        self.epochs = info.epochs
        self.started = self._last_line = time.perf_counter()
        where = f" -> {info.run_dir}" if info.run_dir is not None else ""
        processes = f" x {info.world_size} processes" if info.world_size > 1 else ""
        self._print(
            f"Training on {info.device}{processes}: {info.num_train} train / {info.num_val} "
            f"validation images, batch {info.batch_size}, {info.steps_per_epoch} steps/epoch, "
            f"{info.epochs} epochs{where}"
        )
        if info.resumed:
            self._print(f"Resuming at epoch {info.start_epoch}, step {info.start_step}")

    def on_epoch_start(self, epoch: int, info: FitInfo) -> None:
        if not self.live:
            return
        self._stop_bar()
        self._progress = Progress(
            TextColumn("Epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[accuracy]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train",
            total=info.steps_per_epoch,
            epoch=f"{epoch}/{info.epochs}",
            loss="-",
            accuracy="-",
            speed="-",
        )

    def on_step_end(self, step: StepInfo) -> None:
        if self._progress is None or self._task is None:
            self._plain_progress(step)
            return
        accuracy = step.running.get("accuracy")
        self._progress.update(
            self._task,
            completed=step.batch,
            loss=_number(step.running["loss"]),
            accuracy="-" if accuracy is None else f"{accuracy:.4f}",
            speed=f"{step.images_per_s:.0f}",
        )

    def _plain_progress(self, step: StepInfo) -> None:
        now = time.perf_counter()
        if self.live or now - self._last_line < self.every or step.batch == step.batches:
            return
        self._last_line = now
        running = " - ".join(f"{key}: {_number(value)}" for key, value in step.running.items())
        self._print(
            f"Epoch {step.epoch}/{self.epochs} - step {step.batch}/{step.batches} - {running} "
            f"- {step.images_per_s:.0f} img/s"
        )

    def on_epoch_end(self, record: EpochRecord) -> None:
        self._stop_bar()
        self._last_line = time.perf_counter()
        self._print(epoch_line(record, self.epochs))

    def on_fit_end(self, result: TrainResult) -> None:
        self._stop_bar()
        seconds = time.perf_counter() - self.started
        if result.interrupted and result.checkpoint is None:
            self._print(f"Interrupted at step {result.steps}; nothing saved (no run directory)")
        elif result.interrupted:
            self._print(
                f"Interrupted at step {result.steps}: checkpoint saved in {result.run_dir}; "
                f"resume with resume={result.run_dir}"
            )
        elif result.weights is not None:
            self._print(f"Done in {seconds:.1f}s. Weights: {result.weights}")
        else:
            self._print(f"Done in {seconds:.1f}s.")

    def on_exception(self, error: BaseException) -> None:
        self._stop_bar()

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._task = None, None
