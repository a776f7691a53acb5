"""Loading the configured dataset: digits (bundled with scikit-learn), a local copy, or torchvision."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import torch

from cosim.config import ConfigError, DataConfig
from cosim.data.cifar import CIFAR_LAYOUTS, cifar_folder, cifar_pickles, load_cifar
from cosim.data.dataset import ByteImages, Dataset
from cosim.data.imagenet32 import load_imagenet32
from cosim.data.mnist import load_mnist_pickle
from cosim.pickles import check_array_pickle

__all__ = ["check_data_pickles", "load_dataset"]


def _digits(config: DataConfig, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(config.test_fraction * len(x))
    test, train = perm[:n_test], perm[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], len(digits.target_names))


_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def _torchvision(config: DataConfig) -> Dataset:
    """A dataset through torchvision: MNIST / Fashion-MNIST from their idx files (no pickle),
    CIFAR's pickled batches only after their MD5 matches the published one (torchvision checks)."""
    try:
        from torchvision import datasets
    except ImportError as exc:
        where = f"data.root: {config.root} holds no local copy, and " if config.root else ""
        raise ConfigError(
            f"{where}data.dataset = {config.dataset!r} needs torchvision (pip install 'ffebm-cosim[vision]') "
            f"or data.root pointing at a local copy: {exc}"
        ) from None
    cls = getattr(datasets, _TORCHVISION[config.dataset])
    root = config.root or str(Path.home() / ".cache" / "ffebm-cosim" / config.dataset)
    try:
        train = cls(root, train=True, download=config.download)
        test = cls(root, train=False, download=config.download)
    except (RuntimeError, OSError) as exc:
        raise ConfigError(
            f"data: could not load {config.dataset} from {root} ({exc}); when offline, set data.root to "
            "a local copy (for MNIST, the pickled mnist.pkl.gz works; for CIFAR, the unpacked python version)"
        ) from None

    def tensors(ds):
        x = torch.as_tensor(np.asarray(ds.data))
        if x.ndim == 4:  # CIFAR: [n, H, W, C] bytes
            samples = ByteImages(x.permute(0, 3, 1, 2).contiguous())
        else:
            samples = x.to(torch.float32).flatten(1) / 255.0
        return samples, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    return Dataset(config.dataset, *tensors(train), *tensors(test), len(train.classes))


def _local_root(config: DataConfig) -> Path | None:
    """``data.root`` as a path, checked to be a regular file or a folder (``None`` when empty)."""
    if not config.root:
        return None
    root = Path(config.root)
    if not root.exists():
        raise ConfigError(f"data.root: {root} does not exist (give a local dataset file or folder)")
    if not (stat.S_ISREG(mode := os.stat(root).st_mode) or stat.S_ISDIR(mode)):
        raise ConfigError(
            f"data.root: {root} is neither a regular file nor a folder (a FIFO or device is never read as "
            "data); give a local dataset file or folder"
        )
    return root


def _load(config: DataConfig, seed: int) -> Dataset:
    if config.dataset == "digits":
        return _digits(config, seed)
    root = _local_root(config)
    if root is not None and root.is_file():
        if config.dataset != "mnist" or not root.name.endswith(".pkl.gz"):
            raise ConfigError(
                f"data.root: {root} is a file; only the pickled MNIST (mnist.pkl.gz) is read from a "
                "single file, other datasets need a folder"
            )
        return load_mnist_pickle(root)
    if config.dataset == "imagenet32":
        if root is None:
            raise ConfigError(
                "data.root: ImageNet32 is read from a local folder of its npz batches (torchvision does not "
                "provide it); set data.root"
            )
        return load_imagenet32(root, config.train_subset, config.test_subset)
    if config.dataset in CIFAR_LAYOUTS and root is not None:
        # A local copy is read by the safe reader; torchvision (which unpickles after an MD5 check)
        # only downloads into an empty root.
        if cifar_folder(root, config.dataset) is not None or not config.download:
            return load_cifar(root, config.dataset)
    return _torchvision(config)


def load_dataset(config: DataConfig, seed: int = 0) -> Dataset:
    """Load the configured dataset, optionally cut to ``train_subset`` / ``test_subset``."""
    return _load(config, seed).head(config.train_subset, config.test_subset).check()


def check_data_pickles(dataset: str, root: str | Path) -> None:
    """Raise :class:`cosim.pickles.UnsafePickleError` if a pickle that ``dataset`` would read from
    ``root`` references anything its safe reader refuses (an opcode scan: nothing is built)."""
    root = Path(root)
    if root.is_file() and root.name.endswith(".pkl.gz"):
        check_array_pickle(root)
    elif dataset in CIFAR_LAYOUTS and root.is_dir():
        for path in cifar_pickles(root, dataset):
            check_array_pickle(path)
