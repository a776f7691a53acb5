"""Image datasets from local copies (CIFAR-10/100 python batches, ImageNet32 npz), their class
counts, top-5 accuracy and crop-flip augmentation; every loader tested on files the tests write."""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cosim.cli import main
from cosim.config import ConfigError, DataConfig, parse_config
from cosim.data import ByteImages, crop_flip, load_dataset, make_augmentation
from cosim.data.augment import CropFlip, epoch_generator
from cosim.metrics import epoch_line, read_metrics, reports_top5, top_k_correct
from cosim.pickles import UnsafePickleError, check_array_pickle, load_record_pickle
from tests.data_files import cifar_batch, images, write_cifar10, write_cifar100, write_imagenet32, write_py2_pickle


def _pixels(raw: np.ndarray) -> torch.Tensor:
    """CIFAR's rows [n, 3072] as images [n, 3, 32, 32] in [0, 1]: red plane, green, blue; rows first."""
    return torch.from_numpy(raw.reshape(len(raw), 3, 32, 32).astype(np.float32) / np.float32(255))


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def test_cifar10_python_batches_load_as_published(tmp_path):
    root = write_cifar10(tmp_path, n=20, n_test=20)
    data = load_dataset(DataConfig(dataset="cifar10", root=str(root)))
    assert data.n_classes == 10 and data.input_shape == (3, 32, 32)
    assert isinstance(data.train_x, ByteImages) and data.train_x.images.dtype == torch.uint8
    assert len(data.train_y) == 100 and len(data.test_y) == 20
    expected_x = np.concatenate([images(20, i) for i in range(1, 6)])
    expected_y = [label for i in range(1, 6) for label in cifar_batch(20, 10, i)[b"labels"]]
    assert torch.equal(data.train_x[:], _pixels(expected_x))
    assert data.train_y.tolist() == expected_y and data.train_y.dtype == torch.int64
    assert data.train_x[3].shape == (3, 32, 32) and data.train_x[torch.tensor([4, 1])].shape == (2, 3, 32, 32)
    # The folder itself is as good as the one above it (torchvision's root).
    same = load_dataset(DataConfig(dataset="cifar10", root=str(root / "cifar-10-batches-py"), download=False))
    assert torch.equal(same.test_x[:], data.test_x[:])


def test_cifar_record_reads_what_plain_pickle_reads(tmp_path):
    path = write_py2_pickle(tmp_path / "data_batch_1", cifar_batch(7, 10, 3))
    safe = load_record_pickle(path)
    with open(path, "rb") as fh:  # plain pickle.load only on this file the test just wrote
        plain = pickle.load(fh, encoding="latin1")
    assert set(safe) == set(plain) == {"batch_label", "labels", "data", "filenames"}
    assert np.array_equal(safe["data"], plain["data"]) and safe["data"].dtype == np.uint8
    assert safe["labels"] == plain["labels"] and safe["filenames"] == plain["filenames"]
    check_array_pickle(path)
    # A copy re-saved from Python 3 (bytes keys and values, protocol 4) reads the same.
    resaved = tmp_path / "resaved"
    resaved.write_bytes(pickle.dumps(cifar_batch(7, 10, 3), protocol=4))
    again = load_record_pickle(resaved)
    assert np.array_equal(again["data"], safe["data"]) and again["filenames"] == safe["filenames"]


def test_cifar100_uses_fine_labels_and_its_hundred_classes(tmp_path):
    root = write_cifar100(tmp_path, n=30, n_test=20)
    data = load_dataset(DataConfig(dataset="cifar100", root=str(root), train_subset=25))
    assert data.n_classes == 100 and data.input_shape == (3, 32, 32)
    assert len(data.train_y) == 25 and len(data.test_y) == 20
    assert data.train_y.tolist() == cifar_batch(30, 100, 1, b"fine_labels")[b"fine_labels"][:25]
    assert torch.equal(data.test_x[:], _pixels(images(20, 2)))


def _refused(root: Path, pattern: str, dataset: str = "cifar10") -> str:
    with pytest.raises(ConfigError, match=pattern) as info:
        load_dataset(DataConfig(dataset=dataset, root=str(root), download=False))
    return str(info.value)


