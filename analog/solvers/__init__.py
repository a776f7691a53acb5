"""Equilibrium solvers: one interface (:class:`EquilibriumSolver`), several backends."""

from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError, SolverStatus
from analog.solvers.newton import FastSolver

__all__ = ["Equilibrium", "EquilibriumSolver", "FastSolver", "SolverError", "SolverStatus", "get_solver"]


def get_solver(name: str, **options) -> EquilibriumSolver:
    """Solver by name: ``"fast"`` or ``"ngspice"``."""
    if name == "fast":
        return FastSolver(**options)
    if name == "ngspice":
        from analog.solvers.ngspice import NgspiceSolver

        return NgspiceSolver(**options)
    raise ValueError(f"solver: unknown solver {name!r}; choose 'fast' or 'ngspice'")
