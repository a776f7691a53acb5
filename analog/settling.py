"""Settling of an analog block: the RC transient of each phase, integrated in torch (TR-BDF2).

Capacitance model (:class:`Capacitances`, farads). Every free node ``j`` of layer ``l`` has one
linear capacitance to ground

    C_j = node_F + crosspoint_F * (devices on node j's line) + diode_F * (diodes at node j)      (C)

where the devices on the line are the crossbar conductances from layer ``l-1``, the bias
conductances and, unless an amplifier buffers it, the crossbar to layer ``l+1``. Lines driven by
an ideal source (input sources, amplifier outputs) charge from that source and do not slow any
free node; the input lines' charging energy ``C_line V^2`` is reported separately
(:meth:`Capacitances.input_line_F`). Diode junction capacitances are linear and placed to
ground: the rails are DC sources, so the dynamics are those of a capacitance to the rail.

Junction charge. When the block's diode card sets ``CJO`` or ``TT``, its diodes carry ngspice's
nonlinear depletion and diffusion charge ``q(u)`` (:mod:`analog.diode_charge`) *instead of*
``diode_F`` (which (C) then leaves out, in both transients). Each junction is charged from its node
through the card's ``RS`` (without ``RS`` its charge is the node's): the integrator below runs in
charge form for the junctions, each stage solving every junction's charge balance for the node
voltages it is given (:func:`~analog.diode_charge.stage_current`), so that Newton's Jacobian is
``M / (d h) + H`` with each diode's ``dI/dvd`` in ``H`` the stage's ``G / (1 + RS G)``,
``G = dI_d/du + C(u) / (d h)``. The junctions start at their DC state for the initial node
voltages. The error estimate takes each node's ``dQ/dt`` (node and, without ``RS``, junction
charge) and, behind ``RS``, each junction's own.

Dynamics. With ``M = diag(C)`` and ``r(u)`` the KCL residual of :mod:`analog.solvers.physics`
(net resistive current into each node over its amplifier scale ``s``), the rescaled voltages
obey ``M du/dt = r(u)`` (``C s du/dt = s r``). The fast integrator is TR-BDF2 (Bank et al. 1985;
Hosea & Shampine 1996, "Analysis and implementation of TR-BDF2"), L-stable and second order:

    stage 1 (trapezoid to t + gamma h):  M (z - y_n) / (d h)   = r(z) + r(y_n)                     (TR)
    stage 2 (BDF2 to t + h):             M (y - a) / (d h)     = r(y),
                                         a = (z - (1 - gamma)^2 y_n) / (gamma (2 - gamma))          (BDF2)

with ``gamma = 2 - sqrt(2)``, ``d = gamma / 2``. Each stage is a DC problem of the same layered
network with an extra conductance ``C / (d h)`` per node (diagonal), so Newton reuses
:class:`~analog.solvers.newton.BlockTridiagonal` for ``(M / (d h) + H)``. The local error is
estimated from the three slopes of the step (a second divided difference for ``y'''``) and
filtered through ``(M + d h H)^{-1}`` as in Hosea & Shampine:

    err = (2 c / d) (M / (d h) + H)^{-1} [ (r(y) - r(z)) / (1 - gamma) - (r(z) - r(y_n)) / gamma ],
    c = (-3 gamma^2 + 4 gamma - 2) / (12 (2 - gamma))                                            (LTE)

Steps adapt to ``|err| <= atol + rtol |v|``; the step sequence is shared by the batch.

ngspice runs the same circuit as a reference (:class:`analog.ngspice.NgspiceTransient`): one
capacitor per free node (``CN_L{l}_N{j}``, :func:`analog.netlist.build_transient`), initial
condition from the previous phase, trapezoidal integration and tight tolerances; a card's junction
charge is ngspice's own (the card is in the deck).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import torch

from analog.circuit import Circuit
from analog.diode_charge import card_charge
from analog.energy import static_power
from analog.settling_charge import Junctions, with_junctions
from analog.solvers.base import SolverError
from analog.solvers.newton import BlockTridiagonal
from analog.solvers.physics import LayeredSystem
from analog.trbdf2 import GAMMA, LTE, D

__all__ = ["Capacitances", "Transient", "TransientOptions", "simulate_phase"]

_GAMMA, _D, _LTE = GAMMA, D, LTE


@dataclass(frozen=True)
class Capacitances:
    """Parasitic and node capacitances of one analog block, farads (see (C))."""

    node_F: float = 10e-15
    """Capacitance of every free node to ground (neuron input, wiring), F."""
    crosspoint_F: float = 0.5e-15
    """Capacitance each crossbar or bias device adds to the line of a free node, F."""
    diode_F: float = 1e-15
    """Junction capacitance of each diode (linear), F; not used for the diodes of a card that sets
    ``CJO`` or ``TT``, whose own charge replaces it (:func:`analog.diode_charge.card_charge`)."""

    def __post_init__(self) -> None:
        for name in ("node_F", "crosspoint_F", "diode_F"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value < 1e-3):
                raise ValueError(f"{name}: must be a capacitance in [0, 1e-3) F, got {value!r}")
        if self.node_F + self.crosspoint_F + self.diode_F <= 0:
            raise ValueError("node_F: every free node needs a capacitance > 0 F to have dynamics")

    def nodes_F(self, circuit: Circuit) -> torch.Tensor:
        """(C) for every free node, flat over layers ``1..L``: ``[N]`` farads."""
        spec = circuit.spec
        sizes = spec.nodes_per_layer()
        diodes = (spec.diode_up_V is not None) + (spec.diode_down_V is not None)
        if card_charge(spec) is not None:
            diodes = 0  # the card's charge (analog.diode_charge) replaces diode_F
        out = []
        rows = [r for r, _ in spec.weight_shapes()]  # a dual-rail column line crosses both rails
        for l in range(1, spec.depth + 1):
            devices = rows[l - 1] + spec.n_bias
            # The node's own row line (a - rail's is the inverting stage's output, not the node).
            if l < spec.depth and not spec.has_amplifier(l):
                devices += sizes[l + 1]
            c = self.node_F + self.crosspoint_F * devices + self.diode_F * diodes
            out.append(torch.full((sizes[l],), c, dtype=circuit.dtype, device=circuit.device))
        return torch.cat(out)

    def input_line_F(self, circuit: Circuit) -> float:
        """Capacitance of the line each input source drives (its crossbar row), F."""
        return self.crosspoint_F * circuit.spec.layer_sizes[1]


@dataclass(frozen=True)
class TransientOptions:
    """Accuracy and extent of a transient simulation."""

    settle_tol: float = 1e-3
    """A sample has settled once every node is within ``settle_tol`` times the phase's largest node
    voltage change of its final value (dimensionless, in (0, 1))."""
    rtol: float = 1e-7
    """Relative local error per step of the fast integrator."""
    atol_V: float = 1e-9
    """Absolute local error per step, volts (tightened automatically to 1 % of the smallest
    settling tolerance, so that tiny nudged responses are resolved)."""
    t_max_s: float = 1e-3
    """Longest simulated time per phase, seconds (a phase not settled by then raises)."""
    max_steps: int = 200_000
    newton_iterations: int = 25
    """Newton iterations per stage before the step is rejected and halved."""

    def __post_init__(self) -> None:
        if not 0 < self.settle_tol < 1:
            raise ValueError(f"settle_tol: must be in (0, 1), got {self.settle_tol!r}")
        for name in ("rtol", "atol_V"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}: must be in (0, 1), got {getattr(self, name)!r}")
        if not 0 < self.t_max_s <= 1e3:
            raise ValueError(f"t_max_s: must be in (0, 1000] s, got {self.t_max_s!r}")
        if self.max_steps < 10 or self.newton_iterations < 2:
            raise ValueError("max_steps must be >= 10 and newton_iterations >= 2")


@dataclass
class Transient:
    """One phase's waveforms for a batch, on the integrator's (shared) time grid."""

    times_s: torch.Tensor
    """``[T]`` seconds, ``times_s[0] = 0``."""
    voltages: torch.Tensor
    """Physical free-node voltages ``[T, B, N]`` (flat over layers 1..L), volts."""
    final: torch.Tensor
    """The phase's equilibrium ``[B, N]`` the waveforms settle to, volts."""
    settle_time_s: torch.Tensor
    """``[B]``: last time any node is farther than the settling tolerance from ``final``."""
    delivered_W: torch.Tensor
    """Power delivered by all sources at every time point, ``[T, B]``."""
    dissipated_W: torch.Tensor
    """Power dissipated by all resistive elements, ``[T, B]``."""
    stored_J: torch.Tensor
    """Energy in the node capacitances, ``[T, B]``."""
    supply_J: torch.Tensor
    """Energy the sources deliver over ``[0, settle_time]``, ``[B]``."""
    dissipated_J: torch.Tensor
    """Energy dissipated over ``[0, settle_time]``, ``[B]``."""
    charge_J: torch.Tensor
    """Change of the stored capacitive energy over ``[0, settle_time]``, ``[B]``."""
    steps: int = 0
    rejected: int = 0
    newton_iterations: int = 0
    stats: dict = field(default_factory=dict)


