"""Checkpoints hold the exact chip: device spread, stuck devices and diode draws are model state,
so resuming and exporting need no seed convention."""

from __future__ import annotations

import tomllib

import pytest
import torch

import cosim.build
from analog.solvers import FastSolver
from cosim.checkpoint import CHECKPOINT_FILE, read_checkpoint
from cosim.config import parse_config
from cosim.export import export_netlists
from cosim.runs import build_run, open_run
from cosim.training import train

CONFIG = """
name = "devices"
seed = 3
[data]
train_subset = 48
test_subset = 16
[devices]
d2d_sigma = 0.2
stuck_at_min_fraction = 0.05
stuck_at_max_fraction = 0.05
diode_is_sigma = 0.3
diode_n_sigma = 0.05
[[model.blocks]]
type = "analog"
sizes = [64, 8, 10]
input_gain_V = 4.0
[[model.blocks]]
type = "scale"
factor = 20.0
[train]
epochs = 1
batch_size = 16
ngspice_eval_samples = 0
"""


def _circuits(model):
    return [block.circuit() for block in model.analog_blocks()]


def _max_dv(a, b, x) -> float:
    worst = 0.0
    solver = FastSolver()
    for ca, cb in zip(a, b, strict=True):
        source_V = ca.spec.source_voltages(x)
        va = solver.solve(ca, source_V).all_voltages()
        vb = solver.solve(cb, source_V).all_voltages()
        worst = max(worst, float((va - vb).abs().max()))
    return worst


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    run = build_run(parse_config(tomllib.loads(CONFIG)), folder)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    train(run, say=lambda _: None)
    return run


def test_checkpoint_holds_the_device_draws(trained, tmp_path, monkeypatch):
    state = read_checkpoint(trained.run_dir / CHECKPOINT_FILE).model
    for key in (
        "blocks.0.arrays.0.factor",
        "blocks.0.arrays.0.stuck",
        "blocks.0.diode_area",
        "blocks.0.diode_emission",
    ):
        assert key in state, key
    x = trained.data.test_x[:8]
    before = _circuits(trained.model)
    # Another seed convention: a fresh model now gets other devices ...
    monkeypatch.setattr(cosim.build, "block_seed", lambda seed, index: 987_654 + index)
    fresh = build_run(trained.config, tmp_path / "fresh")
    assert _max_dv(before, _circuits(fresh.model), x) > 1e-3
    # ... but the resumed run and the export read the devices from the checkpoint.
    resumed = open_run(resume=trained.run_dir)
    assert _max_dv(before, _circuits(resumed.model), x) == 0.0
    for ref, got in zip(before, _circuits(resumed.model), strict=True):
        assert torch.equal(ref.diode_area, got.diode_area) and torch.equal(ref.diode_emission, got.diode_emission)
        for a, b in zip(ref.weights, got.weights, strict=True):
            assert torch.equal(a, b)
    patched = export_netlists(trained.run_dir / CHECKPOINT_FILE, tmp_path / "patched", sample=2)
    monkeypatch.undo()
    plain = export_netlists(trained.run_dir / CHECKPOINT_FILE, tmp_path / "plain", sample=2)
    for a, b in zip(patched, plain, strict=True):
        text_a = a.read_text().replace(str(tmp_path / "patched"), "")
        text_b = b.read_text().replace(str(tmp_path / "plain"), "")
        assert text_a == text_b, a.name


def test_device_draws_follow_the_module(trained):
    model = trained.model
    block = model.analog_blocks()[0]
    model.to(torch.float32)
    try:
        assert block.arrays[0].factor.dtype == torch.float32 and block.diode_area.dtype == torch.float32
        assert block.arrays[0].stuck.dtype == torch.int8  # a fault code, not a number to convert
    finally:
        model.to(torch.float64)
