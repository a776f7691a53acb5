"""Fast batched in-process solver: damped Newton on the rescaled co-content, layered linear algebra.

Each iteration solves ``H delta = r`` with ``H`` the symmetric positive-definite Hessian of the
co-content (:mod:`analog.solvers.physics`). Free nodes of one layer are not connected to each
other, so ``H`` is block tridiagonal with *diagonal* diagonal blocks. Block elimination from the
first free layer (usually the widest) keeps that layer diagonal and leaves dense Schur complements
only for the later layers: the cost per iteration is a few products with the crossbars plus a
Cholesky factorisation of ``n_l x n_l`` per sample for ``l >= 2``.

The step is damped by a per-sample backtracking line search on the co-content (Armijo), so the
co-content never increases; near the solution Newton converges quadratically to rounding error.
"""

from __future__ import annotations

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
from analog.solvers.general import GeneralSolver
from analog.solvers.physics import LayeredSystem

__all__ = ["BlockTridiagonal", "FastSolver", "adjoint"]


class BlockTridiagonal:
    """Factorisation of ``H = blocktridiag(-W_{l-1}^T, diag(d_l), -W_l)`` for a batch.

    ``d``: ``[B, N]`` diagonal (flat over free layers). Solves ``H x = b`` for ``b`` ``[B, N]``.
    """

    def __init__(self, system: LayeredSystem, d: torch.Tensor):
        self.system = system
        depth = system.depth
        batch = d.shape[0]
        # With wired crossbars every layer's own block is dense (system.offdiag), the first too.
        dense = system.offdiag
        self.diagonal_first = dense is None
        if self.diagonal_first:
            self.inv_first = 1.0 / system.layer(d, 1)
        self.chol: dict[int, torch.Tensor] = {}
        # z[l] = S_l^{-1} W_l for the dense layers, to carry the elimination to layer l+1.
        self.z: dict[int, torch.Tensor] = {}
        for l in range(1 if dense is not None else 2, depth + 1):
            schur = torch.diag_embed(system.layer(d, l))
            if dense is not None:
                schur = schur + dense[l - 1]
            if l == 2 and self.diagonal_first:
                # W_1^T diag(1/d_1) W_1 per sample, as one product with the rows' outer products
                # when they fit in memory (no [B, n1, n2] temporary).
                w_in = system.weights[1]
                outer = system.first_outer_products()
                if outer is not None:
                    coupling = (self.inv_first @ outer).view(batch, w_in.shape[1], w_in.shape[1])
                else:
                    coupling = w_in.T @ (self.inv_first.unsqueeze(2) * w_in)
                schur = schur - coupling
            elif l >= 2:
                schur = schur - system.weights[l - 1].T @ self.z[l - 1]
            chol, info = torch.linalg.cholesky_ex(schur)
            if int(info.max()) > 0:
                raise SolverError(
                    f"layer {l}: the KCL Jacobian is not positive definite in samples "
                    f"{info.nonzero().flatten().tolist()[:10]}; check for NaN/zero conductances"
                )
            self.chol[l] = chol
            if l < depth:
                w = system.weights[l]
                self.z[l] = torch.cholesky_solve(w.expand(batch, -1, -1), chol)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        system = self.system
        depth = system.depth
        y = [system.layer(b, 1)]
        for l in range(2, depth + 1):
            # y_l = b_l + W_{l-1}^T S_{l-1}^{-1} y_{l-1}
            if l == 2 and self.diagonal_first:
                carried = (self.inv_first * y[-1]) @ system.weights[1]
            else:
                carried = (y[-1].unsqueeze(1) @ self.z[l - 1]).squeeze(1)
            y.append(system.layer(b, l) + carried)
        x = [None] * depth
        x[-1] = self._apply_inverse(depth, y[-1])
        for l in range(depth - 1, 0, -1):
            rhs = y[l - 1] + x[l] @ system.weights[l].T
            x[l - 1] = self._apply_inverse(l, rhs)
        return torch.cat(x, dim=1)

    def _apply_inverse(self, l: int, v: torch.Tensor) -> torch.Tensor:
        if l == 1 and self.diagonal_first:
            return self.inv_first * v
        return torch.cholesky_solve(v.unsqueeze(2), self.chol[l]).squeeze(2)


