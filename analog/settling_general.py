"""Settling of a block with non-ideal peripherals (:mod:`analog.peripherals`): the same TR-BDF2
integrator as :mod:`analog.settling`, on the dense net currents of
:class:`~analog.solvers.general.GeneralSystem`.

The state is the free-node voltages ``v`` (each with its capacitance (C) of
:class:`~analog.settling.Capacitances`) and, when the amplifiers have a finite gain-bandwidth
``GBW``, every amplifier's forward output ``e``, which follows its target (``A (v + offset)``, swing
limited) through a single pole:

    C dv/dt = r(v, e),        tau de/dt = e*(v) - e,        tau = A / (2 pi GBW)           (P)

(``r`` the net current into each node for the drives ``e``). Without a gain-bandwidth ``e = e*(v)``
and only ``v`` is integrated. Each stage of TR-BDF2 is a dense Newton solve per sample; the local
error is estimated and filtered as in :mod:`analog.settling`. The input lines behind the drivers'
resistances (and any amplifier's output line) are charged instantly, as with ideal drivers: the
capacitances of (C) sit on the free nodes only, the same circuit ngspice's transient deck builds
(:func:`analog.netlist.build_transient`, with the pole capacitors ``CPOLE``).

:func:`simulate` is the entry point for any block: it hands blocks with ideal peripherals to
:func:`analog.settling.simulate_phase`.
"""

from __future__ import annotations

import math

import torch

from analog.circuit import Circuit
from analog.diode_charge import card_charge
from analog.energy import _peripheral_power
from analog.settling import (
    Capacitances,
    Transient,
    TransientOptions,
    _threads,
    simulate_phase,
    transient_result,
)
from analog.solvers.base import SolverError
from analog.solvers.general import GeneralSystem
from analog.trbdf2 import GAMMA as _GAMMA
from analog.trbdf2 import LTE as _LTE
from analog.trbdf2 import D as _D

__all__ = ["needs_general", "simulate", "simulate_general"]


def needs_general(circuit: Circuit) -> bool:
    """Whether ``circuit``'s transients need this module (non-ideal or slow peripherals)."""
    return not circuit.ideal_peripherals or circuit.spec.peripherals.dynamic


def simulate(
    circuit: Circuit,
    capacitances: Capacitances,
    source_V: torch.Tensor,
    start: torch.Tensor,
    final: torch.Tensor,
    nudge_A: torch.Tensor | None = None,
    options: TransientOptions | None = None,
    t_eval: torch.Tensor | None = None,
) -> Transient:
    """One phase's transient for any block: :func:`simulate_general` when :func:`needs_general`,
    else :func:`analog.settling.simulate_phase` (arguments as there)."""
    if not needs_general(circuit):
        return simulate_phase(circuit, capacitances, source_V, start, final, nudge_A, options, t_eval)
    return simulate_general(circuit, capacitances, source_V, start, final, nudge_A, options, t_eval)


