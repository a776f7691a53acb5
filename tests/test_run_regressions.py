"""Runs that failed before, each kept failing-proof: training with ngspice as the solver, and a run
with a user diode card resumed and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosim.cli import main
from cosim.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent

TINY = """
name = "tiny"
seed = 2
[data]
train_subset = {train}
test_subset = 16
[[model.blocks]]
type = "analog"
sizes = [64, 8, 10]
input_gain_V = 4.0
{extra}
[[model.blocks]]
type = "scale"
factor = 20.0
[train]
epochs = 1
batch_size = 16
beta = 0.1
schedule = "none"
ngspice_eval_samples = 8
[solver]
name = "{solver}"
"""


def _config(tmp_path: Path, solver: str = "fast", train: int = 32, extra: str = "") -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(solver=solver, train=train, extra=extra), encoding="utf-8")
    return path


def test_training_with_ngspice_validates_in_ngspice(tmp_path, capsys):
    """The ngspice validation used to deep-copy the model with its ngspice solver (a pool with
    locks: TypeError: cannot pickle '_thread.lock')."""
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(tmp_path, solver="ngspice")), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ngspice_samples"] == 8 and summary["ngspice_test_accuracy"] is not None
    assert summary["ngspice_test_accuracy"] == summary["fast_test_accuracy_same_samples"]
    assert "Traceback" not in capsys.readouterr().err
    # The KCL residual of ngspice's phases is measured from its node voltages (it used to read 0 or nan).
    (row,) = read_metrics(out / "metrics.csv")
    for phase in ("free", "positive", "negative"):
        assert 0 < row[f"analog0.{phase}.residual_A_max"] < 1e-9


def test_a_run_with_a_diode_card_resumes_and_exports(tmp_path, capsys):
    """Its stored configuration lists every key, and used to fail its own check that diode_model
    replaces diode_is_A and diode_n."""
    extra = f'model_file = "{ROOT / "netlists" / "user_models.lib"}"\ndiode_model = "DFAST"'
    out = tmp_path / "run"
    config = _config(tmp_path, extra=extra, train=48)
    assert main(["train", "--config", str(config), "--out", str(out), "--no-ngspice"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-ngspice"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert main(["netlist", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "net")]) == 0
    assert ".model DFAST D (IS=2e-14 N=1.05)" in (tmp_path / "net" / "analog0.cir").read_text()
    capsys.readouterr()


@pytest.mark.parametrize("key", ["diode_is_A = 2e-14", "diode_xti = 2.0"])
def test_a_diode_card_still_refuses_a_parameter_it_replaces(tmp_path, capsys, key):
    extra = f'model_file = "{ROOT / "netlists" / "user_models.lib"}"\ndiode_model = "DFAST"\n{key}'
    assert main(["train", "--config", str(_config(tmp_path, extra=extra)), "--out", str(tmp_path / "r")]) == 2
    assert f"diode_model replaces {key.split()[0]}" in capsys.readouterr().err


def test_solve_writes_its_report_with_out(tmp_path, capsys):
    out = tmp_path / "solve"
    assert main(["solve", "--config", "solve-64-32-10", "--solver", "fast", "--json", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((out / "solve.json").read_text())
    assert main(["solve", "--config", "solve-64-32-10", "--solver", "fast", "--out", "/proc/version/x"]) == 2
    assert "--out" in capsys.readouterr().err


def test_a_run_keeps_its_model_library_and_survives_the_originals_loss(tmp_path, capsys):
    """The library used to be stored by path: deleting or moving it broke resume and export."""
    import shutil

    library = tmp_path / "mine.lib"
    library.write_text((ROOT / "netlists" / "user_models.lib").read_text())
    extra = f'model_file = "{library}"\ndiode_model = "DFAST"'
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(tmp_path, extra=extra)), "--out", str(out), "--no-ngspice"]) == 0
    kept = out / "models" / "block0.lib"
    assert ".model DFAST D (IS=2e-14 N=1.05)" in kept.read_text()
    assert json.loads((out / "config.json").read_text())["model"]["blocks"][0]["model_file"] == str(kept.resolve())
    library.unlink()
    moved = tmp_path / "elsewhere"
    shutil.move(out, moved)
    assert main(["train", "--resume", str(moved), "--epochs", "2", "--no-ngspice"]) == 0
    assert main(["netlist", "--checkpoint", str(moved / "checkpoint.pt"), "--out", str(tmp_path / "net")]) == 0
    capsys.readouterr()


def test_training_with_the_layerwise_solver(tmp_path, capsys):
    out = tmp_path / "run"
    config = _config(tmp_path, solver="fast-layerwise", train=48)
    assert main(["train", "--config", str(config), "--out", str(out), "--no-ngspice"]) == 0
    (row,) = read_metrics(out / "metrics.csv")
    assert row["analog0.free.iterations_mean"] >= 1 and row["analog0.free.residual_A_max"] < 1e-9
    assert "fast-layerwise solver" in capsys.readouterr().err
