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
it cannot diverge, and it converges quadratically once near the root. Far from the root on the
steep side of a diode, Newton on the equivalent ``log(f / r) = 0`` (``r = b - D u``, eq. (4) of
:meth:`LayerwiseSolver._bracketed`) takes over. Once the sweeps are local a node moves so
little that one plain Newton step per layer update suffices. The input product (the sources'
contribution to ``c_1``) is computed once per batch, when the system is built.

Nominal diodes (no per-diode spreads, breakdown or series resistance) rarely need the bracket: the
cold start (5) of :func:`analog.solvers.layer_nodes.cold_start` puts every node at the root of its
nearer diode alone (Lambert's W), within microvolts of the root of (2), and a layer whose drive has
moved far since its last update restarts there; the bracket remains the safeguard. Small batches
sweep in one numba call per sweep (:mod:`analog.solvers.compiled`, the same updates node by
node); with ``fuse`` the sweeps run as torch.compile kernels (:mod:`analog.solvers.fused`). The
circuit's own constants of (2) are computed once per circuit. A warm start inherits the
over-relaxation its equilibrium ended with (a nudged phase starts from the free phase of the same
block, whose linearised sweeps contract alike).

Exact minimisation over one layer at a time is block coordinate descent on a strictly convex
function, so (without over-relaxation) the co-content falls at every layer update and the sweeps
converge. The asymptotic rate is that of linear block Gauss-Seidel on the Hessian
``H = Lap + diag(f')``. It is fast when the later layers load the earlier ones weakly
(784-256-10: ~5e-3 per sweep) and slow when layers of equal width are coupled strongly (deep
blocks, 784-64-64-64-10: ~0.55 per sweep, ~0.2 with (3)). Layers swept in their
natural order are a *consistent ordering* of the block-tridiagonal ``H`` (Young, *Iterative
Solution of Large Linear Systems*, 1971, Ch. 5), so once the sweeps are in the local, nearly linear
regime, over-relaxation with Young's parameter

    omega = 2 / (1 + sqrt(1 - rho)),     rho the Gauss-Seidel contraction per sweep,      (3)

turns the rate ``rho`` into ``omega - 1`` (0.9 -> 0.52; 0.99 -> 0.82). ``rho`` is measured from
the plain sweeps before over-relaxation starts.

Stopping: the change of a sweep bounds the remaining error through the measured contraction
``q`` (a geometric tail, ``err <= dmax q / (1 - q)``); the solver stops when that tail is below
``tol_V`` and the change below ``100 tol_V``.

Odd/even ordering (all odd layers at once, then all even ones) is also consistent and halves the
operations per sweep of a deep block, but measured here its contraction estimates alternate from
sweep to sweep, (3) is then chosen badly, and it took up to 1.5x the sweeps: natural order it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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
from analog.solvers.compiled import MAX_VALUES, compiled
from analog.solvers.fused import kernels
from analog.solvers.layer_nodes import cold_start, fused_arguments, layer_constants
from analog.solvers.newton import initial_guess
from analog.solvers.physics import LayeredSystem

__all__ = ["LayerwiseSolver", "warm_omega"]


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
    compiled: bool = True
    """Sweep with numba's compiled kernels (:mod:`analog.solvers.compiled`): one call per sweep
    for small batches (``B x free nodes <= MAX_VALUES``), one vectorised call per layer update
    above; the same sweeps and results to rounding, 1.5-2.2x faster at B = 4, 1.35x at B = 128 and
    1.5-1.8x on deep blocks (benchmarks/solvers.py, deep.py).
    Applies to nominal diodes on the CPU (the others sweep eagerly)."""
    fuse: bool = False
    """Run the per-node work of each layer update as compiled kernels (:mod:`analog.solvers.fused`):
    the same results to rounding, several times faster at small batches, after a few seconds of
    compiling once per process. Applies to nominal diodes (no spreads, breakdown or series
    resistance); other blocks use the unfused kernels."""
    """Over-relax with Young's parameter (3) once the sweeps are slow and nearly linear."""
    name: str = "fast-layerwise"

    def __post_init__(self) -> None:
        check_tol_V(self.tol_V)
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
        source_V, nudge_A = check_batch(circuit, source_V, nudge_A, finite=False)
        if circuit.spec.wire_ohm is not None:
            raise SolverError(
                "fast-layerwise: resistive crossbar wires (wire_ohm) couple the nodes of a layer, which its "
                "node-by-node layer updates do not represent; use the 'fast' solver"
            )
        system = LayeredSystem(circuit, source_V, nudge_A)
        if not torch.isfinite(system.const.sum()):  # the input product is, where any source is NaN/inf
            check_batch(circuit, source_V, nudge_A)
        tol = tolerance_V(self.tol_V, system.dtype)
        parts = None
        if init is not None:
            if init.batch_size != system.batch:
                raise ValueError(f"init: warm start has batch {init.batch_size}, the sources have {system.batch}")
            u = system.from_voltages(init.voltages).to(system.dtype)
            parts = [system.layer(u, l).clone() for l in range(1, system.depth + 1)]
        return self._sweep(system, parts, tol, warm_omega(init) if self.overrelax else 1.0)

    def _sweep(self, system, parts: list[torch.Tensor] | None, tol: float, omega: float = 1.0) -> Equilibrium:
        """Sweep from ``parts`` (the free layers' u-space values; ``None``: a cold start), over-relaxed
        by ``omega`` from the first sweep."""
        layers = self._layers(system)
        fused = fused_arguments(system, layers) if self.fuse else None
        small = self._small(system, layers) if fused is None else None
        wide = self._wide(system, layers) if fused is None and small is None else None
        wide = None if wide is None else [compiled.layer_arguments(layer, wide) for layer in layers]
        cold = parts is None
        if small is not None:
            small_u = np.empty((system.batch, system.n_free), dtype=small[0].dtype)
            if not cold:
                small_u[:] = torch.cat(parts, dim=1).numpy()
        history = []
        status, sweeps, change, tail = SolverStatus.MAX_ITERATIONS, 0, math.inf, math.inf
        for sweeps in range(1, self.max_sweeps + 1):
            # Inner solves need only be accurate to a fraction of what the next sweep will change
            # (inexact block Gauss-Seidel keeps its rate while the inner errors stay below that).
            q = _contraction(history, omega)
            inner_tol = max(0.25 * tol, 0.1 * (1e-2 if q is None else q) * change) if history else 1e-3
            change = None
            if small is not None:
                changes = compiled.sweep(small_u, small, omega, inner_tol, cold and sweeps == 1, self.max_newton)
                if changes is None:  # numba cannot compile here (first call): eager from the same start
                    small = None
                else:
                    change = _largest(changes.tolist())
            elif fused is not None:
                parts, change = self._fused(layers, parts, fused, omega)
            elif wide is not None:
                parts, change = self._vector(system, layers, parts, inner_tol, omega, wide)
                wide = None if change is None else wide
            if change is None:
                parts, change = self._eager(system, layers, parts, inner_tol, omega)
            if not math.isfinite(change):
                status = SolverStatus.NONFINITE
                break
            history.append(change)
            q = _contraction(history, omega)
            tail = change * q / (1.0 - q) if q is not None else math.inf
            if tail <= tol and change <= 100 * tol:
                status = SolverStatus.CONVERGED
                break
            omega = self._relaxation(history, omega, change)
        if status is not SolverStatus.CONVERGED:
            raise SolverError(
                f"fast-layerwise: {status.value} after {sweeps} sweeps (last change {change:.3e} V, estimated "
                f"error {tail:.3e} V, tol {tol:.1e} V); {status.hint}, or use the 'fast' (Newton) solver"
            )
        residual_A = None
        if small is not None:
            u = torch.from_numpy(small_u)
            residual_A = compiled.residual(small_u, small)
            residual_A = None if residual_A is None else torch.from_numpy(residual_A).to(system.dtype)
        else:
            u = torch.cat(parts, dim=1)
        if wide is not None:
            worst = np.zeros(system.batch)
            done = all(
                compiled.layer_residual(parts[k], layer.drive(parts), wide[k], worst) for k, layer in enumerate(layers)
            )
            residual_A = torch.from_numpy(worst).to(system.dtype) if done else None
        if residual_A is None and fused is not None:
            residual_A = kernels.residual(parts, *fused[:4], fused[6]).abs().amax(1)
        elif residual_A is None:
            f, _ = system.diodes(u)
            residual_A = system.physical_residual(system.residual(u, f))
        return Equilibrium(
            voltages=system.to_voltages(u),
            iterations=sweeps,
            residual_A=residual_A,
            status=status,
            solver=self.name,
            source_currents=lambda: system.source_currents(u),
            history={"change_V": history, "omega": omega},
        )

    def _small(self, system, layers) -> tuple | None:
        """The whole-sweep kernel's arguments (:mod:`analog.solvers.compiled`) where it applies and
        is the faster: the conditions of :meth:`_wide` and a small batch (``B x free nodes <=
        MAX_VALUES``); else ``None``."""
        if system.batch * system.n_free > MAX_VALUES or self._wide(system, layers) is None:
            return None
        return compiled.arguments(system, layers)

    def _wide(self, system, layers) -> tuple | None:
        """:meth:`~analog.solvers.compiled.CompiledSweeps.diode_arguments` where the compiled
        kernels apply (:meth:`_vector`): nominal diodes on the CPU in float32/64, ideal wires, the
        plain layer couplings, no gradient to track; else ``None``."""
        if not self.compiled or not compiled.available or system.device.type != "cpu" or system.offdiag is not None:
            return None
        if not all(layer.lambert for layer in layers) or system.dtype not in (torch.float32, torch.float64):
            return None
        if type(self)._layers is not LayerwiseSolver._layers:
            return None
        if torch.is_grad_enabled() and (system.const.requires_grad or any(w.requires_grad for w in system.weights)):
            return None
        up, down = system.spec.diode_up_V, system.spec.diode_down_V
        if up is not None and down is not None and (down - up) / system.spec.diode.vte_V > 600.0:
            return None  # crossed rails this far apart: exp((V_dn - V_up) / (n Vt)) overflows
        return compiled.diode_arguments(system)

    def _vector(
        self, system, layers, parts, inner_tol, omega, layers_args
    ) -> tuple[list[torch.Tensor] | None, float | None]:
        """:meth:`_eager`'s sweep with the forward guess of each layer and each layer update one
        vectorised compiled call (:meth:`~analog.solvers.compiled.CompiledSweeps.update`) after
        torch's drive product; ``layers_args`` from
        :meth:`~analog.solvers.compiled.CompiledSweeps.layer_arguments`; ``(parts, None)`` where
        numba cannot compile it (nothing changed)."""
        cold = parts is None
        if cold:  # initial_guess, layer by layer
            parts = []
            for k, layer in enumerate(layers):
                current = layer.const if k == 0 else torch.addmm(layer.const, parts[k - 1], system.weights[k])
                if (guess := compiled.forward_guess(current, layers_args[k])) is None:
                    return None, None
                parts.append(guess)
        parts = [p.contiguous() for p in parts]
        change = 0.0
        for k, layer in enumerate(layers):
            b = layer.drive(parts)
            x = torch.empty_like(parts[k]) if cold else parts[k]
            update = compiled.update(x, parts[k], b, layers_args[k], omega, inner_tol, self.max_newton, cold)
            if update is None:
                return (None if cold else parts), None
            parts[k] = x
            change = update if (update > change or math.isnan(update)) else change
        return parts, change

    def _layers(self, system) -> list:
        """The free layers' constants of (2) (a subclass with other couplings overrides it)."""
        return layer_constants(system)

    def _eager(self, system, layers, parts, inner_tol, omega) -> tuple[list[torch.Tensor], float]:
        """One sweep, layer by layer (``parts`` ``None``: the cold first sweep, from
        :func:`~analog.solvers.newton.initial_guess` and (5)); the layers and the largest change (V)."""
        cold = parts is None
        if cold:
            u = initial_guess(system)
            parts = [system.layer(u, l).clone() for l in range(1, system.depth + 1)]
        change = 0.0
        for k, layer in enumerate(layers):
            b = layer.drive(parts)
            before = parts[k]
            if cold:
                parts[k] = cold_start(system, layer, b)
            parts[k], update = self._relax(system, layer, parts[k], b, inner_tol, omega)
            if cold:  # the change of the whole first sweep, start included
                update = float((parts[k] - before).abs().max()) * layer.scale
            # max() would drop a NaN: keep it, so that a non-finite sweep is reported as such.
            change = update if (update > change or math.isnan(update)) else change
        return parts, change

    @staticmethod
    def _fused(layers, parts, fused, omega) -> tuple[list[torch.Tensor] | None, float | None]:
        """One sweep by the compiled kernels (:mod:`analog.solvers.fused`; ``parts`` ``None``: the
        cold first sweep), kept if every layer's last Newton step is short enough to be a
        contraction (as :meth:`_relax` requires). A plain sweep that is not is redone with the
        nodes that moved far restarted from (5); if that is not either, ``(parts, None)``: the
        eager sweep runs from the same values."""
        const, diag, weights, physics, is_over_d, lambert_offset, rails = fused
        if parts is None:
            attempts = [lambda: kernels.cold_sweep(const, diag, weights, physics, is_over_d, lambert_offset, rails)]
        else:
            omega_t = torch.tensor(omega, dtype=parts[0].dtype, device=parts[0].device)
            args = (parts, const, diag, weights, physics, omega_t, rails)
            attempts = [lambda: kernels.sweep(*args), lambda: kernels.sweep(*args, (is_over_d, lambert_offset))]
        for attempt in attempts:
            new, steps, moves = attempt()
            steps = steps.tolist()
            if all(step * layer.curvature <= 0.05 for step, layer in zip(steps, layers, strict=True)):
                change = 0.0
                for move, layer in zip(moves.tolist(), layers, strict=True):
                    update = move * layer.scale
                    change = update if (update > change or math.isnan(update)) else change
                return new, change
        return parts, None

    def _relaxation(self, history: list[float], omega: float, change: float) -> float:
        """Young's parameter (3) once two successive contractions agree (the linear regime) and
        are slow enough to be worth it; back to 1 if the changes grow under it."""
        if not self.overrelax or len(history) < 3:
            return omega
        r1, r2 = history[-1] / max(history[-2], 1e-300), history[-2] / max(history[-3], 1e-300)
        if omega != 1.0:
            return 1.0 if r1 > 1.0 and r2 > 1.0 else omega
        if change < 1e-2 and 0.25 < min(r1, r2) and max(r1, r2) < 0.98 and abs(r1 - r2) <= 0.25 * max(r1, r2):
            return 2.0 / (1.0 + math.sqrt(1.0 - max(r1, r2)))
        return omega

    def _relax(self, system, layer, x0, b, inner_tol, omega) -> tuple[torch.Tensor, float]:
        """Solve (2) for every node of one layer; the new values and the largest change (V)."""
        tol_u = inner_tol / layer.scale
        x, step, first = self._newton(system, layer, x0, b)
        moved = False
        if step * layer.curvature > 0.05 and layer.lambert:
            # Far from the root (the drive changed a lot): restart from (5), within microvolts of
            # it for nominal diodes, rather than bracketing from where the node was.
            x, step, first = self._newton(system, layer, cold_start(system, layer, b), b)
            moved = True
        # A step this short stays where the diode current changes by a few percent, so the
        # Newton step is a contraction without a bracket: the common case once sweeps are local.
        if step * layer.curvature <= 0.05:
            if layer.curvature * step * step > tol_u:
                x = self._bracketed(system, layer, x, b, tol_u)
            elif omega == 1.0 and not moved:
                return x, step * layer.scale
        else:
            x = self._bracketed(system, layer, x0, b, tol_u, None if moved else first)
        if omega != 1.0:
            x = torch.lerp(x0, x, omega)
        return x, float((x - x0).abs().max()) * layer.scale

    @staticmethod
    def _newton(system, layer, x0, b):
        """One Newton step on (2) from ``x0``: the new values, the largest step (u-space) and the
        diode currents and conductances at ``x0``."""
        f, g = first = system.diodes_of(x0, layer.params)
        delta = torch.addcmul(b - f, layer.d, x0, value=-1.0).div_(layer.d + g)
        return x0 + delta, float(delta.abs().max()), first

    def _bracketed(self, system, layer, x, b, tol_u, first=None):
        """Newton on (2) kept inside the bracket between ``a = b / D`` and the rails, which holds
        the root; a step leaving the bracket (or NaN, from an overflowed diode) is a bisection.

        Between ``m`` and ``a`` the diode current ``f`` and the current ``r = b - D u`` that the
        conductances bring have the same sign, and (2) reads ``log(f / r) = 0``. Newton on that
        form (4) moves by about ``n Vt ln(f / r)``, where Newton on ``h`` moves by only ``n Vt``
        per step on the steep side of an exponential. Both share the root and converge
        quadratically to it; the bracket guards both."""
        d, curvature = layer.d, layer.curvature
        a = b / d
        lo, hi = a.clamp(max=layer.lo), a.clamp(min=layer.hi)
        for k in range(self.max_newton):
            f, g = first if k == 0 and first is not None else system.diodes_of(x, layer.params)
            r = torch.addcmul(b, d, x, value=-1.0)
            h = f - r
            linear = h / (d + g)
            # (4): d/du log(f / r) = f'/f + D/r, both terms of the sign of f. Past the root on the
            # diode's side (f / r > 1) both steps undershoot where the curve is convex, so the
            # longer one is taken; elsewhere plain Newton. NaN (f / r <= 0) is dropped by fmax.
            # Masks are arithmetic here: boolean selects cost ~8 arithmetic operations on CPU.
            log_step = torch.log(torch.abs(f / r)).div_(g / f + d / r).abs_()
            log_step.mul_((f / r > 1).to(x.dtype))
            newton = x - torch.copysign(torch.fmax(linear.abs(), log_step), linear)
            # The root is below x where h(x) > 0 and above it where h(x) < 0: x becomes the upper
            # (lower) end there, and the other end is offered x +/- BIG, which it keeps. (Adding
            # BIG * mask to x never cancels: where the mask is 0 the sum is exactly x.)
            above = (h > 0).to(x.dtype)
            hi = torch.minimum(hi, x + (1.0 - above).mul_(_big(x.dtype)))
            lo = torch.maximum(lo, x - above.mul_(_big(x.dtype)))
            inside = (newton >= lo) & (newton <= hi)
            x_new = torch.where(inside, newton, 0.5 * (lo + hi))
            step = float((x_new - x).abs().max())
            x = x_new
            if bool(inside.all()) and curvature * step * step <= tol_u:
                break
        return x


def _largest(changes: list[float]) -> float:
    """The largest of ``changes``, NaN if any is NaN (so that a non-finite sweep is reported)."""
    return math.nan if any(math.isnan(c) for c in changes) else max(changes)


def _big(dtype: torch.dtype) -> float:
    """Far beyond any node voltage (|v| <= 100 V), and finite in ``dtype`` even when doubled."""
    return 1e30 if dtype == torch.float32 else 1e300


def warm_omega(init: Equilibrium | None) -> float:
    """The over-relaxation a warm start inherits: the final ``omega`` of the layer-wise solve it
    comes from (a nudged phase starts from the free equilibrium of the same block, whose linearised
    sweeps have the same contraction), else 1."""
    omega = None if init is None else init.history.get("omega")
    return float(omega) if isinstance(omega, float) and 1.0 <= omega < 2.0 else 1.0


def _contraction(history: list[float], omega: float) -> float | None:
    """Contraction per sweep measured from the last changes (``None`` until two are known); with
    over-relaxation at least ``omega - 1``, its asymptotic rate."""
    if len(history) < 2 or history[-2] == 0.0:
        return None if len(history) < 2 else 0.0
    q = max(history[-1] / history[-2], omega - 1.0)
    if len(history) >= 3 and history[-3] > 0.0:
        q = max(q, history[-2] / history[-3])
    return min(q, 0.999)
