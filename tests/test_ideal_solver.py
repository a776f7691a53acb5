"""The ideal-diode limit of the fast solver."""

from __future__ import annotations

import pytest
import torch

from analog import CircuitSpec
from analog.solvers import FastSolver, IdealDiodeSolver
from cosim import AnalogBlock, gradient_method
from tests.conftest import log_uniform_circuit, random_inputs


@pytest.mark.parametrize(("sizes", "gains"), [((64, 32, 10), None), ((64, 32, 32, 10), (3.0, 2.0))])
def test_box_respected_and_kcl_inside(sizes, gains):
    spec = CircuitSpec(sizes, input_gain_V=30.0, amplifier_gains=gains)
    circuit = log_uniform_circuit(spec, 4)
    source_V = spec.source_voltages(random_inputs(spec, 32, 4))
    solver = IdealDiodeSolver(forward_V=0.6)
    eq = solver.solve(circuit, source_V)
    v = eq.all_voltages()
    assert v.max().item() <= 0.6 + 1e-12 and v.min().item() >= -0.6 - 1e-12
    assert ((v.abs() - 0.6).abs() < 1e-9).double().mean().item() > 0.2, "many nodes should be clamped"
    assert eq.residual_A.max().item() <= 1e-12
    warm = solver.solve(circuit, source_V, init=eq)
    assert warm.iterations == 1


def test_agrees_with_shockley_when_no_diode_conducts():
    spec = CircuitSpec((64, 32, 10), input_gain_V=0.3)
    circuit = log_uniform_circuit(spec, 2)
    source_V = spec.source_voltages(random_inputs(spec, 16, 2))
    ideal = IdealDiodeSolver().solve(circuit, source_V)
    exact = FastSolver().solve(circuit, source_V)
    assert exact.all_voltages().abs().max().item() < 0.3
    # Only the reverse leakage (Is + gmin) of the Shockley diodes separates them.
    assert (ideal.all_voltages() - exact.all_voltages()).abs().max().item() < 1e-6


def test_close_to_shockley_under_strong_drive():
    spec = CircuitSpec((64, 32, 10), input_gain_V=30.0)
    circuit = log_uniform_circuit(spec, 2)
    source_V = spec.source_voltages(random_inputs(spec, 16, 2))
    ideal = IdealDiodeSolver().solve(circuit, source_V)
    exact = FastSolver().solve(circuit, source_V)
    assert (ideal.all_voltages() - exact.all_voltages()).abs().max().item() < 0.15


def test_implicit_method_refuses_the_ideal_solver():
    spec = CircuitSpec((8, 4, 3), input_gain_V=5.0)
    block = AnalogBlock(spec, solver=IdealDiodeSolver(), method=gradient_method("implicit"))
    out = block(torch.rand(4, 8))
    with pytest.raises(ValueError, match="ideal-diode solver"):
        out.sum().backward()
