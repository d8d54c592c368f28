"""Training for any ``torch.nn.Module``: config, data, the fit loop, checkpoints and logs.

    from runtime.train import TrainConfig, OptimizerConfig, ConsoleReporter, fit, evaluate

    config = TrainConfig(epochs=5, optimizer=OptimizerConfig("sgd", lr=0.05, momentum=0.9))
    result = fit(model, config, (1, 8, 8), run_name="digits", callbacks=[ConsoleReporter()])
    scores = evaluate(model, config, (1, 8, 8))

Module map: ``config`` (dataclasses), ``datasets`` + ``data`` + ``transforms`` (images to
batches), ``optim`` (loss, optimizer, schedule), ``session`` (set-up and resume),
``loop`` (``fit``), ``evaluation`` (``evaluate``, ``predict``), ``metrics``,
``checkpoint``, ``events`` (callbacks), ``report`` (console), ``logs`` (run directory
files), ``distributed`` (DDP).
"""

from runtime.train.checkpoint import Checkpoint, find_checkpoint, load_weights, save_weights
from runtime.train.config import (
    DatasetConfig,
    HorizontalFlip,
    LossConfig,
    Normalize,
    OptimizerConfig,
    RandomCrop,
    SchedulerConfig,
    TrainConfig,
)
from runtime.train.data import DataSplits, prepare_data
from runtime.train.evaluation import Predictions, evaluate, predict
from runtime.train.events import Callback, EpochRecord, FitInfo, StepInfo, TrainResult
from runtime.train.logs import new_run_dir
from runtime.train.loop import fit, seed_everything
from runtime.train.metrics import EvalResult
from runtime.train.report import ConsoleReporter

__all__ = [
    "Callback",
    "Checkpoint",
    "ConsoleReporter",
    "DataSplits",
    "DatasetConfig",
    "EpochRecord",
    "EvalResult",
    "FitInfo",
    "HorizontalFlip",
    "LossConfig",
    "Normalize",
    "OptimizerConfig",
    "Predictions",
    "RandomCrop",
    "SchedulerConfig",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "find_checkpoint",
    "fit",
    "load_weights",
    "new_run_dir",
    "predict",
    "prepare_data",
    "save_weights",
    "seed_everything",
]
