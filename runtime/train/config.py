"""Training settings: ``TrainConfig`` and its choices, defined once for Python and for specs.

A ``TrainConfig`` says everything ``fit`` needs besides the model: the data, the loss, the
optimizer, the learning-rate schedule, augmentation and bookkeeping. Each choice is a union
of classes named and spelled like torch's (``SGD(lr=0.05, momentum=0.9)``,
``StepLR(step_size=2, gamma=0.5)``, ``CrossEntropyLoss(label_smoothing=0.1)``)::

    TrainConfig(epochs=5, optimizer=SGD(lr=0.05, momentum=0.9), scheduler="cosine")

Datasets are the classes of ``data_settings`` (``Digits()``, ``CIFAR10(root=...)``).
A variant without options may be given by name (``loss="nll"``) or as a mapping
(``optimizer={"type": "sgd", "lr": 0.1}``), as in a spec's ``train:`` section, which cnnc
validates with these very classes. Every option is checked at construction, on its own
(``lr > 0``, ``batch_size >= 1``); checks that need the data happen once it is loaded
(``data.py``). Construction raises pydantic's ``ValidationError``; ``with_`` and
``validate`` raise ``ConfigError`` whose ``field`` is the option's dotted path
(``optimizer.lr``). This module imports only pydantic.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from runtime.errors import did_you_mean
from runtime.train.data_settings import DatasetConfig, Digits
from runtime.train.settings import (
    Bool,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    Options,
    PositiveFloat,
    PositiveInt,
    Probability,
    choice,
    config_error,
)

# -- loss ----------------------------------------------------------------------------------


class CrossEntropyLoss(Options):
    """Cross-entropy on logits (the model's last layer has no softmax)."""

    type: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: Probability = 0.0


class NLLLoss(Options):
    """Negative log-likelihood on log-probabilities (the model ends with log_softmax)."""

    type: Literal["nll"] = "nll"


class MSELoss(Options):
    """Mean squared error between the outputs and one-hot labels."""

    type: Literal["mse"] = "mse"


LossConfig = Annotated[
    CrossEntropyLoss | NLLLoss | MSELoss,
    Field(discriminator="type"),
    choice("loss", CrossEntropyLoss, NLLLoss, MSELoss),
]

# -- optimizer -----------------------------------------------------------------------------


class SGD(Options):
    """Stochastic gradient descent, optionally with (Nesterov) momentum."""

    type: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 1e-3
    momentum: Fraction = 0.0
    dampening: Fraction = 0.0
    weight_decay: NonNegativeFloat = 0.0
    nesterov: Bool = False

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        momentum, dampening = info.data.get("momentum", 0.0), info.data.get("dampening", 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise PydanticCustomError(
                "nesterov",
                "nesterov momentum needs momentum > 0 and dampening = 0. Received: "
                "momentum={momentum}, dampening={dampening}",
                {"momentum": momentum, "dampening": dampening, "key": "nesterov"},
            )
        return nesterov


class _Adaptive(Options):
    lr: PositiveFloat = 1e-3
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


class Adam(_Adaptive):
    """Adam (L2 penalty through ``weight_decay``)."""

    type: Literal["adam"] = "adam"
    weight_decay: NonNegativeFloat = 0.0


class AdamW(_Adaptive):
    """Adam with decoupled weight decay."""

    type: Literal["adamw"] = "adamw"
    weight_decay: NonNegativeFloat = 0.01


OptimizerConfig = Annotated[
    SGD | Adam | AdamW, Field(discriminator="type"), choice("optimizer", SGD, Adam, AdamW)
]

# -- learning-rate schedule, stepped once per batch; epoch counts are converted to steps ----


class _Warmup(Options):
    """A linear ramp from ``warmup_start_factor * lr`` over the first ``warmup_epochs``."""

    warmup_epochs: NonNegativeInt = 0
    warmup_start_factor: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.1


class ConstantLR(_Warmup):
    """The optimizer's lr throughout (after an optional linear warm-up)."""

    type: Literal["constant"] = "constant"


class StepLR(_Warmup):
    """lr times ``gamma`` every ``step_size`` epochs."""

    type: Literal["step"] = "step"
    step_size: PositiveInt = 1
    gamma: PositiveFloat = 0.1


class CosineAnnealingLR(_Warmup):
    """Cosine decay from lr to ``eta_min`` over the run."""

    type: Literal["cosine"] = "cosine"
    eta_min: NonNegativeFloat = 0.0


class OneCycleLR(Options):
    """Up to ``max_lr`` (default: the optimizer's lr) for ``pct_start`` of the run, then down.

    It warms up by itself: use ``pct_start`` to lengthen the warm-up.
    """

    type: Literal["onecycle"] = "onecycle"
    max_lr: PositiveFloat | None = None
    pct_start: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.3


SchedulerConfig = Annotated[
    ConstantLR | StepLR | CosineAnnealingLR | OneCycleLR,
    Field(discriminator="type"),
    choice("scheduler", ConstantLR, StepLR, CosineAnnealingLR, OneCycleLR),
]

# -- augmentation, applied to training batches only ------------------------------------


class RandomCrop(Options):
    """Pad by ``padding`` on each side, crop back to the input size at a random offset."""

    type: Literal["random_crop"] = "random_crop"
    padding: PositiveInt = 4
    padding_mode: Literal["constant", "edge", "reflect"] = "constant"


class HorizontalFlip(Options):
    """Mirror left-right with probability ``p``."""

    type: Literal["horizontal_flip"] = "horizontal_flip"
    p: Probability = 0.5


Augment = Annotated[
    RandomCrop | HorizontalFlip,
    Field(discriminator="type"),
    choice("augmentation", RandomCrop, HorizontalFlip),
]

# -- metrics -------------------------------------------------------------------------------

_METRIC = re.compile(r"accuracy|top([1-9][0-9]*)")


def _known_metric(metric: str) -> str:
    if _METRIC.fullmatch(metric) is None:
        raise PydanticCustomError(
            "metric",
            "unknown metric '{metric}'. 'accuracy' or 'topK' (e.g. 'top5') was expected."
            "{suggestion}",
            {"metric": metric, "suggestion": did_you_mean(metric, ("accuracy", "top5"))},
        )
    return metric


Metric = Annotated[str, AfterValidator(_known_metric)]

# -- the whole configuration ---------------------------------------------------------------


class TrainConfig(Options):
    """Everything ``fit`` needs besides the model and its input shape.

    ``batch_size`` is the global batch: under DDP each of N processes sees batch_size / N.
    ``metrics`` holds ``"accuracy"`` and/or ``"topK"`` (e.g. ``"top5"``). ``clip_grad_norm``
    is the ``max_norm`` of ``torch.nn.utils.clip_grad_norm_``. ``log_every`` is the step
    interval of step records in metrics.jsonl; ``checkpoint_every`` the epoch interval of
    checkpoints (the last epoch is always saved).
    """

    dataset: DatasetConfig = Field(default_factory=Digits)
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 10
    loss: LossConfig = Field(default_factory=CrossEntropyLoss)
    optimizer: OptimizerConfig = Field(default_factory=Adam)
    scheduler: SchedulerConfig = Field(default_factory=ConstantLR)
    seed: NonNegativeInt = 0
    val_split: Fraction = 0.1
    augment: tuple[Augment, ...] = ()
    metrics: tuple[Metric, ...] = ("accuracy",)
    clip_grad_norm: PositiveFloat | None = None
    num_workers: NonNegativeInt = 0
    eval_batch_size: PositiveInt | None = None
    log_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 1

    def with_(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and checked (``config.with_(epochs=1)``).

        Raises:
            ConfigError: naming the first invalid option by its dotted path.
        """
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as error:
            raise config_error(error) from None

    @property
    def top_k(self) -> tuple[int, ...]:
        """The k of every ``topK`` metric, in order."""
        ks = []
        for metric in self.metrics:
            match = _METRIC.fullmatch(metric)
            if match is not None and match.group(1) is not None:
                ks.append(int(match.group(1)))
        return tuple(ks)
