"""The ngspice worker pool: time limits, replacement of hung workers, workers dying with their parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from analog.circuit import Circuit, CircuitSpec
from analog.ngspice import NgspicePool
from analog.ngspice.pool import FIRST_JOB_S, FLOOR_S, MARGIN
from analog.solvers.base import SolverError
from analog.solvers.ngspice import NgspiceSolver
from tests.conftest import make_solver

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ngspice


@pytest.fixture(autouse=True)
def _needs_ngspice():
    make_solver("ngspice")  # skips when ngspice cannot be loaded


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, seconds: float) -> float:
    """Seconds until every process of ``pids`` is gone (or a zombie); ``inf`` past ``seconds``."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if all(_gone(pid) for pid in pids):
            return time.perf_counter() - start
        time.sleep(0.05)
    return float("inf")


def test_a_job_past_the_time_limit_names_the_limit_and_the_pool_recovers():
    with NgspicePool(timeout_s=60) as pool:
        before = pool.worker_pids()
        pool.timeout_s = 0.5
        start = time.perf_counter()
        with pytest.raises(SolverError) as info:
            pool.map([(time.sleep, 30)])
        elapsed = time.perf_counter() - start
        message = str(info.value)
        assert "time limit of 0.5 s (timeout_s = 0.5 s) twice" in message
        assert "raise the limit: NgspicePool(timeout_s=SECONDS)" in message
        # Two attempts of 0.5 s each, plus starting a replacement worker: nowhere near the 30 s job.
        assert elapsed < 15, elapsed
        assert _wait_gone(before, 5.0) < 5.0, "the hung worker was not killed"
        pool.timeout_s = None
        (pid,) = pool.map([(os.getpid,)])
        assert pid not in before
        print(f"timeout raised after {elapsed:.2f} s (two attempts of 0.5 s)")


def test_solver_timeout_is_configurable_and_the_solver_recovers(ngspice_solver):
    spec = CircuitSpec((6, 4, 3))
    circuit = Circuit.random(spec, seed=3)
    source_V = spec.source_voltages(torch.rand(20, 6, generator=torch.Generator().manual_seed(3)))
    reference = ngspice_solver.solve(circuit, source_V)
    # A fresh worker alone takes longer than 10 ms to start: the chunk surely misses the limit.
    with NgspiceSolver(timeout_s=0.01) as solver:
        with pytest.raises(SolverError, match=r"time limit of 0\.01 s .*NgspiceSolver\(timeout_s=SECONDS\)"):
            solver.solve(circuit, source_V)
        solver.timeout_s = None
        again = solver.solve(circuit, source_V)
    torch.testing.assert_close(again.all_voltages(), reference.all_voltages(), rtol=0, atol=1e-12)


def test_automatic_limit_follows_the_measured_time():
    with NgspicePool() as pool:
        assert pool.timeout_s is None and pool.limit_s(1.0, time.sleep) == FIRST_JOB_S
        pool.map([(time.sleep, 0.2)], work=[2.0])  # 0.1 s per unit of work, at least
        assert pool.limit_s(1.0, time.sleep) == FLOOR_S
        rate = pool.limit_s(1e6, time.sleep) / (MARGIN * 1e6)
        assert 0.1 <= rate < 0.4  # the job's own time, not the worker's start-up (seconds)
        assert pool.limit_s(1e3, time.sleep) == pytest.approx(MARGIN * rate * 1e3)
        assert pool.limit_s(1e3, abs) == FIRST_JOB_S  # another task function: not measured yet
    with pytest.raises(ValueError, match="timeout_s"):
        NgspicePool(timeout_s=0)
    with pytest.raises(ValueError, match="timeout_s"):
        NgspiceSolver(timeout_s=float("inf"))


def test_kept_exceptions_come_back_as_results_and_others_are_raised():
    with NgspicePool() as pool:
        results = pool.map([(int, "7"), (int, "x")], keep=(ValueError,))
        assert results[0] == 7 and isinstance(results[1], ValueError)
        with pytest.raises(ValueError, match="invalid literal"):
            pool.map([(int, "x")])
        assert pool.map([(abs, -3)]) == [3]  # a job's own error does not break the pool


_ORPHAN = """
import sys, time, torch
from analog.circuit import Circuit, CircuitSpec
from analog.solvers.ngspice import NgspiceSolver

solver = NgspiceSolver(workers=2)
spec = CircuitSpec((2, 2))
solver.solve(Circuit.random(spec, seed=0), torch.zeros(1, spec.n_sources, dtype=torch.float64))
print(*solver.worker_pids(), flush=True)
solver.pool.map([(time.sleep, 120)] * 2)  # both workers busy when the parent is killed
"""


def test_workers_die_with_their_parent():
    command = [sys.executable, "-c", _ORPHAN]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as parent:
        try:
            pids = [int(p) for p in parent.stdout.readline().split()]
            assert pids, "the subprocess printed no worker pid"
            assert all(psutil.Process(pid).ppid() == parent.pid for pid in pids)
            time.sleep(1.0)  # let the sleeping jobs reach the workers
            assert not any(_gone(pid) for pid in pids)
        finally:
            parent.kill()
            parent.wait()
    waited = _wait_gone(pids, 5.0)
    assert waited < 5.0, f"workers {[p for p in pids if not _gone(p)]} outlived their parent"
    print(f"{len(pids)} workers gone {waited:.2f} s after SIGKILL of their parent")
