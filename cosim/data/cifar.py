"""CIFAR-10 and CIFAR-100 from a local copy of their python version, read without ``pickle.load``.

The python version (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``, A. Krizhevsky,
"Learning Multiple Layers of Features from Tiny Images", 2009) unpacks to a folder of pickled
batches, each a dict with ``data``, ``uint8`` of shape ``[n, 3072]`` (a 32x32 image's red, green
then blue plane, rows first), and the labels, a list of ``n`` integers. The batches are read by
:func:`cosim.pickles.load_record_pickle`, which admits exactly that; their shapes, sizes and label
ranges are checked before use. The class count is the format's, and the metadata file, where
present, must list as many class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosim.config import ConfigError
from cosim.data.dataset import ByteImages, Dataset, describe
from cosim.pickles import UnsafePickleError, load_record_pickle

__all__ = ["CIFAR_LAYOUTS", "CifarLayout", "cifar_folder", "cifar_pickles", "load_cifar"]

IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR python version keeps its batches and what their dicts name."""

    title: str
    archive: str
    folder: str
    """The folder the archive unpacks to."""
    train: tuple[str, ...]
    test: str
    meta: str
    labels_key: str
    names_key: str
    n_classes: int

    @property
    def batches(self) -> tuple[str, ...]:
        return (*self.train, self.test)

    def form(self) -> str:
        return (
            f"the python version of {self.title} ({self.archive}, unpacked: {self.folder}/"
            f"{', '.join(self.batches)}, {self.meta}): each batch a pickled dict with 'data', uint8 of "
            f"shape [n, {IMAGE_BYTES}], and '{self.labels_key}', n integers 0..{self.n_classes - 1}"
        )


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "CIFAR-10",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": CifarLayout(
        "CIFAR-100",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
    ),
}


def cifar_folder(root: Path, dataset: str) -> Path | None:
    """The folder of ``dataset``'s batches under ``root`` (``root/<folder>``, as torchvision keeps
    it, or ``root`` itself), or ``None`` when neither holds any of its files."""
    layout = CIFAR_LAYOUTS[dataset]
    for folder in (root / layout.folder, root):
        if folder.is_dir() and any((folder / name).exists() for name in (*layout.batches, layout.meta)):
            return folder
    return None


def cifar_pickles(root: Path, dataset: str) -> list[Path]:
    """The pickled files of ``dataset`` present under ``root`` (batches and metadata)."""
    folder = cifar_folder(root, dataset)
    if folder is None:
        return []
    layout = CIFAR_LAYOUTS[dataset]
    return [folder / name for name in (*layout.batches, layout.meta) if (folder / name).is_file()]


def _record(path: Path, layout: CifarLayout) -> dict:
    try:
        return load_record_pickle(path)
    except UnsafePickleError as exc:
        raise ConfigError(
            f"data.root: {path} is not a {layout.title} batch that can be read safely: {exc.reason}; nothing "
            f"in it was run. Give {layout.form()}, as published"
        ) from None


def _batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """``(images [n, 3072] uint8, labels [n] int64)`` of one batch file, checked."""
    record = _record(path, layout)

    def refuse(problem: str):
        raise ConfigError(f"data.root: {path}: {problem}; {layout.form()}")

    for key in ("data", layout.labels_key):
        if key not in record:
            refuse(f"the batch has no '{key}' entry (it has {sorted(record)})")
    x, labels = record["data"], record[layout.labels_key]
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != IMAGE_BYTES:
        refuse(f"'data' is {describe(x)}, not uint8 of shape [n, {IMAGE_BYTES}]")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        refuse(f"'{layout.labels_key}' is not a list of integers")
    if len(labels) != len(x):
        refuse(f"it has {len(x)} images but {len(labels)} labels")
    if len(x) == 0:
        refuse("it holds no images")
    y = np.asarray(labels, dtype=np.int64)
    if int(y.min()) < 0 or int(y.max()) >= layout.n_classes:
        refuse(f"'{layout.labels_key}' span {int(y.min())}..{int(y.max())}, not 0..{layout.n_classes - 1}")
    return x, y


def _n_classes(folder: Path, layout: CifarLayout) -> int:
    path = folder / layout.meta
    if not path.is_file():
        return layout.n_classes
    names = _record(path, layout).get(layout.names_key)
    if not isinstance(names, list):
        raise ConfigError(f"data.root: {path}: has no list '{layout.names_key}' of class names; {layout.form()}")
    if len(names) != layout.n_classes:
        other = next((c.title for c in CIFAR_LAYOUTS.values() if c.n_classes == len(names)), None)
        hint = f" (that is {other}'s metadata: set data.dataset accordingly)" if other else ""
        raise ConfigError(
            f"data.root: {path} names {len(names)} classes, but {layout.title} has {layout.n_classes}{hint}"
        )
    return len(names)


def _images(parts: list[np.ndarray]) -> ByteImages:
    x = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return ByteImages(torch.from_numpy(np.ascontiguousarray(x)).reshape(len(x), *IMAGE_SHAPE))


def load_cifar(root: Path, dataset: str) -> Dataset:
    """``dataset`` (``cifar10`` or ``cifar100``) from the python version's batches under ``root``."""
    layout = CIFAR_LAYOUTS[dataset]
    folder = cifar_folder(root, dataset)
    if folder is None:
        raise ConfigError(
            f"data.root: {root} holds no {layout.title} batches (neither {root / layout.folder} nor {root} "
            f"has them); give {layout.form()}"
        )
    missing = [name for name in layout.batches if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"data.root: {folder} lacks {', '.join(missing)}; {layout.form()}")
    n_classes = _n_classes(folder, layout)
    train = [_batch(folder / name, layout) for name in layout.train]
    test_x, test_y = _batch(folder / layout.test, layout)
    return Dataset(
        dataset,
        _images([x for x, _ in train]),
        torch.from_numpy(np.concatenate([y for _, y in train])),
        _images([test_x]),
        torch.from_numpy(test_y),
        n_classes,
    )
