"""Training configuration: plain dataclasses, one per concern, and their validation.

A ``TrainConfig`` says everything ``fit`` needs besides the model: the data, the loss, the
optimizer, the learning-rate schedule, augmentation and bookkeeping. Names follow torch
(``lr``, ``momentum``, ``weight_decay``, ``label_smoothing``, ``step_size``, ``eta_min``).
``validate()`` raises ``ConfigError`` whose ``field`` is the option's dotted path inside the
spec's ``train:`` section; it checks each option on its own, never against the data (that
happens once the data is loaded, in ``data.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from runtime.errors import ConfigError, did_you_mean

__all__ = [
    "DATASETS",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "DatasetConfig",
    "HorizontalFlip",
    "LossConfig",
    "Normalize",
    "OptimizerConfig",
    "RandomCrop",
    "SchedulerConfig",
    "TrainConfig",
]

DATASETS = ("digits", "synthetic", "cifar10", "mnist", "fashion_mnist", "image_folder")
LOSSES = ("cross_entropy", "mse", "nll")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("constant", "step", "cosine", "onecycle")
PADDING_MODES = ("constant", "edge", "reflect")
_METRIC = re.compile(r"accuracy|top([1-9][0-9]*)")


def _check(ok: bool, field: str, message: str, hint: str | None = None) -> None:
    if not ok:
        raise ConfigError(message, hint=hint, field=field)


def _check_name(name: str, choices: tuple[str, ...], field: str, what: str) -> None:
    _check(
        name in choices,
        field,
        f"Unknown {what}. One of {', '.join(choices)} was expected. Received: '{name}'."
        + did_you_mean(name, choices),
    )


def _check_positive(value: float, field: str) -> None:
    name = field.rsplit(".", 1)[-1]
    _check(value > 0, field, f"Invalid {name}. A value > 0 was expected. Received: {value}.")


def _check_fraction(value: float, field: str, *, closed: bool = False) -> None:
    name = field.rsplit(".", 1)[-1]
    upper = "1" if closed else "< 1"
    ok = 0 <= value <= 1 if closed else 0 <= value < 1
    _check(ok, field, f"Invalid {name}. 0 <= {name} {upper} was expected. Received: {value}.")


@dataclass(frozen=True)
class Normalize:
    """Per-channel ``(x - mean) / std``, applied to every split after augmentation."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def validate(self, field: str) -> None:
        _check(
            len(self.mean) == len(self.std) and len(self.mean) > 0,
            field,
            "Normalize needs one mean and one std per channel. Lists of equal length were "
            f"expected. Received: mean={list(self.mean)}, std={list(self.std)}.",
        )
        for value in self.std:
            _check_positive(value, f"{field}.std")


@dataclass(frozen=True)
class DatasetConfig:
    """Where the images come from and how they are fitted to the model's input.

    Attributes:
        name: One of ``DATASETS``. ``digits`` is scikit-learn's bundled 1x8x8 digits.
        root: Directory holding the files (cifar10, mnist, fashion_mnist, image_folder).
        resize: ``(height, width)`` every image is resized to (antialiased bilinear).
        channels: 1 or 3; converts RGB to grayscale or grayscale to RGB.
        normalize: Per-channel mean/std, ``"auto"`` (computed on the training split), or None.
        flatten: Flatten each image to a vector, for models whose input is [C*H*W].
        download: Let torchvision download a missing dataset (off: training is offline).
        num_samples: synthetic only: training + validation images.
        num_classes: synthetic only: number of classes.
        test_split: Held-out test fraction for datasets without a test set of their own.
        split_seed: Seed of the test and validation splits, independent of the training seed
            so that runs with different seeds are scored on the same images.
    """

    name: str = "digits"
    root: str | None = None
    resize: tuple[int, int] | None = None
    channels: int | None = None
    normalize: Normalize | Literal["auto"] | None = None
    flatten: bool = False
    download: bool = False
    num_samples: int = 1024
    num_classes: int = 10
    test_split: float = 0.2
    split_seed: int = 0

    def validate(self) -> None:
        _check_name(self.name, DATASETS, "dataset.type", "dataset")
        needs_root = self.name not in ("digits", "synthetic")
        _check(
            not needs_root or bool(self.root),
            "dataset.root",
            f"The {self.name} dataset needs a root directory. A path was expected. Received: root=None.",
            hint=f"dataset: {{type: {self.name}, root: data/{self.name}}}",
        )
        if self.resize is not None:
            _check(
                len(self.resize) == 2 and min(self.resize) >= 1,
                "dataset.resize",
                "Invalid resize. [height, width] with both >= 1 was expected. "
                f"Received: {list(self.resize)}.",
            )
        _check(
            self.channels in (None, 1, 3),
            "dataset.channels",
            f"Invalid channels. 1 or 3 was expected. Received: {self.channels}.",
        )
        if isinstance(self.normalize, Normalize):
            self.normalize.validate("dataset.normalize")
        _check(
            self.num_samples >= 2,
            "dataset.num_samples",
            f"Too few samples. At least 2 were expected. Received: {self.num_samples}.",
        )
        _check(
            self.num_classes >= 2,
            "dataset.num_classes",
            f"Too few classes. At least 2 were expected. Received: {self.num_classes}.",
        )
        _check_fraction(self.test_split, "dataset.test_split")


