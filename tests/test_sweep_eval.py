"""Sweeps over a trained design's conditions (`--metric eval`), resumed after a kill without a row
lost or repeated; training sweeps keep every row's run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tomllib

import pytest

from cosim.checkpoint import CHECKPOINT_FILE
from cosim.cli import main
from cosim.config import parse_config
from cosim.runs import build_run
from cosim.training import train
from tests.test_sweep import _KILLED_SWEEP

CONFIG = """
name = "sweep-eval"
seed = 4
[data]
train_subset = 96
test_subset = 64
[devices]
d2d_sigma = 0.1
[[model.blocks]]
type = "analog"
sizes = [64, 12, 10]
input_gain_V = 4.0
[[model.blocks]]
type = "scale"
factor = 20.0
[train]
epochs = 1
batch_size = 16
beta = 0.1
ngspice_eval_samples = 0
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    run = build_run(parse_config(tomllib.loads(CONFIG)), folder)
    train(run, say=lambda _: None)
    return folder / CHECKPOINT_FILE


def _eval_sweep(checkpoint, out, *extra):
    return [
        "sweep", "--metric", "eval", "--checkpoint", str(checkpoint), "--grid", "temperature_C=[-40,27,85,125]",
        "--seeds", "2", "--workers", "2", "--out", str(out), *extra,
    ]  # fmt: skip


def test_condition_sweep_killed_midway_resumes_without_loss_or_repeat(checkpoint, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KILL_AFTER_ROWS": "3"}
    first = subprocess.run(
        [sys.executable, "-c", _KILLED_SWEEP, *_eval_sweep(checkpoint, out)],
        capture_output=True, text=True, timeout=600, env=env, start_new_session=True,
    )  # fmt: skip
    assert first.returncode == -signal.SIGKILL, first.stderr
    before = {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")}
    assert len(before) == 3
    env.pop("KILL_AFTER_ROWS")
    rerun = subprocess.run(
        [sys.executable, "-m", "cosim.cli", *_eval_sweep(checkpoint, out)], capture_output=True, text=True, env=env
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "8 rows, 3 already done, running 5" in rerun.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")}
    assert len(after) == 8 and all(after[name] == t for name, t in before.items())
    with (out / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert sorted((float(r["temperature_C"]), r["seed"]) for r in table) == sorted(
        (t, s) for t in (-40.0, 27.0, 85.0, 125.0) for s in ("0", "1")
    )
    seed0 = [r for r in table if r["seed"] == "0"]
    on = {float(r["temperature_C"]): float(r["analog0.diodes_conducting_fraction"]) for r in seed0}
    swing = {float(r["temperature_C"]): float(r["analog0.output_swing_V"]) for r in seed0}
    # Hot junctions clamp lower (about -2 mV/K) and conduct at least as much.
    assert swing[125.0] < swing[-40.0] and on[125.0] >= on[-40.0], (swing, on)
    assert (out / "sweep_temperature_C.png").stat().st_size > 1000


def test_eval_sweep_refusals(checkpoint, tmp_path, capsys):
    out = tmp_path / "never"
    base = ["sweep", "--metric", "eval", "--out", str(out)]
    cases = (
        (["--grid", "temperature_C=[27]"], "--checkpoint"),
        (["--checkpoint", str(checkpoint), "--grid", "model.blocks[0].sizes=[[64,4,10]]"], "would change the trained"),
        (["--checkpoint", str(checkpoint), "--grid", "seed=[1,2]"], "device draws"),
        (["--checkpoint", str(checkpoint), "--config", "digits-demo", "--grid", "temperature_C=[27]"], "omit --config"),
    )
    for extra, said in cases:
        assert main([*base, *extra]) == 2
        assert said in capsys.readouterr().err
        assert not out.exists()


@pytest.mark.slow
def test_training_sweep_keeps_each_rows_run(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.replace("d2d_sigma = 0.1", "d2d_sigma = 0.0"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cosim.cli", "sweep", "--config", str(config), "--metric", "train"]
    result = subprocess.run(
        [*cmd, "--grid", "devices.d2d_sigma=[0.0,0.1]", "--seeds", "1", "--workers", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = sorted(p.stem for p in (out / "rows").glob("*.json"))
    assert len(rows) == 2
    for row in rows:
        assert (out / "runs" / row / "checkpoint.pt").is_file() and (out / "runs" / row / "metrics.csv").is_file()
