"""Image sources: where the train and test images of each named dataset come from.

Every source returns a ``Source``: a training pool (split into train/validation later), a
test set, the class names and the stored image shape. Images are stored as they come
(uint8 0..255, or float32 in [0, 1] for digits and synthetic data); conversion to float,
channel conversion, resizing, augmentation and normalization happen per batch, on the
training device (``transforms.py``). Nothing is downloaded unless ``download`` is set; a
missing or unreadable dataset raises ``DataError`` saying where its files must go.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from runtime.errors import DataError
from runtime.train.data_settings import (
    DatasetConfig,
    Digits,
    ImageFolder,
    Synthetic,
    TorchvisionDataset,
)
from runtime.train.transforms import resize_images

__all__ = ["FolderImages", "Source", "TensorImages", "load_source"]

Shape = tuple[int, ...]


class TensorImages(Dataset[tuple[Tensor, Tensor]]):
    """Images held in memory: ``images`` (N, C, H, W), ``labels`` (N,) int64."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        assert len(images) == len(labels), "one label per image"
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        # The DataLoader hands a whole batch of indices here: one gather, no per-item collate.
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.labels[index]

    def subset(self, indices: Tensor) -> TensorImages:
        return TensorImages(self.images[indices], self.labels[indices])


class FolderImages(Dataset[tuple[Tensor, Tensor]]):
    """Image files decoded on access: uint8 (C, H, W), resized to ``size`` when given."""

    def __init__(
        self, samples: Sequence[tuple[str, int]], mode: str, size: tuple[int, int] | None
    ) -> None:
        self.samples = list(samples)
        self.mode = mode
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            array = np.asarray(image.convert(self.mode), dtype=np.uint8)
        pixels = torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1)
        pixels = pixels.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
        if self.size is not None and tuple(pixels.shape[1:]) != self.size:
            # Files differ in size, so resizing must happen before batches are stacked.
            resized = resize_images(pixels[None].float() / 255, self.size)[0]
            pixels = (resized * 255).round().clamp(0, 255).to(torch.uint8)
        return pixels, torch.tensor(label)

    def subset(self, indices: Tensor) -> FolderImages:
        return FolderImages([self.samples[i] for i in indices.tolist()], self.mode, self.size)


Images = TensorImages | FolderImages


