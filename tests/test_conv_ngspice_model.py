"""Conv analog blocks solved by ngspice inside a model: the check after training and `cosim eval
--solver ngspice` run their unrolled decks (analog.solvers.conv_ngspice) in the model's ngspice
worker pool, and a trained digits-conv gets the same predictions there as with the fast solver."""

from __future__ import annotations

import json

import pytest
import torch

from cosim.build import build_model, build_solver
from cosim.checkpoint import read_checkpoint
from cosim.conv_block import conv_solver_for
from cosim.data import load_dataset
from tests.conftest import ngspice_available
from tests.test_cli import cosim

SMALL = ["--set", "data.train_subset=128", "--set", "data.test_subset=16", "--set", "train.schedule=none"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """digits-conv after 1 epoch on 128 samples, checked in ngspice on 4 test samples."""
    if ngspice_available():
        pytest.skip(ngspice_available())
    run = tmp_path_factory.mktemp("conv-ngspice") / "run"
    proc = cosim(
        "train", "--config", "digits-conv", "--out", str(run), "--epochs", "1", "--set",
        "train.ngspice_eval_samples=4", *SMALL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.ngspice
def test_the_check_after_training_solves_the_conv_block_in_ngspice(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert "ngspice_error" not in summary
    assert summary["ngspice_samples"] == 4 and summary["ngspice_seconds"] > 0
    assert summary["ngspice_test_accuracy"] == summary["fast_test_accuracy_same_samples"]


@pytest.mark.ngspice
def test_ngspice_and_the_fast_solver_give_the_same_predictions(trained):
    stored = read_checkpoint(trained / "checkpoint.pt")
    data = load_dataset(stored.config.data, stored.config.seed.data)
    model = build_model(stored.config, data.input_shape).to(dtype=torch.float64)
    model.load_state_dict(stored.model)
    model.eval()
    x = data.test_x[:4].to(torch.float64)
    with torch.no_grad():
        fast = model(x)
        with build_solver(stored.config.solver, "ngspice") as ngspice:
            model.set_solver(ngspice)
            (block,) = model.conv_blocks()
            assert block.solver.name == "ngspice" and block.solver.pool is ngspice.pool
            spice = model(x)
        model.set_solver(build_solver(stored.config.solver, "fast"))
    assert model.conv_blocks()[0].solver.name == "fast-conv"
    # As `cosim eval --solver ngspice` builds its model: the conv block is in ngspice's pool too.
    with build_solver(stored.config.solver, "ngspice") as ngspice:
        built = build_model(stored.config, data.input_shape, solver=ngspice)
        assert built.conv_blocks()[0].solver.pool is ngspice.pool
    assert torch.equal(fast.argmax(1), spice.argmax(1))
    torch.testing.assert_close(spice, fast, rtol=0, atol=1e-8)


@pytest.mark.ngspice
def test_eval_with_ngspice_runs_the_conv_block_there(trained, tmp_path):
    args = ["eval", "--checkpoint", str(trained / "checkpoint.pt"), "--samples", "2", "--json"]
    spice = cosim(*args, "--solver", "ngspice", "--out", str(tmp_path / "spice"))
    fast = cosim(*args, "--solver", "fast", "--out", str(tmp_path / "fast"))
    assert spice.returncode == 0 and fast.returncode == 0, spice.stderr + fast.stderr
    spice, fast = json.loads(spice.stdout), json.loads(fast.stdout)
    assert spice["solver"] == "ngspice" and spice["test_accuracy"] == fast["test_accuracy"]
    assert spice["loss"] == pytest.approx(fast["loss"], abs=1e-8)


def test_a_solver_named_ngspice_without_a_worker_pool_is_refused_for_conv_blocks():
    class Imitation:
        name = "ngspice"

    with pytest.raises(ValueError, match="analog-conv0: a conv analog block runs ngspice in an ngspice solver's"):
        conv_solver_for(Imitation(), None, "analog-conv0")
