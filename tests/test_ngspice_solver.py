"""ngspice as an equilibrium solver: batching, worker failures, memory, parse errors (the analytic
circuits every solver must solve are in test_analytic_circuits.py)."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import threading
import time

import pytest
import torch

from analog.circuit import Circuit, CircuitSpec
from analog.ngspice import fatal_messages, ngspice_library
from analog.solvers.base import SolverError
from analog.solvers.ngspice import NgspiceSolver


def _library_problem() -> str | None:
    library = ngspice_library()
    if library is None:
        return "libngspice is not installed (apt-get install ngspice libngspice0 libngspice0-dev)"
    try:
        ctypes.CDLL(library)
    except OSError as err:
        return f"libngspice cannot be loaded ({err}); set NGSPICE_LIBRARY_PATH=libngspice.so.0"
    return None


pytestmark = [
    pytest.mark.ngspice,
    pytest.mark.skipif(_library_problem() is not None, reason=str(_library_problem())),
]

TOL_V = 1e-9


@pytest.fixture
def solver(ngspice_solver):
    return ngspice_solver


def _batch(spec: CircuitSpec, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand((batch, spec.n_inputs), generator=gen, dtype=torch.float64) - 1
    nudge = 1e-6 * torch.randn((batch, spec.n_outputs), generator=gen, dtype=torch.float64)
    return spec.source_voltages(x), nudge


def test_batched_equals_per_op(solver):
    spec = CircuitSpec(layer_sizes=(8, 4, 3))
    circuit = Circuit.random(spec, seed=5)
    source_V, nudge_A = _batch(spec, 16, seed=6)
    batched = solver.solve(circuit, source_V, nudge_A)
    per_op = solver.solve_per_op(circuit, source_V, nudge_A)
    torch.testing.assert_close(batched.all_voltages(), per_op.all_voltages(), rtol=0, atol=TOL_V)
    torch.testing.assert_close(batched.input_currents_A, per_op.input_currents_A, rtol=0, atol=1e-14)
    for a, b in zip(batched.bias_currents_A, per_op.bias_currents_A, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    assert batched.residual_A.max() < 1e-14 and per_op.residual_A.max() < 1e-14


def test_chunks_and_single_sample_agree(solver):
    spec = CircuitSpec(layer_sizes=(3, 4, 2), amplifier_gains=(3.0,), diode_down_V=None)
    circuit = Circuit.random(spec, seed=7)
    source_V, nudge_A = _batch(spec, 11, seed=8)
    whole = solver.solve(circuit, source_V, nudge_A)
    with NgspiceSolver(max_batch=4) as chunked:
        parts = chunked.solve(circuit, source_V, nudge_A)
    one = solver.solve(circuit, source_V[5:6], nudge_A[5:6])
    torch.testing.assert_close(parts.all_voltages(), whole.all_voltages(), rtol=0, atol=TOL_V)
    torch.testing.assert_close(one.all_voltages(), whole.all_voltages()[5:6], rtol=0, atol=TOL_V)
    assert whole.output.shape == (11, 2) and whole.bias_currents_A[1].shape == (11, 2)


def test_stderr_classification():
    assert not fatal_messages(["Note: Starting dynamic gmin stepping", "Note: Dynamic gmin stepping completed"])
    assert not fatal_messages(["Warning: Dynamic gmin stepping failed", "Note: Starting true gmin stepping"])
    assert not fatal_messages(["Note: Source stepping completed", "Warning: unused option"])
    assert fatal_messages(["doAnalyses: iteration limit reached"]) == ["doAnalyses: iteration limit reached"]
    assert fatal_messages(["run simulation(s) aborted"]) and fatal_messages(["Error: singular matrix"])
    assert fatal_messages(["Warning: singular matrix:  check node l1_n0"])
    assert fatal_messages(["something ngspice never said before"])


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="workers"):
        NgspiceSolver(workers=0)
    with pytest.raises(ValueError, match="mode"):
        NgspiceSolver(mode="tran")


def _wait_dead(pid: int) -> None:
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/status") as fh:
            if "zombie" in fh.read():
                return
        time.sleep(0.01)


def test_killed_worker_is_replaced():
    spec = CircuitSpec(layer_sizes=(4, 3, 2))
    circuit = Circuit.random(spec, seed=9)
    source_V, nudge_A = _batch(spec, 8, seed=10)
    with NgspiceSolver() as solver:
        reference = solver.solve(circuit, source_V, nudge_A)
        (pid,) = solver.worker_pids()
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)
        again = solver.solve(circuit, source_V, nudge_A)
        torch.testing.assert_close(again.all_voltages(), reference.all_voltages(), rtol=0, atol=TOL_V)
        assert solver.worker_pids() != [pid]


def test_worker_killed_during_a_solve_is_survived():
    spec = CircuitSpec(layer_sizes=(32, 16, 4))
    circuit = Circuit.random(spec, seed=11)
    source_V, nudge_A = _batch(spec, 48, seed=12)
    with NgspiceSolver(mode="per_op") as solver:
        reference = solver.solve(circuit, source_V, nudge_A)
        (pid,) = solver.worker_pids()
        result = {}
        thread = threading.Thread(target=lambda: result.update(eq=solver.solve(circuit, source_V, nudge_A)))
        thread.start()
        time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=120)
        torch.testing.assert_close(result["eq"].all_voltages(), reference.all_voltages(), rtol=0, atol=TOL_V)


def _rss_MB(pids) -> float:
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/status") as fh:
            line = next(line for line in fh if line.startswith("VmRSS:"))
        total += int(line.split()[1]) / 1024
    return total


@pytest.mark.slow
def test_memory_stays_bounded_over_many_solves():
    """40 batched solves of 64-32-10 with batches of 64, workers recycled twice on the way
    (benchmarks/ngspice_memory.py runs 1,000)."""
    spec = CircuitSpec(layer_sizes=(64, 32, 10))
    circuit = Circuit.random(spec, seed=13)
    source_V, nudge_A = _batch(spec, 64, seed=14)
    with NgspiceSolver(max_tasks_per_child=15) as solver:
        for _ in range(3):
            solver.solve(circuit, source_V, nudge_A)
        before = _rss_MB([os.getpid(), *solver.worker_pids()])
        for _ in range(40):
            solver.solve(circuit, source_V, nudge_A)
        after = _rss_MB([os.getpid(), *solver.worker_pids()])
    print(f"RSS parent + workers: {before:.1f} MB -> {after:.1f} MB ({after - before:+.1f} MB)")
    assert after - before < 50, f"RSS grew by {after - before:.1f} MB over 40 solves"


def test_missing_library_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr("analog.ngspice.pool.ngspice_library", lambda: None)
    solver = NgspiceSolver()
    spec = CircuitSpec(layer_sizes=(1, 1))
    with pytest.raises(SolverError, match="apt-get install ngspice libngspice0 libngspice0-dev"):
        solver.solve(Circuit.random(spec), torch.zeros((1, 2), dtype=torch.float64))


def test_history_separates_deck_building_from_ngspice_time(solver):
    spec = CircuitSpec(layer_sizes=(4, 3, 2))
    circuit = Circuit.random(spec, seed=15)
    source_V, nudge_A = _batch(spec, 10, seed=16)
    with NgspiceSolver(max_batch=4) as chunked:
        eq = chunked.solve(circuit, source_V, nudge_A)
    assert len(eq.history["netlist_s"]) == len(eq.history["ngspice_s"]) == 3
    assert all(t > 0 for t in (*eq.history["netlist_s"], *eq.history["ngspice_s"]))
    assert eq.history["retries"] == [[], [], []]


@pytest.mark.parametrize(
    ("library", "said"),
    [
        # A diode on a resistor model: the validator checks that the model exists, ngspice its type.
        (".model RX R (R=1)\n.subckt NRN n\nD1 n 0 RX\n.ends\n", r"incorrect model type"),
        (".subckt NRN n\nB1 n 0 I={(v(n)*2}\n.ends\n", r"syntax error"),  # unbalanced parenthesis
    ],
    ids=["model-type", "expression"],
)
def test_a_library_ngspice_cannot_parse_is_a_parse_error(tmp_path, solver, library, said):
    from analog.model_library import load_model_library
    from analog.models import UserModels
    from analog.ngspice import NetlistError, NgspiceTransient
    from analog.settling import Capacitances

    path = tmp_path / "bad.lib"
    path.write_text(library)
    spec = CircuitSpec((2, 2), user_models=UserModels(load_model_library(path), neuron_subckt="NRN"))
    circuit = Circuit.random(spec, seed=0)
    source_V = torch.zeros((2, spec.n_sources), dtype=torch.float64)
    with pytest.raises(NetlistError) as info:
        solver.solve(circuit, source_V)
    message = str(info.value)
    assert "cannot parse the netlist of samples 0..1" in message and re.search(said, message)
    assert re.search(r"(?m)^\s+\S*(d1|b1) ", message), "ngspice's quote of the offending line is missing"
    assert "converge" not in message.replace("not a convergence problem", "")
    with NgspiceTransient() as tran, pytest.raises(NetlistError, match=said):
        tran.run(circuit, Capacitances(), source_V, torch.zeros(2, 2), 1e-9)
