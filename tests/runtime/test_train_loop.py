"""The fit loop: determinism, exact resume, NaN detection, every optimizer/schedule/loss/metric."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from runtime.errors import TrainingError
from runtime.train import (
    SGD,
    Adam,
    AdamW,
    Callback,
    ConstantLR,
    CosineAnnealingLR,
    CrossEntropyLoss,
    Digits,
    HorizontalFlip,
    LossConfig,
    MSELoss,
    NLLLoss,
    OneCycleLR,
    OptimizerConfig,
    RandomCrop,
    SchedulerConfig,
    StepInfo,
    StepLR,
    evaluate,
    find_checkpoint,
    fit,
    load_weights,
    predict,
    prepare_data,
)
from tests.runtime.train_helpers import (
    DIGITS,
    InterruptAt,
    Recorder,
    assert_same_parameters,
    digits_config,
    synthetic_config,
    tiny_cnn,
)

# -- determinism and resume ----------------------------------------------------------------


def test_same_seed_gives_bitwise_identical_losses() -> None:
    config = digits_config(augment=(RandomCrop(padding=1), HorizontalFlip()))
    a, b = tiny_cnn(dropout=0.2), tiny_cnn(dropout=0.2)
    first, second = fit(a, config, DIGITS), fit(b, config, DIGITS)
    assert first.step_losses == second.step_losses
    assert len(first.step_losses) == 2 * 21
    assert_same_parameters(a, b)
    other = fit(tiny_cnn(dropout=0.2), config.with_(seed=1), DIGITS)
    assert other.step_losses != first.step_losses


@pytest.mark.parametrize("stop_step", [30, 21], ids=["mid-epoch", "end-of-epoch"])
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, stop_step: int) -> None:
    # Dropout, augmentation, momentum and a schedule all carry state across the interrupt.
    config = digits_config(
        epochs=3,
        augment=(RandomCrop(padding=1), HorizontalFlip()),
        scheduler=CosineAnnealingLR(warmup_epochs=1),
    )
    reference_model = tiny_cnn(dropout=0.3)
    reference = fit(reference_model, config, DIGITS, run_dir=tmp_path / "a")

    model = tiny_cnn(dropout=0.3)
    first = fit(model, config, DIGITS, run_dir=tmp_path / "b", callbacks=[InterruptAt(stop_step)])
    assert first.interrupted and first.steps == stop_step
    assert first.weights is None and first.checkpoint is not None
    assert first.checkpoint.step == stop_step

    resumed_model = tiny_cnn(seed=99, dropout=0.3)  # weights come from the checkpoint
    second = fit(resumed_model, config, DIGITS, resume=tmp_path / "b")
    assert first.step_losses + second.step_losses == reference.step_losses
    assert_same_parameters(resumed_model, reference_model)
    assert [r.flat() | {"seconds": 0, "images_per_s": 0} for r in second.history] == [
        r.flat() | {"seconds": 0, "images_per_s": 0} for r in reference.history
    ]


def test_ctrl_c_saves_a_checkpoint_and_returns(tmp_path: Path) -> None:
    class SigintAt(Callback):
        def on_step_end(self, step: StepInfo) -> None:
            if step.step == 5:
                os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    result = fit(tiny_cnn(), digits_config(), DIGITS, run_dir=tmp_path, callbacks=[SigintAt()])
    assert result.interrupted and result.steps == 6  # the step in flight finishes first
    assert find_checkpoint(tmp_path).step == 6
    assert signal.getsignal(signal.SIGINT) is previous


# -- NaN / inf -------------------------------------------------------------------------------


class NanAt(nn.Module):
    """tiny_cnn whose ``step``-th training forward returns NaN."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.net = tiny_cnn()
        self.step = step
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls == self.step:
                return out * float("nan")
        return out


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    model = NanAt(step=30)
    recorder = Recorder()
    with pytest.raises(TrainingError) as caught:
        fit(model, digits_config(epochs=3), DIGITS, run_dir=tmp_path, callbacks=[recorder])
    error = caught.value
    assert "The loss became nan at step 30 (epoch 2, batch 9)" in error.message
    assert error.hint is not None and "last good checkpoint (step 21)" in error.hint
    assert recorder.hooks[-1] == "exception"
    checkpoint = find_checkpoint(tmp_path)
    assert checkpoint.step == 21
    load_weights(NanAt(step=0), checkpoint.weights)
    assert all(math.isfinite(step.loss) for step in recorder.steps)


# -- every optimizer, schedule, loss and metric ---------------------------------------------

OPTIMIZERS = [
    SGD(lr=0.05),
    SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    Adam(lr=0.01),
    AdamW(lr=0.01),
]


@pytest.mark.parametrize(
    "optimizer", OPTIMIZERS, ids=lambda o: f"{o.type}-{getattr(o, 'nesterov', False)}"
)
def test_each_optimizer_lowers_the_loss(optimizer: OptimizerConfig) -> None:
    result = fit(tiny_cnn(), digits_config(optimizer=optimizer), DIGITS)
    history = result.history
    assert history[-1].train["loss"] < history[0].train["loss"]


def _lrs(scheduler: SchedulerConfig, lr: float = 0.1) -> list[float]:
    config = synthetic_config(epochs=4, scheduler=scheduler, optimizer=SGD(lr=lr, momentum=0.9))
    recorder = Recorder()
    fit(tiny_cnn(classes=4), config, DIGITS, callbacks=[recorder])
    return [step.lr for step in recorder.steps]  # 8 steps per epoch


