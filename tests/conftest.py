"""Shared fixtures: strict float64 numerics, seeded random circuits, every solver backend."""

from __future__ import annotations

import functools

import pytest
import torch

from analog import Circuit, CircuitSpec

torch.set_default_dtype(torch.float64)
# Tests use small tensors; one thread avoids OpenMP barrier stalls when the machine is busy.
torch.set_num_threads(1)


class _SharedNgspice:
    """One ngspice solver for the whole session: each worker start imports torch (~1.3 s)."""

    solver = None

    @classmethod
    def get(cls):
        if cls.solver is None:
            from analog.solvers.ngspice import NgspiceSolver

            class SessionNgspiceSolver(NgspiceSolver):
                def close(self) -> None:  # tests close what make_solver gives them; keep it alive
                    pass

                def shutdown(self) -> None:
                    super().close()

            cls.solver = SessionNgspiceSolver()
        return cls.solver

    @classmethod
    def shutdown(cls) -> None:
        if cls.solver is not None:
            cls.solver.shutdown()
            cls.solver = None


@functools.cache
def ngspice_available() -> str | None:
    """``None`` when ngspice can be loaded, else the reason it cannot."""
    try:
        from analog.solvers.ngspice import NgspiceSolver  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        return f"analog.solvers.ngspice missing: {exc}"
    try:
        spec = CircuitSpec((1, 1), input_pairs=False, diode_up_V=None, diode_down_V=None)
        _SharedNgspice.get().solve(Circuit.random(spec), torch.ones(1, 1))
    except Exception as exc:  # the reason is shown in the skip message
        _SharedNgspice.shutdown()
        return f"ngspice unavailable: {exc}"
    return None


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_ngspice():
    yield
    _SharedNgspice.shutdown()


def make_solver(name: str):
    """A solver by name; ``"ngspice"`` is the session's shared solver (its ``close()`` does nothing)."""
    if name == "ngspice":
        reason = ngspice_available()
        if reason:
            pytest.skip(reason)
        return _SharedNgspice.get()
    from analog.solvers import FastSolver

    return FastSolver()


@pytest.fixture(scope="session")
def ngspice_solver():
    """The session's shared ngspice solver (skips the test when ngspice cannot be loaded)."""
    return make_solver("ngspice")


@pytest.fixture(params=["fast", pytest.param("ngspice", marks=pytest.mark.ngspice)])
def solver(request):
    with make_solver(request.param) as s:
        yield s


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
