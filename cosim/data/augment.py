"""Crop-and-flip augmentation of training batches of images, drawn per epoch from the data seed.

``crop-flip`` (the standard CIFAR augmentation of K. He et al., "Deep Residual Learning for Image
Recognition", 2016, sec. 4.2): each image is padded by ``padding`` zeros on every side, a random
window of the original size is cut from it and, with probability 1/2, mirrored left to right.
The draws of epoch ``e`` come from a generator seeded by ``(seed.data, e)`` alone, so a run
resumed at an epoch boundary draws exactly what an uninterrupted run draws, with nothing to save.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cosim.config import ConfigError, DataConfig
from cosim.data.dataset import Dataset

__all__ = ["CropFlip", "crop_flip", "epoch_generator", "make_augmentation"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator that depends on ``seed`` and ``epoch`` only (mixed by numpy's
    ``SeedSequence``, so that neighbouring seeds and epochs give unrelated streams)."""
    high, low = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(high) << 32 | int(low))


def crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """``x`` ``[n, C, H, W]`` with each image cut at a random offset from its zero-padded copy
    (``padding`` pixels each side: a shift of ``-padding..padding`` in each direction) and mirrored
    left to right with probability 1/2. Draws on the CPU from ``generator``, so the result does not
    depend on the device."""
    if x.ndim != 4:
        raise ValueError(f"crop_flip takes images [n, C, H, W], got shape {list(x.shape)}")
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(h)
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + offsets[:, 1:]
    device = x.device
    index = (
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows.to(device)[:, None, :, None],
        cols.to(device)[:, None, None, :],
    )
    return padded[index]


@dataclass(frozen=True)
class CropFlip:
    """``crop-flip`` with ``padding`` pixels, seeded by the run's data seed."""

    padding: int
    seed: int

    def epoch(self, epoch: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The augmentation of epoch ``epoch``'s batches, in the order they are drawn."""
        generator = epoch_generator(self.seed, epoch)
        return lambda x: crop_flip(x, self.padding, generator)


def make_augmentation(config: DataConfig, seed: int, data: Dataset) -> CropFlip | None:
    """The training augmentation of ``config`` (``None`` for ``augment = "none"``)."""
    if config.augment == "none":
        return None
    if not data.has_images:
        raise ConfigError(
            f"data.augment: {config.augment!r} crops and flips images [C, H, W], but {data.name} samples have "
            f"shape {list(data.input_shape)}; set data.augment = 'none'"
        )
    return CropFlip(config.crop_padding, seed)
