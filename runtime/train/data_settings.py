"""Dataset settings: where the images come from and how they are fitted to the model.

One class per dataset, tagged by ``type``; ``DatasetConfig`` is the union ``TrainConfig``
holds. Only options that can be checked on their
own are checked here; whether the images fit the model is checked once the data is loaded
(``data.py``). This module imports only pydantic.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator
from pydantic_core import PydanticCustomError

from runtime.train.settings import (
    Bool,
    Fraction,
    NonNegativeInt,
    Options,
    PositiveFloat,
    PositiveInt,
    choice,
)

TwoOrMore = Annotated[int, Strict(), Field(ge=2)]


class Normalize(Options):
    """Per-channel ``(x - mean) / std``; one value broadcasts to every channel."""

    mean: tuple[Annotated[float, Strict()], ...]
    std: tuple[PositiveFloat, ...]

    @model_validator(mode="after")
    def _one_std_per_mean(self) -> Normalize:
        # Not min_length on the tuples: pydantic would add a length error to every bad item.
        if len(self.mean) != len(self.std) or not self.mean:
            raise PydanticCustomError(
                "normalize_lengths",
                "normalize needs one std per mean. Non-empty lists of equal length were "
                "expected. Received: mean={mean}, std={std}",
                {"mean": list(self.mean), "std": list(self.std)},
            )
        return self


class _Dataset(Options):
    """Options every dataset shares: fitting images to the model's input.

    Attributes:
        resize: ``(height, width)`` every image is resized to (antialiased bilinear).
        channels: 1 or 3; converts RGB to grayscale or grayscale to RGB.
        normalize: Per-channel mean/std, ``"auto"`` (computed on the training split), or None.
        flatten: Flatten each image to a vector, for models whose input is [C*H*W].
        split_seed: Seed of the test and validation splits, independent of the training seed
            so that runs with different seeds are scored on the same images.
    """

    resize: tuple[PositiveInt, PositiveInt] | None = None
    channels: Literal[1, 3] | None = None
    normalize: Normalize | Literal["auto"] | None = None
    flatten: Bool = False
    split_seed: NonNegativeInt = 0


class Digits(_Dataset):
    """scikit-learn's bundled 1x8x8 handwritten digits (1797 images, offline).

    ``test_split`` is the held-out test fraction (the dataset has no test set of its own).
    """

    type: Literal["digits"] = "digits"
    test_split: Fraction = 0.2


class Synthetic(_Dataset):
    """Random class prototypes plus noise, in the model's input shape (for benchmarks).

    ``num_samples`` training + validation images of ``num_classes`` classes.
    """

    type: Literal["synthetic"] = "synthetic"
    num_samples: TwoOrMore = 1024
    num_classes: TwoOrMore = 10
    test_split: Fraction = 0.2


class TorchvisionDataset(_Dataset):
    """A torchvision dataset read from ``root``; ``download`` lets torchvision fetch it."""

    type: Literal["cifar10", "mnist", "fashion_mnist"]
    root: Annotated[str, Field(min_length=1)]
    download: Bool = False


class CIFAR10(TorchvisionDataset):
    """torchvision's CIFAR-10 (3x32x32, 10 classes) from ``root``."""

    type: Literal["cifar10"] = "cifar10"


class MNIST(TorchvisionDataset):
    """torchvision's MNIST (1x28x28, 10 classes) from ``root``."""

    type: Literal["mnist"] = "mnist"


class FashionMNIST(TorchvisionDataset):
    """torchvision's Fashion-MNIST (1x28x28, 10 classes) from ``root``."""

    type: Literal["fashion_mnist"] = "fashion_mnist"


class ImageFolder(_Dataset):
    """One folder per class under ``root`` (or ``root/train`` and ``root/test``)."""

    type: Literal["image_folder"] = "image_folder"
    root: Annotated[str, Field(min_length=1)]
    test_split: Fraction = 0.2


DatasetConfig = Annotated[
    Digits | Synthetic | CIFAR10 | MNIST | FashionMNIST | ImageFolder,
    Field(discriminator="type"),
    choice("dataset", Digits, Synthetic, CIFAR10, MNIST, FashionMNIST, ImageFolder),
]
