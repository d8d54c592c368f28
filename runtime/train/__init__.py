"""Training for any ``torch.nn.Module``: config, data, the fit loop, checkpoints and logs.

    from runtime.train import SGD, TrainConfig, ConsoleReporter, fit, evaluate

    config = TrainConfig(epochs=5, optimizer=SGD(lr=0.05, momentum=0.9), scheduler="cosine")
    result = fit(model, config, (1, 8, 8), run_name="digits", callbacks=[ConsoleReporter()])
    scores = evaluate(model, config, (1, 8, 8))

Module map: ``config`` (``TrainConfig``; ``data_settings`` holds the datasets and
``settings`` the pieces both are built of; all three import only pydantic), ``datasets``
+ ``data`` + ``transforms`` (images to batches), ``optim`` (loss, optimizer, schedule),
``session`` (set-up and resume), ``loop`` (``fit``, which runs ``runtime.optimize.step``'s
``TrainStep``), ``evaluation`` (``evaluate``, ``predict``), ``metrics``, ``checkpoint``,
``events`` (callbacks), ``report`` (console), ``logs`` (run directory files),
``distributed`` (DDP).

Importing the package (or a light submodule such as ``config``) loads nothing else: each
name below is imported on first use (PEP 562), so ``cnnc check`` reads the config classes
without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from runtime.train.checkpoint import Checkpoint, find_checkpoint, load_weights, save_weights
    from runtime.train.config import (
        SGD,
        Adam,
        AdamW,
        ConstantLR,
        CosineAnnealingLR,
        CrossEntropyLoss,
        HorizontalFlip,
        LossConfig,
        MSELoss,
        NLLLoss,
        OneCycleLR,
        OptimizerConfig,
        RandomCrop,
        SchedulerConfig,
        StepLR,
        TrainConfig,
    )
    from runtime.train.data import DataSplits, prepare_data
    from runtime.train.data_settings import (
        CIFAR10,
        MNIST,
        DatasetConfig,
        Digits,
        FashionMNIST,
        ImageFolder,
        Normalize,
        Synthetic,
    )
    from runtime.train.evaluation import Predictions, evaluate, predict
    from runtime.train.events import Callback, EpochRecord, FitInfo, StepInfo, TrainResult
    from runtime.train.logs import new_run_dir
    from runtime.train.loop import fit, seed_everything
    from runtime.train.metrics import EvalResult
    from runtime.train.report import ConsoleReporter

# Public name → the submodule that defines it.
_LAZY = {
    "Checkpoint": "runtime.train.checkpoint",
    "find_checkpoint": "runtime.train.checkpoint",
    "load_weights": "runtime.train.checkpoint",
    "save_weights": "runtime.train.checkpoint",
    "SGD": "runtime.train.config",
    "Adam": "runtime.train.config",
    "AdamW": "runtime.train.config",
    "ConstantLR": "runtime.train.config",
    "CosineAnnealingLR": "runtime.train.config",
    "CrossEntropyLoss": "runtime.train.config",
    "HorizontalFlip": "runtime.train.config",
    "LossConfig": "runtime.train.config",
    "MSELoss": "runtime.train.config",
    "NLLLoss": "runtime.train.config",
    "OneCycleLR": "runtime.train.config",
    "OptimizerConfig": "runtime.train.config",
    "RandomCrop": "runtime.train.config",
    "SchedulerConfig": "runtime.train.config",
    "StepLR": "runtime.train.config",
    "TrainConfig": "runtime.train.config",
    "CIFAR10": "runtime.train.data_settings",
    "MNIST": "runtime.train.data_settings",
    "DatasetConfig": "runtime.train.data_settings",
    "Digits": "runtime.train.data_settings",
    "FashionMNIST": "runtime.train.data_settings",
    "ImageFolder": "runtime.train.data_settings",
    "Normalize": "runtime.train.data_settings",
    "Synthetic": "runtime.train.data_settings",
    "DataSplits": "runtime.train.data",
    "prepare_data": "runtime.train.data",
    "Predictions": "runtime.train.evaluation",
    "evaluate": "runtime.train.evaluation",
    "predict": "runtime.train.evaluation",
    "Callback": "runtime.train.events",
    "EpochRecord": "runtime.train.events",
    "FitInfo": "runtime.train.events",
    "StepInfo": "runtime.train.events",
    "TrainResult": "runtime.train.events",
    "new_run_dir": "runtime.train.logs",
    "fit": "runtime.train.loop",
    "seed_everything": "runtime.train.loop",
    "EvalResult": "runtime.train.metrics",
    "ConsoleReporter": "runtime.train.report",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "CIFAR10",
    "MNIST",
    "SGD",
    "Adam",
    "AdamW",
    "Callback",
    "Checkpoint",
    "ConsoleReporter",
    "ConstantLR",
    "CosineAnnealingLR",
    "CrossEntropyLoss",
    "DataSplits",
    "DatasetConfig",
    "Digits",
    "EpochRecord",
    "EvalResult",
    "FashionMNIST",
    "FitInfo",
    "HorizontalFlip",
    "ImageFolder",
    "LossConfig",
    "MSELoss",
    "NLLLoss",
    "Normalize",
    "OneCycleLR",
    "OptimizerConfig",
    "Predictions",
    "RandomCrop",
    "SchedulerConfig",
    "StepInfo",
    "StepLR",
    "Synthetic",
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
