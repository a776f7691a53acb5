"""The CIFAR-10 splitting presets with circuit blocks (cifar10-circuit-split-1/2/3: the 6-layer VGG of
cifar10-split-1/2/3 as conv and dense analog blocks cut at every pool) train end to end through the
CLI on generated CIFAR-shaped files, with the full architecture and only the data and epochs shrunk,
and report every circuit's operating point."""

from __future__ import annotations

import json

import pytest

from cosim.build import build_model
from cosim.cli import main
from cosim.config import resolve_config
from cosim.metrics import read_metrics
from cosim.model import FFEBM
from tests.data_files import write_cifar10

SPLITS = (1, 2, 3)
CIRCUITS = {1: (4, 1), 2: (4, 1), 3: (5, 1)}
"""Conv and dense analog blocks of each split (cut at the three pools the paper keeps inside blocks)."""


def model_of(name: str) -> FFEBM:
    return build_model(resolve_config(name), (3, 32, 32), n_classes=10)


def free_nodes(model: FFEBM) -> list[int]:
    """Free-layer node counts of every circuit, in the model's order."""
    circuits = (*model.conv_blocks(), *model.analog_blocks())
    return [size for block in model.blocks if block in circuits for size in block.spec.layer_sizes[1:]]


@pytest.mark.parametrize("n", SPLITS)
def test_the_circuits_have_the_hopfield_presets_layers(n):
    """L1 128x16x16, L2 256x8x8, L3 256x4x4, L4 512x2x2, L5 512x2x2 (split-2: 512x1x1), L6 256: the
    layers of cifar10-split-n, as free layers of the circuits."""
    model = model_of(f"cifar10-circuit-split-{n}")
    assert (len(model.conv_blocks()), len(model.analog_blocks())) == CIRCUITS[n]
    l5 = 512 if n == 2 else 512 * 4
    assert free_nodes(model) == [128 * 256, 256 * 64, 256 * 16, 512 * 4, l5, 256]


@pytest.mark.slow
@pytest.mark.parametrize("n", SPLITS)
def test_each_circuit_split_trains_end_to_end_on_generated_cifar(tmp_path, n):
    name = f"cifar10-circuit-split-{n}"
    root = write_cifar10(tmp_path / "data", n=4, n_test=4)
    sets = {"data.root": root, "data.train_subset": 8, "data.test_subset": 4, "train.epochs": 1, "train.batch_size": 4}
    out = tmp_path / "run"
    args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    assert main(["train", "--config", name, "--out", str(out), *args]) == 0
    (row,) = read_metrics(out / "metrics.csv")
    assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_top5_accuracy"] <= 1
    n_conv, n_dense = CIRCUITS[n]
    names = [f"analog-conv{k}" for k in range(n_conv)] + [f"analog{k}" for k in range(n_dense)]
    for block in names:
        assert row[f"{block}.free.iterations_mean"] >= 1
        assert 0 <= row[f"{block}.diodes_conducting"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    ops = {op["name"]: op for op in summary["operating_point"]}
    assert sorted(ops) == sorted(names)
    # The first circuits' diodes conduct at the preset's voltages: none of them is a linear map.
    for k in range(3):
        assert ops[f"analog-conv{k}"]["diodes_conducting_fraction"] > 0.02
        assert not ops[f"analog-conv{k}"]["warnings"]
