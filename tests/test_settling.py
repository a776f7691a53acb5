"""Settling (analog.settling): RC time constants, energy bookkeeping, and agreement with ngspice .tran."""

from __future__ import annotations

import math

import pytest
import torch

from analog import Circuit, CircuitSpec
from analog.ngspice import NgspiceTransient
from analog.settling import Capacitances, TransientOptions, simulate_phase
from analog.solvers import FastSolver
from tests.conftest import log_uniform_circuit, make_solver, random_inputs

G_S, C_F, V = 5e-5, 1e-12, 0.7


def _rc():
    spec = CircuitSpec((1, 1), input_pairs=False, bias_V=None, diode_up_V=None, diode_down_V=None)
    circuit = Circuit(spec, (torch.tensor([[G_S]]),), (torch.zeros(0, 1),))
    return circuit, Capacitances(node_F=C_F, crosspoint_F=0.0, diode_F=0.0), torch.tensor([[V]])


@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-5])
def test_rc_settles_in_tau_ln_one_over_eps(eps):
    circuit, caps, source_V = _rc()
    tr = simulate_phase(circuit, caps, source_V, torch.zeros(1, 1), source_V, options=TransientOptions(settle_tol=eps))
    tau = C_F / G_S
    assert float(tr.settle_time_s[0]) == pytest.approx(tau * math.log(1 / eps), rel=0.02)
    # Energy from the supply over the window: C V dv = C V^2 (1 - eps); half of it stored.
    assert float(tr.supply_J[0]) == pytest.approx(C_F * V**2 * (1 - eps), rel=1e-3)
    assert float(tr.charge_J[0]) == pytest.approx(0.5 * C_F * V**2 * (1 - eps) ** 2, rel=1e-3)


def test_rc_waveform_matches_the_exponential():
    circuit, caps, source_V = _rc()
    tr = simulate_phase(
        circuit, caps, source_V, torch.zeros(1, 1), source_V, options=TransientOptions(rtol=1e-9, atol_V=1e-12)
    )
    exact = V * (1 - torch.exp(-tr.times_s * G_S / C_F))
    assert float((tr.voltages[:, 0, 0] - exact).abs().max()) < 1e-6


def test_capacitance_per_node_counts_devices_and_diodes():
    spec = CircuitSpec((3, 4, 5, 2), amplifier_gains=(2.0, None))
    caps = Capacitances(node_F=1.0e-15, crosspoint_F=0.1e-15, diode_F=0.5e-15)
    c = caps.nodes_F(Circuit.random(spec))
    # layer 1: 6 sources + 2 bias (its outgoing crossbar is behind an amplifier); layer 2: 4 + 2 + 2.
    expected = [1e-15 + 0.1e-15 * 8 + 1e-15] * 4 + [1e-15 + 0.1e-15 * 8 + 1e-15] * 5 + [1e-15 + 0.1e-15 * 7 + 1e-15] * 2
    torch.testing.assert_close(c, torch.tensor(expected), rtol=1e-12, atol=0)
    # Dual rail: layer 2's column crosses both rails of layer 1 (8 rows + 2 bias); layer 3's, 10 + 2.
    dual = caps.nodes_F(Circuit.random(CircuitSpec((3, 4, 5, 2), amplifier_gains=(2.0, None), hidden_pairs=True)))
    expected = [1e-15 + 0.1e-15 * 8 + 1e-15] * 4 + [1e-15 + 0.1e-15 * 12 + 1e-15] * 5
    expected += [1e-15 + 0.1e-15 * 12 + 1e-15] * 2
    torch.testing.assert_close(dual, torch.tensor(expected), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "spec",
    [
        CircuitSpec((4, 6, 3), diode_up_V=0.3, diode_down_V=-0.3),
        CircuitSpec((3, 4, 4, 2), amplifier_gains=(3.0, None)),
        CircuitSpec((3, 4, 4, 2), amplifier_gains=(3.0, None), hidden_pairs=True),
    ],
    ids=["diodes", "amplifier", "dual-rail"],
)
@pytest.mark.slow
def test_phases_settle_onto_the_equilibrium_and_energy_balances(spec):
    circuit = log_uniform_circuit(spec, 2)
    source_V = spec.source_voltages(3 * random_inputs(spec, 3, 2) - 1.5)
    nudge = 1e-5 * torch.randn(3, spec.n_outputs, generator=torch.Generator().manual_seed(0))
    solver, caps, options = FastSolver(), Capacitances(), TransientOptions(settle_tol=1e-3)
    free = solver.solve(circuit, source_V).all_voltages()
    nudged = solver.solve(circuit, source_V, nudge).all_voltages()
    for start, final, current in ((torch.zeros_like(free), free, None), (free, nudged, nudge)):
        tr = simulate_phase(circuit, caps, source_V, start, final, current, options)
        swing = (final - start).abs().amax(1)
        assert bool(((tr.voltages[-1] - final).abs().amax(1) <= options.settle_tol * swing).all())
        assert bool((tr.settle_time_s > 0).all())
        # The sources pay for the dissipation and the change of stored energy (trapezoid error only).
        balance = tr.supply_J - tr.dissipated_J - tr.charge_J
        assert float((balance.abs() / tr.supply_J.abs()).max()) < 1e-4


@pytest.mark.ngspice
@pytest.mark.parametrize(
    "spec",
    [
        CircuitSpec((3, 4, 2), diode_up_V=0.3, diode_down_V=-0.3),
        CircuitSpec((3, 4, 3, 2), diode_up_V=0.3, diode_down_V=-0.3, hidden_pairs=True),
    ],
    ids=["diodes", "dual-rail"],
)
def test_fast_transient_matches_ngspice_tran(spec):
    make_solver("ngspice")  # skips when ngspice is missing
    circuit = log_uniform_circuit(spec, 5)
    source_V = spec.source_voltages(4 * random_inputs(spec, 2, 5) - 2)
    nudge = 2e-5 * torch.randn(2, spec.n_outputs, generator=torch.Generator().manual_seed(1))
    caps = Capacitances()
    options = TransientOptions(rtol=1e-8, atol_V=1e-12)  # the remaining ~1e-7 V are ngspice's own error
    free = FastSolver().solve(circuit, source_V).all_voltages()
    nudged = FastSolver().solve(circuit, source_V, nudge).all_voltages()
    with NgspiceTransient() as ngspice:
        for start, final, current in ((torch.zeros_like(free), free, None), (free, nudged, nudge)):
            ours = simulate_phase(circuit, caps, source_V, start, final, current, TransientOptions())
            t_stop = 1.5 * float(ours.settle_time_s.max())
            waves = ngspice.run(circuit, caps, source_V, start, t_stop, current)
            for b, wave in enumerate(waves):
                assert wave.usage["Transient iterations"] > 0
                assert len(wave.times_s) > 50 and float(wave.times_s[-1]) == pytest.approx(t_stop)
                again = simulate_phase(
                    circuit,
                    caps,
                    source_V[b : b + 1],
                    start[b : b + 1],
                    final[b : b + 1],
                    None if current is None else current[b : b + 1],
                    options,
                    t_eval=wave.times_s,
                )
                on_grid = torch.isin(again.times_s, wave.times_s)
                assert int(on_grid.sum()) == len(wave.times_s)
                diff = (again.voltages[on_grid, 0] - wave.voltages).abs().max()
                assert float(diff) < 1e-6
