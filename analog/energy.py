"""Static power of an analog block: what every element dissipates and every source delivers.

For node voltages ``v`` of one state of the circuit (an equilibrium, or any instant of a
transient), with the element conventions of :mod:`analog.circuit` and :mod:`analog.netlist`:

* a conductance ``g`` between ``x`` (upstream: source, bias source or amplifier output) and ``y``
  dissipates ``g (x - y)^2``. Summed over a crossbar this expands into products that never form a
  ``[B, n_in, n_out]`` tensor::

      sum_ij g_ij (x_i - y_j)^2 = (x^2) . rowsum(g) + (y^2) . colsum(g) - 2 y . (x g)           (R)

* a diode with junction voltage ``vd`` dissipates ``vd I(vd)`` (ngspice's ``gmin`` included);
* an amplifier (VCVS of gain ``A`` delivering ``I`` into the crossbar at ``A v``, CCCS drawing
  ``I / A`` out of node ``v``) absorbs ``v I / A - A v I = v I (1/A - A)``: negative for ``A > 1``,
  i.e. an ideal amplifier *supplies* power (a real one draws at least that from its rails, which
  this model does not describe);
* a voltage source at ``V`` delivering current ``I`` into the network delivers ``V I``: input and
  bias sources, and the diode rails (the up rail takes the up diodes' current, the down rail feeds
  the down diodes); a nudging current source injecting ``I`` into output node ``v`` delivers
  ``v I``.

Tellegen's theorem makes ``delivered = dissipated`` at an equilibrium. Away from it (during a
transient) the difference is the power flowing into the node capacitances,
``sum_j v_j I_net,j`` with ``I_net,j`` the net resistive current into node ``j``
(:attr:`Power.charging_W`).

All powers are in watts, per sample: shape ``[B]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analog.circuit import Circuit
from analog.solvers.base import Equilibrium, SolverError
from analog.solvers.general import GeneralSystem

__all__ = ["Power", "crossbar_power", "equilibrium_power", "static_power"]


def crossbar_power(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(R): total power in a crossbar ``g`` ``[n_x, n_y]`` (S) between voltages ``x`` ``[B, n_x]``
    and ``y`` ``[B, n_y]`` (V), ``[B]`` watts."""
    if g.numel() == 0:
        return torch.zeros(x.shape[0], dtype=g.dtype, device=g.device)
    return (x * x) @ g.sum(1) + (y * y) @ g.sum(0) - 2.0 * ((x @ g) * y).sum(1)


@dataclass
class Power:
    """Power of every kind of element of one analog block, each ``[B]`` watts."""

    weights_W: torch.Tensor
    """Dissipated in the crossbar conductances (all layers)."""
    biases_W: torch.Tensor
    """Dissipated in the bias conductances."""
    diodes_W: torch.Tensor
    """Dissipated in the diodes (including ngspice's ``gmin`` across each junction)."""
    amplifiers_W: torch.Tensor
    """Net power absorbed by the ideal amplifiers (VCVS + CCCS); negative when they supply power."""
    inputs_W: torch.Tensor
    """Delivered by the input voltage sources."""
    bias_sources_W: torch.Tensor
    """Delivered by the ``+/-bias_V`` sources."""
    rails_W: torch.Tensor
    """Delivered by the diode rail sources."""
    nudge_W: torch.Tensor
    """Delivered by the nudging current sources."""
    charging_W: torch.Tensor
    """Flowing into the node capacitances, ``sum_j v_j I_net,j`` (0 at an equilibrium)."""
    wires_W: torch.Tensor
    """Dissipated in the resistive crossbar wires (0 with ideal wires, see :mod:`analog.wires`)."""
    peripherals_W: torch.Tensor | None = None
    """Dissipated in the peripherals' resistances (:mod:`analog.peripherals`: driver and amplifier
    output resistances, amplifier input resistances, nudging-source output resistances); 0 when ideal."""

    def __post_init__(self) -> None:
        if self.peripherals_W is None:
            self.peripherals_W = torch.zeros_like(self.weights_W)

    @property
    def dissipated_W(self) -> torch.Tensor:
        return self.weights_W + self.biases_W + self.diodes_W + self.amplifiers_W + self.wires_W + self.peripherals_W

    @property
    def delivered_W(self) -> torch.Tensor:
        return self.inputs_W + self.bias_sources_W + self.rails_W + self.nudge_W


