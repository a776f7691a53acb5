"""Exact layer-wise solver for Shockley diodes: nonlinear block Gauss-Seidel over the layers.

Free nodes of one layer are not connected to each other (ideal wires), so with its neighbouring
layers held fixed the co-content (1) of :mod:`analog.solvers.physics` separates into one convex
function per node of the layer. Its minimum is the root of the node's KCL in u-space,

    h(u) = D u + f(u) - b = 0,     b = c_l + W_{l-1}^T u_{l-1} + W_l u_{l+1},            (2)

with ``D`` the node's conductance sum and ``f`` its u-space diode current (increasing in ``u``,
so ``h`` has exactly one root). The root lies between the all-diodes-off value ``a = b / D`` and
the zero ``m`` of ``f``, which lies between the two rails: if ``u > a`` then ``f(u) < 0`` so
``u < m``, and conversely. So each node's update is a scalar Newton iteration kept inside that
bracket, shrunk at every step by the sign of ``h`` and bisected when a Newton step would leave it:
it cannot diverge, and it converges quadratically once near the root. The input product (the
sources' contribution to ``c_1``) is computed once per batch, when the system is built.

Exact minimisation over one layer at a time is block coordinate descent on a strictly convex
function, so the co-content falls at every layer update and the sweeps converge. The asymptotic
rate is that of linear block Gauss-Seidel on the Hessian ``H = Lap + diag(f')``. It is fast when
the later layers load the earlier ones weakly (784-256-10: ~1e-2 per sweep) and slow when layers
of equal width are coupled strongly (deep blocks with their diodes off). Layers swept in their
natural order are a *consistent ordering* of the block-tridiagonal ``H`` (Young, *Iterative
Solution of Large Linear Systems*, 1971, Ch. 5), so once the sweeps are in the local, nearly linear
regime, over-relaxation with Young's parameter

    omega = 2 / (1 + sqrt(1 - rho)),     rho the Gauss-Seidel contraction per sweep,      (3)

turns the rate ``rho`` into ``omega - 1`` (0.9 -> 0.52; 0.99 -> 0.82). ``rho`` is measured from
the plain sweeps before over-relaxation starts.

Stopping: the change of a sweep bounds the remaining error through the measured contraction
``q`` (a geometric tail, ``err <= dmax q / (1 - q)``); the solver stops when both the change and
that tail are below ``tol_V``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analog.circuit import Circuit
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError, SolverStatus, check_batch
from analog.solvers.newton import initial_guess
from analog.solvers.physics import LayeredSystem

__all__ = ["LayerwiseSolver"]


@dataclass
class LayerwiseSolver(EquilibriumSolver):
    """Layer sweeps with per-node safeguarded Newton (torch; float64 or float32, CPU or CUDA).

    Exact for ngspice's level-1 diode, like :class:`~analog.solvers.newton.FastSolver`, for
    crossbars with ideal wires (wired crossbars couple the nodes of a layer: use ``"fast"``).
    """

    tol_V: float | None = None
    """Stop when the estimated remaining error is below this many volts (default 1e-12 V in
    float64, 1e-5 V in float32, FastSolver's defaults)."""
    max_sweeps: int = 1000
    """Sweeps over all layers before :class:`SolverError` is raised."""
    max_newton: int = 60
    """Scalar Newton (or bisection) steps per layer update before the update is cut short."""
    overrelax: bool = True
    """Over-relax with Young's parameter (3) once the sweeps are slow and nearly linear."""
    name: str = "fast-layerwise"

    def __post_init__(self) -> None:
        if self.tol_V is not None and not (0 < self.tol_V < 1):
            raise ValueError(f"tol_V: must be in (0, 1) V, got {self.tol_V!r}")
        if self.max_sweeps < 1:
            raise ValueError(f"max_sweeps: must be >= 1, got {self.max_sweeps!r}")
        if self.max_newton < 1:
            raise ValueError(f"max_newton: must be >= 1, got {self.max_newton!r}")

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
                "fast-layerwise: resistive crossbar wires (wire_ohm) couple the nodes of a layer, which its "
                "node-by-node layer updates do not represent; use the 'fast' solver"
            )
        system = LayeredSystem(circuit, source_V, nudge_A)
        tol = self.tol_V if self.tol_V is not None else (1e-12 if system.dtype == torch.float64 else 1e-5)
        if init is not None:
            if init.batch_size != system.batch:
                raise ValueError(f"init: warm start has batch {init.batch_size}, the sources have {system.batch}")
            u = system.from_voltages(init.voltages).to(system.dtype)
        else:
            u = initial_guess(system)
        return self._sweep(system, u, tol)

    def _sweep(self, system: LayeredSystem, u: torch.Tensor, tol: float) -> Equilibrium:
        anchors = _rail_anchors(system)
        curvature = _curvature(system)
        omega, history = 1.0, []
        status, sweeps, change, tail = SolverStatus.MAX_ITERATIONS, 0, math.inf, math.inf
        for sweeps in range(1, self.max_sweeps + 1):
            # Inner solves need only be accurate to a fraction of what the sweeps still change.
            inner_tol = max(0.25 * tol, 1e-3 * change) if math.isfinite(change) else 1e-3
            change = 0.0
            for l in range(1, system.depth + 1):
                update = self._update_layer(system, u, l, anchors[l - 1], inner_tol, omega, curvature[l - 1])
                # max() would drop a NaN: keep it, so that a non-finite sweep is reported as such.
                change = update if (update > change or math.isnan(update)) else change
            if not math.isfinite(change):
                status = SolverStatus.NONFINITE
                break
            history.append(change)
            q = _contraction(history, omega)
            tail = change * q / (1.0 - q) if q is not None else math.inf
            if change <= tol and tail <= tol:
                status = SolverStatus.CONVERGED
                break
            if self.overrelax and omega == 1.0 and q is not None and change < 1e-2 and q > 0.25 and len(history) >= 3:
                omega = 2.0 / (1.0 + math.sqrt(1.0 - q))
        if status is not SolverStatus.CONVERGED:
            raise SolverError(
                f"fast-layerwise: {status.value} after {sweeps} sweeps (last change {change:.3e} V, estimated "
                f"error {tail:.3e} V, tol {tol:.1e} V); {status.hint}, or use the 'fast' (Newton) solver"
            )
        f, _ = system.diodes(u)
        r = system.residual(u, f)
        final = u
        return Equilibrium(
            voltages=system.to_voltages(u),
            iterations=sweeps,
            residual_A=system.physical_residual(r),
            status=status,
            solver=self.name,
            source_currents=lambda: system.source_currents(final),
            history={"change_V": history},
        )

    def _update_layer(self, system, u, l, anchor, inner_tol, omega, curvature) -> float:
        """Solve (2) for every node of layer ``l`` in place; returns the largest change (V).

        ``curvature``: a bound on ``|h''| / h'`` in u-space, so that after a Newton step of size
        ``delta`` the remaining error is below ``curvature delta^2`` (quadratic convergence).
        """
        x0 = system.layer(u, l)
        b = system.layer(system.const, l)
        if l > 1:
            b = torch.addmm(b, system.layer(u, l - 1), system.weights[l - 1])
        if l < system.depth:
            b = torch.addmm(b, system.layer(u, l + 1), system.weights[l].T)
        d = system.layer(system.diag.unsqueeze(0), l)
        s = system.layer_scales[l - 1]
        f, g = system.layer_diodes(x0, l)
        h = torch.addcmul(f - b, d, x0)
        newton = x0 - h / (d + g)
        step = float((newton - x0).abs().max())
        # A step this short stays where the diode current changes by a few percent, so the
        # Newton step is a contraction without a bracket: the common case once sweeps are local.
        if step * curvature <= 0.05:
            x = newton
            if curvature * step * step > inner_tol / s:
                x = self._bracketed(system, l, x, b, d, anchor, inner_tol / s, curvature)
        else:
            x = self._bracketed(system, l, x0, b, d, anchor, inner_tol / s, curvature, (h, newton))
        if omega != 1.0:
            x = torch.lerp(x0, x, omega)
        change = float((x - x0).abs().max()) * s
        x0.copy_(x)
        return change

    def _bracketed(self, system, l, x, b, d, anchor, tol_u, curvature, first=None):
        """Newton on (2) kept inside the bracket between ``a = b / D`` and the rails, which holds
        the root; a step leaving the bracket (or NaN, from an overflowed diode) is a bisection."""
        a = b / d
        lo, hi = a.clamp(max=anchor[0]), a.clamp(min=anchor[1])
        for k in range(self.max_newton):
            if k == 0 and first is not None:
                h, newton = first
            else:
                f, g = system.layer_diodes(x, l)
                h = torch.addcmul(f - b, d, x)
                newton = x - h / (d + g)
            # The root is below x where h(x) > 0 and above it where h(x) < 0.
            above = h > 0
            hi = torch.where(above, torch.minimum(hi, x), hi)
            lo = torch.where(above, lo, torch.maximum(lo, x))
            inside = (newton >= lo) & (newton <= hi)
            x_new = torch.where(inside, newton, 0.5 * (lo + hi))
            step = float((x_new - x).abs().max())
            x = x_new
            if bool(inside.all()) and curvature * step * step <= tol_u:
                break
        return x