def initial_guess(system: LayeredSystem) -> torch.Tensor:
    """A forward sweep that ignores downstream loading and puts each node where its diode alone
    would carry the current the linear network pushes past the rail.

    Starting Newton at u = 0 puts the diodes where they conduct nothing, so the first step jumps
    far past their knees and the line search then crawls back; starting near each diode's own
    operating point saves most of those damped iterations.
    """
    spec = system.spec
    diode = spec.diode
    u = torch.zeros(system.batch, system.n_free, dtype=system.dtype, device=system.device)
    upstream = None
    for l in range(1, system.depth + 1):
        current = system.layer(system.const, l)
        if upstream is not None:
            current = current + upstream @ system.weights[l - 1]
        s = system.layer_scales[l - 1]
        diag = system.layer(system.diag.unsqueeze(0), l)
        v = current / diag * s  # every diode off
        # Where that passes a rail, the diode takes the excess current I = s (c - D v_rail / s):
        # put the node where the diode alone would carry it (never past the all-off value).
        if spec.diode_up_V is not None:
            excess = (s * current - diag * spec.diode_up_V).clamp(min=0.0)
            on = spec.diode_up_V + diode.vte_V * torch.log1p(excess / diode.saturation_current())
            v = torch.minimum(v, on)
        if spec.diode_down_V is not None:
            excess = (diag * spec.diode_down_V - s * current).clamp(min=0.0)
            on = spec.diode_down_V - diode.vte_V * torch.log1p(excess / diode.saturation_current())
            v = torch.maximum(v, on)
        if diode.bv_V is not None:
            v = _breakdown_guess(spec, v, s * current, diag)
        system.layer(u, l).copy_(v / s)
        upstream = system.layer(u, l)
    return u


