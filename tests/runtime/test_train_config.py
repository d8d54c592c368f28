"""TrainConfig: one definition of every training setting, for Python and for the spec."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from cnnc.sections.train import TrainSection
from runtime.errors import ConfigError, RuntimeFailure
from runtime.train import (
    CIFAR10,
    MNIST,
    SGD,
    AdamW,
    CrossEntropyLoss,
    HorizontalFlip,
    Normalize,
    RandomCrop,
    StepLR,
    TrainConfig,
)

# -- the runtime's settings ----------------------------------------------------------------

# Changes given to ``with_`` as a spec writes them; nested options are checked in place.
BAD_CONFIGS = [
    ({"batch_size": 0}, "batch_size", "Received: 0"),
    ({"epochs": 0}, "epochs", "Received: 0"),
    ({"val_split": 1.0}, "val_split", "less than 1"),
    ({"optimizer": {"type": "adam", "lr": 0.0}}, "optimizer.lr", "greater than 0"),
    ({"optimizer": {"type": "adam", "lr": -1.0}}, "optimizer.lr", "-1.0"),
    ({"optimizer": "sgdd"}, "optimizer.type", "Did you mean 'sgd'"),
    ({"optimizer": {"type": "sgd", "nesterov": True}}, "optimizer.nesterov", "momentum=0.0"),
    ({"loss": {"type": "mse", "label_smoothing": 0.1}}, "loss.label_smoothing", "for mse"),
    ({"loss": "hinge"}, "loss.type", "Unknown loss"),
    ({"scheduler": "cosin"}, "scheduler.type", "Did you mean 'cosine'"),
    ({"scheduler": {"type": "onecycle", "warmup_epochs": 1}}, "scheduler.warmup_epochs", "onecycle"),
    ({"metrics": ("accuracy", "acc")}, "metrics[1]", "'acc'"),
    ({"clip_grad_norm": 0.0}, "clip_grad_norm", "greater than 0"),
    ({"augment": [{"type": "random_crop", "padding": 0}]}, "augment[0].padding", "greater than 0"),
    ({"augment": [{"type": "horizontal_flip", "p": 2.0}]}, "augment[0].p", "2.0"),
    ({"dataset": "cifar10"}, "dataset.root", "for cifar10"),
    ({"dataset": {"type": "digits", "channels": 2}}, "dataset.channels", "1 or 3"),
    (
        {"dataset": {"type": "digits", "normalize": {"mean": [0.5], "std": [0.0]}}},
        "dataset.normalize.std[0]",
        "greater than 0",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "field", "text"), BAD_CONFIGS, ids=[b[1] for b in BAD_CONFIGS])
def test_invalid_option_names_its_field(changes: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig().with_(**changes)
    assert caught.value.field == field
    assert text in str(caught.value)
    assert "Received:" in caught.value.message


def test_construction_checks_every_option() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(optimizer=SGD(lr=0.1), batch_size=0)
    assert caught.value.errors()[0]["loc"] == ("batch_size",)
    with pytest.raises(ValidationError):
        Normalize(mean=(0.5, 0.5), std=(0.5,))


def test_default_config_is_valid_and_top_k_is_parsed() -> None:
    TrainConfig()  # construction is the validation
    assert TrainConfig(metrics=("accuracy", "top3", "top5")).top_k == (3, 5)


def test_names_and_mappings_are_the_variants_they_name() -> None:
    config = TrainConfig(
        optimizer={"type": "sgd", "lr": 0.1}, loss="nll", augment=["horizontal_flip"]
    )
    assert config.optimizer == SGD(lr=0.1)
    assert config.loss.type == "nll"
    assert config.augment == (HorizontalFlip(),)
    assert config.with_(epochs=3) == TrainConfig(
        epochs=3, optimizer=SGD(lr=0.1), loss="nll", augment=[HorizontalFlip()]
    )


def test_the_settings_do_not_import_torch() -> None:
    # A spec checker imports the settings; it must not pay for torch. The package
    # ``runtime.train`` itself imports fit (torch), so the modules are loaded on their own.
    code = (
        "import sys, types, runtime; pkg = types.ModuleType('runtime.train'); "
        "pkg.__path__ = [runtime.__path__[0] + '/train']; sys.modules['runtime.train'] = pkg; "
        "import runtime.train.config; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_error_renders_field_message_and_hint() -> None:
    error = ConfigError(
        "Bad thing. Good thing was expected. Received: x=1.", hint="fix", field="lr"
    )
    assert str(error) == "lr: Bad thing. Good thing was expected. Received: x=1.\nhint: fix"
    assert isinstance(error, RuntimeFailure)


# -- the spec's train: section -------------------------------------------------------------


def test_defaults_are_digits_adam_cross_entropy() -> None:
    config = TrainSection()
    assert config.dataset.type == "digits"
    assert (config.optimizer.type, config.optimizer.lr) == ("adam", 1e-3)
    assert config.loss.type == "cross_entropy"


def test_seed_004_setup_is_expressible() -> None:
    # LeNet-5 on CIFAR-10, CrossEntropyLoss, SGD(lr=0.001, momentum=0.9).
    section = TrainSection.model_validate(
        {
            "dataset": {"type": "cifar10", "root": "data/cifar10"},
            "epochs": 10,
            "loss": "cross_entropy",
            "optimizer": {"type": "sgd", "lr": 0.001, "momentum": 0.9},
        }
    )
    config = section
    assert config.dataset == CIFAR10(root="data/cifar10")
    assert config.optimizer == SGD(lr=0.001, momentum=0.9, weight_decay=0.0)
    assert config.loss == CrossEntropyLoss()


def test_shorthands_and_full_forms_agree() -> None:
    short = TrainSection.model_validate(
        {"dataset": "digits", "loss": "cross_entropy", "optimizer": "sgd", "scheduler": "cosine",
         "augment": ["horizontal_flip"]}
    )  # fmt: skip
    full = TrainSection.model_validate(
        {"dataset": {"type": "digits"}, "loss": {"type": "cross_entropy"},
         "optimizer": {"type": "sgd"}, "scheduler": {"type": "cosine"},
         "augment": [{"type": "horizontal_flip"}]}
    )  # fmt: skip
    assert short == full


def test_every_option_reaches_the_runtime_config() -> None:
    section = TrainSection.model_validate(
        {
            "dataset": {"type": "mnist", "root": "data", "resize": [32, 32], "channels": 3,
                        "normalize": {"mean": [0.5], "std": [0.25]}, "download": True},
            "batch_size": 32,
            "loss": {"type": "cross_entropy", "label_smoothing": 0.1},
            "optimizer": {"type": "adamw", "lr": 0.01, "betas": [0.8, 0.9]},
            "scheduler": {"type": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 1},
            "augment": [{"type": "random_crop", "padding": 2, "padding_mode": "reflect"},
                        {"type": "horizontal_flip", "p": 0.25}],
            "metrics": ["accuracy", "top3"],
            "clip_grad_norm": 1.0,
            "val_split": 0.2,
            "seed": 7,
        }
    )  # fmt: skip
    config = section
    assert config.dataset == MNIST(
        root="data", resize=(32, 32), channels=3,
        normalize=Normalize(mean=(0.5,), std=(0.25,)), download=True,
    )  # fmt: skip
    assert config.loss.label_smoothing == 0.1
    assert config.optimizer == AdamW(lr=0.01, betas=(0.8, 0.9), weight_decay=0.01)
    assert config.scheduler == StepLR(step_size=2, gamma=0.5, warmup_epochs=1)
    assert config.augment == (RandomCrop(padding=2, padding_mode="reflect"), HorizontalFlip(p=0.25))
    assert (config.metrics, config.clip_grad_norm, config.val_split, config.seed) == (
        ("accuracy", "top3"), 1.0, 0.2, 7,
    )  # fmt: skip


def _error(data: dict[str, Any]) -> tuple[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        TrainSection.model_validate(data)
    first = caught.value.errors()[0]
    return first["loc"], first["msg"]


@pytest.mark.parametrize(
    ("data", "loc", "text"),
    [
        ({"optimizer": {"type": "sgd", "lr": 0}}, ("optimizer", "sgd", "lr"), "greater than 0"),
        ({"batch_size": 0}, ("batch_size",), "greater than 0"),
        ({"batch_size": "8"}, ("batch_size",), "integer"),
        ({"val_split": 1.0}, ("val_split",), "less than 1"),
        ({"optimizer": "sgdd"}, ("optimizer",), "Did you mean 'sgd'"),
        ({"optimizer": {"lr": 0.1}}, ("optimizer",), "needs a 'type'"),
        ({"dataset": "cifar"}, ("dataset",), "Did you mean 'cifar10'"),
        ({"dataset": {"type": "cifar10"}}, ("dataset", "cifar10", "root"), "Field required"),
        ({"optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": True, "dampening": 0.1}},
         ("optimizer", "sgd", "nesterov"), "dampening"),
        ({"optimizer": {"type": "adam", "momentum": 0.9}}, ("optimizer", "adam", "momentum"), "Extra"),
        ({"metrics": ["acc"]}, ("metrics", 0), "unknown metric 'acc'"),
        ({"loss": {"type": "mse", "label_smoothing": 0.1}}, ("loss", "mse", "label_smoothing"), "Extra"),
        ({"learning_rate": 0.1}, ("learning_rate",), "Extra"),
    ],
)  # fmt: skip
def test_invalid_section_points_at_the_field(
    data: dict[str, Any], loc: tuple[str | int, ...], text: str
) -> None:
    got_loc, message = _error(data)
    assert got_loc == loc
    assert text in message


def test_json_schema_is_generated() -> None:
    schema = TrainSection.model_json_schema()
    assert "optimizer" in schema["properties"]
