"""ImageNet32: downsampled ImageNet (P. Chrabaszcz, I. Loshchilov, F. Hutter, "A Downsampled Variant
of ImageNet as an Alternative to the CIFAR datasets", 2017), from the npz version of its batches.

``Imagenet32_train_npz.zip`` unpacks to ``train_data_batch_1.npz`` .. ``train_data_batch_10.npz``
and ``Imagenet32_val_npz.zip`` to ``val_data.npz``; each holds ``data``, ``uint8`` of shape
``[n, 3072]`` (channel-major like CIFAR), and ``labels``, ``n`` integers 1..1000 (1-based). The
files are read with ``allow_pickle=False``, every array's header (dtype, shape) is checked before
the array is read, and the training images go straight into one ``uint8`` buffer: 3.9 GB for the
1.28 M images, plus one batch file while it is copied.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from cosim.config import ConfigError
from cosim.data.dataset import ByteImages, Dataset

__all__ = ["IMAGENET32_CLASSES", "TRAIN_FILES", "VAL_FILE", "load_imagenet32"]

IMAGENET32_CLASSES = 1000
IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32
TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
VAL_FILE = "val_data.npz"
_FOLDERS = {"train": "Imagenet32_train_npz", "val": "Imagenet32_val_npz"}
"""The folders the two archives unpack to; the files may also lie in ``data.root`` itself."""
_FORM = (
    "the npz version of ImageNet32 (Imagenet32_train_npz.zip and Imagenet32_val_npz.zip from "
    f"image-net.org, unpacked into data.root): {', '.join(TRAIN_FILES[:2])} .. {TRAIN_FILES[-1]} and "
    f"{VAL_FILE}, each with 'data', uint8 of shape [n, {IMAGE_BYTES}], and 'labels', n integers "
    f"1..{IMAGENET32_CLASSES}"
)

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
"""What ``numpy.save`` writes (3.0 only for structured dtypes with non-latin1 names)."""


def _find(root: Path, name: str, part: str) -> Path:
    for folder in (root, root / _FOLDERS[part]):
        if (folder / name).is_file():
            return folder / name
        if (folder / name.removesuffix(".npz")).exists():
            raise ConfigError(
                f"data.root: {folder / name.removesuffix('.npz')} is the pickled version of ImageNet32, which "
                f"is not read (unpickling can run code); give {_FORM}"
            )
    raise ConfigError(f"data.root: {root} lacks {name} (also looked in {root / _FOLDERS[part]}); give {_FORM}")


class _Npz:
    """The arrays of one npz file, their headers checked before any array is read."""

    def __init__(self, path: Path):
        self.path = path
        if not stat.S_ISREG(os.stat(path).st_mode):
            self.refuse("is not a regular file")
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            self.refuse(f"is not an npz file ({exc})")

    def refuse(self, problem: str) -> NoReturn:
        raise ConfigError(f"data.root: {self.path} {problem}; {_FORM}")

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        try:
            with self.zip.open(f"{key}.npy") as fh:
                version = np.lib.format.read_magic(fh)
                if version not in _HEADER_READERS:
                    self.refuse(f"has a '{key}' array in .npy format {version}, not 1.0 or 2.0")
                shape, _, dtype = _HEADER_READERS[version](fh)
        except KeyError:
            self.refuse(f"has no '{key}' array (it has {sorted(n.removesuffix('.npy') for n in self.zip.namelist())})")
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            self.refuse(f"has an unreadable '{key}' array ({exc})")
        return shape, dtype

    def read(self, key: str) -> np.ndarray:
        try:
            with self.zip.open(f"{key}.npy") as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            self.refuse(f"has an unreadable '{key}' array ({exc})")

    def labels(self) -> np.ndarray:
        """The 0-based labels ``[n]`` int64, after checking the images' header against them."""
        shape, dtype = self.header("labels")
        if len(shape) != 1 or dtype.kind not in "iu":
            self.refuse(f"has 'labels' of {dtype} and shape {list(shape)}, not n integers")
        data_shape, data_dtype = self.header("data")
        if data_dtype != np.uint8 or len(data_shape) != 2 or data_shape[1] != IMAGE_BYTES:
            side = round((data_shape[-1] / 3) ** 0.5) if data_shape and data_shape[-1] % 3 == 0 else None
            hint = f" (that is {side}x{side} images: give the 32x32 version)" if side and side != 32 else ""
            self.refuse(f"has 'data' of {data_dtype} and shape {list(data_shape)}, not uint8 [n, {IMAGE_BYTES}]{hint}")
        if data_shape[0] != shape[0]:
            self.refuse(f"has {data_shape[0]} images but {shape[0]} labels")
        if shape[0] == 0:
            self.refuse("holds no images")
        y = self.read("labels").astype(np.int64)
        if int(y.min()) < 1 or int(y.max()) > IMAGENET32_CLASSES:
            self.refuse(
                f"has labels {int(y.min())}..{int(y.max())}, not 1..{IMAGENET32_CLASSES} (ImageNet32's labels "
                "are 1-based)"
            )
        return y - 1

    def close(self) -> None:
        self.zip.close()


def _part(paths: list[Path], limit: int) -> tuple[ByteImages, torch.Tensor]:
    """Images and labels of ``paths`` in order, the first ``limit`` of them (0: all)."""
    labels: list[np.ndarray] = []
    files: list[_Npz] = []
    try:
        for path in paths:
            if limit and sum(map(len, labels)) >= limit:
                break
            files.append(_Npz(path))
            labels.append(files[-1].labels())
        y = np.concatenate(labels)[: limit or None]
        images = torch.empty((len(y), IMAGE_BYTES), dtype=torch.uint8)
        start = 0
        for npz, part in zip(files, labels, strict=True):
            n = min(len(part), len(y) - start)
            images[start : start + n] = torch.from_numpy(npz.read("data")[:n])
            start += n
    finally:
        for npz in files:
            npz.close()
    return ByteImages(images.reshape(len(y), *IMAGE_SHAPE)), torch.from_numpy(y)


def load_imagenet32(root: Path, train_subset: int = 0, test_subset: int = 0) -> Dataset:
    """ImageNet32 from the npz batches under ``root`` (or its ``Imagenet32_train_npz`` /
    ``Imagenet32_val_npz`` folders); with subsets, only the batch files they need are read."""
    train = [_find(root, name, "train") for name in TRAIN_FILES]
    val = _find(root, VAL_FILE, "val")
    train_x, train_y = _part(train, train_subset)
    test_x, test_y = _part([val], test_subset)
    return Dataset("imagenet32", train_x, train_y, test_x, test_y, IMAGENET32_CLASSES)
