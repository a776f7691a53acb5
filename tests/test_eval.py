"""`cosim eval`: a trained design under other conditions and device draws, without retraining."""

from __future__ import annotations

import json
import tomllib

import pytest

from cosim.checkpoint import CHECKPOINT_FILE
from cosim.cli import main
from cosim.config import parse_config
from cosim.corners import evaluate_checkpoint
from cosim.evaluate import accuracy
from cosim.runs import build_run
from cosim.training import train

CONFIG = """
name = "eval"
seed = 1
[data]
train_subset = 320
test_subset = 96
[devices]
d2d_sigma = 0.1
[[model.blocks]]
type = "analog"
sizes = [64, 16, 10]
input_gain_V = 4.0
[[model.blocks]]
type = "scale"
factor = 20.0
[[model.blocks]]
type = "adc"
bits = 8
lo = -10.0
hi = 10.0
[train]
epochs = 2
batch_size = 16
lr = 0.01
beta = 0.1
ngspice_eval_samples = 0
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    run = build_run(parse_config(tomllib.loads(CONFIG)), folder)
    train(run, say=lambda _: None)
    return run


def test_as_trained_is_the_trained_chip(trained):
    report = evaluate_checkpoint(trained.run_dir / CHECKPOINT_FILE)
    expected = accuracy(trained.model, trained.data.test_x, trained.data.test_y, trained.device, trained.dtype)
    assert report["test_accuracy"] == expected and report["samples"] == 96 and report["conditions"] == {}
    assert not report["fresh_devices"] and set(report["per_class_accuracy"]) <= {str(c) for c in range(10)}
    (block,) = report["blocks"]
    assert 0 <= block["diodes_conducting_fraction"] <= 1 and block["max_kcl_residual_A"] < 1e-9


def test_temperature_and_converter_corners_change_the_operating_point(trained):
    path = trained.run_dir / CHECKPOINT_FILE
    cold = evaluate_checkpoint(path, [("temperature_C", -40.0)])
    hot = evaluate_checkpoint(path, [("temperature_C", 125.0)])
    assert cold["conditions"] == {"model.blocks[0].temperature_C": -40.0}
    # Hot junctions conduct at lower voltages: more of them are on for the same drive.
    assert hot["blocks"][0]["diodes_conducting_fraction"] > cold["blocks"][0]["diodes_conducting_fraction"]
    coarse = evaluate_checkpoint(path, [("model.blocks[2].bits", 2)])
    assert coarse["conditions"] == {"model.blocks[2].bits": 2}
    assert coarse["test_accuracy"] < evaluate_checkpoint(path)["test_accuracy"]


def test_device_draws_give_mean_std_min(trained):
    report = evaluate_checkpoint(trained.run_dir / CHECKPOINT_FILE, [("devices.d2d_sigma", 0.3)], draws=3, samples=48)
    assert report["fresh_devices"] and report["draws"] == 3 and len(report["draw_accuracies"]) == 3
    assert len(set(report["draw_accuracies"])) > 1, "three device draws gave the same chip"
    assert report["test_accuracy_min"] <= report["test_accuracy_mean"] == report["test_accuracy"]
    assert report["test_accuracy_std"] > 0


def test_cli_json_and_refusals(trained, tmp_path, capsys):
    path = str(trained.run_dir / CHECKPOINT_FILE)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", path, "--set", "temperature_C=85", "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "eval.json").read_text())
    assert {"test_accuracy", "samples", "conditions"} <= set(report)
    for bad, said in (
        ("model.blocks[0].sizes=[64,8,10]", "would change the trained design"),
        ("model.blocks[1].factor=2", "not a condition of a scale block"),
        ("train.lr=0.1", "not a condition"),
        ("devices.d2d_sigmaa=0.1", "devices.d2d_sigmaa"),
        ("temperature_C=900", "temperature_C"),
        ("temperature_C", "expected KEY=VALUE"),
    ):
        never = tmp_path / "never"
        assert main(["eval", "--checkpoint", path, "--set", bad, "--out", str(never)]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
        assert not never.exists()
    assert main(["eval", "--checkpoint", path, "--draws", "0", "--out", str(tmp_path / "never")]) == 2
    assert "--draws" in capsys.readouterr().err


def test_ngspice_eval_agrees_with_the_fast_solver(trained):
    path = trained.run_dir / CHECKPOINT_FILE
    fast = evaluate_checkpoint(path, [("temperature_C", 85.0)], samples=24)
    spice = evaluate_checkpoint(path, [("temperature_C", 85.0)], solver="ngspice", samples=24)
    assert spice["test_accuracy"] == fast["test_accuracy"]
    assert spice["blocks"][0]["diodes_conducting_fraction"] == fast["blocks"][0]["diodes_conducting_fraction"]


def test_energy_takes_the_circuit_from_a_training_checkpoint(trained, tmp_path, capsys):
    """`cosim energy --checkpoint` used to need --config and silently used it even when it differed
    from the trained circuit."""
    path = str(trained.run_dir / CHECKPOINT_FILE)
    out = tmp_path / "energy"
    sets = ["--set", "energy.samples=2", "--set", "energy.ngspice=false"]
    assert main(["energy", "--checkpoint", path, *sets, "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["name"] == "eval" and report["blocks"][0]["layer_sizes"] == [64, 16, 10]
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("sizes = [64, 16, 10]", "sizes = [64, 8, 10]"))
    assert main(["energy", "--checkpoint", path, "--config", str(other), "--out", str(tmp_path / "never")]) == 2
    assert "differs from the circuit" in capsys.readouterr().err
    assert main(["energy", "--checkpoint", path, "--set", "train.lr=0.1", "--out", str(tmp_path / "never")]) == 2
    assert "only energy.* keys" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
