"""Run folders under concurrent and killed `cosim train` processes (issue 12): a second writer is
refused naming the first one's pid, and a SIGKILL during the ngspice validation leaves no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cosim.run_lock import LOCK_FILE, lock_run_dir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

LONG_RUN = """
[[model.blocks]]
type = "analog"
sizes = [64, 8, 10]

[data]
train_subset = 16
test_subset = 16

[train]
epochs = 10000
batch_size = 16
schedule = "none"
ngspice_eval_samples = 0
"""


def cosim(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cosim.cli", *args], env=ENV, text=True, **kw)


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(LONG_RUN)
    run = tmp_path / "run"
    holder = cosim("train", "--config", str(config), "--out", str(run), "--no-ngspice", stderr=subprocess.DEVNULL)
    try:
        # The holder has written its pid and its first checkpoint: a resume would have something to read.
        wait_for(lambda: (run / "checkpoint.pt").exists(), 120, "the first checkpoint")
        assert (run / LOCK_FILE).read_text().strip() == str(holder.pid)
        config_stamp = (run / "config.json").stat().st_mtime_ns
        for args in (["--resume", str(run)], ["--config", str(config), "--out", str(run), "--force"]):
            second = cosim("train", *args, "--no-ngspice", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, err = second.communicate(timeout=120)
            assert second.returncode == 2, err
            assert f"is in use by process {holder.pid}" in err and "Traceback" not in err, err
            assert holder.poll() is None, "the holder stopped before the second writer was tried"
            assert (run / "config.json").stat().st_mtime_ns == config_stamp, f"{args} touched the run"
            assert (run / "checkpoint.pt").exists(), f"{args} removed the holder's checkpoint"
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the next writer gets it at once.
    lock = lock_run_dir(run)
    assert lock.held and (run / LOCK_FILE).read_text().strip() == str(os.getpid())
    lock.release()


VALIDATED = """
[[model.blocks]]
type = "analog"
sizes = [64, 256, 10]

[[model.blocks]]
type = "scale"
factor = 10.0

[data]
train_subset = 32

[solver]
workers = 2

[train]
epochs = 1
batch_size = 32
ngspice_eval_samples = 360
"""


def _is_worker(process: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.ngspice
def test_sigkill_during_ngspice_validation_leaves_no_process(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(VALIDATED)
    run = tmp_path / "run"
    train = cosim("train", "--config", str(config), "--out", str(run), stderr=subprocess.DEVNULL)
    parent = psutil.Process(train.pid)
    children: list[psutil.Process] = []
    try:

        def workers_running() -> bool:
            children[:] = parent.children(recursive=True)
            return sum(map(_is_worker, children)) >= 2

        wait_for(workers_running, 180, "two ngspice workers of the validation")
        time.sleep(2.0)  # past the workers' start-up: they are solving when the kill lands
        children[:] = parent.children(recursive=True)
        assert train.poll() is None and not (run / "summary.json").exists(), "the validation ended before the kill"
        os.kill(train.pid, signal.SIGKILL)
        train.wait(timeout=10)
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()
    deadline = time.monotonic() + 5.0
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [p.pid for p in children if _alive(p)]
    for pid in survivors:  # do not leave them running for the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outlived the killed `cosim train` by 5 s: {survivors}"
    assert len(children) >= 2
