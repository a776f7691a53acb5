"""Datasets: scikit-learn's bundled digits (offline, the default), MNIST / Fashion-MNIST / CIFAR-10
through torchvision or from a local copy (including the classic pickled MNIST ``mnist.pkl.gz``).

Images are scaled to ``[0, 1]``; digits and MNIST-like sets are flattened (``[64]``, ``[784]``),
CIFAR-10 keeps ``[3, 32, 32]``. A model maps values to source voltages (``input_gain_V``) or
reshapes them for convolutions.

No data file is unpickled with ``pickle.load``: a pickle may run any code while it loads, and a
configuration (or a checkpoint's stored one) can name any file. ``mnist.pkl.gz`` is read by
:func:`cosim.io.load_array_pickle`, which admits numpy arrays and plain containers only, and its
arrays are checked (dtype, shape, value range) before use. torchvision reads MNIST and
Fashion-MNIST from their idx files (no pickle) and opens CIFAR-10's pickled batches only after
their MD5 matches the published ones.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosim.config import ConfigError, DataConfig
from cosim.pickles import UnsafePickleError, load_array_pickle

__all__ = ["Dataset", "load_dataset"]


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def check(self) -> Dataset:
        """``self`` if every part is usable: samples of at least one dimension, finite and in
        ``[0, 1]``, one integer label in ``[0, n_classes)`` per sample; else a ``ConfigError``."""
        for xs, ys in (("train_x", "train_y"), ("test_x", "test_y")):
            x, y = getattr(self, xs), getattr(self, ys)
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
                raise ConfigError(
                    f"data: {self.name} {xs} is {_describe(x)}; samples must be a float tensor [n, ...] "
                    "(one row per sample)"
                )
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
                raise ConfigError(f"data: {self.name} {ys} is {_describe(y)}; labels must be integers of shape [n]")
            if len(x) != len(y):
                raise ConfigError(f"data: {self.name} has {len(x)} samples in {xs} but {len(y)} labels in {ys}")
        for part in ("train_x", "test_x"):
            x = getattr(self, part)
            if x.numel() == 0:
                raise ConfigError(f"data: {self.name} {part} is empty (check data.train_subset/test_subset)")
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


def _digits(config: DataConfig, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(config.test_fraction * len(x))
    test, train = perm[:n_test], perm[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


MNIST_WIDTH = 784
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
        refuse(f"images are {_describe(x)}, not a float array of shape [n, {MNIST_WIDTH}]")
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        refuse(f"labels are {_describe(y)}, not an integer array of shape [n]")
    if len(x) != len(y):
        refuse(f"has {len(x)} images but {len(y)} labels")
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        refuse(f"labels span {int(y.min())}..{int(y.max())}, not 0..9")
    # NaN/inf are left to Dataset.check, which names the samples; the sum finds them cheaply.
    if len(x) and np.isfinite(x.sum(dtype=np.float64)) and (float(x.min()) < 0 or float(x.max()) > 1):
        refuse(f"images span [{float(x.min()):g}, {float(x.max()):g}], not [0, 1]")
    return x, y


def _describe(value) -> str:
    if isinstance(value, np.ndarray | torch.Tensor):
        return f"{value.dtype} of shape {list(value.shape)}"
    return type(value).__name__


def _mnist_pickle(path: Path) -> Dataset:
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
            f"data.root: {path} holds {_describe(parts)}, not a (train, valid, test) triple; {_MNIST_FORM}"
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
        10,
    )


def _torchvision(config: DataConfig) -> Dataset:
    try:
        from torchvision import datasets
    except ImportError as exc:
        raise ConfigError(
            f"data.dataset = {config.dataset!r} needs torchvision (pip install 'ffebm-cosim[vision]') "
            f"or data.root pointing at a local copy: {exc}"
        ) from None
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[config.dataset]
    root = config.root or str(Path.home() / ".cache" / "ffebm-cosim" / config.dataset)
    try:
        train = cls(root, train=True, download=config.download)
        test = cls(root, train=False, download=config.download)
    except (RuntimeError, OSError) as exc:
        raise ConfigError(
            f"data: could not load {config.dataset} from {root} ({exc}); when offline, set data.root to "
            "a local copy (for MNIST, the pickled mnist.pkl.gz works)"
        ) from None

    def tensors(ds):
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.float32) / 255.0
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.flatten(1)
        return x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    return Dataset(config.dataset, *tensors(train), *tensors(test), 10)


def load_dataset(config: DataConfig, seed: int = 0) -> Dataset:
    """Load the configured dataset, optionally cut to ``train_subset`` / ``test_subset``."""
    if config.dataset == "digits":
        data = _digits(config, seed)
    else:
        root = Path(config.root) if config.root else None
        if root is not None and not root.exists():
            raise ConfigError(f"data.root: {root} does not exist (give a local dataset file or folder)")
        if root is not None and not (stat.S_ISREG(mode := os.stat(root).st_mode) or stat.S_ISDIR(mode)):
            raise ConfigError(
                f"data.root: {root} is neither a regular file nor a folder (a FIFO or device is never read as "
                "data); give a local dataset file or folder"
            )
        if root is not None and root.is_file():
            if config.dataset != "mnist" or not root.name.endswith(".pkl.gz"):
                raise ConfigError(
                    f"data.root: {root} is a file; only the pickled MNIST (mnist.pkl.gz) is read from a "
                    "single file, other datasets need torchvision's folder layout"
                )
            data = _mnist_pickle(root)
        else:
            data = _torchvision(config)
    if config.train_subset:
        data.train_x, data.train_y = data.train_x[: config.train_subset], data.train_y[: config.train_subset]
    if config.test_subset:
        data.test_x, data.test_y = data.test_x[: config.test_subset], data.test_y[: config.test_subset]
    return data.check()
