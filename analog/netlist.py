"""A :class:`~analog.circuit.Circuit` as SPICE decks, built through PySpice's API.

Every deck is the network of :func:`analog.network.build_network` plus its own sources and analysis:

* :func:`build_operating_point`: one sample, plain DC sources and an ``.op`` analysis (golden
  netlists, per-sample runs, netlist export);
* :func:`build_batch`: a whole batch in one ``.dc`` analysis, so that ngspice orders its sparse
  matrix once. A dummy source ``VIDX`` is swept over ``0..B-1``; every input source and nudging
  current is a behavioral source ``pwl(v(IDX), 0, x_0, 1, x_1, ...)`` that takes sample ``b``'s
  value at ``v(IDX) = b``. Each sweep point starts Newton from the previous one;
* :func:`build_transient`: one sample's RC transient (``.tran ... uic``), a capacitor per free node
  (``energy.diode_F`` left out where the user's diode card stores charge: the card's charge is the
  junction's capacitance, in both transients);
* :func:`build_export`: the ``.op`` deck with parameters, for plain ``ngspice -b``.

Names (ngspice lower-cases them in its output vectors):

===========================  =====================================================================
``L{l}_N{j}``                node ``j`` of layer ``l`` (layer 0: the input source nodes)
``L{l}_BP`` / ``L{l}_BN``    nodes of the ``+bias_V`` / ``-bias_V`` sources feeding layer ``l+1``
``RAIL_UP`` / ``RAIL_DN``    diode rails, driven by ``VRAIL_UP`` / ``VRAIL_DN``
``L{l}_A{j}`` / ``L{l}_X{j}`` amplifier output and crossbar side of its 0 V sense source
``L{l}_E{j}``                amplifier forward stage before its output resistance ``RAOUT_L{l}_N{j}``
``L{l}_M{j}`` / ``L{l}_Y{j}`` dual-rail layers: inverting stage output and the crossbar side of its
                             sense source ``VISENSE_L{l}_N{j}``; ``EINV_L{l}_N{j}`` (gain ``-A``)
                             drives it, ``FINV_L{l}_N{j}`` returns ``-I(VISENSE) / A`` to the node
``L0_D{k}``                  crossbar row of input ``k`` behind its driver resistance ``RDRV{k}``
``VIN{k}`` / ``BIN{k}``      input source ``k`` (operating point / batch)
``VB{l}P`` / ``VB{l}N``      bias sources feeding layer ``l+1``
``RW{l}_{i}_{j}``            weight conductance ``weights[l][i, j]`` (dual rail: ``i >= n_l`` on the ``-`` rail)
``RB{l}_{p}_{j}``            bias conductance ``biases[l][p, j]`` (``p = 0``: ``+bias_V``)
``DUP_L{l}_N{j}``            diode node -> ``RAIL_UP`` (model ``DNEURON`` or the user's ``diode_model``)
``DDN_L{l}_N{j}``            diode ``RAIL_DN`` -> node
``EAMP_L{l}_N{j}``           amplifier VCVS (gain ``A``) driving ``L{l}_A{j}`` (``BAMP_...``: a behavioral
                             source, with an offset or a swing limit, see :mod:`analog.peripherals`)
``RAIN_L{l}_N{j}``           amplifier input resistance to ground
``RNUDGE{j}``                nudging source output resistance (output node to ground)
``VSENSE_L{l}_N{j}``         0 V source ``L{l}_A{j}`` -> ``L{l}_X{j}`` sensing the VCVS current
``FAMP_L{l}_N{j}``           CCCS drawing ``I(VSENSE) / A`` out of ``L{l}_N{j}``
``XNRN_L{l}_N{j}``           the user's one-pin neuron subcircuit at the node (replaces both diodes)
``INUDGE{j}`` / ``BNUDGE{j}`` current injected into output node ``j``
``CN_L{l}_N{j}``             node capacitance of a transient deck
===========================  =====================================================================

The golden netlists in ``netlists/`` are built from fixed cases in ``tests/golden.py``; regenerate
them after an intentional change of the builder with ``python -m tests.golden netlists``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PySpice.Spice.Netlist import Circuit as SpiceCircuit
from PySpice.Spice.NgSpice.Simulation import NgSpiceCircuitSimulator

from analog.circuit import node_name
from analog.diode import NGSPICE_RELTOL
from analog.diode_charge import card_charge
from analog.network import POLE_OHM, build_network, nudge_source, pole_node
from analog.solvers.general import GeneralSystem

if TYPE_CHECKING:
    from analog.circuit import Circuit

__all__ = [
    "SWEEP_SOURCE",
    "Deck",
    "Probes",
    "build_batch",
    "build_export",
    "build_operating_point",
    "build_transient",
    "netlist_text",
    "parameter_sources",
    "probes",
]

Deck = NgSpiceCircuitSimulator
"""A PySpice circuit with its options and analysis (``deck.circuit`` is the PySpice ``Circuit``)."""

SWEEP_SOURCE = "VIDX"
SWEEP_NODE = "IDX"

# Solver options written into every deck. Tolerances this tight cost a few Newton iterations and
# bring ngspice to rounding error (defaults leave ~1e-5 V); bypass=0 makes sure no device
# evaluation is skipped between iterations (some ngspice builds enable it by default).
STEP_DIVISOR = 1e7
_TOLERANCES = {"reltol": NGSPICE_RELTOL, "vntol": 1e-12, "abstol": 1e-15, "bypass": 0, "itl1": 200, "itl2": 200}


@dataclass(frozen=True)
class Probes:
    """Names of the ngspice vectors (lower case) that hold an equilibrium.

    ngspice reports a source's branch current flowing into its ``+`` terminal, so the current a
    source delivers into the network is minus its branch vector.
    """

    voltages: tuple[tuple[str, ...], ...]
    """Node voltage vectors of free layers ``1..L``."""
    input_currents: tuple[str, ...]
    """Branch current vectors of the input sources, ``n_sources`` names."""
    bias_currents: tuple[tuple[str, ...], ...]
    """Branch current vectors of the bias sources feeding layers ``1..L`` (``n_bias`` each)."""

    def all(self) -> tuple[str, ...]:
        return (
            *(n for layer in self.voltages for n in layer),
            *self.input_currents,
            *(n for layer in self.bias_currents for n in layer),
        )


def probes(circuit: Circuit, batched: bool) -> Probes:
    """The vectors to read back after running a deck of ``circuit`` (see :class:`Probes`)."""
    spec = circuit.spec
    prefix = "b" if batched else "v"
    return Probes(
        voltages=tuple(
            tuple(node_name(l, j).lower() for j in range(spec.layer_sizes[l])) for l in range(1, spec.depth + 1)
        ),
        input_currents=tuple(f"{prefix}in{k}#branch" for k in range(spec.n_sources)),
        bias_currents=tuple(tuple(f"vb{l}{s}#branch" for s in ("p", "n")[: spec.n_bias]) for l in range(spec.depth)),
    )


def _floats(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def deck_with_options(circuit: Circuit, net: SpiceCircuit) -> Deck:
    diode = circuit.spec.diode
    deck = Deck(net, pipe=False)
    # ngspice scales IS from TNOM to TEMP itself (its level-1 temperature model, DiodeModel (T)); a
    # user card without its own TNOM takes this one.
    deck.options(TEMP=float(diode.temperature_C), TNOM=float(diode.tnom_C), gmin=float(diode.gmin_S), **_TOLERANCES)
    return deck


def _check(circuit: Circuit, source_V: np.ndarray, nudge_A: np.ndarray | None) -> None:
    spec = circuit.spec
    if source_V.ndim != 2 or source_V.shape[1] != spec.n_sources or source_V.shape[0] == 0:
        raise ValueError(f"source voltages: expected shape [batch >= 1, {spec.n_sources}], got {list(source_V.shape)}")
    if nudge_A is not None and nudge_A.shape != (source_V.shape[0], spec.n_outputs):
        raise ValueError(
            f"nudging currents: expected shape [{source_V.shape[0]}, {spec.n_outputs}], got {list(nudge_A.shape)}"
        )
    if not np.isfinite(source_V).all() or (nudge_A is not None and not np.isfinite(nudge_A).all()):
        raise ValueError("source voltages / nudging currents: contain NaN/inf; clean the inputs")


def build_operating_point(
    circuit: Circuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None, bulk: bool | None = None
) -> Deck:
    """One sample as a deck with DC sources and an ``.op`` analysis.

    ``source_V``: input source voltages ``[n_sources]`` (V). ``nudge_A``: current injected into
    each output node ``[n_out]`` (A), ``None`` for the free phase. ``bulk``: see :func:`~analog.network.build_network`.
    """
    v = _floats(source_V).reshape(1, -1)
    i = None if nudge_A is None else _floats(nudge_A).reshape(1, -1)
    _check(circuit, v, i)
    spec = circuit.spec
    net = build_network(circuit, f"ffebm DRN {spec.layer_sizes} operating point", bulk)
    for k in range(spec.n_sources):
        net.V(f"IN{k}", node_name(0, k), net.gnd, float(v[0, k]))
    if i is not None:
        for j in range(spec.n_outputs):
            nudge_source(net, spec, j, float(i[0, j]))
    deck = deck_with_options(circuit, net)
    deck.operating_point()
    return deck


def build_export(circuit: Circuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None) -> Deck:
    """A self-contained ``.op`` deck for plain ``ngspice -b``: like :func:`build_operating_point`,
    with every input voltage and nudging current a parameter (``.param vin{k}=...`` /
    ``.param inudge{j}=...``, nudging 0 A when ``nudge_A`` is ``None``)."""
    v = _floats(source_V).reshape(1, -1)
    spec = circuit.spec
    i = np.zeros((1, spec.n_outputs)) if nudge_A is None else _floats(nudge_A).reshape(1, -1)
    _check(circuit, v, i)
    net = build_network(circuit, f"ffebm DRN {spec.layer_sizes} exported")
    compliant = spec.peripherals.nudge_compliance_V is not None
    parameter_sources(net, v[0], i[0], spec.depth, (lambda j, x: nudge_source(net, spec, j, x)) if compliant else None)
    deck = deck_with_options(circuit, net)
    deck.operating_point()
    return deck


def parameter_sources(net: SpiceCircuit, source_V, nudge_A, depth: int, nudge=None) -> None:
    """An exported deck's inputs and nudging: ``.param vin{k}`` driving ``VIN{k}`` (node ``L0_N{k}``)
    and ``.param inudge{j}`` driving ``INUDGE{j}`` into output node ``L{depth}_N{j}``, one sample's
    values; ``nudge(j, value)`` adds nudging source ``j`` itself (default: an ideal current source)."""
    for k, value in enumerate(source_V):
        net.parameter(f"vin{k}", repr(float(value)))
        net.V(f"IN{k}", node_name(0, k), net.gnd, f"{{vin{k}}}")
    for j, value in enumerate(nudge_A):
        net.parameter(f"inudge{j}", repr(float(value)))
        if nudge is None:
            net.I(f"NUDGE{j}", net.gnd, node_name(depth, j), f"{{inudge{j}}}")
        else:
            nudge(j, f"{{inudge{j}}}")


def pwl_expression(values: Sequence[float]) -> str:
    """``pwl(v(IDX), 0, x_0, 1, x_1, ...)``: ``x_b`` at sweep point ``b`` (full double precision)."""
    if len(values) == 1:  # pwl needs two points
        values = [values[0], values[0]]
    points = ", ".join(f"{b}, {float(x)!r}" for b, x in enumerate(values))
    return f"pwl(v({SWEEP_NODE}), {points})"


def build_batch(
    circuit: Circuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None, bulk: bool | None = None
) -> Deck:
    """A batch as one deck with a ``.dc`` sweep of ``VIDX`` over the samples ``0..B-1``.

    ``source_V``: ``[B, n_sources]`` (V); ``nudge_A``: ``[B, n_out]`` (A) or ``None``. Sweep point
    ``b`` of every vector of the analysis is sample ``b``. ``bulk``: see :func:`~analog.network.build_network`.
    """
    v = _floats(source_V)
    i = None if nudge_A is None else _floats(nudge_A)
    _check(circuit, v, i)
    spec = circuit.spec
    batch = v.shape[0]
    net = build_network(circuit, f"ffebm DRN {spec.layer_sizes} batch of {batch}", bulk)
    net.V(SWEEP_SOURCE[1:], SWEEP_NODE, net.gnd, 0.0)
    for k in range(spec.n_sources):
        net.BehavioralSource(f"IN{k}", node_name(0, k), net.gnd, voltage_expression=pwl_expression(v[:, k]))
    if i is not None:
        for j in range(spec.n_outputs):
            nudge_source(net, spec, j, pwl_expression(i[:, j]))
    deck = deck_with_options(circuit, net)
    deck.dc(**{SWEEP_SOURCE: slice(0, batch - 1, 1)})
    return deck


def netlist_text(deck: Deck | SpiceCircuit) -> str:
    """The SPICE text of a deck (elements, model, options, analysis, ``.end``), ``\\n`` line ends.

    A bare PySpice ``Circuit`` gives its elements and models only.
    """
    text = str(deck)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def build_transient(
    circuit: Circuit,
    node_F: torch.Tensor,
    source_V: torch.Tensor,
    start: torch.Tensor,
    t_stop_s: float,
    nudge_A: torch.Tensor | None = None,
    max_step_s: float | None = None,
) -> Deck:
    """One sample's phase as a ``.tran`` deck from ``t = 0`` to ``t_stop_s`` seconds.

    The network with DC input sources ``source_V`` (``[n_sources]`` V), nudging currents ``nudge_A``
    (``[n_out]`` A, ``None`` for the free phase) and a capacitor ``CN_<node>`` from every free node
    to ground: ``node_F`` ``[N]`` farads, flat over layers ``1..L`` (e.g.
    :meth:`analog.settling.Capacitances.nodes_F`), initial condition ``start`` ``[N]`` volts
    (``uic``; ``.ic`` when the diode card stores charge, see below). ``max_step_s``: longest time
    step, seconds (``None``: ``t_stop_s / 200``).
    """
    v = _floats(source_V).reshape(1, -1)
    i = None if nudge_A is None else _floats(nudge_A).reshape(1, -1)
    _check(circuit, v, i)
    spec = circuit.spec
    caps, v0 = _floats(node_F).flatten().tolist(), _floats(start).flatten().tolist()
    free = sum(spec.layer_sizes[1:])
    if len(caps) != free or len(v0) != free:
        raise ValueError(f"node_F / start: expected {free} values (free nodes), got {len(caps)} / {len(v0)}")
    net = build_network(circuit, f"ffebm DRN {spec.layer_sizes} transient")
    for k in range(spec.n_sources):
        net.V(f"IN{k}", node_name(0, k), net.gnd, float(v[0, k]))
    if i is not None:
        for j in range(spec.n_outputs):
            nudge_source(net, spec, j, float(i[0, j]))
    # A diode card with charge (CJO/TT): ngspice's "uic" starts every diode junction uncharged,
    # q(0), whatever its node's voltage (and ignores the diode's own IC), so its first step dumps
    # charge into the node. Such decks hold the nodes at their initial voltages through ".ic"
    # instead: ngspice's initial operating point then charges each junction to the voltage its DC
    # current through RS gives, the state the fast transient starts from.
    charge = card_charge(spec)
    initial = {}
    k = 0
    for l in range(1, spec.depth + 1):
        for j in range(spec.layer_sizes[l]):
            node = node_name(l, j)
            if charge is not None:
                net.C(f"N_{node}", node, net.gnd, caps[k])
                initial[node] = v0[k]
            else:
                net.C(f"N_{node}", node, net.gnd, caps[k], initial_condition=v0[k])
            k += 1
    if spec.peripherals.amp_gbw_Hz is not None:
        # Each amplifier's pole starts where the previous phase left it: at its settled output.
        system = GeneralSystem(circuit, torch.as_tensor(v, dtype=circuit.dtype))
        layers = system.split(torch.as_tensor(np.asarray(v0).reshape(1, -1), dtype=circuit.dtype))
        for l in system.amplified():
            tau = spec.amplifier_gains[l - 1] / (2 * np.pi * spec.peripherals.amp_gbw_Hz)
            e0 = system.target(l, layers[l - 1])[0][0].tolist()
            for j in range(spec.layer_sizes[l]):
                if charge is not None:
                    net.C(f"POLE_{node_name(l, j)}", pole_node(l, j), net.gnd, tau / POLE_OHM)
                    initial[pole_node(l, j)] = e0[j]
                else:
                    net.C(f"POLE_{node_name(l, j)}", pole_node(l, j), net.gnd, tau / POLE_OHM, initial_condition=e0[j])
    deck = deck_with_options(circuit, net)
    # Trapezoidal integration with trtol = 1 reached ngspice's best accuracy here (1e-7 V against
    # the fast integrator, in fewer points than gear); chgtol far below the charges here so that
    # reltol (1e-9) governs the steps.
    deck.options(method="trap", trtol=1, chgtol=1e-30)
    step_time = t_stop_s / 1000
    if charge is not None:
        # Junction charges (pF here, on fF nodes) need ngspice settings of their own, found by
        # trial on the decks of tests/test_diode_charge.py (free and nudged phases, 27 and 85 C):
        # * chgtol = 1e-30 makes its steps "too small" in the first picoseconds; its default,
        #   1e-14 C, puts the floor reltol * chgtol = 1e-23 C below 1e-9 V on a 10 fF node;
        # * its first step is backward Euler over a hundredth of step_time. Behind RS the junction
        #   charges through RS in RS x CJO (2 ps for the 1N4148) and its node in femtoseconds; the
        #   usual first step left 5e-4 V errors (against an independent Radau solution), one of
        #   4e-4 RS x CJO leaves ~3e-7 V;
        # * at such tiny steps the charge's rounding over the step (1e-28 C / 1e-16 s) exceeds
        #   abstol = 1e-15 A in the rail sources' currents and Newton never converges: abstol =
        #   1e-12 A, still negligible against the junctions' charging currents; without RS the
        #   usual first step, which tiny steps there cannot pass even so.
        deck.options(chgtol=1e-14, abstol=1e-12)
        if spec.diode.rs_ohm and charge.cj_F:
            step_time = 100 * min(t_stop_s / 1e8, 4e-4 * spec.diode.rs_ohm * charge.cj_F)
        deck.initial_condition(**initial)
    if spec.peripherals.amp_gbw_Hz is not None:
        # ngspice's first step is backward Euler over a hundredth of step_time: with the amplifiers'
        # poles that left 3.6e-6 V in the first 65 fs against the fast integrator (measured on a
        # 64-12-8-10 block); a first step of t_stop / 1e8 leaves 4e-8 V.
        step_time = min(step_time, 100 * t_stop_s / 1e8)
    max_step = max_step_s if max_step_s is not None else t_stop_s / 200
    deck.transient(step_time=step_time, end_time=t_stop_s, max_time=max_step, use_initial_condition=charge is None)
    return deck
