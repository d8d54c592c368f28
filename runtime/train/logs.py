"""The run directory and what is logged into it: metrics.jsonl, metrics.csv, curves.png, TensorBoard.

``runs/<name>/<n>/`` is allocated with an exclusive ``mkdir`` (n = 1, 2, ...), so two runs
started at once never share a directory. ``MetricsLogger`` appends one JSON object per
logged step and per epoch to metrics.jsonl, rewrites metrics.csv (one row per epoch) and
redraws curves.png (loss and accuracy, train vs validation) at most every ``plot_every``
seconds and at the end (drawing costs ~0.1 s, more than an epoch of a small model). On resume it drops the records written after the checkpoint, so no step
appears twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError
from runtime.train.checkpoint import atomic_write
from runtime.train.events import Callback, EpochRecord, FitInfo, StepInfo, TrainResult

__all__ = [
    "MetricsLogger",
    "TensorBoardLogger",
    "new_run_dir",
    "plot_curves",
    "require_tensorboard",
]


def new_run_dir(name: str, root: str | Path = "runs") -> Path:
    """Creates and returns ``<root>/<name>/<n>`` with n one more than the largest existing."""
    parent = Path(root) / name
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in parent.iterdir() if p.name.isdigit()]
    number = max(taken, default=0) + 1
    while True:
        try:
            (parent / str(number)).mkdir()
            return parent / str(number)
        except FileExistsError:  # another run took it between listing and mkdir
            number += 1


class MetricsLogger(Callback):
    """Writes metrics.jsonl, metrics.csv and curves.png into ``run_dir``."""

    def __init__(self, run_dir: Path, log_every: int = 50, plot_every: float = 10.0) -> None:
        self.run_dir = run_dir
        self.log_every = log_every
        self.plot_every = plot_every
        self.history: list[EpochRecord] = []
        self._plotted = 0.0
        self._plotted_epochs = 0

    @property
    def jsonl(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def on_fit_start(self, info: FitInfo) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.history = list(info.history)
        self._truncate(info.start_step)
        self._plotted = time.monotonic()

    def _truncate(self, step: int) -> None:
        if not self.jsonl.exists():
            return
        kept = [
            line
            for line in self.jsonl.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        atomic_write(self.jsonl, "".join(f"{line}\n" for line in kept).encode())

    def _append(self, record: dict[str, Any]) -> None:
        with self.jsonl.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_step_end(self, step: StepInfo) -> None:
        if step.step % self.log_every:
            return
        record: dict[str, Any] = {
            "kind": "step",
            "epoch": step.epoch,
            "step": step.step,
            "loss": step.loss,
            "lr": step.lr,
            "images_per_s": step.images_per_s,
        }
        if step.grad_norms is not None:
            record["grad_norm"] = step.grad_norms
        self._append(record)

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.history.append(record)
        self._append({"kind": "epoch", **record.flat()})
        self._write_csv()
        if time.monotonic() - self._plotted >= self.plot_every:
            self._plot()

    def on_fit_end(self, result: TrainResult) -> None:
        self._plot()

    def on_exception(self, error: BaseException) -> None:
        with contextlib.suppress(Exception):  # never mask the error being raised
            self._plot()

    def _plot(self) -> None:
        if self.history and self._plotted_epochs != len(self.history):
            atomic_write(self.run_dir / "curves.png", plot_curves(self.history))
            self._plotted, self._plotted_epochs = time.monotonic(), len(self.history)

    def _write_csv(self) -> None:
        rows = [record.flat() for record in self.history]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.run_dir / "metrics.csv", buffer.getvalue().encode())


def plot_curves(history: list[EpochRecord]) -> bytes:
    """PNG bytes: loss and accuracy per epoch, train vs validation (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on an Agg canvas: no pyplot, so the caller's backend is left alone.
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    epochs = [record.epoch for record in history]
    for index, metric in enumerate(("loss", "accuracy")):
        axes = figure.add_subplot(1, 2, index + 1)
        for split in ("train", "val"):
            values = [(getattr(r, split) or {}).get(metric) for r in history]
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", label="validation" if split == "val" else split)
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def require_tensorboard() -> Any:
    """torch's ``SummaryWriter`` class; ``ConfigError`` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ConfigError(
            "TensorBoard logging needs the tensorboard package. An installed tensorboard "
            f"was expected. Received: ImportError: {error}.",
            hint="pip install 'cnnc[tensorboard]' (or pip install tensorboard), or turn "
            "tensorboard off",
            field="tensorboard",
        ) from error
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files into ``run_dir/tensorboard`` (needs ``tensorboard``)."""

    def __init__(self, run_dir: Path, log_every: int = 50) -> None:
        self.writer = require_tensorboard()(log_dir=os.fspath(run_dir / "tensorboard"))
        self.log_every = log_every

    def on_step_end(self, step: StepInfo) -> None:
        if step.step % self.log_every:
            return
        self.writer.add_scalar("train/step_loss", step.loss, step.step)
        self.writer.add_scalar("lr", step.lr, step.step)
        for name, norm in (step.grad_norms or {}).items():
            self.writer.add_scalar(f"grad_norm/{name}", norm, step.step)

    def on_epoch_end(self, record: EpochRecord) -> None:
        for split, values in (("train", record.train), ("val", record.val or {})):
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, record.epoch)
        self.writer.add_scalar("images_per_s", record.images_per_s, record.epoch)
        self.writer.flush()

    def on_fit_end(self, result: TrainResult) -> None:
        self.writer.close()

    def on_exception(self, error: BaseException) -> None:
        self.writer.close()