def test_step_schedule_decays_every_step_size_epochs() -> None:
    lrs = _lrs(StepLR(step_size=2, gamma=0.5))
    assert lrs == pytest.approx([0.1] * 16 + [0.05] * 16)


def test_linear_warmup_then_cosine() -> None:
    lrs = _lrs(CosineAnnealingLR(warmup_epochs=1, warmup_start_factor=0.1))
    assert lrs[:8] == pytest.approx([0.01 + 0.09 * i / 8 for i in range(8)])  # per step
    assert lrs[8] == pytest.approx(0.1)
    assert lrs[8:] == sorted(lrs[8:], reverse=True) and lrs[-1] < 0.001


def test_onecycle_rises_then_falls() -> None:
    lrs = _lrs(OneCycleLR(max_lr=0.2, pct_start=0.25))
    peak = lrs.index(max(lrs))
    assert 6 <= peak <= 9 and max(lrs) == pytest.approx(0.2, rel=0.05)
    assert lrs[-1] < 1e-4


def test_constant_schedule() -> None:
    assert set(_lrs(ConstantLR())) == {0.1}


class LogSoftmaxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.net(x), dim=1)


@pytest.mark.parametrize(
    ("loss", "model"),
    [(CrossEntropyLoss(label_smoothing=0.1), tiny_cnn),
     (NLLLoss(), LogSoftmaxNet), (MSELoss(), tiny_cnn)],
    ids=["cross_entropy", "nll", "mse"],
)  # fmt: skip
def test_each_loss_trains(loss: LossConfig, model: type[nn.Module]) -> None:
    result = fit(model(), digits_config(loss=loss, optimizer=Adam(lr=0.01)), DIGITS)
    assert result.history[-1].train["loss"] < result.history[0].train["loss"]
    assert result.history[-1].train["accuracy"] > 0.5


def test_metrics_accuracy_and_top_k() -> None:
    result = fit(tiny_cnn(), digits_config(metrics=("accuracy", "top1", "top3")), DIGITS)
    record = result.history[-1]
    assert set(record.train) == {"loss", "accuracy", "top1", "top3"}
    assert record.val is not None and set(record.val) == {"loss", "accuracy", "top1", "top3"}
    assert record.val["top1"] == pytest.approx(record.val["accuracy"])
    assert record.val["top3"] >= record.val["accuracy"]


# -- gradients -------------------------------------------------------------------------------


def test_log_grads_reports_per_parameter_norms() -> None:
    recorder = Recorder()
    fit(tiny_cnn(), digits_config(epochs=1), DIGITS, callbacks=[recorder], log_grads=True)
    logged = [step for step in recorder.steps if step.grad_norms is not None]
    assert [step.step for step in logged] == [5, 10, 15, 20]
    norms = logged[0].grad_norms
    assert norms is not None and {"total", "0.weight", "0.bias", "5.weight", "5.bias"} == set(norms)
    parts = [v for k, v in norms.items() if k != "total"]
    assert norms["total"] == pytest.approx(math.sqrt(sum(v * v for v in parts)), rel=1e-5)


def test_gradient_clipping_bounds_the_update() -> None:
    config = digits_config(epochs=1, optimizer=SGD(lr=1.0))
    clipped, free = tiny_cnn(), tiny_cnn()
    before = torch.cat([p.detach().flatten().clone() for p in clipped.parameters()])

    class StopAfterOne(Callback):
        def on_step_end(self, step: StepInfo) -> None:
            raise KeyboardInterrupt

    fit(clipped, config.with_(clip_grad_norm=1e-3), DIGITS, callbacks=[StopAfterOne()])
    fit(free, config, DIGITS, callbacks=[StopAfterOne()])
    moved = torch.cat([p.detach().flatten() for p in clipped.parameters()]) - before
    assert float(moved.norm()) == pytest.approx(1e-3, rel=1e-3)  # lr 1 x clipped norm
    assert (
        float((torch.cat([p.detach().flatten() for p in free.parameters()]) - before).norm()) > 0.01
    )


# -- evaluate and predict --------------------------------------------------------------------


def test_evaluate_and_predict_after_training(tmp_path: Path) -> None:
    config = digits_config(epochs=3, dataset=Digits(normalize="auto"))
    model = tiny_cnn()
    result = fit(model, config, DIGITS, run_dir=tmp_path)
    scores = evaluate(model, config, DIGITS)
    assert scores.num_samples == 359 and scores.accuracy > 0.8
    assert scores.confusion_matrix.shape == (10, 10)
    assert int(scores.confusion_matrix.sum()) == 359
    assert int(scores.confusion_matrix.trace()) == round(scores.accuracy * 359)
    assert len(scores.per_class_accuracy) == 10 and min(scores.per_class_accuracy) >= 0

    assert result.weights is not None
    fresh = tiny_cnn(seed=5)
    reloaded = evaluate(fresh, config, DIGITS, weights=result.weights)
    assert reloaded.accuracy == scores.accuracy

    data = prepare_data(config, DIGITS)
    images = data.test.images[:16]  # type: ignore[union-attr]
    predictions = predict(model, images, preprocess=data.preprocess)
    assert predictions.labels.shape == (16,) and predictions.probabilities.shape == (16, 10)
    torch.testing.assert_close(predictions.probabilities.sum(dim=1), torch.ones(16))
    assert model.training  # predict and evaluate restore the mode