def _shifted(system: LayeredSystem, diag_add: torch.Tensor, const_add: torch.Tensor) -> LayeredSystem:
    """The stage's DC problem: ``system`` with an extra conductance per node to a fixed potential."""
    stage = copy.copy(system)
    stage.diag = system.diag + diag_add
    stage.const = system.const + const_add
    return stage


def _newton(stage: LayeredSystem, u: torch.Tensor, tol_V: float, iterations: int, currents, limit_V: float = 0.5):
    """Solve the stage's KCL by Newton with each step limited to ``limit_V`` (SPICE-style);
    ``currents(u)``: the diode current leaving each node and its conductance (``stage.diodes``, or
    the diodes with their charge in the stage, :class:`~analog.settling_charge.Junctions`).

    Returns ``(u, converged, iterations, factorisation near u)``."""
    scale = stage.scale
    factor = None
    for it in range(1, iterations + 1):
        f, g = currents(u)
        r = stage.residual(u, f)
        factor = BlockTridiagonal(stage, stage.diag + g)
        delta = factor.solve(r)
        step = (delta * scale).abs().amax(1)
        if not bool(torch.isfinite(step).all()):
            return u, False, it, factor
        damp = (limit_V / step.clamp(min=limit_V)).unsqueeze(1)
        u = u + delta * damp
        if bool((step <= tol_V).all()):
            return u, True, it, factor
    return u, False, iterations, factor


