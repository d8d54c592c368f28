"""Classification metrics: running totals during training and the full evaluation report.

``Totals`` keeps every sum on the device in one float64 vector, so a training step adds to
it without a host sync and N processes combine theirs with a single all-reduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EvalResult", "Totals", "confusion_matrix", "topk_correct"]


def topk_correct(outputs: Tensor, labels: Tensor, ks: tuple[int, ...]) -> Tensor:
    """Counts of rows whose label is among the k largest outputs, one per k: (len(ks),)."""
    if not ks:
        return outputs.new_zeros(0, dtype=torch.float64)
    k_max = min(max(ks), outputs.shape[1])
    top = outputs.topk(k_max, dim=1).indices  # (B, k_max), best first
    hits = top == labels[:, None]  # (B, k_max)
    counts = [hits[:, : min(k, k_max)].any(dim=1).sum() for k in ks]
    return torch.stack(counts).to(torch.float64)


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    flat = labels * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


class Totals:
    """Sums over batches: [loss * n, n, correct top-1, correct top-k for each k]."""

    def __init__(self, ks: tuple[int, ...], device: torch.device) -> None:
        self.ks = ks
        self.values = torch.zeros(3 + len(ks), dtype=torch.float64, device=device)

    def add(self, loss: Tensor, outputs: Tensor, labels: Tensor) -> None:
        """Adds one batch: ``loss`` is the batch mean, ``outputs`` (B, K), ``labels`` (B,)."""
        n = labels.shape[0]
        counts = topk_correct(outputs.detach(), labels, (1, *self.ks))
        self.values[0] += loss.detach().double() * n
        self.values[1] += n
        self.values[2:] += counts

    def summary(self, metrics: tuple[str, ...] = ("accuracy",)) -> dict[str, float]:
        """``{"loss": …, "accuracy": …, "top5": …}`` for the requested metrics."""
        values = self.values.tolist()
        count = max(values[1], 1.0)
        result = {"loss": values[0] / count}
        if "accuracy" in metrics:
            result["accuracy"] = values[2] / count
        for k, correct in zip(self.ks, values[3:], strict=True):
            result[f"top{k}"] = correct / count
        return result

    @property
    def count(self) -> int:
        return int(self.values[1].item())

    def state(self) -> list[float]:
        return [float(v) for v in self.values.tolist()]

    def load(self, state: list[float]) -> None:
        self.values.copy_(torch.tensor(state, dtype=torch.float64))


@dataclass(frozen=True)
class EvalResult:
    """A model scored on one split.

    Attributes:
        loss: Mean loss per image.
        accuracy: Fraction of images whose top-1 prediction is the label.
        top_k: ``{k: fraction}`` for every topK metric asked for.
        per_class_accuracy: Accuracy of each class (recall), NaN for a class with no images.
        confusion_matrix: (K, K) int64 counts; row = true class, column = predicted.
        class_names: Names of the K classes.
        num_samples: Images scored.
    """

    loss: float
    accuracy: float
    top_k: dict[int, float]
    per_class_accuracy: list[float]
    confusion_matrix: Tensor
    class_names: tuple[str, ...]
    num_samples: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat scalars (loss, accuracy, topK) for logs, keys prefixed with ``prefix``."""
        scalars = {"loss": self.loss, "accuracy": self.accuracy}
        scalars.update({f"top{k}": v for k, v in self.top_k.items()})
        return {prefix + key: value for key, value in scalars.items()}


def per_class_accuracy(matrix: Tensor) -> list[float]:
    """Diagonal over row sums of a confusion matrix; NaN where a class has no images."""
    totals = matrix.sum(dim=1).double()
    correct = matrix.diagonal().double()
    return (correct / totals).tolist()