def _breakdown_guess(spec, v: torch.Tensor, drive: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """:func:`initial_guess` for nodes driven ``xbv`` past a rail the wrong way: the reverse-biased
    diode takes the excess, ``v = V_up - xbv - NBV Vt ln(1 + I / Is)`` (likewise above the down rail)."""
    diode = spec.diode
    xbv, vbk, i_s = diode.breakdown_voltage(), diode.vte_brk_V, diode.saturation_current()
    if spec.diode_up_V is not None:
        knee = spec.diode_up_V - xbv
        excess = (diag * knee - drive).clamp(min=0.0)
        v = torch.maximum(v, knee - vbk * torch.log1p(excess / i_s))
    if spec.diode_down_V is not None:
        knee = spec.diode_down_V + xbv
        excess = (drive - diag * knee).clamp(min=0.0)
        v = torch.minimum(v, knee + vbk * torch.log1p(excess / i_s))
    return v


@dataclass
class FastSolver(EquilibriumSolver):
    """Batched damped-Newton solver (torch; float64 or float32, CPU or CUDA).

    Exact for ngspice's level-1 diode (no ideal-diode approximation). A block with non-ideal
    peripherals (:mod:`analog.peripherals`) is passed to :class:`~analog.solvers.general.GeneralSolver`.
    """

    tol_V: float | None = None
    """Stop when every Newton step is below this many volts (default 1e-12 V in float64, 1e-5 V
    in float32); one more full step is then taken, which Newton's quadratic convergence makes exact
    to rounding error."""
    max_iterations: int = 100
    max_backtracks: int = 60
    record_history: bool = False
    """Record the co-content and the KCL residual at every iteration in ``Equilibrium.history``."""
    name: str = "fast"

    def __post_init__(self) -> None:
        check_tol_V(self.tol_V)
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations: must be >= 1, got {self.max_iterations!r}")

    def solve(
        self,
        circuit: Circuit,
        source_V: torch.Tensor,
        nudge_A: torch.Tensor | None = None,
        init: Equilibrium | None = None,
    ) -> Equilibrium:
        if not circuit.ideal_peripherals:
            # Non-ideal drivers/amplifiers/nudging sources: the dense solver, started from this one's
            # equilibrium of the ideal-peripheral block.
            general = GeneralSolver(tol_V=self.tol_V, max_iterations=self.max_iterations, name=self.name, start=self)
            return general.solve(circuit, source_V, nudge_A, init)
        source_V, nudge_A = check_batch(circuit, source_V, nudge_A)
        system = LayeredSystem(circuit, source_V, nudge_A)
        tol = tolerance_V(self.tol_V, system.dtype)
        if init is not None:
            if init.batch_size != system.batch:
                raise ValueError(f"init: warm start has batch {init.batch_size}, the sources have {system.batch}")
            u = system.from_voltages(init.voltages).to(system.dtype)
        else:
            u = initial_guess(system)
        return self._newton(system, u, tol)

    def _newton(self, system: LayeredSystem, u: torch.Tensor, tol: float) -> Equilibrium:
        f, g = system.diodes(u)
        r = system.residual(u, f)
        energy = None
        history: dict[str, list] = {"cocontent": [], "residual_A": []}
        status = SolverStatus.MAX_ITERATIONS
        iterations = 0
        step = torch.full((system.batch,), float("inf"), dtype=system.dtype, device=system.device)
        for iterations in range(1, self.max_iterations + 1):
            if self.record_history:
                energy = system.cocontent(u, r, f) if energy is None else energy
                history["cocontent"].append(energy.tolist())
                history["residual_A"].append(system.physical_residual(r).tolist())
            delta = BlockTridiagonal(system, system.diag + g).solve(r)
            step = (delta if system.unit_scale else delta * system.scale).abs().amax(1)
            u_try = u + delta
            f_try, g_try = system.diodes(u_try)
            r_try = system.residual(u_try, f_try)
            # phi(a) = E(u + a delta) is convex, so phi(1) <= phi(0) + phi'(1): a full step that does
            # not overshoot the line minimum (phi'(1) <= 0) decreases E without evaluating it.
            # Steps below the tolerance are at rounding level and are taken as they are.
            dphi = (r_try * delta).sum(1)  # -phi'(1); NaN/inf when r_try is
            ok = (dphi >= 0) | (step <= tol)
            if bool((ok & torch.isfinite(dphi)).all()):
                u, f, g, r = u_try, f_try, g_try, r_try
                energy = None
            else:
                trial = (u_try, f_try, g_try, r_try)
                u, f, g, r, energy, step = self._backtrack(system, u, f, g, r, delta, ok, step, trial)
            if not bool(torch.isfinite(step).all()) and not bool(torch.isfinite(u.sum())):
                status = SolverStatus.NONFINITE
                break
            if bool((step <= tol).all()):
                status = SolverStatus.CONVERGED
                break
        if self.record_history:
            energy = system.cocontent(u, r, f) if energy is None else energy
            history["cocontent"].append(energy.tolist())
            history["residual_A"].append(system.physical_residual(r).tolist())
        residual = system.physical_residual(r)
        if status is not SolverStatus.CONVERGED:
            bad = (~(step <= tol)).nonzero().flatten().tolist()
            raise SolverError(
                f"fast solver: {status.value} after {iterations} iterations in samples {bad[:10]} "
                f"(largest step {float(step.max()):.3e} V, tol {tol:.1e} V); {status.hint}"
            )
        u_final = u
        return Equilibrium(
            voltages=system.to_voltages(u),
            iterations=iterations,
            residual_A=residual,
            status=status,
            solver=self.name,
            source_currents=lambda: system.source_currents(u_final),
            history=history if self.record_history else {},
        )

    def _backtrack(self, system, u, f, g, r, delta, full_ok, step, trial):
        """Armijo backtracking on the co-content for the samples whose full step overshot."""
        energy = system.cocontent(u, r, f)
        slope = -(r * delta).sum(1)
        eps = torch.finfo(system.dtype).eps
        # Rounding floor of E: changes smaller than this are not decreases or increases.
        slack = 64 * eps * ((u * system.const).abs().sum(1) + energy.abs())
        alpha = torch.ones_like(energy)
        pending = torch.ones_like(full_ok)
        taken = torch.zeros_like(energy)
        for attempt in range(self.max_backtracks):
            if attempt == 0:
                u_try, f_try, g_try, r_try = trial  # the full step, already evaluated
            else:
                u_try = u + alpha.unsqueeze(1) * delta
                f_try, g_try = system.diodes(u_try)
                r_try = system.residual(u_try, f_try)
            e_try = system.cocontent(u_try, r_try, f_try)
            ok = torch.isfinite(e_try) & (e_try <= energy + 1e-4 * alpha * slope + slack)
            ok = ok | (full_ok & (alpha == 1) & torch.isfinite(e_try))
            accept = pending & ok
            mask = accept.unsqueeze(1)
            u = torch.where(mask, u_try, u)
            f = torch.where(mask, f_try, f)
            g = torch.where(mask, g_try, g)
            r = torch.where(mask, r_try, r)
            energy = torch.where(accept, e_try, energy)
            taken = torch.where(accept, alpha, taken)
            pending = pending & ~accept
            if not bool(pending.any()):
                break
            alpha = torch.where(pending, 0.5 * alpha, alpha)
        # A damped step is not a converged one, whatever its size.
        step = torch.where(taken == 1, step, torch.full_like(step, float("inf")))
        return u, f, g, r, energy, step


def adjoint(circuit: Circuit, source_V: torch.Tensor, equilibrium: Equilibrium, rhs: torch.Tensor):
    """Solve ``H lam = rhs`` with ``H`` the Hessian of the rescaled co-content at ``equilibrium``.

    ``rhs``: ``[B, N]`` in u-space (flat over free layers). Returns ``(lam, system)`` so that the
    caller can map u-space quantities back. This is the adjoint system of implicit
    differentiation: ``H`` is symmetric, so the same factorisation serves forward and adjoint.
    """
    system = LayeredSystem(circuit, source_V)
    u = system.from_voltages(equilibrium.voltages)
    _, g = system.diodes(u)
    return BlockTridiagonal(system, system.diag + g).solve(rhs), system
