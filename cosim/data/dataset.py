"""A loaded dataset: samples and labels of the train and test split, and the class count.

Samples are either a float tensor ``[n, ...]`` in ``[0, 1]`` (digits, MNIST) or :class:`ByteImages`,
``uint8`` images ``[n, C, H, W]`` that turn into floats one batch at a time when indexed: the
1.28 M training images of ImageNet32 are 3.9 GB as bytes and would be 15.7 GB as float32.
Every consumer indexes or slices the samples (a batch, the first ``n``) and gets a float tensor
either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cosim.config import ConfigError

__all__ = ["ByteImages", "Dataset", "describe"]


class ByteImages:
    """``uint8`` images ``[n, C, H, W]`` (``images``) read as float32 in ``[0, 1]`` (value / 255)
    by indexing: ``x[index]`` and ``x[a:b]`` are float tensors, ``len(x)`` and ``x.shape`` those of
    the images. :meth:`head` cuts the bytes themselves."""

    __slots__ = ("images",)

    def __init__(self, images: torch.Tensor):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"ByteImages holds uint8 images [n, C, H, W], got {describe(images)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> torch.Tensor:
        return self.images[index].to(torch.float32) / 255.0

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    @property
    def ndim(self) -> int:
        return self.images.ndim

    def head(self, n: int) -> ByteImages:
        """The first ``n`` images (a view, no copy)."""
        return ByteImages(self.images[:n])

    def __repr__(self) -> str:
        return f"ByteImages(uint8 of shape {list(self.images.shape)})"


def describe(value) -> str:
    """``value``'s dtype and shape (arrays, tensors), else its type, for error messages."""
    if isinstance(value, np.ndarray | torch.Tensor):
        return f"{value.dtype} of shape {list(value.shape)}"
    if isinstance(value, ByteImages):
        return f"uint8 images of shape {list(value.shape)}"
    return type(value).__name__


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor | ByteImages
    """Training samples ``[n, ...]``: float in ``[0, 1]``, or ``uint8`` images read as such."""
    train_y: torch.Tensor
    """Training labels ``[n]``, int64 in ``[0, n_classes)``."""
    test_x: torch.Tensor | ByteImages
    test_y: torch.Tensor
    n_classes: int
    """Classes of the dataset (its format's or its metadata's count, not the labels present)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def has_images(self) -> bool:
        """Whether the samples are images ``[C, H, W]`` (which crops and flips apply to)."""
        return self.train_x.ndim == 4

    def head(self, train: int = 0, test: int = 0) -> Dataset:
        """The first ``train`` training and ``test`` test samples (0: all of them)."""

        def cut(x, n):
            if not n:
                return x
            return x.head(n) if isinstance(x, ByteImages) else x[:n]

        return Dataset(
            self.name,
            cut(self.train_x, train),
            cut(self.train_y, train),
            cut(self.test_x, test),
            cut(self.test_y, test),
            self.n_classes,
        )

    def check(self) -> Dataset:
        """``self`` if every part is usable: samples of at least one dimension, finite and in
        ``[0, 1]``, one integer label in ``[0, n_classes)`` per sample; else a ``ConfigError``."""
        for xs, ys in (("train_x", "train_y"), ("test_x", "test_y")):
            x, y = getattr(self, xs), getattr(self, ys)
            floats = isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 2
            if not floats and not isinstance(x, ByteImages):
                raise ConfigError(
                    f"data: {self.name} {xs} is {describe(x)}; samples must be a float tensor [n, ...] "
                    "(one row per sample)"
                )
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
                raise ConfigError(f"data: {self.name} {ys} is {describe(y)}; labels must be integers of shape [n]")
            if len(x) != len(y):
                raise ConfigError(f"data: {self.name} has {len(x)} samples in {xs} but {len(y)} labels in {ys}")
        for part in ("train_x", "test_x"):
            x = getattr(self, part)
            if len(x) == 0 or 0 in x.shape:
                raise ConfigError(f"data: {self.name} {part} is empty (check data.train_subset/test_subset)")
            if isinstance(x, ByteImages):
                continue  # bytes / 255 are finite and in [0, 1] by construction
            if not torch.isfinite(x).all():
                rows = (~torch.isfinite(x.flatten(1))).any(1).nonzero().flatten().tolist()
                raise ConfigError(f"data: {self.name} {part} has NaN/inf values in samples {rows[:10]}")
            if float(x.min()) < 0 or float(x.max()) > 1:
                # The models map [0, 1] to source voltages (input_gain_V); 1e30 would be 1e30 V.
                raise ConfigError(
                    f"data: {self.name} {part} spans [{float(x.min()):g}, {float(x.max()):g}]; scale the samples "
                    "to [0, 1] (input_gain_V sets the volts of 1.0)"
                )
        for part in ("train_y", "test_y"):
            y = getattr(self, part)
            if y.min() < 0 or y.max() >= self.n_classes:
                raise ConfigError(f"data: {self.name} {part} has labels outside [0, {self.n_classes})")
        return self
