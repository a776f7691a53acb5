"""The CIFAR-10 splitting presets (cifar10-split-1/2/3: the paper's 6-layer VGG of Hopfield blocks cut
into 1, 2 or 3 energy blocks) train end to end through the CLI on generated CIFAR-shaped files, with
the full architecture and only the data, the epochs and the relaxation steps shrunk."""

from __future__ import annotations

import json

import pytest
import torch

from cosim.build import build_model
from cosim.cli import main
from cosim.config import resolve_config
from cosim.metrics import read_metrics
from cosim.model import FFEBM
from tests.data_files import write_cifar10

SPLITS = (1, 2, 3)


def hopfield_indices(name: str) -> list[int]:
    return [i for i, b in enumerate(resolve_config(name).model.blocks) if b.type == "hopfield"]


def tiny(tmp_path, name: str) -> list[str]:
    """``--set`` overrides: generated data, 8 training and 4 test samples, 1 epoch, 2 free and 1
    nudged iterations per block (the architecture itself is the preset's)."""
    root = write_cifar10(tmp_path / "data", n=4, n_test=4)
    sets = {
        "data.root": str(root),
        "data.train_subset": 8,
        "data.test_subset": 4,
        "train.epochs": 1,
        "train.batch_size": 4,
    }
    for i in hopfield_indices(name):
        sets[f"model.blocks[{i}].t1"] = 2
        sets[f"model.blocks[{i}].t2"] = 1
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.slow
@pytest.mark.parametrize("n", SPLITS)
def test_each_split_preset_trains_end_to_end_on_generated_cifar(tmp_path, n):
    name = f"cifar10-split-{n}"
    assert len(hopfield_indices(name)) == n
    out = tmp_path / "run"
    assert main(["train", "--config", name, "--out", str(out), *tiny(tmp_path, name)]) == 0
    (row,) = read_metrics(out / "metrics.csv")
    assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_top5_accuracy"] <= 1  # 10 classes: top-5 too
    for k in range(n):
        assert row[f"hopfield{k}.free.iterations_mean"] == 2
        assert row[f"hopfield{k}.negative.iterations_mean"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "ep-centered"


def n_parameters(name: str) -> int:
    short = [(f"model.blocks[{i}].t1", 1) for i in hopfield_indices(name)]  # the build's shape check relaxes once
    model: FFEBM = build_model(resolve_config(name, short), (3, 32, 32), n_classes=10)
    return sum(p.numel() for p in model.parameters())


def test_the_one_and_three_block_splits_are_the_same_network():
    """splitting_small_1block and _3block cut the same five convolutions and dense layer; the
    official 2-block config pools the fifth convolution too (a 512-wide dense input, not 2048)."""
    one, two, three = (n_parameters(f"cifar10-split-{n}") for n in SPLITS)
    assert one == three
    assert one - two == 256 * (2048 - 512)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_split_preset_trains_on_cuda(tmp_path):
    out = tmp_path / "run"
    name = "cifar10-split-2"
    args = ["train", "--config", name, "--out", str(out), "--device", "cuda", *tiny(tmp_path, name)]
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["device"].startswith("cuda")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.blocks[3].pools=[2, 2]", "model.blocks[3].pools"),
        ("model.blocks[3].input_side=8", "model.blocks[3]"),  # the maps it gets are 16x16
        ("model.blocks[3].init=normal", "model.blocks[3].init"),
    ],
)
def test_bad_overrides_of_a_split_preset_exit_2_naming_the_key(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    data = f"data.root={write_cifar10(tmp_path / 'data', n=4, n_test=4)}"
    assert main(["train", "--config", "cifar10-split-1", "--out", str(out), "--set", data, "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
