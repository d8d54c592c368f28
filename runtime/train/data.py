"""From a ``DatasetConfig`` to batches: the fit check, the splits and the loaders.

``prepare_data`` loads the source, refuses images that do not fit the model's input shape
(before any training, with the ``resize``/``channels`` fix in the hint), splits a fixed,
seeded validation set off the training pool, and resolves normalization statistics.
``EpochSampler`` gives every epoch a seeded permutation (torch's ``DistributedSampler``,
so one process and N processes visit the same global batches) and can skip the batches
a resumed run has already trained on.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.dataloader import default_collate
from torch.utils.data.distributed import DistributedSampler

from runtime.errors import ConfigError, DataError
from runtime.train.config import TrainConfig
from runtime.train.data_settings import DatasetConfig, Normalize
from runtime.train.datasets import FolderImages, Images, Source, holdout, load_source
from runtime.train.transforms import Preprocess, convert_channels, to_float

__all__ = [
    "DataSplits",
    "EpochSampler",
    "ShardSampler",
    "check_batch_size",
    "check_fit",
    "make_loader",
    "prepare_data",
]

Shape = tuple[int, ...]
_STATS_SAMPLES = 2000  # files decoded to estimate mean/std of an image folder


@dataclass(frozen=True)
class DataSplits:
    """Train, validation (None when ``val_split`` is 0) and test images, ready to batch."""

    train: Images
    val: Images | None
    test: Images
    class_names: tuple[str, ...]
    preprocess: Preprocess

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Images:
        """Returns the ``"train"``, ``"val"`` or ``"test"`` images."""
        images = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if images is None:
            raise ConfigError(
                f"There is no {name} split. 'train', 'val' (with val_split > 0) or 'test' "
                f"was expected. Received: split='{name}'."
            )
        return images


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def check_fit(source: Source, config: DatasetConfig, input_shape: Shape) -> None:
    """Raises ``DataError`` unless the samples, after channels/resize/flatten, are input_shape."""
    if len(source.image_shape) != 3:  # synthetic non-image data already has the input shape
        _check_image_options(config, input_shape)
        return
    c, h, w = source.image_shape
    fitted: tuple[int, ...] = (config.channels or c, *(config.resize or (h, w)))
    if config.flatten:
        fitted = (fitted[0] * fitted[1] * fitted[2],)
    if fitted == tuple(input_shape):
        return
    stored = f"(stored as {_dims(source.image_shape)})"
    if len(input_shape) == 1 and not config.flatten:
        hint = "set flatten: true in the dataset to feed images to a model taking vectors"
        if c * h * w != input_shape[0]:
            hint += f", with channels/resize so that C*H*W = {input_shape[0]}"
    elif config.flatten:
        hint = f"choose channels/resize so that C*H*W = {input_shape[0]}"
    else:
        want_c, want_h, want_w = input_shape
        fixes = [f"channels: {want_c}"] if fitted[0] != want_c else []
        fixes += [f"resize: [{want_h}, {want_w}]"] if fitted[1:] != (want_h, want_w) else []
        hint = (
            f"set {' and '.join(fixes)} in the dataset, or change the model's input to "
            f"[{', '.join(map(str, fitted))}]"
        )
    field = (
        "dataset.resize" if config.resize else "dataset.channels" if config.channels else "dataset"
    )
    raise DataError(
        f"The {source.name} images do not fit the model's input. Samples of shape "
        f"{_dims(input_shape)} (the model's input_shape) were expected. Received: "
        f"{_dims(fitted)} {stored}.",
        hint=hint,
        field=field,
    )


def _check_image_options(config: DatasetConfig, input_shape: Shape) -> None:
    for name in ("resize", "channels"):
        if getattr(config, name) is not None:
            raise ConfigError(
                f"{name} only applies to images. A model input of shape [C, H, W] was "
                f"expected. Received: input_shape={list(input_shape)}.",
                field=f"dataset.{name}",
            )


def check_batch_size(batch_size: int, num_train: int, world_size: int) -> None:
    """The global batch must fit the training split and divide evenly over the processes."""
    if batch_size > num_train:
        raise ConfigError(
            "batch_size is larger than the training split. At most "
            f"{num_train} was expected. Received: batch_size={batch_size}, "
            f"training images={num_train}.",
            hint=f"use batch_size <= {num_train}",
            field="batch_size",
        )
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size must split evenly over {world_size} processes. A multiple of "
            f"{world_size} was expected. Received: batch_size={batch_size}.",
            field="batch_size",
        )


def prepare_data(config: TrainConfig, input_shape: Shape) -> DataSplits:
    """Loads, checks and splits the dataset of ``config`` for a model taking input_shape."""
    source = load_source(config.dataset, input_shape)
    check_fit(source, config.dataset, input_shape)
    train: Images = source.train
    val: Images | None = None
    if config.val_split > 0:
        kept, held = holdout(len(train), config.val_split, config.dataset.split_seed + 1)
        train, val = train.subset(kept), train.subset(held)
    if config.augment and len(source.image_shape) != 3:
        raise ConfigError(
            "Augmentation only applies to images. [C, H, W] samples were expected. "
            f"Received: samples of shape {list(source.image_shape)}.",
            field="augment",
        )
    stored_channels = source.image_shape[0]
    channels = config.dataset.channels or stored_channels
    mean, std = _normalization(config.dataset, train, channels, stored_channels)
    preprocess = Preprocess(
        channels=channels if channels != stored_channels else None,
        size=config.dataset.resize,
        mean=mean,
        std=std,
        augment=config.augment,
        flatten=config.dataset.flatten,
    )
    return DataSplits(train, val, source.test, source.class_names, preprocess)


def _normalization(
    config: DatasetConfig, train: Images, channels: int, stored_channels: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    if config.normalize is None:
        return None, None
    if isinstance(config.normalize, Normalize):
        stats = config.normalize
        if len(stats.mean) not in (1, channels):
            raise ConfigError(
                f"normalize has {len(stats.mean)} means for {channels}-channel input. "
                f"{channels} values were expected. Received: mean={list(stats.mean)}.",
                field="dataset.normalize.mean",
            )
        return stats.mean * (channels // len(stats.mean)), stats.std * (channels // len(stats.std))
    return channel_stats(train, channels, stored_channels)


def channel_stats(
    images: Images, channels: int, stored_channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (dim 1) mean and std of the training samples (a sample of a folder's)."""
    count = len(images)
    if isinstance(images, FolderImages):
        step = max(1, count // _STATS_SAMPLES)
        batches: Iterator[Tensor] = (images[i][0][None] for i in range(0, count, step))
    else:
        batches = (images.images[i : i + 4096] for i in range(0, count, 4096))
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    pixels = 0
    for batch in batches:
        x = to_float(batch)
        if stored_channels != channels:
            x = convert_channels(x, channels)
        x = x.double().transpose(0, 1).reshape(channels, -1)  # (C, N*H*W)
        total += x.sum(dim=1)
        squares += x.square().sum(dim=1)
        pixels += x.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


class EpochSampler(Sampler[int]):
    """This process's share of a seeded per-epoch permutation, minus already-trained batches.

    Wraps ``DistributedSampler`` (permutation seeded with ``seed + epoch``; process ``r`` of
    ``N`` takes every N-th index from ``r``), so the union of the N per-process batches of
    step k is the global batch k a single process would draw.
    """

    def __init__(self, images: Images, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self._inner: DistributedSampler[int] = DistributedSampler(
            images, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self._skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        """Selects ``epoch``'s permutation and skips its first ``skip`` indices."""
        self._inner.set_epoch(epoch)
        self._skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self._inner), self._skip, None)

    def __len__(self) -> int:
        return len(self._inner) - self._skip

    @property
    def samples_per_epoch(self) -> int:
        """Indices this process visits in a full epoch."""
        return len(self._inner)


class ShardSampler(Sampler[int]):
    """Evaluation order: indices ``rank, rank + N, ...`` with no padding and no shuffling."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self._indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


def _collate(
    batch: tuple[Tensor, Tensor] | Sequence[tuple[Tensor, Tensor]],
) -> tuple[Tensor, Tensor]:
    if isinstance(batch, tuple):  # already stacked by TensorImages.__getitems__
        return batch
    images, labels = default_collate(list(batch))
    return images, labels


def make_loader(
    images: Images,
    sampler: Sampler[int],
    batch_size: int,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader[tuple[Tensor, Tensor]]:
    """A DataLoader over ``images`` in ``sampler`` order that never touches the global RNG."""
    return DataLoader(
        images,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_collate,
        persistent_workers=num_workers > 0,
        # Without its own generator the loader draws a worker seed from the global RNG at
        # every iter(), which would shift dropout masks after a resume.
        generator=torch.Generator(),
    )
