"""Analytic circuits and solver invariants, on every backend (fast solver and ngspice)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from analog import Circuit, CircuitSpec, DiodeModel, thermal_voltage
from analog.solvers import FastSolver
from tests.conftest import log_uniform_circuit, make_solver, random_inputs

ANALYTIC_TOL_V = 1e-9


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_voltage_divider(solver):
    spec = CircuitSpec((1, 1), input_pairs=False, input_gain_V=2.0, diode_up_V=None, diode_down_V=None)
    g, gp, gn = 3e-5, 2e-5, 5e-5
    circuit = Circuit(spec, [t([g])], [t([gp], [gn])])
    x = t([0.3], [-0.7], [1.0])
    eq = solver.solve(circuit, spec.source_voltages(x))
    vs = 2.0 * x[:, 0]
    expected = (g * vs + gp * 1.0 - gn * 1.0) / (g + gp + gn)
    assert torch.allclose(eq.output[:, 0], expected, atol=ANALYTIC_TOL_V, rtol=0)
    # The input source delivers g (vs - v) into the network.
    assert torch.allclose(eq.input_currents_A[:, 0], g * (vs - expected), atol=1e-15, rtol=1e-9)


def test_diode_clamp_matches_shockley(solver):
    diode = DiodeModel(is_A=1e-14, n=1.2)
    spec = CircuitSpec((1, 1), input_pairs=False, bias_V=None, diode_up_V=0.1, diode_down_V=None, diode=diode)
    g = 1e-4
    circuit = Circuit(spec, [t([g])], [torch.zeros(0, 1)])
    xs = [0.2, 0.8, 2.0, 5.0]
    eq = solver.solve(circuit, spec.source_voltages(t(*[[x] for x in xs])))
    vte = 1.2 * thermal_voltage(27.0)

    def kcl(v, vs):  # written out independently of analog.devices (forward region only)
        return g * (vs - v) - (1e-14 * math.expm1((v - 0.1) / vte) + 1e-12 * (v - 0.1))

    for k, vs in enumerate(xs):
        v = brentq(kcl, -1.0, vs, args=(vs,), xtol=1e-15, rtol=1e-15)
        assert v - 0.1 > -3 * vte
        assert abs(eq.output[k, 0].item() - v) < ANALYTIC_TOL_V
    assert eq.output[-1, 0].item() < 0.1 + 0.8, "a forward-biased diode must clamp the node"


def test_amplifier_gain(solver):
    spec = CircuitSpec((1, 1, 1), input_pairs=False, diode_up_V=None, diode_down_V=None, amplifier_gains=(4.0,))
    g0, g1 = 2e-5, 7e-5
    b1, b2 = (1e-5, 3e-5), (4e-5, 2e-5)
    circuit = Circuit(spec, [t([g0]), t([g1])], [t([b1[0]], [b1[1]]), t([b2[0]], [b2[1]])])
    x = t([0.5], [-0.25])
    eq = solver.solve(circuit, spec.source_voltages(x))
    a, vb = 4.0, 1.0
    for k in range(2):
        # KCL at v1: g0 (x - v1) + b1+ (vb - v1) + b1- (-vb - v1) - g1 (a v1 - v2) / a = 0
        # KCL at v2: g1 (a v1 - v2) + b2+ (vb - v2) + b2- (-vb - v2) = 0
        m = np.array([[g0 + sum(b1) + g1, -g1 / a], [-g1 * a, g1 + sum(b2)]])
        rhs = np.array([g0 * x[k, 0].item() + vb * (b1[0] - b1[1]), vb * (b2[0] - b2[1])])
        v1, v2 = np.linalg.solve(m, rhs)
        assert abs(eq.voltages[0][k, 0].item() - v1) < ANALYTIC_TOL_V
        assert abs(eq.voltages[1][k, 0].item() - v2) < ANALYTIC_TOL_V


CASES = [
    ((64, 32, 10), None),
    ((64, 32, 32, 10), (3.0, 2.0)),
    ((196, 64, 10), None),
]


@pytest.mark.parametrize(("sizes", "gains"), CASES)
def test_kcl_residual_and_warm_start(sizes, gains):
    spec = CircuitSpec(sizes, input_gain_V=30.0, amplifier_gains=gains)
    circuit = log_uniform_circuit(spec, seed=3)
    source_V = spec.source_voltages(random_inputs(spec, 64, seed=3))
    solver = FastSolver(record_history=True)
    eq = solver.solve(circuit, source_V)
    conducting = (eq.all_voltages().abs() > 0.5).double().mean().item()
    assert conducting > 0.2, f"test inputs should drive many diodes ({conducting:.0%} conduct)"
    assert eq.residual_A.max().item() <= 1e-12
    energy = torch.tensor(eq.history["cocontent"])
    increase = (energy[1:] - energy[:-1]).max().item()
    assert increase <= 1e-12 * energy.abs().max().item(), "co-content increased along the iterations"
    warm = FastSolver().solve(circuit, source_V, init=eq)
    assert warm.iterations <= 2
    assert (warm.all_voltages() - eq.all_voltages()).abs().max().item() <= 1e-12


@pytest.mark.ngspice
@pytest.mark.parametrize(("sizes", "gains"), CASES)
def test_fast_solver_agrees_with_ngspice_on_random_circuits(sizes, gains):
    solver = make_solver("ngspice")
    spec = CircuitSpec(sizes, input_gain_V=30.0, amplifier_gains=gains)
    circuit = log_uniform_circuit(spec, seed=11)
    source_V = spec.source_voltages(random_inputs(spec, 64, seed=11))
    fast = FastSolver().solve(circuit, source_V)
    assert (fast.all_voltages().abs() > 0.5).double().mean().item() > 0.2, "drive many diodes into conduction"
    spice = solver.solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-8
    scale = spice.input_currents_A.abs().max().item()
    assert (fast.input_currents_A - spice.input_currents_A).abs().max().item() <= 1e-9 * scale


def test_float32_agrees_with_float64():
    spec = CircuitSpec((64, 32, 10), input_gain_V=30.0)
    circuit = log_uniform_circuit(spec, seed=5)
    source_V = spec.source_voltages(random_inputs(spec, 32, seed=5))
    eq64 = FastSolver().solve(circuit, source_V)
    eq32 = FastSolver().solve(circuit.to(torch.float32), source_V.float())
    assert eq32.output.dtype == torch.float32
    assert (eq32.output.double() - eq64.output).abs().max().item() < 1e-4


def test_nonconvergence_raises_with_hint():
    spec = CircuitSpec((8, 4, 2), input_gain_V=30.0)
    circuit = log_uniform_circuit(spec, seed=1)
    with pytest.raises(Exception, match="max_iterations"):
        FastSolver(max_iterations=1).solve(circuit, spec.source_voltages(random_inputs(spec, 4, 1)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("solver", ["fast", "fast-layerwise", "auto"])
def test_nan_inputs_are_refused(solver, bad):
    """The layer-wise solver finds them from its input product (no pass of its own over the
    sources), at every batch size: each of its kernels must name the samples as Newton does."""
    spec = CircuitSpec((4, 3, 2))
    circuit = Circuit.random(spec)
    for batch in (3, 300):
        v = spec.source_voltages(torch.rand(batch, 4))
        v[1, 2] = bad
        with pytest.raises(ValueError, match=r"NaN/inf in samples \[1\]"):
            make_solver(solver).solve(circuit, v)


def _cocontent_from_the_circuit(circuit, source_V, nudge_A, v):
    """The co-content (1) of :mod:`analog.solvers.physics` written from the circuit's elements, one
    term per device: ``1/2 g dV^2`` per conductance, ``integral I dv`` per diode, ``-I v`` per nudge."""
    spec = circuit.spec
    layers = [source_V, *torch.split(v, list(spec.layer_sizes[1:]), dim=1)]
    bias = spec.bias_voltages(v.dtype)
    energy = torch.zeros(v.shape[0], dtype=v.dtype)
    for l, w in enumerate(circuit.weights):
        drop = layers[l].unsqueeze(2) - layers[l + 1].unsqueeze(1)
        energy = energy + 0.5 * (w * drop**2).sum((1, 2))
        if spec.n_bias:
            drop = bias.view(1, -1, 1) - layers[l + 1].unsqueeze(1)
            energy = energy + 0.5 * (circuit.biases[l] * drop**2).sum((1, 2))
    area = [None, None] if circuit.diode_area is None else list(circuit.diode_area)
    emission = [None, None] if circuit.diode_emission is None else list(circuit.diode_emission)
    energy = energy + spec.diode.cocontent(v - spec.diode_up_V, area[0], emission[0]).sum(1)
    energy = energy + spec.diode.cocontent(spec.diode_down_V - v, area[1], emission[1]).sum(1)
    return energy - (nudge_A * layers[-1]).sum(1)


def test_hand_coded_residual_is_minus_the_gradient_of_the_cocontent():
    """The fast solver's KCL residual, written out by hand for speed, equals ``-dE/dv`` of the
    co-content built term by term from the devices (autograd), with diode spreads and a nudge."""
    from analog.solvers.physics import LayeredSystem

    spec = CircuitSpec((6, 5, 4, 3), input_gain_V=2.0, diode_up_V=0.1, diode_down_V=-0.2)
    base = Circuit.random(spec, seed=4)
    gen = torch.Generator().manual_seed(5)
    area = torch.exp(0.5 * torch.randn(2, 12, generator=gen, dtype=torch.float64))
    emission = torch.exp(0.1 * torch.randn(2, 12, generator=gen, dtype=torch.float64))
    circuit = Circuit(spec, base.weights, base.biases, diode_area=area, diode_emission=emission)
    source_V = spec.source_voltages(torch.rand(4, 6, generator=gen, dtype=torch.float64))
    nudge_A = 1e-6 * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    system = LayeredSystem(circuit, source_V, nudge_A)
    assert system.unit_scale, "without amplifiers u is v"
    v = (0.8 * torch.rand(4, 12, generator=gen, dtype=torch.float64) - 0.4).requires_grad_()
    (grad,) = torch.autograd.grad(_cocontent_from_the_circuit(circuit, source_V, nudge_A, v).sum(), v)
    f, _ = system.diodes(v.detach())
    residual = system.residual(v.detach(), f)
    torch.testing.assert_close(residual, -grad, rtol=1e-10, atol=1e-18)
    # ... and the solver's own co-content differs from the device sum by a constant per sample only.
    w = v.detach() + 0.05 * torch.randn(4, 12, generator=gen, dtype=torch.float64)

    def theirs(u):
        fu, _ = system.diodes(u)
        return system.cocontent(u, system.residual(u, fu), fu)

    mine_change = _cocontent_from_the_circuit(circuit, source_V, nudge_A, w) - _cocontent_from_the_circuit(
        circuit, source_V, nudge_A, v.detach()
    )
    torch.testing.assert_close(theirs(w) - theirs(v.detach()), mine_change, rtol=1e-9, atol=1e-18)
