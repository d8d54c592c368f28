"""Batch transforms, run on the training device: the one place images are reshaped.

A batch leaves the DataLoader as stored (uint8 or float) and ``Preprocess`` turns it into
the model's input, in this order: to float in [0, 1] -> channels -> resize -> augmentation
(training only) -> normalize -> flatten. Channels, resize and augmentation need image
batches (N, C, H, W); normalization works per entry of dim 1 for any rank. Augmentation draws its randomness from an explicit
``torch.Generator`` seeded per step, so it never touches the global RNG and a resumed run
sees exactly the crops and flips the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from runtime.train.config import Augment, HorizontalFlip, RandomCrop

__all__ = [
    "Preprocess",
    "convert_channels",
    "horizontal_flip",
    "random_crop",
    "resize_images",
]

# ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)
_PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, C, H, W) float -> (N, C, *size), bilinear with antialiasing when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """(N, C, H, W) -> (N, channels, H, W): grayscale <-> RGB; other changes are refused."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {have} channels to {channels}")


def random_crop(
    images: Tensor, padding: int, generator: torch.Generator, mode: str = "constant"
) -> Tensor:
    """Pads (N, C, H, W) by ``padding`` and crops each image back to H x W at a random offset."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), mode=_PAD_MODES[mode])
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def horizontal_flip(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Mirrors each image of (N, C, H, W) left-right with probability ``p``."""
    flip = torch.rand(images.shape[0], generator=generator) < p
    return torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)


@dataclass(frozen=True)
class Preprocess:
    """Stored batch -> model input; see the module docstring for the order of steps.

    Attributes:
        channels: Channel count the model expects, or None to keep the stored one.
        size: ``(height, width)`` the model expects, or None to keep the stored one.
        mean: Per-channel normalization mean, or None for no normalization.
        std: Per-channel normalization std (same length as ``mean``).
        augment: Augmentation steps, applied only when a generator is passed.
        flatten: Flatten each sample to a vector (N, C*H*W) at the end.
    """

    channels: int | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: Sequence[Augment] = ()
    flatten: bool = False

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Transforms a stored batch (N, ...); augments when ``generator`` is given."""
        x = to_float(images)
        if self.channels is not None:
            x = convert_channels(x, self.channels)
        if self.size is not None:
            x = resize_images(x, self.size)
        if generator is not None:
            x = self._augment(x, generator)
        if self.mean is not None and self.std is not None:
            shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcast over dim 1
            x = (x - x.new_tensor(self.mean).view(shape)) / x.new_tensor(self.std).view(shape)
        if self.flatten:
            x = x.flatten(1)
        return x.contiguous()

    def _augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        for step in self.augment:
            if isinstance(step, RandomCrop):
                x = random_crop(x, step.padding, generator, step.padding_mode)
            elif isinstance(step, HorizontalFlip):
                x = horizontal_flip(x, step.p, generator)
        return x


def to_float(images: Tensor) -> Tensor:
    """uint8 0..255 -> float32 0..1; float images pass through as float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()
