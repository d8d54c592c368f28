"""The spec's ``train:`` section: how a model is trained, checked field by field.

Each choice (dataset, loss, optimizer, scheduler, augmentation step) is a tagged union with
one class per variant (``type: Literal[...]``, ``extra="forbid"``, options spelled as torch
spells them), and a variant without options may be written as a bare string::

    train:
      dataset: {type: cifar10, root: data/cifar10}
      batch_size: 4
      epochs: 2
      loss: cross_entropy
      optimizer: {type: sgd, lr: 0.001, momentum: 0.9}

Every option is checked here on its own (``lr > 0``, ``batch_size >= 1``, ...) so errors
point at a spec line; checks that need the data (a batch larger than the dataset, images
that do not fit the model) happen in the runtime, whose errors carry the same dotted
``field``. ``TrainSection.to_config()`` gives the runtime's ``TrainConfig``. This module
imports only pydantic and ``runtime``.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator
from pydantic_core import PydanticCustomError

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

__all__ = ["TrainSection"]

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Fraction = Annotated[float, Strict(), Field(ge=0, lt=1)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
Bool = Annotated[bool, Strict()]
_METRIC = re.compile(r"accuracy|top[1-9][0-9]*")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _choice(what: str, *variants: type[BaseModel]) -> BeforeValidator:
    """Accepts a bare name (``"sgd"`` -> ``{"type": "sgd"}``) and checks the tag is known."""
    tags = [str(variant.model_fields["type"].default) for variant in variants]

    def check(value: Any) -> Any:
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            return value  # pydantic reports the wrong type
        tag = value.get("type")
        if tag is None:
            raise PydanticCustomError(
                "missing_type",
                "{what} needs a 'type', one of: {known}",
                {"what": what, "known": ", ".join(tags), "key": "type"},
            )
        if tag not in tags:
            close = difflib.get_close_matches(str(tag), tags, n=1, cutoff=0.6)
            raise PydanticCustomError(
                "unknown_type",
                "unknown {what} '{tag}'.{suggestion} Known: {known}",
                {
                    "what": what,
                    "tag": tag,
                    "suggestion": f" Did you mean '{close[0]}'?" if close else "",
                    "known": ", ".join(tags),
                    "key": "type",
                },
            )
        return value

    return BeforeValidator(check)


# -- dataset -------------------------------------------------------------------------------


class NormalizeSpec(_Section):
    """Per-channel ``(x - mean) / std``; one value broadcasts to every channel."""

    mean: Annotated[list[Annotated[float, Strict()]], Field(min_length=1)]
    std: Annotated[list[PositiveFloat], Field(min_length=1)]


class _Dataset(_Section):
    """Options every dataset shares: fitting images to the model's input."""

    resize: tuple[PositiveInt, PositiveInt] | None = None
    channels: Literal[1, 3] | None = None
    normalize: NormalizeSpec | Literal["auto"] | None = None
    flatten: Bool = False
    split_seed: NonNegativeInt = 0

    def to_config(self) -> DatasetConfig:
        """The runtime's ``DatasetConfig`` for this dataset."""
        normalize: Normalize | Literal["auto"] | None = None
        if isinstance(self.normalize, NormalizeSpec):
            normalize = Normalize(tuple(self.normalize.mean), tuple(self.normalize.std))
        elif self.normalize == "auto":
            normalize = "auto"
        options = self.model_dump(exclude={"type", "normalize"})
        return DatasetConfig(name=getattr(self, "type"), normalize=normalize, **options)  # noqa: B009


class Digits(_Dataset):
    """scikit-learn's bundled 1x8x8 handwritten digits (1797 images, offline)."""

    type: Literal["digits"] = "digits"
    test_split: Fraction = 0.2


class Synthetic(_Dataset):
    """Random class prototypes plus noise, in the model's input shape (for benchmarks)."""

    type: Literal["synthetic"] = "synthetic"
    num_samples: Annotated[int, Strict(), Field(ge=2)] = 1024
    num_classes: Annotated[int, Strict(), Field(ge=2)] = 10
    test_split: Fraction = 0.2


class _Torchvision(_Dataset):
    root: Annotated[str, Field(min_length=1)]
    download: Bool = False


class CIFAR10(_Torchvision):
    """torchvision's CIFAR-10 (3x32x32, 10 classes) from ``root``."""

    type: Literal["cifar10"] = "cifar10"


class MNIST(_Torchvision):
    """torchvision's MNIST (1x28x28, 10 classes) from ``root``."""

    type: Literal["mnist"] = "mnist"


class FashionMNIST(_Torchvision):
    """torchvision's Fashion-MNIST (1x28x28, 10 classes) from ``root``."""

    type: Literal["fashion_mnist"] = "fashion_mnist"


class ImageFolder(_Dataset):
    """One folder per class under ``root`` (or ``root/train`` and ``root/test``)."""

    type: Literal["image_folder"] = "image_folder"
    root: Annotated[str, Field(min_length=1)]
    test_split: Fraction = 0.2


AnyDataset = Annotated[
    Digits | Synthetic | CIFAR10 | MNIST | FashionMNIST | ImageFolder,
    Field(discriminator="type"),
    _choice("dataset", Digits, Synthetic, CIFAR10, MNIST, FashionMNIST, ImageFolder),
]

# -- loss ----------------------------------------------------------------------------------


class CrossEntropyLoss(_Section):
    """Cross-entropy on logits (the model's last layer has no softmax)."""

    type: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: Probability = 0.0


