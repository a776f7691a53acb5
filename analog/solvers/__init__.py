"""Equilibrium solvers: one interface (:class:`EquilibriumSolver`), several backends."""

from analog.solvers.auto import AutoSolver
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError, SolverStatus, WrappedSolver
from analog.solvers.conv_layerwise import ConvLayerwiseSolver
from analog.solvers.ideal import IdealDiodeSolver
from analog.solvers.layerwise import LayerwiseSolver
from analog.solvers.newton import FastSolver

__all__ = [
    "AutoSolver",
    "ConvLayerwiseSolver",
    "Equilibrium",
    "EquilibriumSolver",
    "FastSolver",
    "IdealDiodeSolver",
    "LayerwiseSolver",
    "SolverError",
    "SolverStatus",
    "WrappedSolver",
    "get_solver",
]


def get_solver(name: str, **options) -> EquilibriumSolver:
    """Solver by name: ``"auto"`` (layer sweeps where they apply, else Newton), ``"fast"`` (Newton),
    ``"fast-layerwise"`` (layer sweeps), ``"fast-ideal"`` (ideal-diode limit) or ``"ngspice"``."""
    if name == "auto":
        return AutoSolver(**options)
    if name == "fast":
        return FastSolver(**options)
    if name == "fast-layerwise":
        return LayerwiseSolver(**options)
    if name == "fast-ideal":
        return IdealDiodeSolver(**options)
    if name == "ngspice":
        from analog.solvers.ngspice import NgspiceSolver

        return NgspiceSolver(**options)
    raise ValueError(
        f"solver: unknown solver {name!r}; choose 'auto', 'fast', 'fast-layerwise', 'fast-ideal' or 'ngspice'"
    )