class _Dynamics:
    """(P) for one batch: the stacked state ``x = [v, e]``, its mass, rate and Jacobian."""

    def __init__(self, circuit: Circuit, source_V: torch.Tensor, nudge_A, capacitances: Capacitances):
        self.system = GeneralSystem(circuit, source_V, nudge_A)
        system = self.system
        spec = circuit.spec
        self.n = system.n_free
        self.gbw = spec.peripherals.amp_gbw_Hz
        self.amplified = system.amplified() if self.gbw is not None else []
        self.sizes = [spec.layer_sizes[l] for l in self.amplified]
        node_F = capacitances.nodes_F(circuit).to(torch.float64)
        taus = [
            torch.full((n,), spec.amplifier_gains[l - 1] / (2 * math.pi * self.gbw), dtype=torch.float64)
            for l, n in zip(self.amplified, self.sizes, strict=True)
        ]
        self.mass = torch.cat([node_F, *taus])
        self.drive_jac = system.drive_jacobian() if self.amplified else None

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor] | None]:
        v = x[:, : self.n]
        if not self.amplified:
            return v, None
        drives, first = {}, self.n
        for l, n in zip(self.amplified, self.sizes, strict=True):
            drives[l] = x[:, first : first + n]
            first += n
        return v, drives

    def start(self, v: torch.Tensor) -> torch.Tensor:
        """The state with every amplifier at its settled output for ``v``."""
        if not self.amplified:
            return v
        layers = self.system.split(v)
        return torch.cat([v, *[self.system.target(l, layers[l - 1])[0] for l in self.amplified]], dim=1)

    def rate(self, x: torch.Tensor) -> torch.Tensor:
        """``M dx/dt``: net node currents and the amplifiers' ``e* - e``."""
        v, drives = self.split(x)
        r = self.system.residual(v, drives)
        if drives is None:
            return r
        layers = self.system.split(v)
        lag = [self.system.target(l, layers[l - 1])[0] - drives[l] for l in self.amplified]
        return torch.cat([r, *lag], dim=1)

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """``d rate / dx`` ``[B, n_x, n_x]``."""
        v, drives = self.split(x)
        jvv = self.system.jacobian(v, drives)
        if drives is None:
            return jvv
        batch, n, n_e = v.shape[0], self.n, self.mass.numel() - self.n
        jac = torch.zeros(batch, n + n_e, n + n_e, dtype=v.dtype)
        jac[:, :n, :n] = jvv
        jac[:, :n, n:] = self.drive_jac
        layers = self.system.split(v)
        first = n
        for l, size in zip(self.amplified, self.sizes, strict=True):
            _, slope = self.system.target(l, layers[l - 1])
            rows = torch.arange(first, first + size)
            cols = torch.arange(self.system.offsets[l - 1], self.system.offsets[l])
            jac[:, rows, cols] = slope
            first += size
        jac[:, n:, n:] -= torch.eye(n_e, dtype=v.dtype)
        return jac

    def power(self, x: torch.Tensor, nudge: torch.Tensor | None):
        """:func:`analog.energy.static_power` of the states ``x`` (the amplifiers at their drives)."""
        v, drives = self.split(x)
        system = self.system
        source = system.source_V
        return _peripheral_power(system.circuit, source, system.split(v), nudge, None, None, drives=drives)


def _newton(dyn: _Dynamics, history: torch.Tensor, x: torch.Tensor, dh: float, tol_V: float, iterations: int):
    """Solve ``M (x - history) / dh = rate(x)`` (a TR-BDF2 stage) by damped Newton; returns
    ``(x, converged, iterations, stage matrix at x)``."""
    m = dyn.mass / dh
    matrix = None
    for it in range(1, iterations + 1):
        g = dyn.rate(x) - m * (x - history)
        matrix = m.diag_embed().expand(x.shape[0], -1, -1) - dyn.jacobian(x)
        delta, info = torch.linalg.solve_ex(matrix, g.unsqueeze(2))
        delta = delta.squeeze(2)
        step = delta[:, : dyn.n].abs().amax(1)
        if int(info.max()) > 0 or not bool(torch.isfinite(step).all()):
            return x, False, it, matrix
        x = x + delta * (0.5 / step.clamp(min=0.5)).unsqueeze(1)
        if bool((step <= tol_V).all()):
            return x, True, it, matrix
    return x, False, iterations, matrix


def simulate_general(
    circuit: Circuit,
    capacitances: Capacitances,
    source_V: torch.Tensor,
    start: torch.Tensor,
    final: torch.Tensor,
    nudge_A: torch.Tensor | None = None,
    options: TransientOptions | None = None,
    t_eval: torch.Tensor | None = None,
) -> Transient:
    """:func:`analog.settling.simulate_phase` for a block with non-ideal peripherals (arguments and
    result as there; the waveforms are the free nodes'). Diode cards that store charge are refused."""
    if card_charge(circuit.spec) is not None:
        raise SolverError(
            "transient: a diode card with junction charge (CJO/TT) together with non-ideal peripherals is not "
            "supported by the fast transient; run the phase in ngspice (energy.ngspice) or drop one of them"
        )
    with torch.no_grad(), _threads(1):
        return _simulate(circuit, capacitances, source_V, start, final, nudge_A, options or TransientOptions(), t_eval)