def _rail_anchors(system: LayeredSystem) -> list[tuple[torch.Tensor | float, torch.Tensor | float]]:
    """Per layer, ``(m_lo, m_hi)`` in u-space with the zero ``m`` of ``f`` inside ``[m_lo, m_hi]``.

    ``f(V_up) = -I(V_dn - V_up)`` and ``f(V_dn) = I(V_dn - V_up)`` have opposite signs (the junction
    current vanishes at zero bias), so ``m`` lies between the rails; with one rail it is that rail,
    with none ``f = 0`` and Newton on (2) is exact in one step.
    """
    spec = system.spec
    rails = [r for r in (spec.diode_up_V, spec.diode_down_V) if r is not None]
    lo, hi = (min(rails), max(rails)) if rails else (-math.inf, math.inf)
    return [(lo / s, hi / s) for s in system.layer_scales]


def _curvature(system: LayeredSystem) -> list[float]:
    """Per layer, a bound on ``|h''| / h'`` of (2) in u-space (1/V).

    Forward, ``I'' / I' = 1 / (n Vt)``; on the smooth reverse branch ``I = -Is (1 + (k / vd)^3)``,
    ``I'' / I' = -4 / vd <= 4 / (3 n Vt)`` since ``vd <= -3 n Vt`` there. ``h' = D + I'`` only
    lowers the ratio. In u-space ``f(u) = I(s u) / s`` multiplies it by ``s``. The smallest
    emission factor of the diode spread gives the steepest curve.
    """
    diode = system.spec.diode
    n_min = 1.0 if system.emission is None else min(1.0, float(system.emission.min()))
    per_volt = 4.0 / (3.0 * diode.vte_V * n_min)
    return [per_volt * s for s in system.layer_scales]


def _contraction(history: list[float], omega: float) -> float | None:
    """Contraction per sweep measured from the last changes (``None`` until two are known); with
    over-relaxation at least ``omega - 1``, its asymptotic rate."""
    if len(history) < 2 or history[-2] == 0.0:
        return None if len(history) < 2 else 0.0
    q = max(history[-1] / history[-2], omega - 1.0)
    if len(history) >= 3 and history[-3] > 0.0:
        q = max(q, history[-2] / history[-3])
    return min(q, 0.999)
