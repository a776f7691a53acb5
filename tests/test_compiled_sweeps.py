"""The layer-wise solver's compiled small-batch sweeps (numba) against its eager sweeps and Newton."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import analog.solvers.compiled_kernels as compiled_kernels
from analog import CircuitSpec, DiodeModel
from analog.solvers import Equilibrium, FastSolver, LayerwiseSolver, SolverError, SolverStatus
from analog.solvers.compiled import MAX_VALUES, compiled
from analog.solvers.layer_nodes import layer_constants
from analog.solvers.physics import LayeredSystem
from tests.conftest import log_uniform_circuit, random_inputs

CASES = {
    "16-12-6": dict(sizes=(16, 12, 6)),
    "64-32-10": dict(sizes=(64, 32, 10)),
    "64-32-32-10-amplified": dict(sizes=(64, 32, 32, 10), amplifier_gains=(3.0, 2.0)),
    "16-12-6-hot": dict(sizes=(16, 12, 6), diode=DiodeModel(temperature_C=85.0)),
    "16-12-6-cold-n2": dict(sizes=(16, 12, 6), diode=DiodeModel(temperature_C=-40.0, n=2.0, gmin_S=0.0)),
    "crossed-rails": dict(sizes=(16, 12, 6), diode_up_V=-0.35, diode_down_V=0.35),
    "split-rails": dict(sizes=(16, 12, 6), diode_up_V=0.4, diode_down_V=-0.4),
    "up-rail-only": dict(sizes=(16, 12, 6), diode_down_V=None),
    "down-rail-only": dict(sizes=(16, 12, 6), diode_up_V=None),
    "dual-rail-hidden": dict(sizes=(16, 12, 8, 6), hidden_pairs=True, diode_up_V=-0.35, diode_down_V=0.35),
}


def _case(name: str, seed: int, batch: int | None = None):
    """The case's circuit and inputs; ``batch`` ``None``: at most 16, small enough for the
    whole-sweep kernel."""
    if batch is None:
        batch = min(16, MAX_VALUES // sum(CASES[name]["sizes"][1:]))
    spec = CircuitSpec(input_gain_V=30.0, **{"layer_sizes": CASES[name]["sizes"]}, **_keys(name))
    circuit = log_uniform_circuit(spec, seed)
    return circuit, spec.source_voltages(2 * random_inputs(spec, batch, seed) - 1)


def _keys(name: str) -> dict:
    return {k: v for k, v in CASES[name].items() if k != "sizes"}


@pytest.fixture
def calls(monkeypatch):
    """How many compiled whole sweeps (small batches) and vectorised layer updates ran."""
    count = {"sweeps": 0, "updates": 0}
    for method, key in (("sweep", "sweeps"), ("update", "updates")):
        real = getattr(compiled, method)

        def spy(*args, real=real, key=key, **kwargs):
            count[key] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(compiled, method, spy)
    return count


def _wide_batch(circuit) -> int:
    """A batch too large for the whole-sweep kernel: the vectorised layer updates run."""
    return MAX_VALUES // sum(circuit.spec.layer_sizes[1:]) + 3


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_sweeps_agree_with_the_eager_sweeps_and_newton(name, calls):
    circuit, source_V = _case(name, seed=7)
    eq = LayerwiseSolver().solve(circuit, source_V)
    assert calls["sweeps"] == eq.iterations, "a batch this small must run the compiled sweeps"
    eager = LayerwiseSolver(compiled=False).solve(circuit, source_V)
    assert calls["sweeps"] == eq.iterations
    newton = FastSolver().solve(circuit, source_V)
    assert eq.status is SolverStatus.CONVERGED
    assert abs(eq.iterations - eager.iterations) <= 1
    assert (eq.all_voltages() - eager.all_voltages()).abs().max().item() <= 1e-11
    assert (eq.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    assert eq.residual_A.max().item() <= 1e-12
    # The compiled residual is the eager KCL check's.
    assert (eq.residual_A - eager.residual_A).abs().max().item() <= 1e-13
    scale = newton.input_currents_A.abs().max().item()
    assert (eq.input_currents_A - newton.input_currents_A).abs().max().item() <= 1e-9 * scale


@pytest.mark.parametrize("name", list(CASES))
def test_vectorised_layer_updates_agree_with_the_eager_sweeps_and_newton(name, calls):
    circuit, _ = _case(name, seed=7)
    circuit, source_V = _case(name, seed=7, batch=_wide_batch(circuit))
    eq = LayerwiseSolver().solve(circuit, source_V)
    assert calls["sweeps"] == 0 and calls["updates"] == eq.iterations * circuit.spec.depth
    eager = LayerwiseSolver(compiled=False).solve(circuit, source_V)
    newton = FastSolver().solve(circuit, source_V)
    assert abs(eq.iterations - eager.iterations) <= 1
    assert (eq.all_voltages() - eager.all_voltages()).abs().max().item() <= 1e-11
    assert (eq.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    assert eq.residual_A.max().item() <= 1e-12
    assert (eq.residual_A - eager.residual_A).abs().max().item() <= 1e-13


def test_the_cases_drive_the_diodes():
    for name in ("64-32-10", "crossed-rails", "dual-rail-hidden"):
        circuit, source_V = _case(name, seed=7)
        v, spec = LayerwiseSolver().solve(circuit, source_V).all_voltages(), circuit.spec
        forward = torch.maximum(v - spec.diode_up_V, spec.diode_down_V - v)  # the larger junction bias
        conducting = (forward > 0.45).double().mean().item()
        assert conducting > 0.2, f"{name}: the inputs should drive many diodes ({conducting:.0%} conduct)"


def test_warm_start_nudged_phase_and_float32(calls):
    circuit, source_V = _case("64-32-32-10-amplified", seed=9)
    solver = LayerwiseSolver()
    free = solver.solve(circuit, source_V)
    nudge = 1e-7 * torch.randn(source_V.shape[0], circuit.spec.n_outputs, generator=torch.Generator().manual_seed(0))
    nudged = solver.solve(circuit, source_V, nudge_A=nudge, init=free)
    newton = FastSolver().solve(circuit, source_V, nudge_A=nudge)
    assert calls["sweeps"] == free.iterations + nudged.iterations
    assert (nudged.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    assert nudged.iterations < free.iterations
    eq32 = solver.solve(circuit.to(torch.float32), source_V.float())
    assert eq32.output.dtype == torch.float32 and eq32.residual_A.dtype == torch.float32
    assert (eq32.all_voltages().double() - free.all_voltages()).abs().max().item() < 1e-4


def test_a_start_far_from_the_root_is_bracketed(calls):
    """Every node started 20 V away: only the scalar bracket and bisection bring them back."""
    circuit, source_V = _case("16-12-6", seed=5, batch=8)
    far = tuple(torch.full((8, n), 20.0 * (-1) ** l, dtype=torch.float64) for l, n in enumerate((12, 6)))
    init = Equilibrium(far, 0, torch.zeros(8), SolverStatus.CONVERGED, "test")
    eq = LayerwiseSolver().solve(circuit, source_V, init=init)
    assert calls["sweeps"] == eq.iterations
    newton = FastSolver().solve(circuit, source_V)
    assert (eq.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10


def test_wide_path_warm_start_nudge_float32_and_far_start(calls):
    circuit, _ = _case("64-32-32-10-amplified", seed=9)
    batch = _wide_batch(circuit)
    circuit, source_V = _case("64-32-32-10-amplified", seed=9, batch=batch)
    solver = LayerwiseSolver()
    free = solver.solve(circuit, source_V)
    nudge = 1e-7 * torch.randn(batch, circuit.spec.n_outputs, generator=torch.Generator().manual_seed(0))
    nudged = solver.solve(circuit, source_V, nudge_A=nudge, init=free)
    assert calls["sweeps"] == 0 and calls["updates"] == 3 * (free.iterations + nudged.iterations)
    newton = FastSolver().solve(circuit, source_V, nudge_A=nudge)
    assert (nudged.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    eq32 = solver.solve(circuit.to(torch.float32), source_V.float())
    assert eq32.output.dtype == torch.float32 and eq32.residual_A.dtype == torch.float32
    assert (eq32.all_voltages().double() - free.all_voltages()).abs().max().item() < 1e-4
    # Every node 20 V away: the per-node scalar solves (bracket, bisection) bring them back.
    sizes = circuit.spec.layer_sizes[1:]
    far = tuple(torch.full((batch, n), 20.0 * (-1) ** l, dtype=torch.float64) for l, n in enumerate(sizes))
    init = Equilibrium(far, 0, torch.zeros(batch), SolverStatus.CONVERGED, "test")
    eq = solver.solve(circuit, source_V, init=init)
    assert (eq.all_voltages() - FastSolver().solve(circuit, source_V).all_voltages()).abs().max().item() <= 1e-10


@pytest.mark.parametrize(("offset_V", "restarts"), [(0.3, True), (2e-3, False)])
def test_vectorised_passes_restart_or_refine_many_nodes_as_the_eager_update(offset_V, restarts):
    """Every node of a layer moved ``offset_V`` from its root: far, each first Newton step is too
    long and a vectorised pass restarts them all from (5); near, each step is short but not
    accurate enough and a pass takes another. Both end where the eager update does."""
    circuit, _ = _case("64-32-32-10-amplified", seed=9)
    circuit, source_V = _case("64-32-32-10-amplified", seed=9, batch=_wide_batch(circuit))
    system = LayeredSystem(circuit, source_V, None)
    layers = layer_constants(system)
    u = system.from_voltages(FastSolver().solve(circuit, source_V).voltages)
    parts = [system.layer(u, l).clone() for l in range(1, system.depth + 1)]
    layer, tol_V = layers[0], 1e-11
    b = layer.drive(parts)
    signs = torch.randint(0, 2, parts[0].shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    start = parts[0] + signs * offset_V / layer.scale
    x, new = start.clone(), torch.empty_like(start)
    args = compiled.layer_arguments(layer, compiled.diode_arguments(system))
    flag = np.empty(x.shape, dtype=np.int8)
    tail = (1.0, tol_V, False, 60, new.numpy(), flag)
    change, passes = compiled_kernels.update(x.numpy(), start.numpy(), b.numpy(), *args, *tail)
    assert passes >= 1, "so many nodes off their roots must take the vectorised passes"
    eager, eager_change = LayerwiseSolver(compiled=False)._relax(system, layer, start, b, tol_V, 1.0)
    assert (x - eager).abs().max().item() * layer.scale <= 1e-11
    assert (x - parts[0]).abs().max().item() * layer.scale <= 1e-10
    assert change == pytest.approx(eager_change, abs=1e-11)


def test_breakdown_diodes_sweep_eagerly(calls):
    spec = CircuitSpec((16, 12, 6), input_gain_V=30.0, diode=DiodeModel(bv_V=5.0))
    for batch in (4, 400):
        LayerwiseSolver().solve(log_uniform_circuit(spec, 1), spec.source_voltages(random_inputs(spec, batch, 1)))
    assert calls["sweeps"] == 0 and calls["updates"] == 0


def test_nonconvergence_is_reported_as_by_the_eager_sweeps():
    circuit, source_V = _case("16-12-6", seed=1, batch=4)
    with pytest.raises(SolverError, match=r"max_iterations after 2 sweeps.*'fast' \(Newton\)"):
        LayerwiseSolver(max_sweeps=2).solve(circuit, source_V)


@pytest.mark.parametrize(("kernel", "batch"), [("sweep", 4), ("update", 400)])
def test_a_kernel_numba_cannot_compile_falls_back_to_the_eager_sweeps(monkeypatch, kernel, batch):
    from numba.core.errors import TypingError

    def broken(*args):
        raise TypingError("no implementation for these argument types")

    monkeypatch.setattr(compiled_kernels, kernel, broken)
    monkeypatch.setattr(compiled, "failure", None)
    circuit, source_V = _case("16-12-6", seed=2, batch=batch)
    with pytest.warns(RuntimeWarning, match=r"numba could not compile.*TypingError.*running them eagerly"):
        eq = LayerwiseSolver().solve(circuit, source_V)
    assert compiled.failure is not None
    newton = FastSolver().solve(circuit, source_V)
    assert (eq.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10


def test_crossed_rails_far_apart_sweep_eagerly():
    """exp((V_dn - V_up) / (n Vt)) would overflow in the vectorised updates: they are not used."""
    from analog.solvers.layer_nodes import layer_constants
    from analog.solvers.physics import LayeredSystem

    for rails, compiled_kernels_apply in (((-0.35, 0.35), True), ((-10.0, 10.0), False)):
        spec = CircuitSpec((16, 12, 6), input_gain_V=1.0, diode_up_V=rails[0], diode_down_V=rails[1])
        system = LayeredSystem(log_uniform_circuit(spec, 4), spec.source_voltages(random_inputs(spec, 4, 4)))
        assert (LayerwiseSolver()._wide(system, layer_constants(system)) is not None) is compiled_kernels_apply
