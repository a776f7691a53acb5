"""Small dataset files in the published layouts, written by the tests (no CIFAR or ImageNet32 file
is on these machines): CIFAR-10/100 batches pickled as Python 2 wrote them, ImageNet32 npz batches."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import ClassVar

import numpy as np


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's ``cPickle`` wrote the CIFAR batches: every string (``str`` and
    ``bytes`` alike, numpy's raw array bytes among them) as a ``BINSTRING``, not through
    ``_codecs.encode`` as Python 3 writes ``bytes`` at protocol 2."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string

    def save_global(self, obj, name=None) -> None:
        if obj is _RECONSTRUCT:  # by the name numpy < 2 wrote (numpy 2 keeps it in numpy._core)
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


_RECONSTRUCT = np.zeros(0).__reduce__()[0]


def write_py2_pickle(path: Path, obj) -> Path:
    with open(path, "wb") as fh:
        Py2Pickler(fh, protocol=2).dump(obj)
    return path


def images(n: int, seed: int) -> np.ndarray:
    """``n`` random images as CIFAR stores them: ``uint8 [n, 3072]``."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def cifar_batch(n: int, n_classes: int, seed: int, labels_key: bytes = b"labels") -> dict:
    rng = np.random.default_rng(seed + 1000)
    batch = {
        b"batch_label": b"batch %d" % seed,
        labels_key: [int(v) for v in rng.integers(0, n_classes, n)],
        b"data": images(n, seed),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }
    if labels_key == b"fine_labels":
        batch[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, n)]
    return batch


def write_cifar10(root: Path, n: int = 20, n_test: int = 20, **changes) -> Path:
    """``root/cifar-10-batches-py`` with five training batches of ``n`` and a test batch of
    ``n_test`` images; ``changes`` replaces whole files (name -> dict to pickle)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"data_batch_{i}": cifar_batch(n, 10, i) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(n_test, 10, 0)
    files["batches.meta"] = {
        b"num_cases_per_batch": n,
        b"label_names": b"airplane automobile bird cat deer dog frog horse ship truck".split(),
        b"num_vis": 3072,
    }
    files.update(changes)
    for name, obj in files.items():
        write_py2_pickle(folder / name, obj)
    return root


def write_cifar100(root: Path, n: int = 30, n_test: int = 20) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    write_py2_pickle(folder / "train", cifar_batch(n, 100, 1, b"fine_labels"))
    write_py2_pickle(folder / "test", cifar_batch(n_test, 100, 2, b"fine_labels"))
    meta = {
        b"fine_label_names": [b"c%d" % i for i in range(100)],
        b"coarse_label_names": [b"s%d" % i for i in range(20)],
    }
    write_py2_pickle(folder / "meta", meta)
    return root


def write_imagenet32(root: Path, n: int = 6, n_val: int = 8, compressed: bool = True) -> Path:
    """The ten training batches of ``n`` images and the validation batch of ``n_val``, labels
    1-based and spanning 1..1000 (the first training image is class 1, the last class 1000)."""
    root.mkdir(parents=True, exist_ok=True)
    save = np.savez_compressed if compressed else np.savez
    rng = np.random.default_rng(7)
    for i in range(1, 11):
        labels = rng.integers(1, 1001, n)
        if i == 1:
            labels[0] = 1
        if i == 10:
            labels[-1] = 1000
        save(root / f"train_data_batch_{i}.npz", data=images(n, i), labels=labels, mean=np.zeros(3072))
    save(root / "val_data.npz", data=images(n_val, 99), labels=rng.integers(1, 1001, n_val))
    return root