def _simulate(circuit, capacitances, source_V, start, final, nudge_A, options, t_eval) -> Transient:
    circuit = circuit.detach().to(torch.float64)
    nudge = None if nudge_A is None else nudge_A.detach().to(torch.float64)
    dyn = _Dynamics(circuit, source_V.detach().to(torch.float64), nudge, capacitances)
    n = dyn.n
    v0 = start.detach().to(torch.float64)
    final = final.detach().to(torch.float64)
    reference = (final - v0).abs().amax(1)
    tol = options.settle_tol * reference
    positive = tol[tol > 0]
    atol = options.atol_V if positive.numel() == 0 else min(options.atol_V, 0.01 * float(positive.min()))
    atol = max(atol, 1e-15)
    newton_tol = max(1e-3 * atol, 1e-15)
    stop = torch.maximum(0.05 * tol, torch.full_like(tol, 20 * atol))

    x = dyn.start(v0)
    f_n = dyn.rate(x)
    jac0 = dyn.jacobian(x)
    conductance = (-torch.diagonal(jac0, dim1=1, dim2=2)).abs().clamp(min=1e-30)
    h = 1e-3 * float((dyn.mass / conductance).min())
    t = 0.0
    eval_points = None if t_eval is None else [float(p) for p in t_eval if float(p) > 0]
    times, states = [0.0], [x]
    steps = rejected = newton_total = 0
    while True:
        if eval_points is not None:
            if not eval_points:
                break
            h = min(h, eval_points[0] - t)
        elif bool(((x[:, :n] - final).abs().amax(1) <= stop).all()):
            break
        if t >= options.t_max_s or steps + rejected >= options.max_steps:
            raise SolverError(
                f"transient: not settled after {t:.3e} s and {steps} steps (largest distance to the "
                f"equilibrium {float((x[:, :n] - final).abs().max()):.3e} V); raise t_max_s / max_steps, or check "
                "the capacitances and energy.amp_gbw_Hz"
            )
        dh = _D * h
        z, ok, it1, _ = _newton(dyn, x + dh * f_n / dyn.mass, x, dh, newton_tol, options.newton_iterations)
        if ok:
            f_z = dyn.rate(z)
            a = (z - (1.0 - _GAMMA) ** 2 * x) / (_GAMMA * (2.0 - _GAMMA))
            y, ok, it2, matrix = _newton(dyn, a, x + (z - x) / _GAMMA, dh, newton_tol, options.newton_iterations)
            newton_total += it1 + it2
        if not ok:
            rejected += 1
            h *= 0.25
            continue
        f_y = dyn.rate(y)
        combo = (f_y - f_z) / (1.0 - _GAMMA) - (f_z - f_n) / _GAMMA
        est = torch.linalg.solve(matrix, combo.unsqueeze(2)).squeeze(2) * (2.0 * _LTE / _D)
        weight = atol + options.rtol * torch.maximum(y.abs(), x.abs())
        err = float((est.abs() / weight).max())
        if not math.isfinite(err) or err > 1.0:
            rejected += 1
            h *= max(0.2, 0.9 * (err if math.isfinite(err) else 1e9) ** (-1.0 / 3.0))
            continue
        steps += 1
        t += h
        if eval_points is not None and t >= eval_points[0] - 1e-12 * eval_points[0]:
            t = eval_points.pop(0)
        x, f_n = y, f_y
        times.append(t)
        states.append(x)
        h *= min(4.0, max(0.2, 0.9 * max(err, 1e-12) ** (-1.0 / 3.0)))

    times_t = torch.tensor(times, dtype=torch.float64)
    full = torch.stack(states)  # [T, B, n_x]
    n_t, batch, n_x = full.shape
    flat = full.reshape(n_t * batch, n_x)
    rep_nudge = None if nudge is None else nudge.repeat(n_t, 1)
    rep = _Dynamics(circuit, dyn.system.source_V.repeat(n_t, 1), rep_nudge, capacitances)
    power = rep.power(flat, rep_nudge)
    delivered = power.delivered_W.reshape(n_t, batch)
    dissipated = power.dissipated_W.reshape(n_t, batch)
    voltages = full[:, :, :n]
    stored = (0.5 * dyn.mass[:n] * voltages**2).sum(2)
    return transient_result(
        times_t, voltages, final, tol, delivered, dissipated, stored, t_eval is None, (steps, rejected, newton_total)
    )
