"""ngspice checks on a Dask cluster: the same numbers as in one process, refusals before the work,
nothing left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest
import torch

from cosim.checkpoint import CHECKPOINT_FILE
from cosim.cli import main
from cosim.cluster import Cluster, DaemonicWorkerError
from cosim.config import parse_config
from cosim.evaluate import ngspice_validation, reference_copy
from cosim.ngspice_jobs import ModelState, spread_outputs
from cosim.runs import build_run
from cosim.training import train
from tests.conftest import make_solver

CONFIG = """
name = "cluster"
seed = 2
[data]
train_subset = 160
test_subset = 300
[devices]
d2d_sigma = 0.1
[[model.blocks]]
type = "analog"
sizes = [64, 16, 10]
input_gain_V = 4.0
[[model.blocks]]
type = "scale"
factor = 20.0
[train]
epochs = 1
batch_size = 16
lr = 0.01
beta = 0.1
ngspice_eval_samples = 0
"""
CLOSED_PORT = "tcp://127.0.0.1:1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    run = build_run(parse_config(tomllib.loads(CONFIG)), folder)
    train(run, say=lambda _: None)
    return run


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _spawned() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if _alive(p)}


def test_chunks_on_two_workers_give_the_outputs_of_one_process(trained):
    """300 samples: two chunks (256 + 44) cut where the solver cuts the batch in one process."""
    ngspice = make_solver("ngspice")
    x = trained.data.test_x.to(torch.float64)
    reference = reference_copy(trained.model).set_solver(ngspice)
    with torch.no_grad():
        expected = reference.eval()(x)
    before = _spawned()
    lines: list[str] = []
    with Cluster(workers=2).client() as client:
        state = ModelState.of(trained.model, trained.config, x.shape[1:])
        out, ops = spread_outputs(client, state, x, trained.config.solver, lines.append, operating_points=32)
    assert torch.equal(out, expected)
    assert len(lines) == 2 and "chunk 2/2" in lines[-1]
    (op,) = ops
    assert op["name"] == trained.model.analog_blocks()[0].name and op["max_kcl_residual_A"] < 1e-9
    assert _spawned() <= before, "Dask or ngspice processes outlived the cluster"


def test_validation_after_training_on_a_cluster_equals_one_process(trained):
    data, config = trained.data, trained.config
    args = (trained.model, data.test_x, data.test_y, trained.device, trained.dtype, 300, config)
    here = ngspice_validation(*args)
    spread = ngspice_validation(*args, cluster=Cluster(workers=2))
    assert "ngspice_error" not in spread and spread["ngspice_where"] == "2-worker Dask LocalCluster"
    assert spread["ngspice_test_accuracy"] == here["ngspice_test_accuracy"] is not None
    assert spread["fast_test_accuracy_same_samples"] == here["fast_test_accuracy_same_samples"]


def test_cosim_eval_ngspice_on_two_workers_writes_the_same_report(trained, tmp_path, capsys):
    checkpoint = str(trained.run_dir / CHECKPOINT_FILE)
    common = ["eval", "--checkpoint", checkpoint, "--solver", "ngspice", "--samples", "300"]
    assert main([*common, "--json", "--out", str(tmp_path / "here")]) == 0
    capsys.readouterr()
    assert main([*common, "--workers", "2", "--out", str(tmp_path / "spread")]) == 0
    here = json.loads((tmp_path / "here" / "eval.json").read_text())
    spread = json.loads((tmp_path / "spread" / "eval.json").read_text())
    assert spread == here
    assert "ngspice: chunk 2/2" in capsys.readouterr().err


def test_gradcheck_ngspice_on_two_workers_gives_the_same_rows(capsys):
    common = [
        "gradcheck", "--config", "gradcheck-ffebm", "--solver", "ngspice", "--betas", "0.1,0.05", "--json",
        "--set", "gradcheck.samples=6", "--set", 'gradcheck.methods=["ep-centered"]',
    ]  # fmt: skip
    assert main(common) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*common, "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == here


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--checkpoint", "missing.pt", "--solver", "ngspice", "--out", "{out}"],
        ["gradcheck", "--config", "digits-demo", "--solver", "ngspice"],
        ["train", "--config", "digits-demo", "--out", "{out}"],
    ],
    ids=["eval", "gradcheck", "train"],
)
def test_a_scheduler_that_does_not_answer_is_refused_before_any_work(command, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in command]
    assert main([*argv, "--scheduler", CLOSED_PORT]) == 2
    err = capsys.readouterr().err
    assert "--scheduler: nothing answers at 127.0.0.1:1" in err and "omit --scheduler" in err
    assert not out.exists()


def test_a_cluster_needs_the_ngspice_solver(tmp_path, capsys):
    assert main(["eval", "--checkpoint", "missing.pt", "--workers", "2", "--out", str(tmp_path / "o")]) == 2
    assert "give --solver ngspice" in capsys.readouterr().err
    assert main(["gradcheck", "--config", "digits-demo", "--workers", "0"]) == 2
    assert "--workers: must be an integer >= 1" in capsys.readouterr().err


def test_daemonic_workers_of_an_existing_scheduler_are_refused_with_the_fix(trained):
    from distributed import LocalCluster

    x = trained.data.test_x[:8].to(torch.float64)
    state = ModelState.of(trained.model, trained.config, x.shape[1:])
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as daemonic:
        with Cluster(scheduler=daemonic.scheduler_address).client() as client:
            with pytest.raises(DaemonicWorkerError, match="dask worker --no-nanny"):
                spread_outputs(client, state, x, trained.config.solver)


VALIDATED = """
[[model.blocks]]
type = "analog"
sizes = [64, 256, 10]

[data]
train_subset = 32

[train]
epochs = 1
batch_size = 32
ngspice_eval_samples = 360
"""


def _ngspice_workers(process: psutil.Process) -> list[psutil.Process]:
    """The descendants of ``process`` that are spawn workers (Dask's and ngspice's)."""
    found = []
    for child in process.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_ctrl_c_during_a_cluster_validation_leaves_no_process(tmp_path):
    """Ctrl-C reaches the whole foreground process group: the command, its Dask workers and their
    ngspice processes."""
    config = tmp_path / "c.toml"
    config.write_text(VALIDATED)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "cosim.cli", "train", "--config", str(config), "--out", str(tmp_path / "run")]
    train = subprocess.Popen(
        [*argv, "--workers", "2"], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell ignores it
    )  # fmt: skip
    parent = psutil.Process(train.pid)
    seen: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while len(seen) < 4:  # two Dask workers, each with its ngspice process
            assert time.monotonic() < deadline and train.poll() is None, "no ngspice process started on the cluster"
            seen = _ngspice_workers(parent)
            time.sleep(0.1)
        time.sleep(2.0)
        seen = _ngspice_workers(parent)
        os.killpg(train.pid, signal.SIGINT)
        _, err = train.communicate(timeout=60)
    finally:
        if train.poll() is None:
            os.killpg(train.pid, signal.SIGKILL)
            train.wait()
    assert train.returncode == 130, err[-2000:]
    assert "resume with" in err and not (tmp_path / "run" / "summary.json").exists()
    deadline = time.monotonic() + 10
    while any(map(_alive, seen)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [p.pid for p in seen if _alive(p)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outlived the interrupted `cosim train` by 10 s: {survivors}"
