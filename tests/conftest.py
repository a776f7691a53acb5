"""Shared fixtures: strict float64 numerics, seeded random circuits, every solver backend."""

from __future__ import annotations

import functools

import pytest
import torch

from analog import Circuit, CircuitSpec

torch.set_default_dtype(torch.float64)


@functools.cache
def ngspice_available() -> str | None:
    """``None`` when ngspice can be loaded, else the reason it cannot."""
    try:
        from analog.solvers.ngspice import NgspiceSolver
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        return f"analog.solvers.ngspice missing: {exc}"
    try:
        with NgspiceSolver() as solver:
            spec = CircuitSpec((1, 1), input_pairs=False, diode_up_V=None, diode_down_V=None)
            solver.solve(Circuit.random(spec), torch.ones(1, 1))
    except Exception as exc:  # the reason is shown in the skip message
        return f"ngspice unavailable: {exc}"
    return None


def make_solver(name: str):
    if name == "ngspice":
        reason = ngspice_available()
        if reason:
            pytest.skip(reason)
        from analog.solvers.ngspice import NgspiceSolver

        return NgspiceSolver()
    from analog.solvers import FastSolver

    return FastSolver()


@pytest.fixture(params=["fast", pytest.param("ngspice", marks=pytest.mark.ngspice)])
def solver(request):
    s = make_solver(request.param)
    yield s
    close = getattr(s, "close", None)
    if close:
        close()


def log_uniform_circuit(spec: CircuitSpec, seed: int) -> Circuit:
    """Conductances log-uniform over the device range: far from the symmetric average, so that
    strong inputs drive many diodes into conduction."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = spec.conductance.g_min_S, spec.conductance.g_max_S

    def draw(shape):
        t = torch.rand(shape, generator=gen, dtype=torch.float64)
        return (lo * (hi / lo) ** t).clamp(lo, hi)

    return Circuit(spec, [draw(s) for s in spec.weight_shapes()], [draw(s) for s in spec.bias_shapes()])


def random_inputs(spec: CircuitSpec, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1000)
    return torch.rand(batch, spec.n_inputs, generator=gen, dtype=torch.float64)
