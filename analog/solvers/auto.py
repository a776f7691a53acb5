"""``"auto"``: the fastest exact in-process solver for each block, chosen from what it contains.

Measured side by side (``benchmarks/solvers.py``, ``benchmarks/deep.py``), the layer-wise sweeps
beat Newton on every block they can solve, shallow or deep, at B = 4 and B = 128: Newton's
per-sample dense factorisations of every layer after the first cost more than the sweeps that
replace them. The sweeps need nodes of one layer to be independent given their neighbours and the
peripherals to be ideal, so blocks with wired crossbars (``wire_ohm``) or non-ideal drivers,
amplifiers or nudging sources go to :class:`~analog.solvers.newton.FastSolver`, which solves them
exactly (dense KCL with the peripherals, or the reduced wired crossbars).

The fused (compiled) sweeps of :mod:`analog.solvers.fused` are used when asked (``fuse=True``):
they make a single solve 1.5-2x faster at B = 4 and B = 128, but compiling costs 10-30 s once
per process and network, and in training (B = 64, MNIST presets) the sweeps were measured no
faster per epoch after it (``benchmarks/deep.py``, the README), so they are off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from analog.circuit import Circuit
from analog.solvers.base import Equilibrium, EquilibriumSolver, check_tol_V
from analog.solvers.layerwise import LayerwiseSolver
from analog.solvers.newton import FastSolver

__all__ = ["AutoSolver"]


@dataclass
class AutoSolver(EquilibriumSolver):
    """The layer-wise sweeps where they apply, Newton (or the dense peripheral solver) elsewhere.

    ``fuse``: the layer-wise sweeps run as torch.compile kernels (:mod:`analog.solvers.fused`);
    ``compiled``: small batches sweep in numba calls (:mod:`analog.solvers.compiled`)."""

    tol_V: float | None = None
    max_iterations: int = 100
    fuse: bool = False
    compiled: bool = True
    name: str = "auto"
    _newton: FastSolver = field(init=False, repr=False)
    _layerwise: LayerwiseSolver = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_tol_V(self.tol_V)
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations: must be >= 1, got {self.max_iterations!r}")
        self._newton = FastSolver(tol_V=self.tol_V, max_iterations=self.max_iterations)
        self._layerwise = LayerwiseSolver(tol_V=self.tol_V, fuse=self.fuse, compiled=self.compiled)

    def choose(self, circuit: Circuit) -> EquilibriumSolver:
        """The solver this block gets."""
        spec = circuit.spec
        if spec.wire_ohm is not None or not circuit.ideal_peripherals:
            return self._newton
        return self._layerwise

    def solve(
        self,
        circuit: Circuit,
        source_V: torch.Tensor,
        nudge_A: torch.Tensor | None = None,
        init: Equilibrium | None = None,
    ) -> Equilibrium:
        return self.choose(circuit).solve(circuit, source_V, nudge_A, init)