def test_cifar_bad_folders_are_clear_errors(tmp_path):
    root = write_cifar10(tmp_path / "missing")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    message = _refused(root, r"data\.root: .*cifar-10-batches-py lacks data_batch_3")
    assert "python version of CIFAR-10" in message
    _refused(tmp_path / "missing" / "cifar-10-batches-py", "lacks data_batch_3")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", r"holds no CIFAR-10 batches")
    _refused(tmp_path / "empty", r"holds no CIFAR-100 batches", "cifar100")

    def batch(**entries) -> dict:
        return {**cifar_batch(20, 10, 2), **entries}

    cases = {
        "not uint8 of shape [n, 3072]": batch(data=images(20, 2)[:, :1024]),
        "span 0..10, not 0..9": batch(labels=[10] + [0] * 19),
        "span -1..0": batch(labels=[-1] + [0] * 19),
        "20 images but 19 labels": batch(labels=[0] * 19),
        "no 'labels' entry": {b"data": images(20, 2)},
        "'labels' is not a list of integers": batch(labels=[b"cat"] * 20),
    }
    for problem, contents in cases.items():
        folder = write_cifar10(tmp_path / str(abs(hash(problem))), data_batch_2=contents)
        path = folder / "cifar-10-batches-py" / "data_batch_2"
        _refused(folder, rf"data\.root: {re.escape(str(path))}: .*{re.escape(problem)}")
    wrong_meta = write_cifar10(tmp_path / "meta", **{"batches.meta": {b"label_names": [b"x"] * 100}})
    _refused(wrong_meta, r"names 100 classes, but CIFAR-10 has 10 \(that is CIFAR-100's metadata")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (images(20, 2).astype(np.float32), r"dtype .* is not uint8"),
        (images(20, 2).astype(np.int64), r"dtype .* is not uint8"),
        ((1, 2), r"entry 'data' is a tuple"),
        (1.5, r"entry 'data' is a float"),
        ({b"a": 1}, r"entry 'data' is a dict"),
        ([1, b"x"], r"entry 'data' is a list"),
    ],
)
def test_cifar_batches_admit_uint8_arrays_and_plain_lists_only(tmp_path, entry, problem):
    folder = write_cifar10(tmp_path, data_batch_4={**cifar_batch(20, 10, 4), b"data": entry})
    path = folder / "cifar-10-batches-py" / "data_batch_4"
    message = _refused(folder, rf"data\.root: {re.escape(str(path))} is not a CIFAR-10 batch .*{problem}")
    assert "nothing in it was run" in message and "as published" in message


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _RunsCodeReturnsBatch:
    """``eval``s code that creates ``marker`` and returns a valid batch (plain pickle.load would train on it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        payload = pickle.dumps(cifar_batch(20, 10, 1), protocol=4)
        code = f"(open({str(self.marker)!r}, 'w').close(), __import__('pickle').loads({payload!r}))[1]"
        return eval, (code,)


HOSTILE = {"shell": _RunsShell, "valid-data": _RunsCodeReturnsBatch}


@pytest.mark.parametrize("variant", list(HOSTILE))
@pytest.mark.parametrize("protocol", [2, 4])
def test_hostile_cifar_batch_is_refused_without_running(tmp_path, variant, protocol):
    marker = tmp_path / "ran"
    root = write_cifar10(tmp_path / "data")
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps(HOSTILE[variant](marker), protocol=protocol))
    with pytest.raises(
        UnsafePickleError, match=r"references (posix|os)\.system|references (__builtin__|builtins)\.eval"
    ):
        load_record_pickle(path)
    # Checked when the configuration is read ...
    with pytest.raises(ConfigError, match=rf"data\.root: .*{re.escape(str(path))}.*nothing in it was run"):
        parse_config(
            {
                "model": {"blocks": [{"type": "analog", "sizes": [4, 10]}]},
                "data": {"dataset": "cifar10", "root": str(root)},
            }
        )
    # ... and by the loader, for a file swapped after that.
    config = DataConfig(dataset="cifar10", root=str(root / "elsewhere"))
    swapped = config.model_copy(update={"root": str(root)})
    with pytest.raises(
        ConfigError, match=rf"data\.root: {re.escape(str(path))} is not a CIFAR-10 batch.*nothing in it was run"
    ):
        load_dataset(swapped)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# ImageNet32


def test_imagenet32_npz_batches_load_with_zero_based_labels(tmp_path):
    root = write_imagenet32(tmp_path, n=6, n_val=8)
    data = load_dataset(DataConfig(dataset="imagenet32", root=str(root)))
    assert data.n_classes == 1000 and data.input_shape == (3, 32, 32)
    assert len(data.train_y) == 60 and len(data.test_y) == 8
    assert int(data.train_y.min()) == 0 and int(data.train_y.max()) == 999
    raw = np.load(root / "train_data_batch_1.npz")
    assert data.train_y[:6].tolist() == (raw["labels"] - 1).tolist()
    assert torch.equal(data.train_x[:6], _pixels(raw["data"]))
    assert torch.equal(data.train_x[54:], _pixels(images(6, 10)))
    assert torch.equal(data.test_x[:], _pixels(images(8, 99)))
    # Subsets read only the batch files they need, and cut inside the last one.
    part = load_dataset(DataConfig(dataset="imagenet32", root=str(root), train_subset=8, test_subset=3))
    assert len(part.train_y) == 8 and len(part.test_y) == 3
    assert torch.equal(part.train_x.images, data.train_x.images[:8]) and torch.equal(part.train_y, data.train_y[:8])


def test_imagenet32_in_the_archives_folders(tmp_path):
    write_imagenet32(tmp_path / "Imagenet32_train_npz", compressed=False)
    (tmp_path / "Imagenet32_train_npz" / "val_data.npz").rename(tmp_path / "val_data.npz")
    data = load_dataset(DataConfig(dataset="imagenet32", root=str(tmp_path), test_subset=2))
    assert len(data.train_y) == 60 and len(data.test_y) == 2


def test_imagenet32_bad_files_are_clear_errors(tmp_path):
    def refused(root: Path, pattern: str, **config) -> None:
        with pytest.raises(ConfigError, match=pattern):
            load_dataset(DataConfig(dataset="imagenet32", root=str(root), **config))

    with pytest.raises(ConfigError, match=r"data\.root: ImageNet32 is read from a local folder"):
        load_dataset(DataConfig(dataset="imagenet32"))
    root = write_imagenet32(tmp_path / "a")
    (root / "val_data.npz").unlink()
    refused(root, r"lacks val_data\.npz .*npz version of ImageNet32")
    (root / "train_data_batch_3.npz").unlink()
    (root / "train_data_batch_3").write_bytes(b"\x80\x02}q\x00.")
    refused(root, r"train_data_batch_3 is the pickled version of ImageNet32, which is not read")

    def batch_1(tag: str, **arrays) -> Path:
        folder = write_imagenet32(tmp_path / tag)
        np.savez(folder / "train_data_batch_1.npz", **arrays)
        return folder

    good = {"data": images(6, 1), "labels": np.arange(1, 7)}
    refused(
        batch_1("zero", **{**good, "labels": np.arange(6)}),
        r"labels 0\.\.5, not 1\.\.1000 \(ImageNet32's labels are 1-based",
    )
    refused(batch_1("big", **{**good, "labels": np.full(6, 1001)}), r"labels 1001\.\.1001, not 1\.\.1000")
    refused(
        batch_1("float", **{**good, "data": images(6, 1).astype(np.float32)}),
        r"'data' of float32 .*not uint8 \[n, 3072\]",
    )
    refused(batch_1("64", **{**good, "data": np.zeros((6, 12288), np.uint8)}), r"that is 64x64 images: give the 32x32")
    refused(batch_1("count", **{**good, "labels": np.arange(1, 6)}), r"6 images but 5 labels")
    refused(batch_1("nolabels", data=images(6, 1)), r"has no 'labels' array")
    refused(batch_1("flabels", **{**good, "labels": np.ones(6)}), r"'labels' of float64 .*not n integers")
    not_zip = write_imagenet32(tmp_path / "zip")
    (not_zip / "val_data.npz").write_bytes(b"not a zip")
    refused(not_zip, r"val_data\.npz is not an npz file")


def test_imagenet32_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    root = write_imagenet32(tmp_path / "data")
    hostile = np.empty(6, dtype=object)
    hostile[:] = [_RunsShell(marker)] * 6
    np.savez(root / "train_data_batch_1.npz", data=images(6, 1), labels=hostile)
    with pytest.raises(ConfigError, match=r"'labels' of object .*not n integers"):
        load_dataset(DataConfig(dataset="imagenet32", root=str(root)))
    np.savez(root / "train_data_batch_1.npz", data=hostile, labels=np.arange(1, 7))
    with pytest.raises(ConfigError, match=r"'data' of object"):
        load_dataset(DataConfig(dataset="imagenet32", root=str(root)))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Class counts, top-5


def test_top5_on_a_hand_made_example():
    out = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4, 3],  # label 0: top-1 and top-5
            [9.0, 8, 7, 6, 5, 4, 3],  # label 4: fifth largest, top-5 only
            [9.0, 8, 7, 6, 5, 4, 3],  # label 5: sixth, neither
            [0.0, 0, 0, 1, 0, 0, 0],  # label 3: top-1 (and top-5)
        ]
    )
    y = torch.tensor([0, 4, 5, 3])
    assert top_k_correct(out, y, 1) == 2 and top_k_correct(out, y, 5) == 3
    assert top_k_correct(out[:, :4], torch.tensor([0, 3, 1, 2]), 5) == 4  # fewer classes than k
    assert not reports_top5(5) and reports_top5(6) and reports_top5(10)
    row = {"epoch": 1, "loss": 1.0, "train_accuracy": 0.5, "test_accuracy": 0.25, "seconds": 1.0}
    assert "top-5" not in epoch_line(row, 2)
    line = epoch_line({**row, "train_top5_accuracy": 0.75, "test_top5_accuracy": 1.0}, 2)
    assert "train 50.00% (top-5 75.00%)" in line and "test 25.00% (top-5 100.00%)" in line


CIFAR_MODEL = {
    "blocks": [
        {"type": "avgpool", "kernel_size": 4},
        {"type": "flatten"},
        {"type": "analog", "sizes": [192, 8, 10], "input_gain_V": 4.0},
        {"type": "scale", "factor": 20.0},
    ]
}


def test_model_width_must_match_the_datas_classes(tmp_path):
    from cosim.runs import build_run

    root = write_cifar100(tmp_path / "data")
    config = parse_config({"data": {"dataset": "cifar100", "root": str(root)}, "model": CIFAR_MODEL})
    with pytest.raises(ConfigError, match=r"outputs shape \[10\] per sample but the data has 100 classes"):
        build_run(config, tmp_path / "run")


def test_torchvision_cifar100_keeps_bytes_and_its_class_count(tmp_path, monkeypatch):
    class FakeCIFAR100:  # torchvision.datasets.CIFAR100's attributes: data [n, H, W, C] uint8, targets, classes
        def __init__(self, root, train, download):
            rng = np.random.default_rng(int(train))
            self.data = rng.integers(0, 256, (6 if train else 4, 32, 32, 3), dtype=np.uint8)
            self.targets = [int(v) for v in rng.integers(0, 100, len(self.data))]
            self.classes = [f"c{i}" for i in range(100)]

    datasets = types.SimpleNamespace(CIFAR100=FakeCIFAR100)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(datasets=datasets))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    data = load_dataset(DataConfig(dataset="cifar100", root=str(tmp_path)))
    assert data.n_classes == 100 and data.input_shape == (3, 32, 32) and len(data.test_y) == 4
    raw = FakeCIFAR100(None, True, False).data
    assert torch.equal(data.train_x[:], torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255)


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_crop_flip_is_a_padded_window_mirrored_or_not():
    image = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4) + 1
    padded = torch.nn.functional.pad(image[0, 0], (1, 1, 1, 1))
    candidates = {
        (dy, dx, flip): (padded[dy : dy + 3, dx : dx + 4].flip(-1) if flip else padded[dy : dy + 3, dx : dx + 4])
        for dy in range(3)
        for dx in range(3)
        for flip in (False, True)
    }
    out = crop_flip(image.expand(400, 1, 3, 4), 1, epoch_generator(0, 1))
    seen = set()
    for sample in out:
        (match,) = [key for key, window in candidates.items() if torch.equal(sample[0], window)]
        seen.add(match)
    assert seen == set(candidates), "every shift and both mirrorings occur"
    unshifted = crop_flip(image.expand(50, 1, 3, 4), 0, epoch_generator(0, 1))
    assert all(torch.equal(s, image[0]) or torch.equal(s, image[0].flip(-1)) for s in unshifted)
    assert any(torch.equal(s, image[0].flip(-1)) for s in unshifted) and any(
        torch.equal(s, image[0]) for s in unshifted
    )


def test_crop_flip_draws_depend_on_the_seed_and_epoch_only():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    first = CropFlip(2, seed=5).epoch(3)
    a1, a2 = first(x), first(x)
    again = CropFlip(2, seed=5).epoch(3)
    assert torch.equal(again(x), a1) and torch.equal(again(x), a2), "the same seed and epoch draw the same batches"
    assert not torch.equal(a1, a2), "successive batches of an epoch draw afresh"
    assert not torch.equal(CropFlip(2, seed=6).epoch(3)(x), a1)
    assert not torch.equal(CropFlip(2, seed=5).epoch(4)(x), a1)
    assert a1.shape == x.shape and a1.dtype == x.dtype


def test_augment_needs_images(tmp_path):
    with pytest.raises(
        ConfigError, match=r"data\.augment.*'crop-flip' crops and flips images .*digits samples are flattened"
    ):
        parse_config({"data": {"augment": "crop-flip"}, "model": {"blocks": [{"type": "analog", "sizes": [64, 10]}]}})
    with pytest.raises(ConfigError, match=r"data\.crop_padding"):
        parse_config({"data": {"dataset": "cifar10", "crop_padding": 17}, "model": CIFAR_MODEL})
    digits = load_dataset(DataConfig(train_subset=10, test_subset=10))
    cifar = DataConfig.model_construct(**{**DataConfig().model_dump(), "augment": "crop-flip"})
    with pytest.raises(ConfigError, match=r"data\.augment: 'crop-flip' .*shape \[64\]"):
        make_augmentation(cifar, 0, digits)


TRAIN = """
name = "cifar-tiny"