def _diode_terms(circuit: Circuit, v: torch.Tensor, nodes: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diode dissipation, rail-source power ``[B]`` and net diode current leaving each node ``[B, n]``
    of one layer, whose nodes are ``nodes`` of the flat free-node numbering."""
    spec = circuit.spec
    zero = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    dissipated, rails, leaving = zero, zero, torch.zeros_like(v)
    area, emission = circuit.diode_area, circuit.diode_emission
    if area is not None:
        area = area[:, nodes].to(dtype=v.dtype, device=v.device)
    if emission is not None:
        emission = emission[:, nodes].to(dtype=v.dtype, device=v.device)
    if spec.diode_up_V is not None:
        vd = v - spec.diode_up_V
        i, _ = spec.diode.current(vd, None if area is None else area[0], None if emission is None else emission[0])
        dissipated = dissipated + (vd * i).sum(1)
        rails = rails - spec.diode_up_V * i.sum(1)  # the up rail receives the diode current
        leaving = leaving + i
    if spec.diode_down_V is not None:
        vd = spec.diode_down_V - v
        i, _ = spec.diode.current(vd, None if area is None else area[1], None if emission is None else emission[1])
        dissipated = dissipated + (vd * i).sum(1)
        rails = rails + spec.diode_down_V * i.sum(1)
        leaving = leaving - i
    return dissipated, rails, leaving


@torch.no_grad()
def static_power(
    circuit: Circuit,
    source_V: torch.Tensor,
    voltages: tuple[torch.Tensor, ...],
    nudge_A: torch.Tensor | None = None,
    input_currents_A: torch.Tensor | None = None,
    bias_currents_A: tuple[torch.Tensor, ...] | None = None,
) -> Power:
    """Power of every element for node voltages ``voltages`` (free layers ``1..L``, ``[B, n_l]``, V).

    ``source_V``: input source voltages ``[B, n_sources]`` (V); ``nudge_A``: current injected into
    each output node ``[B, n_out]`` (A) or ``None``. The source powers use the measured source
    currents when given (``input_currents_A`` ``[B, n_sources]``, ``bias_currents_A`` one
    ``[B, n_bias]`` per layer, as in :class:`~analog.solvers.base.Equilibrium`), else the currents
    the network laws give for ``voltages``.
    """
    spec = circuit.spec
    if not circuit.ideal_peripherals:
        return _peripheral_power(circuit, source_V, voltages, nudge_A, input_currents_A, bias_currents_A)
    user_models = getattr(spec, "user_models", None)
    if user_models is not None and (reason := user_models.fast_refusal()):
        # The element powers below are those of the built-in diode; a user's neuron is not.
        raise SolverError(f"static power: {reason}")
    dtype, device = circuit.dtype, circuit.device
    source_V = source_V.to(dtype=dtype, device=device)
    v = [t.to(dtype=dtype, device=device) for t in voltages]
    batch = source_V.shape[0]
    zero = torch.zeros(batch, dtype=dtype, device=device)
    gains = spec.gains()
    bias_V = spec.bias_voltages(dtype, device)

    weights_W, biases_W, amplifiers_W, bias_sources_W, wires_W = zero, zero, zero, zero, zero
    # Net resistive current into each free node, for the charging power.
    into = [torch.zeros_like(t) for t in v]
    wires = circuit.crossbar_wires()
    network_inputs = None
    for l, g in enumerate(circuit.weights):
        y = v[l]
        x = source_V if l == 0 else spec.row_drive(l, v[l - 1])
        b = circuit.biases[l]
        xb = bias_V.expand(batch, -1)
        if wires is None:
            weights_W = weights_W + crossbar_power(x, y, g)
            # Current from each upstream terminal into the crossbar, and into each downstream node.
            out_of_x = x * g.sum(1) - y @ g.T
            into[l] = into[l] + x @ g - y * g.sum(0)
            out_of_bias = xb * b.sum(1) - y @ b.T
            if b.numel():
                biases_W = biases_W + crossbar_power(xb, y, b)
                into[l] = into[l] + xb @ b - y * b.sum(0)
        else:
            # Through the wired crossbar: terminal currents L_red T; device drops from the wire nodes.
            terminals = torch.cat([x, xb, y], dim=1)
            current = wires[l].terminal_currents(terminals)
            rows = x.shape[1]
            out_of_x, out_of_bias = current[:, :rows], current[:, rows : rows + xb.shape[1]]
            into[l] = into[l] - current[:, rows + xb.shape[1] :]
            drops = wires[l].device_voltages(terminals).square()
            devices_w = (drops[:, :rows] * g).sum((1, 2))
            devices_b = (drops[:, rows:] * b).sum((1, 2))
            weights_W, biases_W = weights_W + devices_w, biases_W + devices_b
            wires_W = wires_W + (terminals * current).sum(1) - devices_w - devices_b
        if l == 0:
            network_inputs = out_of_x
        if l > 0:
            # A dual-rail node's inverting stage returns its rail's current negated (fold_rows).
            drawn = spec.fold_rows(l, out_of_x)
            if spec.has_amplifier(l):
                a = gains[l - 1]
                amplifiers_W = amplifiers_W + (v[l - 1] * drawn).sum(1) * (1.0 / a - a)
                into[l - 1] = into[l - 1] - drawn / a
            else:
                into[l - 1] = into[l - 1] - drawn
        if b.numel():
            if bias_currents_A is None:
                bias_sources_W = bias_sources_W + (out_of_bias * xb).sum(1)
            else:
                bias_sources_W = bias_sources_W + (bias_currents_A[l].to(dtype) * xb).sum(1)

    if input_currents_A is None:
        input_currents_A = network_inputs
    inputs_W = (source_V * input_currents_A.to(dtype=dtype, device=device)).sum(1)

    diodes_W, rails_W = zero, zero
    first = 0
    for l in range(spec.depth):
        d, r, leaving = _diode_terms(circuit, v[l], slice(first, first + v[l].shape[1]))
        first += v[l].shape[1]
        diodes_W, rails_W = diodes_W + d, rails_W + r
        into[l] = into[l] - leaving

    nudge_W = zero
    if nudge_A is not None:
        nudge_A = nudge_A.to(dtype=dtype, device=device)
        nudge_W = (v[-1] * nudge_A).sum(1)
        into[-1] = into[-1] + nudge_A
    charging_W = sum((t * i).sum(1) for t, i in zip(v, into, strict=True))
    return Power(
        weights_W=weights_W,
        biases_W=biases_W,
        diodes_W=diodes_W,
        amplifiers_W=amplifiers_W,
        inputs_W=inputs_W,
        bias_sources_W=bias_sources_W,
        rails_W=rails_W,
        nudge_W=nudge_W,
        charging_W=charging_W,
        wires_W=wires_W,
    )


def _peripheral_power(circuit, source_V, voltages, nudge_A, input_currents_A, bias_currents_A, drives=None) -> Power:
    """:func:`static_power` with non-ideal peripherals: the devices see the row nodes behind the
    drivers' and amplifiers' output resistances (:mod:`analog.solvers.general`, (W)); an amplifier's
    forward stage delivers ``e I`` at its open-circuit voltage ``e`` and its CCCS absorbs ``v I / A``.
    ``drives``: the amplifiers' outputs when they lag their inputs (a gain-bandwidth-limited transient,
    :class:`~analog.solvers.general.GeneralSystem`); the net currents into the nodes then charge them."""
    spec = circuit.spec
    p = spec.peripherals
    dtype, device = circuit.dtype, circuit.device
    source_V = source_V.to(dtype=dtype, device=device)
    v = tuple(t.to(dtype=dtype, device=device) for t in voltages)
    nudge = None if nudge_A is None else nudge_A.to(dtype=dtype, device=device)
    system = GeneralSystem(circuit, source_V, nudge)
    zero = torch.zeros(source_V.shape[0], dtype=dtype, device=device)
    bias_V = spec.bias_voltages(dtype, device)
    xb = bias_V.expand(source_V.shape[0], -1)
    weights_W = biases_W = amplifiers_W = peripherals_W = bias_sources_W = zero
    network_inputs = None
    for l, g in enumerate(circuit.weights):
        y, b = v[l], circuit.biases[l]
        e, _ = system.drive(l, v, drives)
        w = system.rows(l, e, y)
        weights_W = weights_W + crossbar_power(w, y, g)
        row_current = w * g.sum(1) - y @ g.T
        if system.series_S[l] is not None:
            peripherals_W = peripherals_W + system.series_S[l] * ((e - w) ** 2).sum(1)
        if l == 0:
            network_inputs = row_current
        elif system.gain[l] is not None:
            a = system.gain[l]
            amplifiers_W = amplifiers_W + (v[l - 1] * row_current).sum(1) / a - (e * row_current).sum(1)
        if b.numel():
            biases_W = biases_W + crossbar_power(xb, y, b)
            current = bias_V * b.sum(1) - y @ b.T if bias_currents_A is None else bias_currents_A[l].to(dtype)
            bias_sources_W = bias_sources_W + (current * xb).sum(1)
    if p.amp_in_ohm is not None:
        for l in range(1, spec.depth):
            if system.gain[l] is not None:
                peripherals_W = peripherals_W + (v[l - 1] ** 2).sum(1) / p.amp_in_ohm
    if p.nudge_out_ohm is not None:
        peripherals_W = peripherals_W + (v[-1] ** 2).sum(1) / p.nudge_out_ohm
    nudge_W = zero
    if nudge is not None:
        # What the current sources themselves deliver (their output resistance is counted above).
        injected, _ = system.injected(v[-1])
        nudge_W = (v[-1] * injected).sum(1)
    currents = network_inputs if input_currents_A is None else input_currents_A.to(dtype=dtype, device=device)
    inputs_W = (source_V * currents).sum(1)
    diodes_W, rails_W = zero, zero
    first = 0
    for l in range(spec.depth):
        d, r, _ = _diode_terms(circuit, v[l], slice(first, first + v[l].shape[1]))
        first += v[l].shape[1]
        diodes_W, rails_W = diodes_W + d, rails_W + r
    net = system.residual(torch.cat(v, dim=1), drives)
    charging_W = (torch.cat(v, dim=1) * net).sum(1)
    return Power(
        weights_W=weights_W,
        biases_W=biases_W,
        diodes_W=diodes_W,
        amplifiers_W=amplifiers_W,
        inputs_W=inputs_W,
        bias_sources_W=bias_sources_W,
        rails_W=rails_W,
        nudge_W=nudge_W,
        charging_W=charging_W,
        wires_W=zero,
        peripherals_W=peripherals_W,
    )


def equilibrium_power(
    circuit: Circuit, source_V: torch.Tensor, equilibrium: Equilibrium, nudge_A: torch.Tensor | None = None
) -> Power:
    """:func:`static_power` of an equilibrium, the source powers from the source currents the
    solver reports (ngspice's branch currents, or the fast solver's)."""
    return static_power(
        circuit,
        source_V,
        equilibrium.voltages,
        nudge_A,
        input_currents_A=equilibrium.input_currents_A,
        bias_currents_A=equilibrium.bias_currents_A,
    )
