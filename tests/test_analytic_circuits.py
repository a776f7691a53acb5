"""Analytic circuits every solver must solve exactly: a divider with bias (source-current signs), a
diode clamp at 27 C and at 60 C with n = 1.7, an amplifier's gain and back current, the nudging
current. Linear circuits run on every solver, the ideal-diode limit included; diode circuits on
the Shockley-exact ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from analog.circuit import Circuit, CircuitSpec
from analog.diode import DiodeModel
from analog.solvers.base import SolverStatus

TOL_V = 1e-9


def _circuit(spec: CircuitSpec, weights, biases) -> Circuit:
    def t(rows):
        return torch.tensor(rows, dtype=torch.float64)

    shapes = spec.bias_shapes()
    biases = tuple(t(b).reshape(s) for b, s in zip(biases, shapes, strict=True))
    return Circuit(spec, tuple(t(w) for w in weights), biases)


def test_voltage_divider_and_source_current_signs(any_solver):
    solver = any_solver
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
    assert eq.status is SolverStatus.CONVERGED and eq.solver == solver.name
    assert eq.iterations >= 1
    assert eq.residual_A.shape == (2,) and eq.residual_A.max() < 1e-15


@pytest.mark.parametrize("x", [1.0, -1.0, 0.05])
@pytest.mark.parametrize("diode", [DiodeModel(), DiodeModel(is_A=2e-12, n=1.7, temperature_C=60.0)])
def test_diode_clamp_matches_the_diode_equation(solver, x, diode):
    """Both solvers use IS as given at the device temperature (TNOM = TEMP) and ngspice's gmin."""
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


def test_amplifier_gain_and_back_current(any_solver):
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
    eq = any_solver.solve(circuit, torch.tensor([[x]], dtype=torch.float64))
    assert eq.voltages[0].item() == pytest.approx(v1, abs=TOL_V)
    assert eq.voltages[1].item() == pytest.approx(v2, abs=TOL_V)
    assert eq.input_currents_A.item() == pytest.approx(g0 * (x - v1), abs=1e-15)


def test_amplifier_without_load_multiplies_the_voltage(any_solver):
    spec = CircuitSpec(
        layer_sizes=(1, 1, 1),
        input_pairs=False,
        bias_V=None,
        diode_up_V=None,
        diode_down_V=None,
        amplifier_gains=(2.5,),
    )
    circuit = _circuit(spec, [[[5e-5]], [[3e-5]]], [[], []])
    eq = any_solver.solve(circuit, torch.tensor([[0.3], [-0.2]], dtype=torch.float64))
    torch.testing.assert_close(eq.voltages[1], 2.5 * eq.voltages[0], rtol=0, atol=TOL_V)
    torch.testing.assert_close(eq.voltages[0], torch.tensor([[0.3], [-0.2]], dtype=torch.float64))


def test_nudging_current_enters_the_output_node(any_solver):
    spec = CircuitSpec(layer_sizes=(1, 1), input_pairs=False, bias_V=None, diode_up_V=None, diode_down_V=None)
    g = 2e-5
    circuit = _circuit(spec, [[[g]]], [[]])
    eq = any_solver.solve(circuit, torch.tensor([[0.1]], dtype=torch.float64), torch.tensor([[1e-6]]).double())
    assert eq.voltages[0].item() == pytest.approx(0.1 + 1e-6 / g, abs=TOL_V)