[seed]
data = {seed}

[data]
dataset = "cifar10"
root = "{root}"
augment = "{augment}"
download = false

[[model.blocks]]
type = "avgpool"
kernel_size = 4

[[model.blocks]]
type = "flatten"

[[model.blocks]]
type = "analog"
sizes = [192, 8, 10]
input_gain_V = 4.0

[[model.blocks]]
type = "scale"
factor = 20.0

[train]
epochs = {epochs}
batch_size = 25
lr = 0.01
schedule = "none"  # a resumed run may then be given more epochs
beta = 0.1
ngspice_eval_samples = 0
"""


def _train_config(tmp_path: Path, root: Path, epochs: int, augment: str = "crop-flip", seed: int = 0) -> Path:
    path = tmp_path / f"cifar-{epochs}-{augment}-{seed}.toml"
    path.write_text(TRAIN.format(root=root, epochs=epochs, augment=augment, seed=seed), encoding="utf-8")
    return path


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(run / "metrics.csv")]


def test_cli_trains_on_cifar_shaped_data_with_top5_and_resumes_exactly(tmp_path, capsys):
    root = write_cifar10(tmp_path / "data", n=20, n_test=20)
    whole, split, plain = tmp_path / "whole", tmp_path / "split", tmp_path / "plain"
    assert main(["train", "--config", str(_train_config(tmp_path, root, 2)), "--out", str(whole), "--no-ngspice"]) == 0
    rows = _rows(whole)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert list(rows[0])[:7] == [
        "epoch", "loss", "train_accuracy", "test_accuracy", "train_top5_accuracy", "test_top5_accuracy", "lr"
    ]  # fmt: skip
    for row in rows:
        assert row["train_accuracy"] <= row["train_top5_accuracy"] <= 1
        assert row["test_accuracy"] <= row["test_top5_accuracy"] <= 1
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["test_top5_accuracy"] == rows[-1]["test_top5_accuracy"] and summary["n_classes"] == 10
    assert "(top-5 " in capsys.readouterr().err
    # cosim eval reports top-5 next to top-1, for the trained chip as training measured it.
    assert main(["eval", "--checkpoint", str(whole / "checkpoint.pt"), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["test_accuracy"] == rows[-1]["test_accuracy"]
    assert report["test_top5_accuracy"] == rows[-1]["test_top5_accuracy"]
    assert f"(top-5 {100 * report['test_top5_accuracy']:.2f}%)" in capsys.readouterr().out
    # One epoch, then --resume for the second: every metric as in the uninterrupted run.
    assert main(["train", "--config", str(_train_config(tmp_path, root, 1)), "--out", str(split), "--no-ngspice"]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2", "--no-ngspice"]) == 0
    assert _rows(split) == rows
    # The crops and flips change training.
    config = _train_config(tmp_path, root, 1, augment="none")
    assert main(["train", "--config", str(config), "--out", str(plain), "--no-ngspice"]) == 0
    assert _rows(plain)[0]["loss"] != rows[0]["loss"]


def test_cli_refuses_hostile_cifar_folder(tmp_path, capsys):
    marker = tmp_path / "ran"
    root = write_cifar10(tmp_path / "data")
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(_RunsShell(marker), protocol=2))
    config = _train_config(tmp_path, root, 1)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-ngspice"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "nothing in it was run" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "run").exists()
