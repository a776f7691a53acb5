"""Conv analog blocks through the ``cosim`` commands: solve (fast vs ngspice), gradcheck, refusals."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ngspice_available
from tests.test_cli import cosim


@pytest.mark.ngspice
def test_solve_conv_both_agree():
    if ngspice_available():
        pytest.skip(ngspice_available())
    proc = cosim("solve", "--config", "solve-conv", "--solver", "both", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["samples"] == 8 and report["nodes"] == 5 * 64
    assert report["max_abs_diff_V"] <= 1e-8
    assert report["fast_residual_A"] <= 1e-14
    op = report["operating_point"]  # of the first solver's free phase, as for a dense block
    assert [layer["layer"] for layer in op["layers"]] == [1, 2] and 0 <= op["diodes_conducting_fraction"] <= 1


@pytest.mark.slow
def test_gradcheck_conv_per_parameter():
    proc = cosim("gradcheck", "--config", "gradcheck-conv", "--betas", "0.2,0.1,0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = [r for r in report["results"] if r["method"] == "ep-centered"]
    params = {r["param"] for r in rows}
    assert {"blocks.2.weights.0", "blocks.2.weights.1", "blocks.2.biases.0", "blocks.1.weight"} <= params
    assert min(r["cosine"] for r in rows) >= 0.9999
    assert 1.8 <= report["slope_centered"] <= 2.2 and 0.8 <= report["slope_one_sided"] <= 1.2


@pytest.mark.ngspice
@pytest.mark.slow
def test_gradcheck_conv_on_ngspice():
    """EP and the exact gradient at ngspice's equilibria: every phase of the conv block is its
    unrolled deck (and the dense block's deck), yet EP stays the exact gradient to beta^2."""
    if ngspice_available():
        pytest.skip(ngspice_available())
    proc = cosim(
        "gradcheck", "--config", "gradcheck-conv", "--solver", "ngspice", "--betas", "0.2,0.1",
        "--set", "gradcheck.samples=4", "--set", 'gradcheck.methods=["ep-centered"]', "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = report["results"]
    assert {"blocks.2.weights.0", "blocks.2.weights.1", "blocks.5.weights.0"} <= {r["param"] for r in rows}
    assert min(r["cosine"] for r in rows) >= 0.9999
    assert 1.8 <= report["slope_centered"] <= 2.2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "model.blocks[2].kernel_size=4"], "model.blocks[2].kernel_size: must be an odd integer"),
        (["--set", "model.blocks[2].side=[6,6]"], "takes input maps [batch, 2, 6, 6]"),
        (["--set", "model.blocks[2].channels=[2]"], "model.blocks[2].channels: need at least"),
        (["--set", "devices.d2d_sigma=0.1"], "devices: conv analog blocks model ideal devices"),
    ],
)
def test_bad_conv_configs_exit_2(args, message):
    proc = cosim("gradcheck", "--config", "gradcheck-conv", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_conv_resumes_and_evaluates(tmp_path):
    run = tmp_path / "run"
    small = ["--set", "data.train_subset=256", "--set", "data.test_subset=64", "--set", "train.schedule=none"]
    first = cosim("train", "--config", "digits-conv", "--out", str(run), "--epochs", "1", *small)
    assert first.returncode == 0, first.stderr
    resumed = cosim("train", "--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "from epoch 2" in resumed.stderr + resumed.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["conductances"] == 8 * 2 * 9 + 8 * 16 * 9 + 2 * 8 * 2
    evaluated = cosim("eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "eval"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    # The checkpoint holds the trained conv block: evaluating it reproduces the run's accuracy.
    assert json.loads(evaluated.stdout)["test_accuracy"] == summary["test_accuracy"]
