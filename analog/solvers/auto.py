"""``"auto"``: the fastest exact in-process solver for each block, chosen from what it contains.

Measured side by side (``benchmarks/solvers.py``, ``benchmarks/deep.py``), the layer-wise sweeps
beat Newton on every block they can solve, shallow or deep, at B = 4 and B = 128: Newton's
per-sample dense factorisations of every layer after the first cost more than the sweeps that
replace them. The sweeps need nodes of one layer to be independent given their neighbours and the
peripherals to be ideal, so blocks with wired crossbars (``wire_ohm``) or non-ideal drivers,
amplifiers or nudging sources go to :class:`~analog.solvers.newton.FastSolver`, which solves them
exactly (dense KCL with the peripherals, or the reduced wired crossbars).

The fused (compiled) sweeps of :mod:`analog.solvers.fused` cost seconds of compiling once per
process; they are used where that pays off within one run: blocks of at least
:data:`FUSE_MIN_CONDUCTANCES` conductances (the MNIST presets, 100k-160k), not the digits ones (36k,
whose whole run takes about as long as compiling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from analog.circuit import Circuit
from analog.solvers.base import Equilibrium, EquilibriumSolver, check_tol_V
from analog.solvers.layerwise import LayerwiseSolver
from analog.solvers.newton import FastSolver

__all__ = ["FUSE_MIN_CONDUCTANCES", "AutoSolver"]

FUSE_MIN_CONDUCTANCES = 50_000
"""Blocks at least this large get the fused sweeps (compiled once per process)."""


@dataclass
class AutoSolver(EquilibriumSolver):
    """The layer-wise sweeps where they apply, Newton (or the dense peripheral solver) elsewhere.

    ``fuse``: ``None`` (default) fuses the sweeps of blocks of at least
    :data:`FUSE_MIN_CONDUCTANCES` conductances; ``True``/``False`` for every block."""

    tol_V: float | None = None
    max_iterations: int = 100
    fuse: bool | None = None
    name: str = "auto"
    _layerwise: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        check_tol_V(self.tol_V)
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations: must be >= 1, got {self.max_iterations!r}")
        self._newton = FastSolver(tol_V=self.tol_V, max_iterations=self.max_iterations)

    def choose(self, circuit: Circuit) -> EquilibriumSolver:
        """The solver this block gets."""
        spec = circuit.spec
        if spec.wire_ohm is not None or not circuit.ideal_peripherals:
            return self._newton
        fuse = self.fuse if self.fuse is not None else _conductances(spec) >= FUSE_MIN_CONDUCTANCES
        if fuse not in self._layerwise:
            self._layerwise[fuse] = LayerwiseSolver(tol_V=self.tol_V, fuse=fuse)
        return self._layerwise[fuse]

    def solve(
        self,
        circuit: Circuit,
        source_V: torch.Tensor,
        nudge_A: torch.Tensor | None = None,
        init: Equilibrium | None = None,
    ) -> Equilibrium:
        return self.choose(circuit).solve(circuit, source_V, nudge_A, init)


def _conductances(spec) -> int:
    return sum(r * c for r, c in spec.weight_shapes()) + sum(r * c for r, c in spec.bias_shapes())
