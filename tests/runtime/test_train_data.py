"""Datasets, splits, the fit check (with the resize/channels/flatten fixes) and transforms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from runtime.errors import ConfigError, DataError
from runtime.train import (
    Digits,
    ImageFolder,
    Normalize,
    RandomCrop,
    TrainConfig,
    fit,
    prepare_data,
)
from runtime.train.data import EpochSampler
from runtime.train.datasets import TensorImages
from runtime.train.transforms import convert_channels, horizontal_flip, random_crop
from tests.runtime.train_helpers import DIGITS, digits_config, mlp, tiny_cnn

# -- digits and splits ---------------------------------------------------------------------


def test_digits_splits_are_fixed_and_independent_of_the_training_seed() -> None:
    a = prepare_data(digits_config(seed=1), DIGITS)
    b = prepare_data(digits_config(seed=2), DIGITS)
    assert (len(a.train), len(a.val or []), len(a.test)) == (1294, 144, 359)
    assert a.num_classes == 10
    for split in ("train", "val", "test"):
        left, right = a.split(split), b.split(split)
        assert isinstance(left, TensorImages) and isinstance(right, TensorImages)
        assert torch.equal(left.images, right.images)
    assert float(a.train.images.min()) >= 0.0 and float(a.train.images.max()) <= 1.0


def test_no_validation_split_when_val_split_is_zero() -> None:
    data = prepare_data(digits_config(val_split=0.0), DIGITS)
    assert data.val is None and len(data.train) == 1438
    with pytest.raises(ConfigError, match="no val split"):
        data.split("val")


def test_normalize_auto_standardizes_the_training_split() -> None:
    data = prepare_data(digits_config(dataset=Digits(normalize="auto")), DIGITS)
    assert isinstance(data.train, TensorImages)
    x = data.preprocess(data.train.images)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_explicit_normalize_is_broadcast_to_every_channel() -> None:
    config = digits_config(dataset=Digits(channels=3, normalize=Normalize(mean=(0.5,), std=(0.5,))))
    data = prepare_data(config, (3, 8, 8))
    assert data.preprocess.mean == (0.5, 0.5, 0.5)


# -- images that do not fit the model --------------------------------------------------------


def test_wrong_image_shape_is_caught_before_training_with_the_fix() -> None:
    with pytest.raises(DataError) as caught:
        fit(tiny_cnn(channels=3, size=16), digits_config(), (3, 16, 16))
    error = caught.value
    assert error.field == "dataset"
    assert "3x16x16 (the model's input_shape) were expected. Received: 1x8x8" in error.message
    assert error.hint is not None and "channels: 3 and resize: [16, 16]" in error.hint


def test_resize_and_channels_fix_the_mismatch() -> None:
    config = digits_config(epochs=1, dataset=Digits(resize=(16, 16), channels=3))
    data = prepare_data(config, (3, 16, 16))
    assert isinstance(data.train, TensorImages)
    assert data.preprocess(data.train.images[:5]).shape == (5, 3, 16, 16)
    result = fit(tiny_cnn(channels=3, size=16), config, (3, 16, 16))
    assert result.epochs_completed == 1


def test_vector_model_needs_flatten_and_flatten_works() -> None:
    with pytest.raises(DataError) as caught:
        prepare_data(digits_config(), (64,))
    assert caught.value.hint is not None and "flatten: true" in caught.value.hint
    result = fit(mlp(), digits_config(epochs=1, dataset=Digits(flatten=True)), (64,))
    assert result.epochs_completed == 1


def test_model_output_must_cover_the_classes() -> None:
    with pytest.raises(ConfigError, match=r"\(batch, 10\) was expected. Received: \(2, 5\)"):
        fit(tiny_cnn(classes=5), digits_config(), DIGITS)


def test_model_failing_on_the_input_shape_is_reported() -> None:
    with pytest.raises(ConfigError, match="The model failed on a batch of shape"):
        fit(nn.Linear(3, 10), digits_config(), DIGITS)


def test_batch_larger_than_the_training_split() -> None:
    with pytest.raises(ConfigError) as caught:
        fit(tiny_cnn(), digits_config(batch_size=5000), DIGITS)
    assert caught.value.field == "batch_size"
    assert "At most 1294 was expected. Received: batch_size=5000" in caught.value.message


# -- torchvision datasets from a local root --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"),
                         ("cifar10", "cifar-10-batches-py")],
)  # fmt: skip
def test_missing_dataset_says_where_the_files_go(tmp_path: Path, name: str, folder: str) -> None:
    config = digits_config(dataset={"type": name, "root": str(tmp_path)})
    with pytest.raises(DataError) as caught:
        prepare_data(config, (1, 28, 28))
    error = caught.value
    assert error.field == "dataset.root"
    assert "were not found" in error.message
    assert str(tmp_path / folder) in error.message
    assert error.hint is not None and "download=True" in error.hint


def test_corrupt_mnist_files_are_a_data_error(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        (raw / stem).write_bytes(b"\x00\x00\x08\x03garbage")
    config = digits_config(dataset={"type": "mnist", "root": str(tmp_path)})
    with pytest.raises(DataError, match="could not be read"):
        prepare_data(config, (1, 28, 28))


# -- image folders ---------------------------------------------------------------------------


def _image_folder(root: Path, size: tuple[int, int] = (10, 12), per_class: int = 6) -> Path:
    generator = torch.Generator().manual_seed(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = torch.randint(0, 256, (*size, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / label / f"{index}.png")
    return root


def test_image_folder_of_the_wrong_size_names_the_files(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pets")
    config = TrainConfig(dataset=ImageFolder(root=str(root)), batch_size=4)
    with pytest.raises(DataError) as caught:
        prepare_data(config, (3, 8, 8))
    assert "is 10x12" in caught.value.message and ".png" in caught.value.message
    assert caught.value.hint == "set dataset.resize: [8, 8]"


def test_image_folder_trains_after_resize_to_grayscale(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pets")
    dataset = ImageFolder(root=str(root), resize=(8, 8), channels=1, test_split=0.25)
    config = TrainConfig(dataset=dataset, batch_size=4, epochs=1, val_split=0.0)
    data = prepare_data(config, DIGITS)
    assert data.class_names == ("cat", "dog")
    assert (len(data.train), len(data.test)) == (9, 3)
    assert data.train[0][0].shape == (1, 8, 8) and data.train[0][0].dtype == torch.uint8
    result = fit(tiny_cnn(classes=2), config, DIGITS)
    assert result.steps == 3


def test_empty_image_folder_is_a_data_error(tmp_path: Path) -> None:
    config = TrainConfig(dataset=ImageFolder(root=str(tmp_path)))
    with pytest.raises(DataError, match="No images were found"):
        prepare_data(config, DIGITS)


# -- transforms ------------------------------------------------------------------------------


def test_random_crop_equals_pad_then_slice() -> None:
    images = torch.rand(6, 2, 5, 7)
    out = random_crop(images, 2, torch.Generator().manual_seed(3))
    offsets = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(6):
        top, left = int(offsets[0, i]), int(offsets[1, i])
        assert torch.equal(out[i], padded[i, :, top : top + 5, left : left + 7])


def test_horizontal_flip_probability_extremes() -> None:
    images = torch.rand(4, 1, 3, 3)
    assert torch.equal(horizontal_flip(images, 1.0, torch.Generator()), images.flip(-1))
    assert torch.equal(horizontal_flip(images, 0.0, torch.Generator()), images)


def test_channel_conversion_matches_torchvision() -> None:
    rgb = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(
        convert_channels(rgb, 1), TF.rgb_to_grayscale(rgb), atol=1e-3, rtol=0
    )
    gray = torch.rand(2, 1, 4, 4)
    assert torch.equal(convert_channels(gray, 3), gray.expand(-1, 3, -1, -1))


def test_augmentation_is_seeded_and_only_for_training() -> None:
    data = prepare_data(digits_config(augment=(RandomCrop(padding=2),)), DIGITS)
    assert isinstance(data.train, TensorImages)
    x = data.train.images[:8]
    assert torch.equal(data.preprocess(x), x)  # no generator: evaluation, no augmentation
    first = data.preprocess(x, torch.Generator().manual_seed(1))
    again = data.preprocess(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, x)


# -- batch order -----------------------------------------------------------------------------


def test_ranks_split_each_global_batch_and_skip_resumes_mid_epoch() -> None:
    images = TensorImages(torch.zeros(40, 1, 1, 1), torch.zeros(40, dtype=torch.long))
    single = EpochSampler(images, seed=5)
    single.set_position(epoch=3)
    order = list(single)
    ranks = [EpochSampler(images, seed=5, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_position(epoch=3)
    per_rank = [list(sampler) for sampler in ranks]
    # Global batch k of 8 = per-rank batches k of 4 from both ranks.
    for k in range(5):
        merged = sorted(per_rank[0][4 * k : 4 * k + 4] + per_rank[1][4 * k : 4 * k + 4])
        assert merged == sorted(order[8 * k : 8 * k + 8])
    single.set_position(epoch=3, skip=16)
    assert list(single) == order[16:] and len(single) == 24
    single.set_position(epoch=4)
    assert list(single) != order
