"""The junction charge of diode cards in the layered transient (:mod:`analog.settling`): every
junction's own state, the current each stage sees through it, and the energy bookkeeping with
those states (:mod:`analog.diode_charge` has the charge model itself)."""

from __future__ import annotations

import torch

from analog.diode_charge import JunctionCharge, StageJunction, stage_current
from analog.solvers.physics import LayeredSystem
from analog.trbdf2 import GAMMA as _GAMMA
from analog.trbdf2 import LTE as _LTE
from analog.trbdf2 import D as _D

__all__ = ["Junctions", "with_junctions"]


class Junctions:
    """The diodes of a block whose card stores charge (:mod:`analog.diode_charge`): each junction
    is a state of its own, and each stage of the integrator sees it through
    :func:`~analog.diode_charge.stage_current` as a conductance from its node to its rail.

    Per-diode tensors are ``[n_rails, B, N]``; the node-level currents are in the rescaled
    coordinates of :class:`~analog.solvers.physics.LayeredSystem` (``f = sum sign I / s``)."""

    def __init__(self, system: LayeredSystem, charge: JunctionCharge):
        self.system, self.charge, self.diode = system, charge, system.diode
        self.signs = torch.tensor([sign for _, sign in system.rails], dtype=system.dtype).view(-1, 1, 1)
        self.rail_V = torch.tensor([rail for rail, _ in system.rails], dtype=system.dtype).view(-1, 1, 1)

    def terminal(self, u: torch.Tensor) -> torch.Tensor:
        """Voltage across every diode (anode minus cathode) for rescaled node voltages ``u``."""
        return self.signs * (u * self.system.scale - self.rail_V)

    def to_nodes(self, current: torch.Tensor, conductance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.signs * current).sum(0) / self.system.scale, conductance.sum(0)

    def at_rest(self, u: torch.Tensor, m: torch.Tensor) -> tuple[StageJunction, torch.Tensor]:
        """The junctions at ``t = 0`` (each at the voltage its DC current through ``RS`` gives) and
        ``f = M du/dt`` there. Without ``RS`` the junction charge shares the node's derivative:
        ``(M + sum C) du/dt = r``."""
        system, diode = self.system, self.diode
        vd = self.terminal(u)
        junction = vd if not diode.rs_ohm else diode.junction_voltage(vd, system.area, system.emission)
        i, g = diode.junction_current(junction.clone(), system.area, system.emission)
        q, c = self.charge.charge(diode, junction, system.area, system.emission, (i, g))
        f_dc = (self.signs * (diode.current(vd, system.area, system.emission)[0])).sum(0) / system.scale
        r = system.residual(u, f_dc)
        if diode.rs_ohm:
            return StageJunction(junction, i, g, q, torch.zeros_like(q), g), r
        dudt = r / (m + c.sum(0))
        charging = c * self.signs * system.scale * dudt
        return StageJunction(junction, i + charging, g, q, charging, g), m * dudt

    def stage(self, history_C: torch.Tensor, dh_s: float, start: torch.Tensor) -> _StageCurrents:
        """The ``currents`` of :func:`_newton` in a stage with charge history ``history_C``,
        starting each junction's solve at ``start`` (its voltage at the previous stage)."""
        return _StageCurrents(self, history_C, dh_s, start)

    def node_slope(self, state: StageJunction) -> torch.Tensor | None:
        """The junctions' part of each node's ``dQ/dt`` (rescaled): without ``RS`` their charge is
        the node's, so the error estimate takes its slope with the node capacitance's; with
        ``RS`` the junctions are states of their own (:meth:`error`) and this is ``None``."""
        if self.diode.rs_ohm:
            return None
        return (self.signs * state.charging).sum(0) / self.system.scale

    def error(self, n: StageJunction, z: StageJunction, y: StageJunction, atol: float, rtol: float) -> float:
        """(LTE) of every junction voltage behind ``RS`` over ``atol + rtol |u|``: the slopes are
        ``dq/dt``, filtered through the junction's own ``C / (d h) + dI_d/du + 1 / R``."""
        area = self.system.area
        r = self.diode.rs_ohm if area is None else self.diode.rs_ohm / area
        slopes = (y.charging - z.charging) / (1.0 - _GAMMA) - (z.charging - n.charging) / _GAMMA
        est = slopes / (y.stage_conductance + 1.0 / r) * (2.0 * _LTE / _D)
        weight = atol + rtol * torch.maximum(y.voltage.abs(), n.voltage.abs())
        return float((est.abs() / weight).max())

    def energy_J(self, junction: torch.Tensor) -> torch.Tensor:
        """Energy stored in every junction's charge, ``integral_0^u x dq``, summed per sample."""
        system = self.system
        return self.charge.energy_J(self.diode, junction, system.area, system.emission).sum(dim=(-3, -1))


class _StageCurrents:
    """Node currents and conductances of the junctions in one stage (:func:`_newton`'s
    ``currents``); ``last`` / ``ok``: the junctions at the last ``u`` evaluated and whether their
    charge balance converged there. Each call starts from the previous call's junction voltages."""

    def __init__(self, junctions: Junctions, history_C: torch.Tensor, dh_s: float, start: torch.Tensor):
        self.junctions, self.history_C, self.dh_s, self.start = junctions, history_C, dh_s, start
        self.last: StageJunction | None = None
        self.ok = False

    def __call__(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        j, system = self.junctions, self.junctions.system
        self.last, self.ok = stage_current(
            j.diode, j.charge, j.terminal(u), self.history_C, self.dh_s, self.start, system.area, system.emission
        )
        self.start = self.last.voltage
        return j.to_nodes(self.last.current, self.last.conductance)


def with_junctions(junctions: Junctions, states: list[StageJunction], power, n_t: int, batch: int, stored):
    """Delivered and dissipated power ``[T, B]`` and stored energy ``[T, B]`` with the junctions'
    own states: the rails carry each diode's terminal current (charging current included), a
    diode dissipates ``u I_d(u) + R I^2`` and its charge stores ``integral_0^u x dq``."""
    voltage = torch.stack([s.voltage for s in states])  # [T, n_rails, B, N]
    current = torch.stack([s.current for s in states])
    junction_A = current - torch.stack([s.charging for s in states])
    rails = (-(junctions.signs * junctions.rail_V) * current).sum(dim=(1, 3))
    diodes = (voltage * junction_A).sum(dim=(1, 3))
    rs = junctions.diode.rs_ohm
    if rs:
        area = junctions.system.area
        diodes = diodes + ((rs if area is None else rs / area) * current**2).sum(dim=(1, 3))
    delivered = (power.delivered_W - power.rails_W).reshape(n_t, batch) + rails
    dissipated = (power.dissipated_W - power.diodes_W).reshape(n_t, batch) + diodes
    return delivered, dissipated, stored + junctions.energy_J(voltage)
