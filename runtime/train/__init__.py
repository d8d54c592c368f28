"""Training for any ``torch.nn.Module``: config, data, the fit loop, checkpoints and logs.

    from runtime.train import SGD, TrainConfig, ConsoleReporter, fit, evaluate

    config = TrainConfig(epochs=5, optimizer=SGD(lr=0.05, momentum=0.9), scheduler="cosine")
    result = fit(model, config, (1, 8, 8), run_name="digits", callbacks=[ConsoleReporter()])
    scores = evaluate(model, config, (1, 8, 8))

Module map: ``config`` (``TrainConfig``; ``data_settings`` holds the datasets and
``settings`` the pieces both are built of; all three import only pydantic), ``datasets``
+ ``data`` + ``transforms`` (images to batches), ``optim`` (loss, optimizer, schedule),
``session`` (set-up and resume), ``loop`` (``fit``), ``evaluation`` (``evaluate``,
``predict``), ``metrics``, ``checkpoint``, ``events`` (callbacks), ``report`` (console),
``logs`` (run directory files), ``distributed`` (DDP).
"""

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
