"""Datasets: the digits split is fixed by the seed; pickled MNIST loads; broken data fails clearly."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cosim.config import ConfigError, DataConfig
from cosim.data import load_dataset

MNIST_PICKLE = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "mnist.pkl.gz"


def write_mnist_pickle(path: Path, n: int = 12, nan_at: int | None = None) -> Path:
    rng = np.random.default_rng(0)

    def part(size):
        x = rng.random((size, 784), dtype=np.float32)
        if nan_at is not None and nan_at < size:
            x[nan_at, 5] = np.nan
        return x, rng.integers(0, 10, size)

    with gzip.open(path, "wb") as fh:
        pickle.dump((part(n), part(n // 2), part(n // 3)), fh)
    return path


def test_digits_split_is_fixed_by_seed():
    a = load_dataset(DataConfig(), seed=0)
    b = load_dataset(DataConfig(), seed=0)
    c = load_dataset(DataConfig(), seed=1)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.test_x, c.test_x)
    assert len(a.test_y) == round(0.2 * 1797) and len(a.train_y) + len(a.test_y) == 1797
    assert a.input_shape == (64,) and a.n_classes == 10
    assert float(a.train_x.min()) >= 0.0 and float(a.train_x.max()) <= 1.0


def test_digits_subsets():
    data = load_dataset(DataConfig(train_subset=100, test_subset=30), seed=0)
    full = load_dataset(DataConfig(), seed=0)
    assert len(data.train_y) == 100 and len(data.test_y) == 30
    assert torch.equal(data.train_x, full.train_x[:100])


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_PICKLE.is_file(), reason=f"no local MNIST copy at {MNIST_PICKLE}")
def test_pickled_mnist_loads_from_shared_copy():
    data = load_dataset(DataConfig(dataset="mnist", root=str(MNIST_PICKLE), test_subset=1000))
    assert data.name == "mnist" and data.input_shape == (784,)
    assert len(data.train_y) == 60_000 and len(data.test_y) == 1000
    assert float(data.train_x.min()) >= 0.0 and float(data.train_x.max()) <= 1.0
    assert set(data.test_y.unique().tolist()) == set(range(10))


def test_small_mnist_pickle_roundtrip(tmp_path):
    path = write_mnist_pickle(tmp_path / "mnist.pkl.gz")
    data = load_dataset(DataConfig(dataset="mnist", root=str(path)))
    assert len(data.train_y) == 12 + 6 and len(data.test_y) == 4


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root: .*does not exist"):
        load_dataset(DataConfig(dataset="mnist", root=str(tmp_path / "mnist.pkl.gz")))


def test_corrupt_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(b"not a gzip file")
    with pytest.raises(ConfigError, match=r"data\.root: .*not a pickled MNIST"):
        load_dataset(DataConfig(dataset="mnist", root=str(path)))


def test_nan_samples_are_reported(tmp_path):
    path = write_mnist_pickle(tmp_path / "mnist.pkl.gz", nan_at=3)
    with pytest.raises(ConfigError, match=r"NaN/inf values in samples \[3"):
        load_dataset(DataConfig(dataset="mnist", root=str(path)))


def test_single_file_only_for_pickled_mnist(tmp_path):
    path = write_mnist_pickle(tmp_path / "mnist.pkl.gz")
    with pytest.raises(ConfigError, match="only the pickled MNIST"):
        load_dataset(DataConfig(dataset="cifar10", root=str(path)))
