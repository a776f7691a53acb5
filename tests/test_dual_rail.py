"""Dual-rail hidden layers (``hidden_pairs``): every crossbar realises signed weights.

Checked against a hand-solved linear chain and against ngspice on the same netlist (the inverting
stages as VCVS/CCCS pairs); EP against the exact gradient, and that against finite differences,
are the dual-rail cases of test_gradients.py, the power balance those of test_energy.py, the
transients those of test_settling.py."""

from __future__ import annotations

import pytest
import torch

from analog import Circuit, CircuitSpec
from analog.solvers import get_solver
from cosim.model_config import AnalogBlockConfig
from tests.conftest import log_uniform_circuit, make_solver, random_inputs

TOL_V = 1e-8
"""fast vs ngspice, volts (the issue's bound; measured 1e-12 V unamplified, 7e-11 V with gains)."""


def _spec(gains=None, **kw) -> CircuitSpec:
    return CircuitSpec((8, 6, 5, 3), input_gain_V=4.0, hidden_pairs=True, amplifier_gains=gains, **kw)


def test_shapes_and_signed_coupling():
    spec = _spec()
    assert spec.weight_shapes() == [(16, 6), (12, 5), (10, 3)]
    assert spec.inverting_amplifiers() == 6 + 5
    g = torch.arange(12.0).view(12, 1).expand(12, 5)
    torch.testing.assert_close(spec.coupling(1, g), g[:6] - g[6:])
    assert torch.equal(spec.coupling(0, g), g)
    v = torch.tensor([[0.1, -0.2]])
    amplified = CircuitSpec((3, 2, 2, 1), hidden_pairs=True, amplifier_gains=(3.0, None))
    torch.testing.assert_close(amplified.row_drive(1, v), torch.tensor([[0.3, -0.6, -0.3, 0.6]]))
    torch.testing.assert_close(amplified.row_drive(2, v), torch.tensor([[0.1, -0.2, -0.1, 0.2]]))


@pytest.mark.parametrize("solver", ["fast", "fast-layerwise", "auto"])
def test_linear_chain_equals_the_hand_solution(solver):
    """1-1-1 block, no diodes, no bias, rails +/-: with ``p = g+ - g-`` and ``s = g+ + g-``, KCL is
    ``s0 v1 = p0 x + p1 v2`` and ``s1 v2 = p1 v1`` (the inverting stage returns ``-I``)."""
    spec = CircuitSpec((1, 1, 1), bias_V=None, diode_up_V=None, diode_down_V=None, hidden_pairs=True)
    g0 = torch.tensor([[3e-5], [1e-5]], dtype=torch.float64)
    g1 = torch.tensor([[2e-5], [7e-5]], dtype=torch.float64)  # G- > G+: a negative weight
    circuit = Circuit(spec, (g0, g1), (torch.zeros(0, 1), torch.zeros(0, 1)))
    x = torch.tensor([[0.8], [-0.3]], dtype=torch.float64)
    eq = get_solver(solver).solve(circuit, spec.source_voltages(x))
    p0, s0 = 2e-5, 4e-5
    p1, s1 = -5e-5, 9e-5
    v1 = p0 * x / (s0 + s1 - p1 * p1 / s1)
    v2 = p1 * v1 / s1
    # The layer sweeps stop at a 1e-12 V step; Newton solves this linear case to rounding.
    torch.testing.assert_close(eq.voltages[0], v1, rtol=0, atol=2e-12)
    torch.testing.assert_close(eq.voltages[1], v2, rtol=0, atol=2e-12)
    assert float(v2[0]) < 0 < float(x[0])  # the sign went through a crossbar after the first


def test_equal_rails_cancel_the_coupling():
    """G+ = G-: layer 2 sees none of layer 1's signal (it sits where its bias alone puts it)."""
    spec = _spec()
    circuit = log_uniform_circuit(spec, 4)
    w1 = circuit.weights[1]
    same = torch.cat([w1[:6], w1[:6]])
    circuit = Circuit(spec, (circuit.weights[0], same, circuit.weights[2]), circuit.biases)
    solver = get_solver("fast")
    a = solver.solve(circuit, spec.source_voltages(random_inputs(spec, 4, 1)))
    b = solver.solve(circuit, spec.source_voltages(-random_inputs(spec, 4, 2)))
    assert float((a.voltages[0] - b.voltages[0]).abs().max()) > 0.05
    torch.testing.assert_close(a.voltages[1], b.voltages[1], rtol=0, atol=1e-12)


@pytest.mark.ngspice
def test_fast_equals_ngspice_with_and_without_amplifiers():
    ngspice = make_solver("ngspice")
    try:
        for gains in (None, (4.0, 2.0)):
            spec = _spec(gains)
            circuit = log_uniform_circuit(spec, 3)
            gen = torch.Generator().manual_seed(1)
            source_V = spec.source_voltages(2 * torch.rand(6, 8, generator=gen, dtype=torch.float64) - 1)
            nudge = 1e-4 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
            for nudge_A in (None, nudge):
                spice = ngspice.solve(circuit, source_V, nudge_A)
                for name in ("fast", "fast-layerwise"):
                    eq = get_solver(name).solve(circuit, source_V, nudge_A)
                    dv = float((eq.all_voltages() - spice.all_voltages()).abs().max())
                    assert dv <= TOL_V, (gains, name, dv)
                    di = float((eq.input_currents_A - spice.input_currents_A).abs().max())
                    assert di <= 1e-12, (gains, name, di)
    finally:
        ngspice.close()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"sizes": [8, 4]}, "hidden_pairs: this block has no hidden layer"),
        ({"sizes": [8, 4, 3], "wire_ohm": 10.0}, "hidden_pairs: dual-rail layers with resistive wires"),
        ({"sizes": [8, 4, 3], "driver_ohm": 50.0}, r"hidden_pairs: .*non-ideal peripherals \(driver_ohm\)"),
    ],
)
def test_unsupported_combinations_are_refused(keys, message):
    with pytest.raises(ValueError, match=message):
        AnalogBlockConfig(type="analog", hidden_pairs=True, **keys)


def test_offset_draws_with_dual_rail_are_refused_when_the_configuration_is_read():
    from cosim.config import ConfigError, resolve_config

    overrides = [
        ("model.blocks[0].hidden_pairs", True),
        ("model.blocks[0].amplifier_gains", [2.0]),
        ("devices.amp_offset_sigma_V", 0.01),
    ]
    with pytest.raises(ConfigError, match=r"model.blocks\[0\].hidden_pairs: amplifier offset draws"):
        resolve_config("digits-demo", overrides)
