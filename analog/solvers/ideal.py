"""The ideal-diode limit of the fast solver: exact layer sweeps of a box-constrained quadratic.

With ideal diodes (open below a forward voltage ``V_on``, a voltage source above it) every free
node is bounded to ``[V_down - V_on, V_up + V_on]`` and the co-content is the quadratic of the
resistive network restricted to that box. Nodes of one layer are not connected to each other, so
minimising over one layer with the others fixed is exact and elementwise: a weighted average of the
neighbours, clipped to the box. Block Gauss-Seidel over the layers decreases the co-content at every
sweep and converges linearly, fast when the later layers load the earlier ones weakly (a few sweeps
to rounding error on 784-256-10). This is an approximation of the circuit ngspice simulates: use it
for quick exploration; :class:`~analog.solvers.newton.FastSolver` is exact for the Shockley diode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analog.circuit import Circuit
from analog.solvers.base import (
    Equilibrium,
    EquilibriumSolver,
    SolverError,
    SolverStatus,
    check_batch,
    check_tol_V,
    tolerance_V,
)
from analog.solvers.physics import LayeredSystem

__all__ = ["IdealDiodeSolver"]


@dataclass
class IdealDiodeSolver(EquilibriumSolver):
    """Layer-sweep solver for ideal diodes with forward voltage ``forward_V``."""

    forward_V: float | None = None
    """Diode forward voltage ``V_on`` (V); default: where the circuit's Shockley diode carries the
    full-scale current ``g_max * 1 V``, ``n Vt ln(1 + g_max / Is)`` (about 0.6 V)."""
    tol_V: float | None = None
    """Stop when no node moves by more than this in a sweep (1e-12 V in float64, 1e-6 V in float32)."""
    max_sweeps: int = 500
    name: str = "fast-ideal"
    smooth_diodes = False  # a class attribute, not a constructor field

    def __post_init__(self) -> None:
        check_tol_V(self.tol_V)
        if self.forward_V is not None and not (math.isfinite(self.forward_V) and 0 <= self.forward_V < 10):
            raise ValueError(f"forward_V: must be in [0, 10) V, got {self.forward_V!r}")
        if self.max_sweeps < 1:
            raise ValueError(f"max_sweeps: must be >= 1, got {self.max_sweeps!r}")

    def bounds(self, system: LayeredSystem) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bound of every node in u-space, ``[N]`` each."""
        spec = system.spec
        diode = spec.diode
        ones = torch.ones(2, system.n_free, dtype=system.dtype, device=system.device)
        if self.forward_V is not None:
            v_on = self.forward_V * ones
        else:
            # Each diode's own Is and N (with their device spread) sets where it carries g_max * 1 V.
            circuit = system.circuit
            area = ones if circuit.diode_area is None else circuit.diode_area.to(ones)
            emission = ones if circuit.diode_emission is None else circuit.diode_emission.to(ones)
            v_on = (
                diode.vte_V
                * emission
                * torch.log1p(spec.conductance.g_max_S / (diode.saturation_current(emission) * area))
            )
        inf = torch.full((system.n_free,), math.inf, dtype=system.dtype, device=system.device)
        lo = -inf if spec.diode_down_V is None else spec.diode_down_V - v_on[1]
        hi = inf if spec.diode_up_V is None else spec.diode_up_V + v_on[0]
        if diode.bv_V is not None:
            lo, hi = self._breakdown_bounds(system, lo, hi)
        return lo / system.scale, hi / system.scale

    def _breakdown_bounds(self, system: LayeredSystem, lo: torch.Tensor, hi: torch.Tensor):
        """An ideal Zener: a reverse-biased diode conducts once it is ``V_z`` past its rail, ``V_z``
        where the diode carries the full-scale current ``g_max * 1 V`` in breakdown,
        ``xbv + NBV Vt ln(1 + g_max / Is)``."""
        spec, circuit = system.spec, system.circuit
        diode = spec.diode
        ones = torch.ones(2, system.n_free, dtype=torch.float64)
        area = ones if circuit.diode_area is None else circuit.diode_area.to(ones)
        emission = ones if circuit.diode_emission is None else circuit.diode_emission.to(ones)
        i_s = diode.saturation_current(emission) * area
        vbk = diode.vte_brk_V * (emission if diode.nbv is None else 1.0)
        v_z = (diode.breakdown_voltage(area, emission) + vbk * torch.log1p(spec.conductance.g_max_S / i_s)).to(lo)
        if spec.diode_up_V is not None:
            lo = torch.maximum(lo, spec.diode_up_V - v_z[0])
        if spec.diode_down_V is not None:
            hi = torch.minimum(hi, spec.diode_down_V + v_z[1])
        if bool((lo > hi).any()):
            raise SolverError(
                "fast-ideal: the diode rails are further apart than the breakdown voltage, so both diodes of a node "
                "break down at once; an ideal Zener pair has no solution there: use the 'fast' solver"
            )
        return lo, hi

    def solve(
        self,
        circuit: Circuit,
        source_V: torch.Tensor,
        nudge_A: torch.Tensor | None = None,
        init: Equilibrium | None = None,
    ) -> Equilibrium:
        source_V, nudge_A = check_batch(circuit, source_V, nudge_A)
        if circuit.spec.wire_ohm is not None:
            raise SolverError(
                "fast-ideal: resistive crossbar wires (wire_ohm) couple the nodes of a layer, which its "
                "node-by-node Gauss-Seidel does not represent; use the 'fast' or 'ngspice' solver"
            )
        system = LayeredSystem(circuit, source_V, nudge_A)
        tol = tolerance_V(self.tol_V, system.dtype, float32_V=1e-6)
        lo, hi = self.bounds(system)
        inv_diag = 1.0 / system.diag
        if init is not None:
            u = system.from_voltages(init.voltages).to(system.dtype)
        else:
            u = torch.zeros(system.batch, system.n_free, dtype=system.dtype, device=system.device)
        depth = system.depth
        # Forward then backward: the input layer's large, fixed drive propagates in one sweep.
        order = (*range(1, depth + 1), *range(depth - 1, 1, -1))
        status, sweeps, moved = SolverStatus.MAX_ITERATIONS, 0, math.inf
        for sweeps in range(1, self.max_sweeps + 1):
            moved = 0.0
            for l in order:
                current = system.layer(system.const, l).clone()
                if l > 1:
                    current.addmm_(system.layer(u, l - 1), system.weights[l - 1])
                if l < depth:
                    current.addmm_(system.layer(u, l + 1), system.weights[l].T)
                a, b = system.offsets[l - 1], system.offsets[l]
                new = torch.clamp(current * inv_diag[a:b], lo[a:b], hi[a:b])
                moved = max(moved, float(((new - u[:, a:b]) * system.scale[a:b]).abs().max()))
                u[:, a:b] = new
            if not math.isfinite(moved):
                status = SolverStatus.NONFINITE
                break
            if moved <= tol:
                status = SolverStatus.CONVERGED
                break
        if status is not SolverStatus.CONVERGED:
            raise SolverError(
                f"ideal-diode solver: {status.value} after {sweeps} sweeps (last change {moved:.3e} V, "
                f"tol {tol:.1e} V); {status.hint}"
            )
        # KCL holds at the nodes inside their box; at a bound the ideal diode takes the difference.
        r = system.residual(u, torch.zeros_like(u))
        inside = (u > lo + tol) & (u < hi - tol)
        residual = system.physical_residual(torch.where(inside, r, torch.zeros_like(r)))
        final = u
        return Equilibrium(
            voltages=system.to_voltages(u),
            iterations=sweeps,
            residual_A=residual,
            status=status,
            solver=self.name,
            source_currents=lambda: system.source_currents(final),
        )