def _settle_times(times: torch.Tensor, error: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """Last crossing of ``tol`` ``[B]`` by ``error`` ``[T, B]``, log-linear between samples
    (exact for an exponential decay)."""
    above = error > tol
    out = torch.zeros(error.shape[1], dtype=times.dtype)
    for b in range(error.shape[1]):
        idx = above[:, b].nonzero().flatten()
        if idx.numel() == 0:
            continue
        k = int(idx[-1])
        if k + 1 >= len(times):
            out[b] = float("inf")
            continue
        e0, e1 = float(error[k, b]), float(error[k + 1, b])
        t0, t1 = float(times[k]), float(times[k + 1])
        tb = float(tol[b])
        if e1 > 0 and e0 > 0 and e0 != e1:
            w = (math.log(e0) - math.log(tb)) / (math.log(e0) - math.log(e1))
        else:
            w = (e0 - tb) / (e0 - e1) if e0 != e1 else 1.0
        out[b] = t0 + min(max(w, 0.0), 1.0) * (t1 - t0)
    return out


def _at_times(times: torch.Tensor, values: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``values`` ``[T, B]`` at per-sample times ``at`` ``[B]``."""
    k = torch.searchsorted(times, at.clamp(max=float(times[-1]))).clamp(1, len(times) - 1)
    t0, t1 = times[k - 1], times[k]
    w = ((at - t0) / (t1 - t0)).clamp(0, 1)
    cols = torch.arange(values.shape[1])
    return values[k - 1, cols] * (1 - w) + values[k, cols] * w


@contextlib.contextmanager
def _threads(count: int):
    """Run torch ops on ``count`` threads: the integrator's many tiny factorisations spend ~100x
    longer in thread hand-offs than in arithmetic when the cores are shared (measured here:
    0.06 ms on one thread vs 16 ms on two for a 128-16-10 block)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def simulate_phase(
    circuit: Circuit,
    capacitances: Capacitances,
    source_V: torch.Tensor,
    start: torch.Tensor,
    final: torch.Tensor,
    nudge_A: torch.Tensor | None = None,
    options: TransientOptions | None = None,
    t_eval: torch.Tensor | None = None,
) -> Transient:
    """Integrate one phase from ``start`` until every sample has settled onto ``final``.

    ``source_V``: ``[B, n_sources]`` V held constant; ``nudge_A``: ``[B, n_out]`` A or ``None``;
    ``start`` / ``final``: physical free-node voltages ``[B, N]`` (flat) at ``t = 0`` and at
    equilibrium (the phase's DC solution, e.g. from the fast solver). With ``t_eval`` (seconds,
    increasing) the integrator lands on each of those times and stops at the last one.
    """
    sizes = circuit.spec.layer_sizes[1:]
    work = start.shape[0] * sum(n * n for n in sizes[1:]) + sum(sizes)
    with torch.no_grad(), _threads(1 if work < 200_000 else torch.get_num_threads()):
        return _simulate(circuit, capacitances, source_V, start, final, nudge_A, options, t_eval)


def _simulate(circuit, capacitances, source_V, start, final, nudge_A, options, t_eval) -> Transient:
    options = options or TransientOptions()
    circuit = circuit.detach().to(torch.float64)
    system = LayeredSystem(circuit, source_V.detach().to(torch.float64), None if nudge_A is None else nudge_A)
    scale = system.scale
    m = capacitances.nodes_F(circuit)
    charge = card_charge(circuit.spec)
    junctions = None if charge is None else Junctions(system, charge)
    if junctions is not None and not bool((m > 0).all()):
        raise SolverError(
            "energy.node_F: diode model cards that store charge replace energy.diode_F, so every free node "
            "needs node_F + crosspoint_F > 0 F of its own (the nodes without it have no dynamics)"
        )
    v0 = start.detach().to(torch.float64)
    final = final.detach().to(torch.float64)
    reference = (final - v0).abs().amax(1)
    tol = options.settle_tol * reference
    positive = tol[tol > 0]
    atol = options.atol_V if positive.numel() == 0 else min(options.atol_V, 0.01 * float(positive.min()))
    atol = max(atol, 1e-15)
    newton_tol = max(1e-3 * atol, 1e-15)
    stop = torch.maximum(0.05 * tol, torch.full_like(tol, 20 * atol))

    u = v0 / scale
    if junctions is None:
        f_n = system.residual(u, system.diodes(u)[0])
        state_n = None
    else:
        state_n, f_n = junctions.at_rest(u, m)
    tau = float((m / system.diag).min())
    h = 1e-3 * tau
    t = 0.0
    eval_points = None if t_eval is None else [float(x) for x in t_eval if float(x) > 0]
    times, states, junction_states = [0.0], [v0], [state_n]
    steps = rejected = newton_total = 0
    while True:
        if eval_points is not None:
            if not eval_points:
                break
            h = min(h, eval_points[0] - t)
        else:
            error = (u * scale - final).abs().amax(1)
            if bool((error <= stop).all()):
                break
        if t >= options.t_max_s or steps + rejected >= options.max_steps:
            raise SolverError(
                f"transient: not settled after {t:.3e} s and {steps} steps (largest distance to the "
                f"equilibrium {float((u * scale - final).abs().max()):.3e} V); raise t_max_s / max_steps "
                "or check that the capacitances are > 0"
            )
        dh = _D * h
        # (TR) and (BDF2) in charge form for the junctions: q(z) - q_n = d h (dq/dt(z) + dq/dt_n),
        # q(y) - (q(z) - (1 - gamma)^2 q_n) / (gamma (2 - gamma)) = d h dq/dt(y).
        stage1 = _shifted(system, m / dh, m * u / dh + f_n)
        currents = (
            system.diodes
            if junctions is None
            else junctions.stage(state_n.charge + dh * state_n.charging, dh, state_n.voltage)
        )
        z, ok, it1, _ = _newton(stage1, u, newton_tol, options.newton_iterations, currents)
        if ok:
            f_z = system.residual(z, currents(z)[0])
            if junctions is not None:
                ok, state_z = currents.ok, currents.last
        if ok:
            a = (z - (1.0 - _GAMMA) ** 2 * u) / (_GAMMA * (2.0 - _GAMMA))
            stage2 = _shifted(system, m / dh, m * a / dh)
            if junctions is not None:
                history = (state_z.charge - (1.0 - _GAMMA) ** 2 * state_n.charge) / (_GAMMA * (2.0 - _GAMMA))
                currents = junctions.stage(history, dh, state_z.voltage)
            y, ok, it2, factor = _newton(stage2, u + (z - u) / _GAMMA, newton_tol, options.newton_iterations, currents)
            newton_total += it1 + it2
        if ok:
            f_y = system.residual(y, currents(y)[0])
            if junctions is not None:
                ok, state_y = currents.ok, currents.last
        if not ok:
            rejected += 1
            h *= 0.25
            continue
        # The slopes are dQ/dt of each node (M du/dt, plus the junctions' dq/dt without RS),
        # filtered through (M / (d h) + H)^{-1}, H with each junction's C(u) / (d h) in the charge
        # form: the estimate is scaled by the local capacitance. Junctions behind RS: their own.
        slopes = (f_n, f_z, f_y)
        if junctions is not None and (extra := junctions.node_slope(state_n)) is not None:
            slopes = (f_n + extra, f_z + junctions.node_slope(state_z), f_y + junctions.node_slope(state_y))
        s_n, s_z, s_y = slopes
        est = factor.solve((s_y - s_z) / (1.0 - _GAMMA) - (s_z - s_n) / _GAMMA) * (2.0 * _LTE / _D)
        weight = atol + options.rtol * torch.maximum((y * scale).abs(), (u * scale).abs())
        err = float(((est * scale).abs() / weight).max())
        if junctions is not None and junctions.diode.rs_ohm:
            err = max(err, junctions.error(state_n, state_z, state_y, atol, options.rtol))
        if not math.isfinite(err) or err > 1.0:
            rejected += 1
            h *= max(0.2, 0.9 * (err if math.isfinite(err) else 1e9) ** (-1.0 / 3.0))
            continue
        steps += 1
        t += h
        if eval_points is not None and t >= eval_points[0] - 1e-12 * eval_points[0]:
            t = eval_points.pop(0)
        u, f_n = y, f_y
        if junctions is not None:
            state_n = state_y
        times.append(t)
        states.append(u * scale)
        junction_states.append(state_n)
        h *= min(4.0, max(0.2, 0.9 * max(err, 1e-12) ** (-1.0 / 3.0)))

    times_t = torch.tensor(times, dtype=torch.float64)
    voltages = torch.stack(states)  # [T, B, N]
    n_t, batch, n = voltages.shape
    flat = voltages.reshape(n_t * batch, n)
    rep_source = system.source_V.repeat(n_t, 1)
    rep_nudge = None if nudge_A is None else nudge_A.to(torch.float64).repeat(n_t, 1)
    power = static_power(circuit, rep_source, system.split(flat), rep_nudge)
    delivered = power.delivered_W.reshape(n_t, batch)
    dissipated = power.dissipated_W.reshape(n_t, batch)
    stored = (0.5 * m * voltages**2).sum(2)
    if junctions is not None:
        delivered, dissipated, stored = with_junctions(junctions, junction_states, power, n_t, batch, stored)
    return transient_result(
        times_t, voltages, final, tol, delivered, dissipated, stored, t_eval is None, (steps, rejected, newton_total)
    )


def transient_result(times_t, voltages, final, tol, delivered, dissipated, stored, settled: bool, counts) -> Transient:
    """The :class:`Transient` of an integration: waveforms ``[T, B, N]``, powers and stored energy
    ``[T, B]``; energies integrated up to each sample's settling time. ``settled``: the integration
    ran until every sample settled (else it stopped at requested times). ``counts``: steps, rejected
    steps, Newton iterations."""
    batch = voltages.shape[1]
    error = (voltages - final).abs().amax(2)
    settle = _settle_times(times_t, error, tol)
    if settled and not bool(torch.isfinite(settle).all()):
        raise SolverError("transient: a sample had not settled when the integration stopped")

    def cumulative(p):
        dt = (times_t[1:] - times_t[:-1]).unsqueeze(1)
        steps_J = 0.5 * (p[1:] + p[:-1]) * dt
        return torch.cat([torch.zeros(1, batch, dtype=p.dtype), steps_J.cumsum(0)])

    window = settle.clamp(max=float(times_t[-1]))
    steps, rejected, newton = counts
    return Transient(
        times_s=times_t,
        voltages=voltages,
        final=final,
        settle_time_s=settle,
        delivered_W=delivered,
        dissipated_W=dissipated,
        stored_J=stored,
        supply_J=_at_times(times_t, cumulative(delivered), window),
        dissipated_J=_at_times(times_t, cumulative(dissipated), window),
        charge_J=_at_times(times_t, stored, window) - stored[0],
        steps=steps,
        rejected=rejected,
        newton_iterations=newton,
    )
