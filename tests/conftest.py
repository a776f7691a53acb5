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


SHOCKLEY_SOLVERS = ("fast", "fast-layerwise", "ngspice")
"""Solvers of the Shockley diode equations: every circuit."""
SOLVERS = ("fast", "fast-layerwise", "fast-ideal", "ngspice")
"""Every solver: circuits without diodes, where the ideal-diode limit is exact too."""


def make_solver(name: str):
    """A solver by name; ``"ngspice"`` is the session's shared solver (its ``close()`` does nothing)."""
    if name == "ngspice":
        reason = ngspice_available()
        if reason:
            pytest.skip(reason)
        return _SharedNgspice.get()
    from analog.solvers import get_solver

    return get_solver(name)


def _solver_params(names):
    return [pytest.param(n, marks=pytest.mark.ngspice) if n == "ngspice" else n for n in names]


@pytest.fixture(scope="session")
def ngspice_solver():
    """The session's shared ngspice solver (skips the test when ngspice cannot be loaded)."""
    return make_solver("ngspice")


@pytest.fixture(params=_solver_params(SHOCKLEY_SOLVERS))
def solver(request):
    """Each Shockley-exact solver in turn."""
    with make_solver(request.param) as s:
        yield s


@pytest.fixture(params=_solver_params(SOLVERS))
def any_solver(request):
    """Each solver in turn, the ideal-diode limit included (for circuits without diodes)."""
    with make_solver(request.param) as s:
        yield s


_NGSPICE_FIXTURES = {"ngspice_solver"}
_SLOW_FIXTURES = {"trained"}
"""Module fixtures that train or run ngspice: every test using them pays for them once."""


def pytest_collection_modifyitems(config, items):
    """Mark what needs ngspice, and what is slow, from what a test uses: the ngspice solver (a
    fixture, a solver parameter, or a test function that names ngspice) makes it both; a subprocess
    (a whole `cosim` command, a worker pool, Dask) or a trained-model fixture makes it slow."""
    import inspect

    for item in items:
        try:
            source = inspect.getsource(item.function)
        except (OSError, TypeError):
            source = ""
        callspec = getattr(item, "callspec", None)
        params = set(map(str, callspec.params.values())) if callspec else set()
        uses_ngspice = (
            "ngspice" in params
            or bool(_NGSPICE_FIXTURES & set(item.fixturenames))
            or item.get_closest_marker("ngspice") is not None
            or "ngspice" in source.lower().replace("no-ngspice", "").replace("ngspice_eval_samples = 0", "")
        )
        if uses_ngspice and item.get_closest_marker("ngspice") is None:
            item.add_marker(pytest.mark.ngspice)
        heavy = "subprocess" in source or "cli(" in source
        if uses_ngspice or heavy or _SLOW_FIXTURES & set(item.fixturenames):
            if item.get_closest_marker("slow") is None:
                item.add_marker(pytest.mark.slow)


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
