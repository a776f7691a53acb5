"""Datasets: scikit-learn's bundled digits (offline, the default), MNIST / Fashion-MNIST / CIFAR-10
through torchvision or from a local copy (including the classic pickled MNIST ``mnist.pkl.gz``).

Images are scaled to ``[0, 1]``; digits and MNIST-like sets are flattened (``[64]``, ``[784]``),
CIFAR-10 keeps ``[3, 32, 32]``. A model maps values to source voltages (``input_gain_V``) or
reshapes them for convolutions.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosim.config import ConfigError, DataConfig

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
        for part in ("train_x", "test_x"):
            x = getattr(self, part)
            if x.numel() == 0:
                raise ConfigError(f"data: {self.name} {part} is empty (check data.train_subset/test_subset)")
            if not torch.isfinite(x).all():
                rows = (~torch.isfinite(x.flatten(1))).any(1).nonzero().flatten().tolist()
                raise ConfigError(f"data: {self.name} {part} has NaN/inf values in samples {rows[:10]}")
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


def _mnist_pickle(path: Path) -> Dataset:
    try:
        with gzip.open(path, "rb") as fh:
            train, valid, test = pickle.load(fh, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise ConfigError(f"data.root: {path} is not a pickled MNIST split (train, valid, test): {exc}") from None
    x = np.concatenate([train[0], valid[0]])
    y = np.concatenate([train[1], valid[1]])
    return Dataset(
        "mnist",
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(y, dtype=torch.int64),
        torch.tensor(test[0], dtype=torch.float32),
        torch.tensor(test[1], dtype=torch.int64),
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
