"""The exact layer-wise solver (nonlinear block Gauss-Seidel with per-node safeguarded Newton)."""

from __future__ import annotations

import pytest
import torch

from analog import Circuit, CircuitSpec, DiodeModel
from analog.solvers import Equilibrium, FastSolver, LayerwiseSolver, SolverError, SolverStatus, get_solver
from cosim import gradient_method
from tests.conftest import log_uniform_circuit, make_solver, random_inputs


def _spread(circuit: Circuit, seed: int) -> Circuit:
    """The same conductances with a device spread of diode areas and emission coefficients."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(circuit.spec.layer_sizes[1:])
    area = torch.exp(0.5 * torch.randn(2, n, generator=gen, dtype=torch.float64))
    emission = torch.exp(0.1 * torch.randn(2, n, generator=gen, dtype=torch.float64))
    return Circuit(circuit.spec, circuit.weights, circuit.biases, diode_area=area, diode_emission=emission)


CASES = {
    "16-12-6": dict(sizes=(16, 12, 6)),
    "64-32-10": dict(sizes=(64, 32, 10)),
    "64-32-32-10-amplified": dict(sizes=(64, 32, 32, 10), gains=(3.0, 2.0)),
    "64-32-10-spread": dict(sizes=(64, 32, 10), spread=True),
    "16-12-8-6-hot-spread-amplified": dict(sizes=(16, 12, 8, 6), gains=(2.0, None), spread=True, temperature=85.0),
    "16-12-6-cold": dict(sizes=(16, 12, 6), temperature=-40.0),
}


def _case(name: str, seed: int, batch: int = 32):
    case = CASES[name]
    diode = DiodeModel(temperature_C=case.get("temperature", 27.0))
    spec = CircuitSpec(case["sizes"], input_gain_V=30.0, amplifier_gains=case.get("gains"), diode=diode)
    circuit = log_uniform_circuit(spec, seed)
    if case.get("spread"):
        circuit = _spread(circuit, seed)
    return circuit, spec.source_voltages(2 * random_inputs(spec, batch, seed) - 1)


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_newton_on_strongly_driven_circuits(name):
    circuit, source_V = _case(name, seed=7)
    newton = FastSolver().solve(circuit, source_V)
    eq = LayerwiseSolver().solve(circuit, source_V)
    assert eq.status is SolverStatus.CONVERGED and eq.solver == "fast-layerwise"
    conducting = (eq.all_voltages().abs() > 0.5).double().mean().item()
    assert conducting > 0.2, f"the inputs should drive many diodes ({conducting:.0%} conduct)"
    assert (eq.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    assert eq.residual_A.max().item() <= 1e-12
    scale = newton.input_currents_A.abs().max().item()
    assert (eq.input_currents_A - newton.input_currents_A).abs().max().item() <= 1e-9 * scale
    for mine, theirs in zip(eq.bias_currents_A, newton.bias_currents_A, strict=True):
        assert (mine - theirs).abs().max().item() <= 1e-9 * scale


@pytest.mark.ngspice
@pytest.mark.parametrize("name", ["16-12-6", "64-32-32-10-amplified", "16-12-8-6-hot-spread-amplified"])
def test_agrees_with_ngspice(name):
    circuit, source_V = _case(name, seed=11, batch=16)
    eq = LayerwiseSolver().solve(circuit, source_V)
    spice = make_solver("ngspice").solve(circuit, source_V)
    assert (eq.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-8


def test_warm_start_gives_the_same_answer_in_fewer_sweeps():
    circuit, source_V = _case("64-32-32-10-amplified", seed=3)
    solver = LayerwiseSolver()
    cold = solver.solve(circuit, source_V)
    warm = solver.solve(circuit, source_V, init=cold)
    assert warm.iterations < cold.iterations and warm.iterations <= 3
    assert (warm.all_voltages() - cold.all_voltages()).abs().max().item() <= 1e-12


def test_a_start_far_from_the_root_is_bracketed_not_diverging():
    """Every node started 20 V away: the diode currents there overflow, so only the bracket and
    bisection of the layer updates bring the nodes back."""
    circuit, source_V = _case("16-12-8-6-hot-spread-amplified", seed=5, batch=8)
    far = tuple(torch.full((8, n), 20.0 * (-1) ** l, dtype=torch.float64) for l, n in enumerate((12, 8, 6)))
    init = Equilibrium(far, 0, torch.zeros(8), SolverStatus.CONVERGED, "test")
    eq = LayerwiseSolver().solve(circuit, source_V, init=init)
    newton = FastSolver().solve(circuit, source_V)
    assert (eq.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10


def test_overrelaxation_speeds_up_strongly_coupled_layers():
    """Equal widths, weak drive (the diodes off): Gauss-Seidel contracts slowly and Young's
    over-relaxation (3) must cut the sweeps without changing the answer."""
    spec = CircuitSpec((16, 16, 16, 16, 16), input_gain_V=0.3)
    circuit = log_uniform_circuit(spec, 2)
    source_V = spec.source_voltages(random_inputs(spec, 16, 2))
    newton = FastSolver().solve(circuit, source_V)
    plain = LayerwiseSolver(overrelax=False).solve(circuit, source_V)
    fast = LayerwiseSolver().solve(circuit, source_V)
    for eq in (plain, fast):
        assert (eq.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    assert fast.iterations < 0.75 * plain.iterations, (fast.iterations, plain.iterations)


def test_float32_agrees_with_float64():
    circuit, source_V = _case("64-32-32-10-amplified", seed=5)
    eq64 = LayerwiseSolver().solve(circuit, source_V)
    eq32 = LayerwiseSolver().solve(circuit.to(torch.float32), source_V.float())
    assert eq32.output.dtype == torch.float32
    assert (eq32.all_voltages().double() - eq64.all_voltages()).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["64-32-10", "64-32-32-10-amplified"])
def test_nudged_phases(name):
    circuit, source_V = _case(name, seed=9, batch=16)
    nudge = 1e-7 * torch.randn(16, circuit.spec.n_outputs, generator=torch.Generator().manual_seed(0))
    solver = LayerwiseSolver()
    free = solver.solve(circuit, source_V)
    nudged = solver.solve(circuit, source_V, nudge_A=nudge, init=free)
    newton = FastSolver().solve(circuit, source_V, nudge_A=nudge)
    assert (nudged.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    assert (nudged.output - free.output).abs().max().item() > 1e-6, "the nudge must move the outputs"
    assert nudged.iterations < solver.solve(circuit, source_V, nudge_A=nudge).iterations


@pytest.mark.parametrize("name", ["64-32-10", "16-12-8-6-hot-spread-amplified"])
def test_ep_gradients_match_the_exact_gradient(name):
    circuit, source_V = _case(name, seed=2, batch=16)
    upstream = torch.randn(16, circuit.spec.n_outputs, generator=torch.Generator().manual_seed(1))
    solver = LayerwiseSolver()
    free = solver.solve(circuit, source_V)
    newton = FastSolver()
    exact = gradient_method("implicit")(newton, circuit, source_V, newton.solve(circuit, source_V), upstream)
    ep = gradient_method("ep-centered", beta=0.01)(solver, circuit, source_V, free, upstream)
    for a, b in zip(
        (*exact.weights, *exact.biases, exact.source_V), (*ep.weights, *ep.biases, ep.source_V), strict=True
    ):
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert float(cosine) >= 0.9999


def test_nonconvergence_raises_with_hint():
    circuit, source_V = _case("16-12-6", seed=1, batch=4)
    with pytest.raises(SolverError, match=r"max_iterations after 2 sweeps.*'fast' \(Newton\)"):
        LayerwiseSolver(max_sweeps=2).solve(circuit, source_V)


def test_wired_crossbars_are_refused_by_name():
    spec = CircuitSpec((6, 4, 3), input_gain_V=10.0, wire_ohm=1.0)
    circuit = Circuit.random(spec, seed=0)
    with pytest.raises(SolverError, match=r"wire_ohm.*'fast' solver"):
        LayerwiseSolver().solve(circuit, spec.source_voltages(random_inputs(spec, 2, 0)))


def test_registered_by_name_and_options_are_validated():
    assert isinstance(get_solver("fast-layerwise", tol_V=1e-10), LayerwiseSolver)
    for bad in (dict(tol_V=0.0), dict(max_sweeps=0), dict(max_newton=0)):
        with pytest.raises(ValueError):
            LayerwiseSolver(**bad)