@dataclass(frozen=True)
class Source:
    """A dataset as stored: training pool, test set, classes and per-sample shape.

    ``image_shape`` is (C, H, W) for images; synthetic data takes any shape it is given.
    """

    name: str
    train: Images
    test: Images
    class_names: tuple[str, ...]
    image_shape: Shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def holdout(count: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Splits ``range(count)`` into (kept, held-out) index tensors with a seeded shuffle."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held = round(count * fraction)
    return order[held:], order[:held]


@functools.cache
def _digits_table() -> np.ndarray:
    """(1797, 65): 64 pixel counts (0..16) and the label, as ``load_digits`` reads them."""
    spec = importlib.util.find_spec("sklearn")
    locations = spec.submodule_search_locations if spec is not None else None
    table = Path(locations[0], "datasets", "data", "digits.csv.gz") if locations else None
    if table is not None and table.is_file():
        # Reading the bundled file directly skips importing sklearn (~1.5 s).
        return np.loadtxt(table, delimiter=",", dtype=np.float32)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.hstack([bunch.data, bunch.target[:, None]]).astype(np.float32)


def _digits(config: Digits) -> Source:
    table = torch.from_numpy(_digits_table())
    # Pixel values are counts 0..16 of a 4x4 block; /16 puts them in [0, 1].
    images = (table[:, :64] / 16).reshape(-1, 1, 8, 8)  # (1797, 1, 8, 8)
    pool = TensorImages(images, table[:, 64].long())
    kept, held = holdout(len(pool), config.test_split, config.split_seed)
    names = tuple(str(n) for n in range(10))
    return Source("digits", pool.subset(kept), pool.subset(held), names, (1, 8, 8))


def _synthetic(config: Synthetic, shape: Shape) -> Source:
    """Class prototypes plus noise: learnable, so benchmarks and tests see the loss fall."""
    generator = torch.Generator().manual_seed(config.split_seed)
    prototypes = torch.randn((config.num_classes, *shape), generator=generator)

    def draw(count: int) -> TensorImages:
        labels = torch.randint(config.num_classes, (count,), generator=generator)
        noise = torch.randn((count, *shape), generator=generator)
        return TensorImages(0.5 * prototypes[labels] + noise, labels)

    train = draw(config.num_samples)
    test = draw(max(2, round(config.num_samples * config.test_split)))
    names = tuple(str(i) for i in range(config.num_classes))
    return Source("synthetic", train, test, names, shape)


# name -> (torchvision class, folder under root, files, archive url)
_TORCHVISION = {
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        "data_batch_1..5, test_batch, batches.meta",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "mnist": (
        "MNIST",
        "MNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    "fashion_mnist": (
        "FashionMNIST",
        "FashionMNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}


def _torchvision(config: TorchvisionDataset) -> Source:
    import torchvision

    cls_name, folder, files, url = _TORCHVISION[config.type]
    root = Path(config.root).expanduser().resolve()
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train, test = (cls(str(root), train=t, download=config.download) for t in (True, False))
    except Exception as error:
        what = "could not be read"
        if "not found" in str(error).lower():  # torchvision's message for missing files
            what = "are incomplete" if (root / folder).exists() else "were not found"
        raise DataError(
            f"The {config.type} files {what}. They were expected in {root / folder} "
            f"({files}). Received: root={config.root}, error: {error}.",
            hint=f'download once with: python -c "import torchvision; torchvision.datasets.'
            f"{cls_name}('{root}', download=True)\", set dataset.download: true, or get "
            f"{url} and extract it under {root}",
            field="dataset.root",
        ) from error
    pool = _as_tensors(train.data, train.targets)
    c, h, w = pool.images.shape[1:]
    return Source(
        config.type, pool, _as_tensors(test.data, test.targets), tuple(train.classes), (c, h, w)
    )


def _as_tensors(data: np.ndarray | Tensor, targets: Sequence[int] | Tensor) -> TensorImages:
    images = torch.as_tensor(data)
    # MNIST stores (N, H, W), CIFAR (N, H, W, C); both become (N, C, H, W) uint8.
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return TensorImages(images.contiguous(), torch.as_tensor(targets, dtype=torch.long))


def _image_folder(config: ImageFolder, shape: Shape) -> Source:
    from torchvision.datasets import ImageFolder

    root = Path(config.root).expanduser().resolve()
    train_root = root / "train" if (root / "train").is_dir() else root
    try:
        train = ImageFolder(str(train_root))
        test = ImageFolder(str(root / "test")) if (root / "test").is_dir() else None
    except (FileNotFoundError, OSError) as error:
        raise DataError(
            f"No images were found under {train_root}. One folder of images per class was "
            f"expected ({root}/train/<class>/*.png, optional {root}/test/<class>/*.png). "
            f"Received: root={config.root}, error: {error}.",
            hint="point dataset.root at a folder laid out like torchvision's ImageFolder",
            field="dataset.root",
        ) from error
    channels = config.channels or (shape[0] if len(shape) == 3 else 3)
    mode = "L" if channels == 1 else "RGB"
    size = config.resize
    pool = FolderImages(train.samples, mode, size)
    if test is not None:
        held_out = FolderImages(test.samples, mode, size)
    else:
        kept, held = holdout(len(pool), config.test_split, config.split_seed)
        pool, held_out = pool.subset(kept), pool.subset(held)
    # Without resize every file must already have the model's size (or, for a flattened
    # input, the first file's size) for batches to stack.
    expected = (shape[1], shape[2]) if len(shape) == 3 else _first_size(pool)
    if size is None:
        _check_sizes(pool, expected)
        _check_sizes(held_out, expected)
    height, width = size or expected
    return Source("image_folder", pool, held_out, tuple(train.classes), (channels, height, width))


def _first_size(images: FolderImages) -> tuple[int, int]:
    from PIL import Image

    with Image.open(images.samples[0][0]) as image:
        width, height = image.size
    return height, width


def _check_sizes(images: FolderImages, expected: tuple[int, int]) -> None:
    """Reads only the file headers: every image must be height x width without ``resize``."""
    from PIL import Image

    wrong = []
    for path, _ in images.samples:
        with Image.open(path) as image:
            width, height = image.size
        if (height, width) != tuple(expected):
            wrong.append(f"{path} is {height}x{width}")
    if wrong:
        raise DataError(
            f"{len(wrong)} image(s) do not fit the model's input. "
            f"{expected[0]}x{expected[1]} images were expected. Received: {'; '.join(wrong[:3])}.",
            hint=f"set dataset.resize: [{expected[0]}, {expected[1]}]",
            field="dataset.resize",
        )


def load_source(config: DatasetConfig, input_shape: Shape) -> Source:
    """Loads the dataset of ``config``; synthetic data takes the shape ``input_shape``."""
    if isinstance(config, Digits):
        return _digits(config)
    if isinstance(config, Synthetic):
        return _synthetic(config, input_shape)
    if isinstance(config, ImageFolder):
        return _image_folder(config, input_shape)
    return _torchvision(config)