@dataclass(frozen=True)
class RandomCrop:
    """Pads each side by ``padding`` then crops back to the input size at a random offset."""

    padding: int = 4
    padding_mode: str = "constant"


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirrors each image left-right with probability ``p``."""

    p: float = 0.5


Augment = RandomCrop | HorizontalFlip


@dataclass(frozen=True)
class LossConfig:
    """``cross_entropy`` (logits), ``nll`` (log-probabilities) or ``mse`` (one-hot targets)."""

    name: str = "cross_entropy"
    label_smoothing: float = 0.0

    def validate(self) -> None:
        _check_name(self.name, LOSSES, "loss.type", "loss")
        _check_fraction(self.label_smoothing, "loss.label_smoothing", closed=True)
        _check(
            self.label_smoothing == 0 or self.name == "cross_entropy",
            "loss.label_smoothing",
            "label_smoothing only applies to cross_entropy. 0 was expected for "
            f"{self.name}. Received: {self.label_smoothing}.",
        )


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD (with ``momentum``, ``nesterov``, ``dampening``), Adam or AdamW.

    ``weight_decay=None`` keeps torch's default (0 for sgd and adam, 0.01 for adamw).
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def validate(self) -> None:
        _check_name(self.name, OPTIMIZERS, "optimizer.type", "optimizer")
        _check_positive(self.lr, "optimizer.lr")
        _check_fraction(self.momentum, "optimizer.momentum")
        _check(
            not self.nesterov or (self.momentum > 0 and self.dampening == 0),
            "optimizer.nesterov",
            "Nesterov momentum needs momentum > 0 and dampening = 0. Both were expected. "
            f"Received: momentum={self.momentum}, dampening={self.dampening}.",
        )
        if self.weight_decay is not None:
            _check(
                self.weight_decay >= 0,
                "optimizer.weight_decay",
                f"Invalid weight_decay. A value >= 0 was expected. Received: {self.weight_decay}.",
            )
        for beta in self.betas:
            _check_fraction(beta, "optimizer.betas")
        _check_positive(self.eps, "optimizer.eps")


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule, stepped once per batch; ``step_size`` counts epochs.

    ``constant``, ``step`` (multiply by ``gamma`` every ``step_size`` epochs), ``cosine``
    (anneal to ``eta_min``) and ``onecycle`` (up to ``max_lr``, default the optimizer's lr,
    then down). ``warmup_epochs`` ramps linearly from ``warmup_start_factor * lr`` first.
    """

    name: str = "constant"
    step_size: int = 1
    gamma: float = 0.1
    eta_min: float = 0.0
    max_lr: float | None = None
    pct_start: float = 0.3
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.1

    def validate(self) -> None:
        _check_name(self.name, SCHEDULERS, "scheduler.type", "scheduler")
        _check_positive(self.step_size, "scheduler.step_size")
        _check_positive(self.gamma, "scheduler.gamma")
        _check(
            self.eta_min >= 0,
            "scheduler.eta_min",
            f"Invalid eta_min. A value >= 0 was expected. Received: {self.eta_min}.",
        )
        if self.max_lr is not None:
            _check_positive(self.max_lr, "scheduler.max_lr")
        _check(
            0 < self.pct_start < 1,
            "scheduler.pct_start",
            f"Invalid pct_start. 0 < pct_start < 1 was expected. Received: {self.pct_start}.",
        )
        _check(
            self.warmup_epochs >= 0,
            "scheduler.warmup_epochs",
            f"Invalid warmup_epochs. A value >= 0 was expected. Received: {self.warmup_epochs}.",
        )
        _check(
            self.warmup_epochs == 0 or self.name != "onecycle",
            "scheduler.warmup_epochs",
            "onecycle warms up by itself. warmup_epochs = 0 was expected. "
            f"Received: {self.warmup_epochs}.",
            hint="use pct_start to lengthen onecycle's warm-up",
        )
        _check(
            0 < self.warmup_start_factor <= 1,
            "scheduler.warmup_start_factor",
            "Invalid warmup_start_factor. 0 < value <= 1 was expected. "
            f"Received: {self.warmup_start_factor}.",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``fit`` needs besides the model and its input shape.

    ``batch_size`` is the global batch: under DDP each of N processes sees batch_size / N.
    ``metrics`` holds ``"accuracy"`` and/or ``"topK"`` (e.g. ``"top5"``). ``clip_grad_norm``
    is the ``max_norm`` of ``torch.nn.utils.clip_grad_norm_``. ``log_every`` is the step
    interval of step records in metrics.jsonl; ``checkpoint_every`` the epoch interval of
    checkpoints (the last epoch is always saved).
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    batch_size: int = 64
    epochs: int = 10
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    seed: int = 0
    val_split: float = 0.1
    augment: tuple[Augment, ...] = ()
    metrics: tuple[str, ...] = ("accuracy",)
    clip_grad_norm: float | None = None
    num_workers: int = 0
    eval_batch_size: int | None = None
    log_every: int = 50
    checkpoint_every: int = 1

    def validate(self) -> None:
        """Raises ``ConfigError`` for the first invalid option, naming its field."""
        self.dataset.validate()
        self.loss.validate()
        self.optimizer.validate()
        self.scheduler.validate()
        for name in ("batch_size", "epochs", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            _check(
                value >= 1, name, f"Invalid {name}. A value >= 1 was expected. Received: {value}."
            )
        if self.eval_batch_size is not None:
            _check_positive(self.eval_batch_size, "eval_batch_size")
        _check_fraction(self.val_split, "val_split")
        if self.clip_grad_norm is not None:
            _check_positive(self.clip_grad_norm, "clip_grad_norm")
        _check(
            self.num_workers >= 0,
            "num_workers",
            f"Invalid num_workers. A value >= 0 was expected. Received: {self.num_workers}.",
        )
        for index, metric in enumerate(self.metrics):
            _check(
                _METRIC.fullmatch(metric) is not None,
                f"metrics[{index}]",
                "Unknown metric. 'accuracy' or 'topK' (e.g. 'top5') was expected. "
                f"Received: '{metric}'." + did_you_mean(metric, ("accuracy", "top5")),
            )
        for index, step in enumerate(self.augment):
            self._validate_augment(step, f"augment[{index}]")

    @staticmethod
    def _validate_augment(step: Augment, field: str) -> None:
        if isinstance(step, RandomCrop):
            _check_positive(step.padding, f"{field}.padding")
            _check_name(step.padding_mode, PADDING_MODES, f"{field}.padding_mode", "padding_mode")
        else:
            _check_fraction(step.p, f"{field}.p", closed=True)

    @property
    def top_k(self) -> tuple[int, ...]:
        """The k of every ``topK`` metric, in order."""
        ks = []
        for metric in self.metrics:
            match = _METRIC.fullmatch(metric)
            if match is not None and match.group(1) is not None:
                ks.append(int(match.group(1)))
        return tuple(ks)