class NLLLoss(_Section):
    """Negative log-likelihood on log-probabilities (the model ends with log_softmax)."""

    type: Literal["nll"] = "nll"


class MSELoss(_Section):
    """Mean squared error between the outputs and one-hot labels."""

    type: Literal["mse"] = "mse"


AnyLoss = Annotated[
    CrossEntropyLoss | NLLLoss | MSELoss,
    Field(discriminator="type"),
    _choice("loss", CrossEntropyLoss, NLLLoss, MSELoss),
]

# -- optimizer -----------------------------------------------------------------------------


class SGD(_Section):
    """Stochastic gradient descent, optionally with (Nesterov) momentum."""

    type: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 1e-3
    momentum: Fraction = 0.0
    dampening: Fraction = 0.0
    weight_decay: NonNegativeFloat = 0.0
    nesterov: Bool = False

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: Any) -> bool:
        momentum, dampening = info.data.get("momentum", 0.0), info.data.get("dampening", 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise PydanticCustomError(
                "nesterov",
                "nesterov momentum needs momentum > 0 and dampening = 0. Received: "
                "momentum={momentum}, dampening={dampening}",
                {"momentum": momentum, "dampening": dampening, "key": "nesterov"},
            )
        return nesterov


class Adam(_Section):
    """Adam (L2 penalty through ``weight_decay``)."""

    type: Literal["adam"] = "adam"
    lr: PositiveFloat = 1e-3
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0


class AdamW(Adam):
    """Adam with decoupled weight decay."""

    type: Literal["adamw"] = "adamw"  # type: ignore[assignment]
    weight_decay: NonNegativeFloat = 0.01


AnyOptimizer = Annotated[
    SGD | Adam | AdamW,
    Field(discriminator="type"),
    _choice("optimizer", SGD, Adam, AdamW),
]

# -- learning-rate schedule ----------------------------------------------------------------


class _Warmup(_Section):
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


class OneCycleLR(_Section):
    """Warm up to ``max_lr`` (default: the optimizer's lr) for ``pct_start`` of the run, then anneal."""

    type: Literal["onecycle"] = "onecycle"
    max_lr: PositiveFloat | None = None
    pct_start: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.3


AnySchedule = Annotated[
    ConstantLR | StepLR | CosineAnnealingLR | OneCycleLR,
    Field(discriminator="type"),
    _choice("scheduler", ConstantLR, StepLR, CosineAnnealingLR, OneCycleLR),
]

# -- augmentation --------------------------------------------------------------------------


class RandomCropSpec(_Section):
    """Pad by ``padding`` on each side, crop back to the input size at a random offset."""

    type: Literal["random_crop"] = "random_crop"
    padding: PositiveInt = 4
    padding_mode: Literal["constant", "edge", "reflect"] = "constant"


class HorizontalFlipSpec(_Section):
    """Mirror left-right with probability ``p``."""

    type: Literal["horizontal_flip"] = "horizontal_flip"
    p: Probability = 0.5


AnyAugment = Annotated[
    RandomCropSpec | HorizontalFlipSpec,
    Field(discriminator="type"),
    _choice("augmentation", RandomCropSpec, HorizontalFlipSpec),
]

# -- the section ---------------------------------------------------------------------------


class TrainSection(_Section):
    """How to train the model: data, loss, optimizer, schedule and bookkeeping."""

    dataset: AnyDataset = Field(default_factory=Digits)
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 10
    loss: AnyLoss = Field(default_factory=CrossEntropyLoss)
    optimizer: AnyOptimizer = Field(default_factory=Adam)
    scheduler: AnySchedule = Field(default_factory=ConstantLR)
    seed: NonNegativeInt = 0
    val_split: Fraction = 0.1
    augment: list[AnyAugment] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    clip_grad_norm: PositiveFloat | None = None
    num_workers: NonNegativeInt = 0
    eval_batch_size: PositiveInt | None = None
    log_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 1

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for metric in metrics:
            if _METRIC.fullmatch(metric) is None:
                raise PydanticCustomError(
                    "metric",
                    "unknown metric '{metric}'. 'accuracy' or 'topK' (e.g. 'top5') was expected",
                    {"metric": metric, "key": metric},
                )
        return metrics

    def to_config(self) -> TrainConfig:
        """The runtime's ``TrainConfig`` for this section."""
        return TrainConfig(
            dataset=self.dataset.to_config(),
            batch_size=self.batch_size,
            epochs=self.epochs,
            loss=LossConfig(
                name=self.loss.type, label_smoothing=getattr(self.loss, "label_smoothing", 0.0)
            ),
            optimizer=_optimizer_config(self.optimizer),
            scheduler=SchedulerConfig(
                name=self.scheduler.type, **self.scheduler.model_dump(exclude={"type"})
            ),
            seed=self.seed,
            val_split=self.val_split,
            augment=tuple(_augment_config(step) for step in self.augment),
            metrics=tuple(self.metrics),
            clip_grad_norm=self.clip_grad_norm,
            num_workers=self.num_workers,
            eval_batch_size=self.eval_batch_size,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
        )


def _optimizer_config(spec: SGD | Adam | AdamW) -> OptimizerConfig:
    return OptimizerConfig(name=spec.type, **spec.model_dump(exclude={"type"}))


def _augment_config(spec: RandomCropSpec | HorizontalFlipSpec) -> RandomCrop | HorizontalFlip:
    if isinstance(spec, RandomCropSpec):
        return RandomCrop(padding=spec.padding, padding_mode=spec.padding_mode)
    return HorizontalFlip(p=spec.p)
