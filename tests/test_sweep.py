"""``cosim sweep`` on a 2-worker Dask LocalCluster: tidy rows, plots, and resumption after a kill."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cosim.config import ConfigError, set_path
from cosim.sweep import Sweep, parse_grid
from cosim.sweep_folder import check_identity, write_identity

CONFIG = """
[[model.blocks]]
type = "analog"
sizes = [64, 24, 10]
input_gain_V = 3.0

[[model.blocks]]
type = "scale"
factor = 10.0

[gradcheck]
samples = {samples}
betas = [0.05]
methods = ["ep-centered"]
"""


def sweep_cmd(config: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "cosim.cli", "sweep", "--config", str(config),
        "--grid", "measurement.bits=[8,12]", "--grid", "devices.d2d_sigma=[0.0,0.1]",
        "--seeds", "3", "--metric", "gradcheck", "--workers", "2", "--out", str(out),
    ]  # fmt: skip


def test_grid_parsing_and_paths():
    assert parse_grid("devices.d2d_sigma=[0, 0.1]") == ("devices.d2d_sigma", [0, 0.1])
    assert parse_grid("train.measure_bits=8,null") == ("train.measure_bits", [8, None])
    with pytest.raises(ConfigError, match="KEY="):
        parse_grid("devices.d2d_sigma")
    data = {"model": {"blocks": [{"type": "analog"}]}}
    set_path(data, "model.blocks[0].input_gain_V", 2.0)
    assert data["model"]["blocks"][0]["input_gain_V"] == 2.0
    with pytest.raises(ConfigError, match="out of range"):
        set_path(data, "model.blocks[3].input_gain_V", 2.0)


def test_bad_grid_key_is_refused_before_anything_runs(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(samples=8))
    out = tmp_path / "out"
    cmd = sweep_cmd(config, out)
    cmd[cmd.index("devices.d2d_sigma=[0.0,0.1]")] = "devices.d2d_sigmaa=[0.0,0.1]"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "devices" in proc.stderr and "unknown key" in proc.stderr
    assert not out.exists()


_KILLED_SWEEP = """
import os, signal, sys
import cosim.sweep
write, rows = cosim.sweep.atomic_write_json, []
def counting_write(path, obj):
    write(path, obj)
    if path.parent.name == "rows":
        rows.append(path)
        if len(rows) == int(os.environ["KILL_AFTER_ROWS"]):
            os.killpg(os.getpgrp(), signal.SIGKILL)
cosim.sweep.atomic_write_json = counting_write
from cosim.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sweep_killed_midway_reruns_exactly_the_missing_rows(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(samples=256))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KILL_AFTER_ROWS": "3"}
    # The sweep SIGKILLs its own process group (itself and the Dask workers) right after its third
    # row file is written: the kill lands midway however fast the machine is.
    first = subprocess.run(
        [sys.executable, "-c", _KILLED_SWEEP, *sweep_cmd(config, out)[3:]],
        capture_output=True, text=True, timeout=600, env=env, start_new_session=True,
    )  # fmt: skip
    assert first.returncode == -signal.SIGKILL, first.stderr
    rows = out / "rows"
    before = {p.name: p.stat().st_mtime_ns for p in rows.glob("*.json")}
    assert len(before) == 3, f"the kill should land after 3 rows, {len(before)} rows were done"

    env.pop("KILL_AFTER_ROWS")
    rerun = subprocess.run(sweep_cmd(config, out), capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"12 rows, {len(before)} already done, running {12 - len(before)}" in rerun.stderr
    assert f"ran {12 - len(before)} rows" in rerun.stderr
    after = {p.name: p.stat().st_mtime_ns for p in rows.glob("*.json")}
    assert len(after) == 12
    assert all(after[name] == mtime for name, mtime in before.items()), "finished rows were run again"

    with (out / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 12
    assert {r["seed"] for r in table} == {"0", "1", "2"}
    assert all(0 < float(r["wall_s"]) and -1 <= float(r["cosine"]) <= 1 for r in table)
    assert (out / "heatmap_cosine.png").stat().st_size > 1000
    assert (out / "sweep_devices.d2d_sigma.png").exists()


def test_seed_on_the_grid_is_the_rows_seed():
    sweep = Sweep(CONFIG.format(samples=8), "c.toml", [("seed", [5, 6])], 1, "gradcheck")
    assert [(p["seed"], p["config"]["seed"]) for p in sweep.points] == [(5, 5), (6, 6)]
    with pytest.raises(ConfigError, match="--seeds: the grid sweeps seed itself"):
        Sweep(CONFIG.format(samples=8), "c.toml", [("seed", [5, 6])], 3, "gradcheck")


def test_identity_ignores_comments_and_names_each_difference(tmp_path):
    base = Sweep(CONFIG.format(samples=8), "c.toml", [("measurement.bits", [8])], 1, "gradcheck")
    commented = Sweep("# a note\n" + CONFIG.format(samples=8), "c.toml", [("measurement.bits", [8])], 1, "gradcheck")
    assert base.identity == commented.identity
    write_identity(tmp_path, base.identity, base.keys, len(base.points))
    check_identity(tmp_path, commented.identity)
    other = Sweep(CONFIG.format(samples=9), "c.toml", [("measurement.bits", [8, 12])], 1, "train")
    with pytest.raises(ConfigError) as info:
        check_identity(tmp_path, other.identity)
    message = str(info.value)
    assert "base configuration differs" in message and "--metric is train" in message and "--grid is" in message


def _sweep(config: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cosim.cli", "sweep", "--config", str(config), "--seeds", "1", "--workers", "1"]
    return subprocess.run([*cmd, "--out", str(out), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_folder_resumes_only_its_own_sweep_and_force_starts_it_over(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(samples=8))
    out = tmp_path / "out"
    first = _sweep(config, out, "--grid", "measurement.bits=[8,12]")
    assert first.returncode == 0, first.stderr
    rows = {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")}
    assert len(rows) == 2
    refused = _sweep(config, out, "--grid", "measurement.bits=[8,12]", "--metric", "train")
    assert refused.returncode == 2 and "--metric is train, the folder holds gradcheck rows" in refused.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")} == rows
    (out / "notes.txt").write_text("mine")
    again = _sweep(config, out, "--grid", "measurement.bits=[10]", "--force")
    assert again.returncode == 0, again.stderr
    assert len(list((out / "rows").glob("*.json"))) == 1 and (out / "notes.txt").read_text() == "mine"
    with (out / "results.csv").open() as fh:
        assert [r["measurement.bits"] for r in csv.DictReader(fh)] == ["10"]


@pytest.mark.slow
def test_scheduler_check_tells_a_dask_scheduler_from_another_listener():
    import socket
    import threading

    from distributed import LocalCluster

    from cosim.cluster import check_scheduler

    with socket.socket() as server:  # accepts, then says something that is not Dask's handshake
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer():
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)

        threading.Thread(target=answer, daemon=True).start()
        port = server.getsockname()[1]
        with pytest.raises(ConfigError, match="does not answer as a Dask scheduler"):
            check_scheduler(f"127.0.0.1:{port}", timeout_s=2.0)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None, protocol="tcp") as cluster:
        assert check_scheduler(cluster.scheduler_address) == cluster.scheduler_address
