"""Scoring a model: the evaluation pass shared by validation, ``evaluate`` and ``predict``.

Evaluation always runs the plain module (never the DDP wrapper, whose forward would expect
every process to take part) in ``eval()`` mode under ``torch.inference_mode``, and puts
the module back in the mode it was in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from runtime.train.checkpoint import load_weights, unwrap_model
from runtime.train.config import TrainConfig
from runtime.train.data import DataSplits, ShardSampler, make_loader, prepare_data
from runtime.train.distributed import DistContext, resolve_device
from runtime.train.metrics import EvalResult, Totals, confusion_matrix, per_class_accuracy
from runtime.train.optim import build_loss
from runtime.train.transforms import Preprocess

__all__ = ["Predictions", "evaluate", "predict", "score"]

_EVAL_BATCH = 256


def score(
    model: nn.Module,
    loader: DataLoader[tuple[Tensor, Tensor]],
    preprocess: Preprocess,
    loss_fn: nn.Module,
    class_names: tuple[str, ...],
    ks: tuple[int, ...],
    device: torch.device,
    context: DistContext | None = None,
) -> EvalResult:
    """Loss, accuracy, top-k, per-class accuracy and confusion matrix of ``model`` on ``loader``.

    With a ``context`` each process scores its shard and the sums are all-reduced.
    """
    module = unwrap_model(model)
    was_training = module.training
    module.eval()
    num_classes = len(class_names)
    totals = Totals(ks, device)
    matrix = torch.zeros((num_classes, num_classes), dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            for images, labels in loader:
                x = preprocess(images.to(device, non_blocking=True))
                y = labels.to(device, non_blocking=True)
                outputs = module(x)  # (B, K)
                totals.add(loss_fn(outputs, y), outputs, y)
                predicted = outputs.argmax(dim=1)
                known = predicted < num_classes  # a model may output more values than classes
                matrix += confusion_matrix(predicted[known], y[known], num_classes)
    finally:
        module.train(was_training)
    if context is not None:
        context.all_reduce_sum(totals.values)
        context.all_reduce_sum(matrix)
    summary = totals.summary(("accuracy",))
    top = totals.summary(tuple(f"top{k}" for k in ks))
    matrix = matrix.cpu()
    return EvalResult(
        loss=summary["loss"],
        accuracy=summary["accuracy"],
        top_k={k: top[f"top{k}"] for k in ks},
        per_class_accuracy=per_class_accuracy(matrix),
        confusion_matrix=matrix,
        class_names=class_names,
        num_samples=totals.count,
    )


def evaluate(
    model: nn.Module,
    config: TrainConfig,
    input_shape: Sequence[int],
    *,
    split: str = "test",
    device: str | torch.device = "auto",
    weights: str | Path | None = None,
    data: DataSplits | None = None,
) -> EvalResult:
    """Scores ``model`` on one split of the dataset named in ``config``.

    Args:
        model: Any module taking (B, *input_shape) and returning (B, num_classes) scores.
        config: The training configuration; its dataset, loss and metrics are used.
        input_shape: The model's input without the batch dimension, as for ``fit``.
        split: ``"test"`` (the dataset's own test set or fixed hold-out), ``"val"`` or
            ``"train"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        weights: A ``.safetensors`` file to load into ``model`` first.
        data: The dataset of ``config``, when the caller has loaded it already.

    Returns:
        Loss, accuracy, top-k, per-class accuracy and the confusion matrix.

    Raises:
        ConfigError, DataError, CheckpointError: as for ``fit``.
    """
    resolved = resolve_device(device)
    data = data or prepare_data(config, tuple(input_shape))
    images = data.split(split)
    if weights is not None:
        load_weights(model, weights)
    model.to(resolved)
    loader = make_loader(
        images,
        ShardSampler(len(images)),
        config.eval_batch_size or max(config.batch_size, _EVAL_BATCH),
        num_workers=config.num_workers,
        pin_memory=resolved.type == "cuda",
    )
    return score(
        model,
        loader,
        data.preprocess,
        build_loss(config.loss),
        data.class_names,
        config.top_k,
        resolved,
    )


@dataclass(frozen=True)
class Predictions:
    """``labels`` (N,) int64 predicted classes and ``probabilities`` (N, K) softmax scores."""

    labels: Tensor
    probabilities: Tensor


def predict(
    model: nn.Module,
    images: Tensor,
    *,
    preprocess: Preprocess | None = None,
    batch_size: int = _EVAL_BATCH,
    device: str | torch.device = "auto",
) -> Predictions:
    """Classifies a batch of images.

    Args:
        model: The trained module.
        images: (N, C, H, W) uint8 in 0..255 or float in [0, 1], as the dataset stores them.
        preprocess: The training run's preprocessing (``prepare_data(...).preprocess``), so
            channels, size and normalization match what the model was trained on.
        batch_size: Images per forward pass.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        Predicted labels and softmax probabilities, on the CPU.
    """
    resolved = resolve_device(device)
    module = unwrap_model(model).to(resolved)
    transform = preprocess or Preprocess()
    was_training = module.training
    module.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = transform(images[start : start + batch_size].to(resolved))
                # softmax also turns nll's log-probabilities back into probabilities.
                chunks.append(module(x).float().softmax(dim=1).cpu())
    finally:
        module.train(was_training)
    probabilities = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return Predictions(probabilities.argmax(dim=1), probabilities)
