"""Kirchhoff's current law of a block with non-ideal peripherals (:mod:`analog.peripherals`), in
physical volts, and a dense damped-Newton solver for it.

Crossbar ``l`` has rows (layer ``l``'s nodes, or the input sources for ``l = 0``, then the bias
pair) and columns (the nodes of free layer ``l + 1``). A weight row is driven at its open-circuit
voltage ``e_i`` (the source, the node itself, or the amplifier's ``A (v + offset)``, possibly
swing-limited) through a series conductance ``g_s`` (``1 / driver_ohm`` or ``1 / amp_out_ohm``;
infinite when ideal). The row node carries no other element, so it is eliminated exactly: with
``rho_i = sum_j G_ij`` and ``kappa_i = g_s / (g_s + rho_i)`` (1 when ideal),

    w_i = kappa_i e_i + (1 - kappa_i) (G v)_i / rho_i,      I_i = kappa_i (rho_i e_i - (G v)_i),   (W)

``w_i`` the row node's voltage and ``I_i`` the current the row delivers into the crossbar. Free
layer ``l + 1`` receives ``w G - v colsum(G)`` plus its bias current; the node (or amplifier input)
that drives row ``i`` gives up ``I_i`` (``I_i / A`` through the amplifier's CCCS). Diodes, the
amplifier input resistances and the nudging sources (output resistance, compliance) load the
nodes. The Jacobian of the net currents is assembled from (W) analytically; it is not symmetric
(amplifier gains, swing limits), so each Newton step is a dense LU solve per sample, and the step
is damped by backtracking on the squared KCL residual.

This is also the exact reference for such circuits: the adjoint ``J^T lam = dL/dv`` at the free
equilibrium, and ``dL/dtheta = -lam . dr/dtheta`` by automatic differentiation of the net currents
with respect to the conductances and source voltages (:func:`implicit_gradients`).

Dense per-sample factorisations cost ``O(B N^3)`` for ``N`` free nodes: meant for blocks of a few
hundred free nodes (the input layer's size does not enter).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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

__all__ = ["GeneralSolver", "GeneralSystem", "implicit_gradients", "row_voltages"]

MAX_DENSE_NODES = 4000
"""Largest number of free nodes the dense solver accepts (a 4000 x 4000 LU per sample)."""


class GeneralSystem:
    """Net currents into the free nodes (and their Jacobian) for one circuit and one batch."""

    def __init__(self, circuit: Circuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None):
        spec = circuit.spec
        if spec.user_models is not None and (reason := spec.user_models.fast_refusal()):
            raise SolverError(reason)
        if spec.wire_ohm is not None:
            raise SolverError("the dense peripheral solver has ideal wires; wire_ohm is not supported with it")
        self.circuit, self.spec, self.p = circuit, spec, spec.peripherals
        self.dtype, self.device = circuit.dtype, circuit.device
        self.source_V = source_V.to(dtype=self.dtype, device=self.device)
        self.batch = source_V.shape[0]
        self.sizes = spec.layer_sizes[1:]
        self.depth = spec.depth
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.n_free = self.offsets[-1]
        if self.n_free > MAX_DENSE_NODES:
            raise SolverError(
                f"non-ideal peripherals: the dense solver takes up to {MAX_DENSE_NODES} free nodes, this block "
                f"has {self.n_free}; use solver.name = 'ngspice' or ideal peripherals"
            )
        self.nudge_A = None if nudge_A is None else nudge_A.to(dtype=self.dtype, device=self.device)
        self.bias_V = spec.bias_voltages(self.dtype, self.device)
        gains = spec.gains()
        p = self.p
        self.gain: list[float | None] = [None]  # per crossbar: amplifier gain of its rows (None: not amplified)
        for l in range(1, self.depth):
            self.gain.append(gains[l - 1] if spec.has_amplifier(l) else None)
        # Each amplifier's own offset (mismatch draws), per crossbar whose rows are amplified.
        self.amp_offsets: dict[int, torch.Tensor] | None = None
        if circuit.amp_offset is not None:
            self.amp_offsets, first = {}, 0
            for l in range(1, self.depth):
                if self.gain[l] is not None:
                    n = spec.layer_sizes[l]
                    self.amp_offsets[l] = circuit.amp_offset[first : first + n].to(dtype=self.dtype, device=self.device)
                    first += n
        self.series_S: list[float | None] = []
        for l in range(self.depth):
            ohm = p.driver_ohm if l == 0 else (p.amp_out_ohm if self.gain[l] is not None else None)
            self.series_S.append(None if ohm is None else 1.0 / ohm)

    # --- the crossbars --------------------------------------------------------------------------

    def drive(
        self, l: int, v: tuple[torch.Tensor, ...], drives: dict[int, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Open-circuit voltage ``e`` of crossbar ``l``'s weight rows ``[B, R]`` and ``de/dv`` of the
        node that drives each (``None`` for the input sources). ``drives``: the amplifiers' forward
        outputs as given values (a gain-bandwidth-limited transient's states), per crossbar; they do
        not follow ``v`` (slope 0)."""
        if l == 0:
            return self.source_V, None
        if drives is not None and l in drives:
            return drives[l], torch.zeros_like(drives[l])
        return self.target(l, v[l - 1])

    def target(self, l: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What crossbar ``l``'s row drivers put out for the nodes ``x`` of layer ``l`` that drive
        them, and its slope: the node itself, or the amplifier's forward stage."""
        a = self.gain[l]
        if a is None:
            return x, torch.ones_like(x)
        x = x + self.p.amp_offset_V
        if self.amp_offsets is not None:
            x = x + self.amp_offsets[l]
        if self.p.amp_swing_V is None:
            return a * x, torch.full_like(x, a)
        s = self.p.amp_swing_V
        t = torch.tanh((a / s) * x)
        return s * t, a * (1.0 - t * t)

    def kappa(self, l: int) -> torch.Tensor | None:
        """``kappa_i`` of (W) for crossbar ``l``'s weight rows ``[R]`` (``None``: ideal rows)."""
        g_s = self.series_S[l]
        if g_s is None:
            return None
        return g_s / (g_s + self.circuit.weights[l].sum(1))

    def rows(self, l: int, e: torch.Tensor, column_V: torch.Tensor) -> torch.Tensor:
        """Row node voltages ``w`` of (W), ``[B, R]``."""
        kappa = self.kappa(l)
        if kappa is None:
            return e
        g = self.circuit.weights[l]
        return kappa * e + ((1.0 - kappa) / g.sum(1)) * (column_V @ g.T)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(x[:, self.offsets[l] : self.offsets[l + 1]] for l in range(self.depth))

    # --- net currents -----------------------------------------------------------------------------

    def injected(self, v_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Current the nudging sources themselves inject into the output nodes (their compliance
        included, their output resistance not) and its derivative, ``[B, n_out]``; ``None`` without."""
        p, i = self.p, self.nudge_A
        if i is None:
            return None
        if p.nudge_compliance_V is None:
            return i.expand_as(v_out), torch.zeros_like(v_out)
        c, k = p.nudge_compliance_V, p.nudge_knee_V
        h = torch.sigmoid(torch.where(i > 0, (c - v_out) / k, (v_out + c) / k))
        return i * h, i * torch.where(i > 0, -1.0, 1.0) * h * (1.0 - h) / k

    def nudge(self, v_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Net current the nudging sources (with their output resistance) put into the output
        nodes and its derivative, ``[B, n_out]``; ``None`` when they are ideal and off."""
        injected = self.injected(v_out)
        load = None if self.p.nudge_out_ohm is None else 1.0 / self.p.nudge_out_ohm
        if injected is None and load is None:
            return None
        current, slope = injected if injected is not None else (torch.zeros_like(v_out), torch.zeros_like(v_out))
        if load is not None:
            current, slope = current - load * v_out, slope - load
        return current, slope

    def residual(self, v_flat: torch.Tensor, drives: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Net current into every free node, amperes ``[B, N]`` (0 at the equilibrium)."""
        return torch.cat(self._currents(self.split(v_flat), drives)[0], dim=1)

    def _currents(self, v: tuple[torch.Tensor, ...], drives: dict[int, torch.Tensor] | None = None):
        """``(net current per layer, input source currents, bias source currents per layer)``."""
        circuit = self.circuit
        net = [torch.zeros_like(t) for t in v]
        inputs, biases = None, []
        for l in range(self.depth):
            g, b = circuit.weights[l], circuit.biases[l]
            y = v[l]
            e, _ = self.drive(l, v, drives)
            w = self.rows(l, e, y)
            row_current = w * g.sum(1) - y @ g.T
            net[l] = net[l] + w @ g - y * g.sum(0)
            if b.numel():
                net[l] = net[l] + self.bias_V @ b - y * b.sum(0)
                biases.append(self.bias_V * b.sum(1) - y @ b.T)
            else:
                biases.append(torch.zeros(self.batch, 0, dtype=self.dtype, device=self.device))
            if l == 0:
                inputs = row_current
            else:
                a = self.gain[l]
                net[l - 1] = net[l - 1] - (row_current if a is None else row_current / a)
        for l in range(self.depth):
            f, _ = self._loads(l, v[l])
            net[l] = net[l] - f
        if (nudge := self.nudge(v[-1])) is not None:
            net[-1] = net[-1] + nudge[0]
        return net, inputs, tuple(biases)

    def _loads(self, l: int, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Current leaving each node of free layer ``l + 1`` through its diodes and the amplifier
        input it drives, and its derivative."""
        spec, circuit = self.spec, self.circuit
        nodes = slice(self.offsets[l], self.offsets[l + 1])
        f, g = torch.zeros_like(v), torch.zeros_like(v)
        for rail, sign, row in ((spec.diode_up_V, 1.0, 0), (spec.diode_down_V, -1.0, 1)):
            if rail is None:
                continue
            area = None if circuit.diode_area is None else circuit.diode_area[row, nodes].to(v)
            emission = None if circuit.diode_emission is None else circuit.diode_emission[row, nodes].to(v)
            i, di = spec.diode.current(sign * (v - rail), area, emission)
            f, g = f + sign * i, g + di
        if self.p.amp_in_ohm is not None and l + 1 < self.depth and self.gain[l + 1] is not None:
            f, g = f + v / self.p.amp_in_ohm, g + 1.0 / self.p.amp_in_ohm
        return f, g

    def source_currents(self, v_flat: torch.Tensor):
        """Current delivered by every input source ``[B, n_sources]`` and bias source per layer."""
        _, inputs, biases = self._currents(self.split(v_flat))
        return inputs, biases

    def newton_step(self, v_flat: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Newton step ``-J^{-1} r`` ``[B, N]`` and a per-sample failure flag: Cholesky of ``-J``
        when it is symmetric positive definite (a reciprocal block without amplifiers), else LU."""
        jac = self.jacobian(v_flat)
        if _symmetric(self):
            chol, info = torch.linalg.cholesky_ex(jac.neg_())
            if int(info.max()) == 0:
                return torch.cholesky_solve(r.unsqueeze(2), chol).squeeze(2), info
            jac = self.jacobian(v_flat)  # not definite after all (e.g. far from the solution): LU
        delta, info = torch.linalg.solve_ex(jac, -r.unsqueeze(2))
        return delta.squeeze(2), info

    def amplified(self) -> list[int]:
        """The crossbars whose rows are driven by amplifiers."""
        return [l for l in range(1, self.depth) if self.gain[l] is not None]

    def drive_jacobian(self) -> torch.Tensor:
        """``d(net current)/de`` ``[N, n_e]`` (siemens) for the amplifiers' forward outputs ``e`` as
        independent values, the amplified crossbars' rows concatenated in order (see ``drives``)."""
        circuit, off = self.circuit, self.offsets
        cols_e = sum(self.spec.layer_sizes[l] for l in self.amplified())
        out = torch.zeros(self.n_free, cols_e, dtype=self.dtype, device=self.device)
        first = 0
        for l in self.amplified():
            g = circuit.weights[l]
            n = g.shape[0]
            kappa = self.kappa(l)
            k = torch.ones_like(g[:, 0]) if kappa is None else kappa
            idx = torch.arange(first, first + n, device=self.device)
            out[off[l] : off[l + 1], first : first + n] += (g * k.unsqueeze(1)).T  # columns see w = kappa e + ...
            rows = torch.arange(off[l - 1], off[l], device=self.device)
            out[rows, idx] -= (k * g.sum(1)) / self.gain[l]  # the CCCS gives up I / A
            first += n
        return out

    def jacobian(self, v_flat: torch.Tensor, drives: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """``d(net current)/dv`` ``[B, N, N]`` (siemens), assembled from (W); with ``drives`` the
        amplifiers' outputs are held (their dependence on ``v`` is :meth:`drive_jacobian`'s business)."""
        circuit = self.circuit
        v = self.split(v_flat)
        off = self.offsets
        jac = torch.zeros(self.batch, self.n_free, self.n_free, dtype=self.dtype, device=self.device)
        diag = torch.zeros(self.batch, self.n_free, dtype=self.dtype, device=self.device)
        for l in range(self.depth):
            g, b = circuit.weights[l], circuit.biases[l]
            cols = slice(off[l], off[l + 1])
            diag[:, cols] -= g.sum(0) + b.sum(0)
            kappa = self.kappa(l)
            if kappa is not None:
                rho = g.sum(1)
                jac[:, cols, cols] += (g.T * ((1.0 - kappa) / rho)) @ g
            if l == 0:
                continue
            rows = slice(off[l - 1], off[l])
            _, slope = self.drive(l, v, drives)
            k = torch.ones_like(g[:, 0]) if kappa is None else kappa
            a = self.gain[l]
            m = 1.0 if a is None else 1.0 / a
            jac[:, cols, rows] += g.T.unsqueeze(0) * (k * slope).unsqueeze(1)
            jac[:, rows, cols] += m * (k.unsqueeze(1) * g)
            diag[:, rows] -= m * (k * g.sum(1)) * slope
        for l in range(self.depth):
            _, dg = self._loads(l, v[l])
            diag[:, off[l] : off[l + 1]] -= dg
        if (nudge := self.nudge(v[-1])) is not None:
            diag[:, off[-2] :] += nudge[1]
        jac.diagonal(dim1=1, dim2=2).add_(diag)
        return jac


def _symmetric(system: GeneralSystem) -> bool:
    """Whether the Jacobian is symmetric (negative definite): no amplifier (its gains make the
    physical-voltage Jacobian non-symmetric) and no swing limit."""
    return all(a is None for a in system.gain) and system.p.amp_swing_V is None


def row_voltages(circuit: Circuit, l: int, source_V: torch.Tensor, voltages: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Voltage of crossbar ``l``'s weight-row nodes ``[B, R]`` (what its devices see on the row side)
    for free-layer voltages ``voltages``: (W) of the module docstring."""
    system = GeneralSystem(circuit, source_V)
    e, _ = system.drive(l, voltages)
    return system.rows(l, e, voltages[l])


@dataclass
class GeneralSolver(EquilibriumSolver):
    """Damped Newton on the net currents of :class:`GeneralSystem`, dense LU per sample (torch).

    Unless warm-started it starts from ``start``'s equilibrium of the same block with ideal
    peripherals (the fast layered solver passes itself), or from 0 V without ``start``.
    """

    tol_V: float | None = None
    """Stop when every Newton step is below this many volts (1e-12 V in float64, 1e-5 V in float32)."""
    max_iterations: int = 100
    max_backtracks: int = 40
    max_step_V: float = 0.5
    """Largest change of any node voltage in one step, volts (as SPICE limits junction steps)."""
    name: str = "fast"
    start: EquilibriumSolver | None = None

    def __post_init__(self) -> None:
        check_tol_V(self.tol_V)

    def solve(self, circuit, source_V, nudge_A=None, init=None) -> Equilibrium:
        source_V, nudge_A = check_batch(circuit, source_V, nudge_A)
        system = GeneralSystem(circuit, source_V, nudge_A)
        tol = tolerance_V(self.tol_V, system.dtype)
        if init is not None:
            v = torch.cat([t.to(system.dtype) for t in init.voltages], dim=1)
        elif self.start is None:
            v = torch.zeros(system.batch, system.n_free, dtype=system.dtype, device=system.device)
        else:
            ideal = Circuit(
                replace(circuit.spec, peripherals=type(circuit.spec.peripherals)()),
                circuit.weights,
                circuit.biases,
                circuit.check_range,
                circuit.diode_area,
                circuit.diode_emission,
            )
            v = torch.cat(self.start.solve(ideal, source_V, nudge_A).voltages, dim=1).to(system.dtype)
        v = v.detach().clone()
        r = system.residual(v)
        merit = r.square().sum(1)
        step = torch.full((system.batch,), float("inf"), dtype=system.dtype, device=system.device)
        status = SolverStatus.MAX_ITERATIONS
        iterations = 0
        for iterations in range(1, self.max_iterations + 1):
            delta, info = system.newton_step(v, r)
            if int(info.max()) > 0 or not bool(torch.isfinite(delta).all()):
                status = SolverStatus.NONFINITE
                break
            size = delta.abs().amax(1)
            alpha = torch.clamp(self.max_step_V / size.clamp(min=1e-300), max=1.0)
            taken = torch.zeros_like(alpha)
            pending = torch.ones_like(alpha, dtype=torch.bool)
            for _ in range(self.max_backtracks):
                v_try = v + alpha.unsqueeze(1) * delta
                r_try = system.residual(v_try)
                m_try = r_try.square().sum(1)
                # A step at rounding level is taken as it is.
                ok = torch.isfinite(m_try) & ((m_try <= (1.0 - 1e-4 * alpha) * merit) | (size <= tol))
                accept = pending & ok
                mask = accept.unsqueeze(1)
                v, r = torch.where(mask, v_try, v), torch.where(mask, r_try, r)
                merit = torch.where(accept, m_try, merit)
                taken = torch.where(accept, alpha, taken)
                pending = pending & ~accept
                if not bool(pending.any()):
                    break
                alpha = torch.where(pending, 0.5 * alpha, alpha)
            step = torch.where(taken == 1.0, size, torch.full_like(size, float("inf")))
            if bool((step <= tol).all()):
                status = SolverStatus.CONVERGED
                break
        if status is not SolverStatus.CONVERGED:
            bad = (~(step <= tol)).nonzero().flatten().tolist()
            raise SolverError(
                f"fast solver (non-ideal peripherals): {status.value} after {iterations} iterations in samples "
                f"{bad[:10]} (largest step {float(step.max()):.3e} V, tol {tol:.1e} V); {status.hint}"
            )
        final = v
        return Equilibrium(
            voltages=system.split(v),
            iterations=iterations,
            residual_A=r.abs().amax(1),
            status=status,
            solver=self.name,
            source_currents=lambda: system.source_currents(final),
        )


def implicit_gradients(circuit: Circuit, source_V: torch.Tensor, free: Equilibrium, grad_output: torch.Tensor):
    """The exact ``(dL/dsource_V, dL/dweights, dL/dbiases)`` for ``dL/dv_out = grad_output`` at the free
    equilibrium ``free``, by the adjoint of the (non-symmetric) Jacobian of :class:`GeneralSystem`."""
    circuit = circuit.detach()
    source_V = source_V.detach().to(circuit.dtype)
    v = torch.cat([t.detach().to(circuit.dtype) for t in free.voltages], dim=1)
    system = GeneralSystem(circuit, source_V)
    jac = system.jacobian(v)
    rhs = torch.zeros_like(v)
    rhs[:, system.n_free - circuit.spec.n_outputs :] = grad_output.to(v)
    lam = torch.linalg.solve(jac.transpose(1, 2), rhs.unsqueeze(2)).squeeze(2)
    with torch.enable_grad():
        weights = [w.detach().clone().requires_grad_(True) for w in circuit.weights]
        biases = [b.detach().clone().requires_grad_(True) for b in circuit.biases]
        src = source_V.clone().requires_grad_(True)
        live = Circuit(
            circuit.spec, weights, biases, False, circuit.diode_area, circuit.diode_emission, circuit.amp_offset
        )
        r = GeneralSystem(live, src).residual(v)
        params = [src, *weights, *[b for b in biases if b.numel()]]
        grads = torch.autograd.grad((lam * r).sum(), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else -g for p, g in zip(params, grads, strict=True)]
    grad_source, grad_weights = grads[0], tuple(grads[1 : 1 + len(weights)])
    rest = iter(grads[1 + len(weights) :])
    grad_biases = tuple(next(rest) if b.numel() else torch.zeros_like(b) for b in biases)
    return grad_source, grad_weights, grad_biases
