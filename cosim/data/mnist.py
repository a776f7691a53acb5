"""The classic pickled MNIST, ``mnist.pkl.gz``, read by :func:`cosim.pickles.load_array_pickle`
(numpy arrays and plain containers only) and checked (dtype, shape, value range) before use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cosim.config import ConfigError
from cosim.data.dataset import Dataset, describe
from cosim.pickles import UnsafePickleError, load_array_pickle

__all__ = ["MNIST_WIDTH", "load_mnist_pickle"]

MNIST_WIDTH = 784
MNIST_CLASSES = 10
_MNIST_FORM = (
    "the classic mnist.pkl.gz is a gzip'd pickle of numpy arrays ((x, y), (x, y), (x, y)) for train, "
    f"validation and test: images x float in [0, 1] of shape [n, {MNIST_WIDTH}], labels y integers 0..9 of "
    "shape [n]"
)


def _mnist_part(path: Path, part, what: str) -> tuple[np.ndarray, np.ndarray]:
    def refuse(problem: str):
        raise ConfigError(f"data.root: {path}: the {what} part {problem}; {_MNIST_FORM}")

    if not isinstance(part, tuple | list) or len(part) != 2:
        refuse("is not a pair (images, labels)")
    x, y = part
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != MNIST_WIDTH:
        refuse(f"images are {describe(x)}, not a float array of shape [n, {MNIST_WIDTH}]")
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        refuse(f"labels are {describe(y)}, not an integer array of shape [n]")
    if len(x) != len(y):
        refuse(f"has {len(x)} images but {len(y)} labels")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= MNIST_CLASSES):
        refuse(f"labels span {int(y.min())}..{int(y.max())}, not 0..{MNIST_CLASSES - 1}")
    # NaN/inf are left to Dataset.check, which names the samples; the sum finds them cheaply.
    if len(x) and np.isfinite(x.sum(dtype=np.float64)) and (float(x.min()) < 0 or float(x.max()) > 1):
        refuse(f"images span [{float(x.min()):g}, {float(x.max()):g}], not [0, 1]")
    return x, y


def load_mnist_pickle(path: Path) -> Dataset:
    """MNIST from ``mnist.pkl.gz``: train and validation parts make the training split."""
    try:
        parts = load_array_pickle(path)
    except UnsafePickleError as exc:
        raise ConfigError(
            f"data.root: {path} is not a pickled MNIST split (train, valid, test) that can be read safely: "
            f"{exc.reason}; nothing in it was run. Give the classic file ({_MNIST_FORM}); a copy re-saved "
            "from Python 3 needs pickle protocol 3 or 4 and plain numpy arrays"
        ) from None
    if not isinstance(parts, tuple | list) or len(parts) != 3:
        raise ConfigError(
            f"data.root: {path} holds {describe(parts)}, not a (train, valid, test) triple; {_MNIST_FORM}"
        )
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = (
        _mnist_part(path, part, what) for part, what in zip(parts, ("train", "validation", "test"), strict=True)
    )
    x = np.concatenate([train_x, valid_x])
    y = np.concatenate([train_y, valid_y])
    return Dataset(
        "mnist",
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(y, dtype=torch.int64),
        torch.tensor(test_x, dtype=torch.float32),
        torch.tensor(test_y, dtype=torch.int64),
        MNIST_CLASSES,
    )
