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
    from runtime.train.checkpoint import (
        Checkpoint as Checkpoint,
        find_checkpoint as find_checkpoint,
        load_weights as load_weights,
        save_weights as save_weights,
    )
    from runtime.train.config import (
        SGD as SGD,
        Adam as Adam,
        AdamW as AdamW,
        ConstantLR as ConstantLR,
        CosineAnnealingLR as CosineAnnealingLR,
        CrossEntropyLoss as CrossEntropyLoss,
        HorizontalFlip as HorizontalFlip,
        LossConfig as LossConfig,
        MSELoss as MSELoss,
        NLLLoss as NLLLoss,
        OneCycleLR as OneCycleLR,
        OptimizerConfig as OptimizerConfig,
        RandomCrop as RandomCrop,
        SchedulerConfig as SchedulerConfig,
        StepLR as StepLR,
        TrainConfig as TrainConfig,
    )
    from runtime.train.data import (
        DataSplits as DataSplits,
        prepare_data as prepare_data,
    )
    from runtime.train.data_settings import (
        CIFAR10 as CIFAR10,
        MNIST as MNIST,
        DatasetConfig as DatasetConfig,
        Digits as Digits,
        FashionMNIST as FashionMNIST,
        ImageFolder as ImageFolder,
        Normalize as Normalize,
        Synthetic as Synthetic,
    )
    from runtime.train.evaluation import (
        Predictions as Predictions,
        evaluate as evaluate,
        predict as predict,
    )
    from runtime.train.events import (
        Callback as Callback,
        EpochRecord as EpochRecord,
        FitInfo as FitInfo,
        StepInfo as StepInfo,
        TrainResult as TrainResult,
    )
    from runtime.train.logs import (
        new_run_dir as new_run_dir,
    )
    from runtime.train.loop import (
        fit as fit,
        seed_everything as seed_everything,
    )
    from runtime.train.metrics import (
        EvalResult as EvalResult,
    )
    from runtime.train.report import (
        ConsoleReporter as ConsoleReporter,
    )

# Each submodule → the public names it defines, imported when first read.
_EXPORTS = {
    "runtime.train.checkpoint": ("Checkpoint", "find_checkpoint", "load_weights", "save_weights"),
    "runtime.train.config": (
        "SGD",
        "Adam",
        "AdamW",
        "ConstantLR",
        "CosineAnnealingLR",
        "CrossEntropyLoss",
        "HorizontalFlip",
        "LossConfig",
        "MSELoss",
        "NLLLoss",
        "OneCycleLR",
        "OptimizerConfig",
        "RandomCrop",
        "SchedulerConfig",
        "StepLR",
        "TrainConfig",
    ),
    "runtime.train.data_settings": (
        "CIFAR10",
        "MNIST",
        "DatasetConfig",
        "Digits",
        "FashionMNIST",
        "ImageFolder",
        "Normalize",
        "Synthetic",
    ),
    "runtime.train.data": ("DataSplits", "prepare_data"),
    "runtime.train.evaluation": ("Predictions", "evaluate", "predict"),
    "runtime.train.events": ("Callback", "EpochRecord", "FitInfo", "StepInfo", "TrainResult"),
    "runtime.train.logs": ("new_run_dir",),
    "runtime.train.loop": ("fit", "seed_everything"),
    "runtime.train.metrics": ("EvalResult",),
    "runtime.train.report": ("ConsoleReporter",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
