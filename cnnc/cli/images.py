"""Reading image files for ``cnnc predict`` into the layout the dataset stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cnnc.errors import Location, Problem, SourceError


def read_images(paths: list[Path], stored: tuple[int, ...]) -> Tensor:
    """(N, C, H, W) uint8 images converted and resized to the dataset's stored (C, H, W)."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = (int(s) for s in stored)
    batch = []
    for path in paths:
        try:
            with Image.open(path) as image:
                converted = image.convert("L" if channels == 1 else "RGB")
                resized = converted.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(resized, dtype=np.uint8).reshape(height, width, channels)
        except (OSError, UnidentifiedImageError) as exc:
            raise SourceError(
                [
                    Problem(
                        f"cannot read the image: {exc}",
                        Location(str(path)),
                        hint="give PNG or JPEG files",
                    )
                ]
            ) from None
        batch.append(torch.from_numpy(array.copy()).permute(2, 0, 1))  # (C, H, W)
    return torch.stack(batch)
