"""The fused (compiled) layer sweeps and the ``auto`` solver's choice."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from analog import CircuitSpec, DiodeModel
from analog.peripherals import Peripherals
from analog.solvers import AutoSolver, FastSolver, LayerwiseSolver, fused, get_solver
from analog.solvers.layer_nodes import fused_arguments, layer_constants
from analog.solvers.physics import LayeredSystem
from cosim import gradient_method
from tests.conftest import log_uniform_circuit, random_inputs
from tests.test_layerwise_solver import _spread


def _circuit(sizes, gains=None, seed=3, batch=24, rails=(0.5, -0.5), temperature=27.0):
    spec = CircuitSpec(
        sizes,
        input_gain_V=30.0,
        amplifier_gains=gains,
        diode_up_V=rails[0],
        diode_down_V=rails[1],
        diode=DiodeModel(temperature_C=temperature),
    )
    circuit = log_uniform_circuit(spec, seed)
    return circuit, spec.source_voltages(2 * random_inputs(spec, batch, seed) - 1)


needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="torch.compile's CPU kernels need a C++ compiler (g++ or $CXX); without one the eager sweeps run",
)

# Each case compiles the kernels anew (seconds each): few, and each covering several paths.
CASES = {
    "deep-amplified-hot": dict(sizes=(48, 24, 24, 24, 10), gains=(3.0, 3.0, 2.0), temperature=125.0),
    "one-rail": dict(sizes=(32, 16, 8), rails=(0.5, None)),
    "default-rails": dict(sizes=(32, 16, 8), rails=(0.0, 0.0)),  # both rails at 0 V: no near/far split
}


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("name", list(CASES))
def test_fused_sweeps_agree_with_the_eager_ones_and_newton(name):
    circuit, source_V = _circuit(**CASES[name])
    assert (
        fused_arguments(LayeredSystem(circuit, source_V), layer_constants(LayeredSystem(circuit, source_V))) is not None
    )
    eager = LayerwiseSolver().solve(circuit, source_V)
    fast = LayerwiseSolver(fuse=True).solve(circuit, source_V)
    assert fused.kernels.failure is None, fused.kernels.failure
    newton = FastSolver().solve(circuit, source_V)
    conducting = (fast.all_voltages().abs() > 0.5).double().mean().item()
    assert conducting > 0.2, f"the inputs should drive many diodes ({conducting:.0%})"
    assert (fast.all_voltages() - eager.all_voltages()).abs().max().item() <= 1e-11
    assert (fast.all_voltages() - newton.all_voltages()).abs().max().item() <= 1e-10
    assert fast.residual_A.max().item() <= 1e-12
    # The fused residual is the KCL residual of the eager system at the same voltages.
    assert fast.residual_A == pytest.approx(eager.residual_A, abs=2e-13)
    # Nudged phases, warm-started (and over-relaxed as the free phase ended).
    ep = gradient_method("ep-centered")
    upstream = torch.randn(source_V.shape[0], circuit.spec.layer_sizes[-1], dtype=torch.float64)
    nudge, _ = ep.nudge(circuit, upstream, 1.0)
    a = LayerwiseSolver(fuse=True).solve(circuit, source_V, nudge_A=nudge, init=fast)
    b = FastSolver().solve(circuit, source_V, nudge_A=nudge)
    assert (a.all_voltages() - b.all_voltages()).abs().max().item() <= 1e-10


@pytest.mark.slow
@needs_compiler
def test_fused_sweeps_in_float32():
    circuit, source_V = _circuit((64, 32, 10))
    c32 = circuit.to(torch.float32)
    eq = LayerwiseSolver(fuse=True).solve(c32, source_V.float())
    ref = FastSolver().solve(circuit, source_V)
    assert eq.voltages[0].dtype == torch.float32
    assert (eq.all_voltages().double() - ref.all_voltages()).abs().max().item() <= 1e-4


def test_blocks_the_fused_kernels_do_not_model_run_the_eager_sweeps():
    circuit, source_V = _circuit((32, 16, 8))
    spread = _spread(circuit, 5)
    system = LayeredSystem(spread, source_V)
    assert fused_arguments(system, layer_constants(system)) is None  # per-diode spreads: eager
    eq = LayerwiseSolver(fuse=True).solve(spread, source_V)
    ref = FastSolver().solve(spread, source_V)
    assert (eq.all_voltages() - ref.all_voltages()).abs().max().item() <= 1e-10


def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    kernels = fused.FusedKernels()

    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    circuit, source_V = _circuit((16, 12, 6))
    system = LayeredSystem(circuit, source_V)
    args = fused_arguments(system, layer_constants(system))
    with pytest.warns(RuntimeWarning, match="no C.. compiler found.*running them eagerly"):
        parts, steps, moves = kernels.cold_sweep(*args)
    assert steps.shape == moves.shape == (2,)
    assert kernels.failure == "RuntimeError: no C++ compiler found"
    expected = fused.cold_sweep(*args)
    assert all(torch.equal(x, y) for x, y in zip(parts, expected[0], strict=True))
    kernels.residual(parts, *args[:4], args[6])  # no second warning (warnings are errors here)


def test_auto_picks_the_layerwise_sweeps_where_they_apply_and_newton_elsewhere():
    auto = get_solver("auto")
    assert isinstance(auto, AutoSolver)
    circuit, source_V = _circuit((16, 12, 6))
    assert isinstance(auto.choose(circuit), LayerwiseSolver) and not auto.choose(circuit).fuse
    eq = auto.solve(circuit, source_V)
    assert eq.solver == "fast-layerwise"
    wired = log_uniform_circuit(CircuitSpec((16, 12, 6), input_gain_V=30.0, wire_ohm=5.0), 1)
    assert isinstance(auto.choose(wired), FastSolver)
    amped = log_uniform_circuit(
        CircuitSpec((16, 12, 6), input_gain_V=30.0, peripherals=Peripherals(driver_ohm=50.0)), 1
    )
    assert isinstance(auto.choose(amped), FastSolver)
    assert auto.solve(amped, source_V).solver == "fast"
    assert get_solver("auto", fuse=True).choose(circuit).fuse
    with pytest.raises(ValueError, match="max_iterations"):
        get_solver("auto", max_iterations=0)
