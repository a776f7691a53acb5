"""ngspice as an equilibrium solver: analytic circuits, batching, worker failures, memory."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import threading
import time

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from analog.circuit import Circuit, CircuitSpec
from analog.devices import DiodeModel
from analog.ngspice import fatal_messages, ngspice_library
from analog.solvers.base import SolverError, SolverStatus
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


def _circuit(spec: CircuitSpec, weights, biases) -> Circuit:
    def t(rows):
        return torch.tensor(rows, dtype=torch.float64)

    shapes = spec.bias_shapes()
    biases = tuple(t(b).reshape(s) for b, s in zip(biases, shapes, strict=True))
    return Circuit(spec, tuple(t(w) for w in weights), biases)


def _batch(spec: CircuitSpec, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand((batch, spec.n_inputs), generator=gen, dtype=torch.float64) - 1
    nudge = 1e-6 * torch.randn((batch, spec.n_outputs), generator=gen, dtype=torch.float64)
    return spec.source_voltages(x), nudge


def test_voltage_divider_and_source_current_signs(solver):
    spec = CircuitSpec(layer_sizes=(1, 1), input_pairs=False, diode_up_V=None, diode_down_V=None)
    g_w, g_p, g_n = 4e-5, 2e-5, 5e-5
    circuit = _circuit(spec, [[[g_w]]], [[[g_p], [g_n]]])
    x = torch.tensor([[0.8], [-0.9]], dtype=torch.float64)
    eq = solver.solve(circuit, x)
    v = (g_w * x + g_p * 1.0 - g_n * 1.0) / (g_w + g_p + g_n)
    torch.testing.assert_close(eq.voltages[0], v, rtol=0, atol=TOL_V)
    # The current each source delivers INTO the network (ngspice reports the opposite sign).
    torch.testing.assert_close(eq.input_currents_A, g_w * (x - v), rtol=0, atol=1e-15)
    bias = torch.cat([g_p * (1.0 - v), g_n * (-1.0 - v)], dim=1)
    torch.testing.assert_close(eq.bias_currents_A[0], bias, rtol=0, atol=1e-15)
    assert eq.input_currents_A[0, 0] > 0 > eq.input_currents_A[1, 0]
    assert eq.status is SolverStatus.CONVERGED and eq.solver == "ngspice"
    assert eq.iterations >= 2
    assert eq.residual_A.shape == (2,) and eq.residual_A.max() < 1e-15


@pytest.mark.parametrize("x", [1.0, -1.0, 0.05])
@pytest.mark.parametrize("diode", [DiodeModel(), DiodeModel(is_A=2e-12, n=1.7, temperature_C=60.0)])
def test_diode_clamp_matches_the_diode_equation(solver, x, diode):
    """ngspice must use IS as given at the device temperature (TNOM = TEMP) and its own gmin."""
    spec = CircuitSpec(
        layer_sizes=(1, 1), input_pairs=False, bias_V=None, diode_up_V=0.2, diode_down_V=-0.1, diode=diode
    )
    g = 1e-4
    circuit = _circuit(spec, [[[g]]], [[]])

    def kcl(v: float) -> float:
        up, _ = diode.current(torch.tensor(v - 0.2, dtype=torch.float64))
        down, _ = diode.current(torch.tensor(-0.1 - v, dtype=torch.float64))
        return g * (x - v) - up.item() + down.item()

    v_ref = brentq(kcl, -1.5, 1.5, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    eq = solver.solve(circuit, torch.tensor([[x]], dtype=torch.float64))
    assert eq.voltages[0].item() == pytest.approx(v_ref, abs=TOL_V)
    if abs(x) == 1.0:  # really clamped: about one diode drop beyond the rail
        assert 0.3 < abs(v_ref - (0.2 if x > 0 else -0.1)) < 1.2


def test_amplifier_gain_and_back_current(solver):
    """(1, 1, 1), gain A after layer 1, bias loads on both layers: a linear 2x2 system.

    Layer 1: g0 (x - v1) + gp1 (1 - v1) + gn1 (-1 - v1) - I / A = 0 with I = g1 (A v1 - v2);
    layer 2: g1 (A v1 - v2) + gp2 (1 - v2) + gn2 (-1 - v2) = 0.
    """
    a = 4.0
    spec = CircuitSpec(
        layer_sizes=(1, 1, 1), input_pairs=False, diode_up_V=None, diode_down_V=None, amplifier_gains=(a,)
    )
    g0, g1, gp1, gn1, gp2, gn2 = 5e-5, 3e-5, 1e-5, 2e-5, 4e-5, 1.5e-5
    circuit = _circuit(spec, [[[g0]], [[g1]]], [[[gp1], [gn1]], [[gp2], [gn2]]])
    x = 0.7
    m = np.array([[g0 + gp1 + gn1 + g1, -g1 / a], [-g1 * a, g1 + gp2 + gn2]])
    v1, v2 = np.linalg.solve(m, [g0 * x + gp1 - gn1, gp2 - gn2])
    eq = solver.solve(circuit, torch.tensor([[x]], dtype=torch.float64))
    assert eq.voltages[0].item() == pytest.approx(v1, abs=TOL_V)
    assert eq.voltages[1].item() == pytest.approx(v2, abs=TOL_V)
    assert eq.input_currents_A.item() == pytest.approx(g0 * (x - v1), abs=1e-15)


def test_amplifier_without_load_multiplies_the_voltage(solver):
    spec = CircuitSpec(
        layer_sizes=(1, 1, 1),
        input_pairs=False,
        bias_V=None,
        diode_up_V=None,
        diode_down_V=None,
        amplifier_gains=(2.5,),
    )
    circuit = _circuit(spec, [[[5e-5]], [[3e-5]]], [[], []])
    eq = solver.solve(circuit, torch.tensor([[0.3], [-0.2]], dtype=torch.float64))
    torch.testing.assert_close(eq.voltages[1], 2.5 * eq.voltages[0], rtol=0, atol=TOL_V)
    torch.testing.assert_close(eq.voltages[0], torch.tensor([[0.3], [-0.2]], dtype=torch.float64))


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


def test_nudging_current_enters_the_output_node(solver):
    spec = CircuitSpec(layer_sizes=(1, 1), input_pairs=False, bias_V=None, diode_up_V=None, diode_down_V=None)
    g = 2e-5
    circuit = _circuit(spec, [[[g]]], [[]])
    eq = solver.solve(circuit, torch.tensor([[0.1]], dtype=torch.float64), torch.tensor([[1e-6]]).double())
    assert eq.voltages[0].item() == pytest.approx(0.1 + 1e-6 / g, abs=TOL_V)


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
