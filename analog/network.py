"""The SPICE elements every deck of a :class:`~analog.circuit.Circuit` shares, built through PySpice.

:func:`build_network` makes the bias sources, crossbars (optionally with resistive wires, see
:mod:`analog.wires`), amplifiers, diode rails and neurons; :mod:`analog.netlist` adds the sources,
capacitors, options and analysis of each kind of deck. Element and node names are listed in
:mod:`analog.netlist`.

One deviation from "build netlists through PySpice's API": PySpice spends ~36 us per element in its
parameter descriptors, ~15 s for the ~400k resistors of a 784-256-10 crossbar. Above
:data:`BULK_RESISTORS` resistors, the crossbar ``R`` lines are formatted with ``str.join`` and
attached through PySpice's documented ``raw_spice`` facility (which PySpice prints before the
elements); every other element still goes through the API. ``tests/test_netlist.py`` checks that the
bulk lines equal PySpice's own, name for name, value for value and in the same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySpice.Spice.Netlist import Circuit as SpiceCircuit

from analog.circuit import node_name
from analog.diode import DiodeModel

if TYPE_CHECKING:
    import torch

    from analog.circuit import Circuit

__all__ = [
    "BULK_RESISTORS",
    "DIODE_MODEL",
    "POLE_OHM",
    "build_network",
    "driver_node",
    "nudge_source",
    "pole_node",
    "resistor_lines",
]

DIODE_MODEL = "DNEURON"
BULK_RESISTORS = 5000
"""Crossbars with more resistors than this are written through ``raw_spice`` (see the module doc)."""


def _card(diode: DiodeModel, n: float) -> dict[str, float]:
    """Parameters of the built-in neuron diode's ``.model`` card, temperature model and breakdown
    included (``NBV`` only when set: ngspice's default is the card's own ``N``)."""
    card = {"IS": diode.is_A, "N": n, "TNOM": diode.tnom_C, "XTI": diode.xti, "EG": diode.eg_eV}
    if diode.rs_ohm:
        card["RS"] = diode.rs_ohm
    if diode.bv_V is not None:
        card.update(BV=diode.bv_V, IBV=diode.ibv_A)
        if diode.nbv is not None:
            card["NBV"] = diode.nbv
        if diode.tcv_V_per_K:
            card["TCV"] = diode.tcv_V_per_K
    return card


def _bias_nodes(layer: int) -> tuple[str, str]:
    return f"L{layer}_BP", f"L{layer}_BN"


def _amplifier_nodes(layer: int, index: int) -> tuple[str, str]:
    return f"L{layer}_A{index}", f"L{layer}_X{index}"


def _inverted_nodes(layer: int, index: int) -> tuple[str, str]:
    """Output of node ``index``'s inverting stage and the crossbar side of its sense source."""
    return f"L{layer}_M{index}", f"L{layer}_Y{index}"


def driver_node(index: int) -> str:
    """Row node that input source ``index`` drives through its driver resistance ``RDRV{index}``."""
    return f"L0_D{index}"


def _floats(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _resistors(circuit: Circuit) -> list[tuple[str, list[str], list[str], list[list[float]]]]:
    """Every crossbar as ``(name prefix, row nodes, column nodes, ohms[row][column])``, in deck order:
    weights of layers ``0..L-1``, then biases. Resistor ``(i, j)`` is ``R{prefix}{i}_{j}``."""
    spec = circuit.spec
    sizes = spec.nodes_per_layer()
    groups = []
    driven = spec.peripherals.driver_ohm is not None
    # With TC1/TC2 the deck holds the nominal resistances and ngspice scales them to TEMP.
    factor = spec.conductance_factor() if spec.has_temperature_coefficients else 1.0
    for l, w in enumerate(circuit.weights):
        if l == 0 and driven:
            rows = [driver_node(i) for i in range(sizes[0])]
        else:
            rows = [_amplifier_nodes(l, i)[1] if spec.has_amplifier(l) else node_name(l, i) for i in range(sizes[l])]
            if spec.paired(l):
                rows += [_inverted_nodes(l, i)[1] for i in range(sizes[l])]
        cols = [node_name(l + 1, j) for j in range(sizes[l + 1])]
        # 1.0 / g in float64 is the correctly rounded quotient, as Python's float division.
        groups.append((f"W{l}_", rows, cols, (factor / _floats(w)).tolist()))
    for l, b in enumerate(circuit.biases):
        rows = list(_bias_nodes(l)[: spec.n_bias])
        cols = [node_name(l + 1, j) for j in range(sizes[l + 1])]
        groups.append((f"B{l}_", rows, cols, (factor / _floats(b)).tolist()))
    return groups


def _wired_resistors(circuit: Circuit) -> list[tuple[str, str, str, float]]:
    """Every resistor of crossbars with resistive wires as ``(name without R, node, node, ohms)``.

    The geometry is that of :mod:`analog.wires`: crossbar ``l``'s rows (weight rows then bias
    rows) are laid out in the order of :meth:`Circuit.wire_row_order` (input pairs interleaved); the
    driver of the row at position ``i`` feeds cross-point ``(i, 0)`` first, column ``j``'s node is
    reached past the last position. Devices keep their names (``RW{l}_{row}_{j}``,
    ``RB{l}_{p}_{j}``) and join ``L{l}_WR{i}_{j}`` (row wire) to ``L{l}_WC{i}_{j}`` (column wire);
    ``RSR{l}_{i}_{j}`` is the row segment ending at cross-point ``(i, j)``, ``RSC{l}_{i}_{j}`` the
    column segment leaving it towards the readout."""
    wire = float(circuit.spec.wire_ohm)
    elements = []
    for l, rows, cols, ohms in _crossbars(circuit):
        n_rows = len(rows)
        order = circuit.wire_row_order(l)
        rows, ohms = [rows[r] for r in order], [ohms[r] for r in order]
        for i, (src, name) in enumerate(rows):
            for j in range(len(cols)):
                row_node, col_node = f"L{l}_WR{i}_{j}", f"L{l}_WC{i}_{j}"
                before = src if j == 0 else f"L{l}_WR{i}_{j - 1}"
                after = cols[j] if i == n_rows - 1 else f"L{l}_WC{i + 1}_{j}"
                elements.append((f"SR{l}_{i}_{j}", before, row_node, wire))
                elements.append((f"{name}{j}", row_node, col_node, ohms[i][j]))
                elements.append((f"SC{l}_{i}_{j}", col_node, after, wire))
    return elements


def _crossbars(circuit: Circuit):
    """Per crossbar ``l``: ``(l, [(row node, device name prefix)], column nodes, ohms[row][column])``
    with the weight rows before the bias rows (the physical row order of :mod:`analog.wires`)."""
    groups = _resistors(circuit)
    depth = circuit.spec.depth
    for l in range(depth):
        w_prefix, w_rows, cols, w_ohms = groups[l]
        b_prefix, b_rows, _, b_ohms = groups[depth + l]
        rows = [(node, f"{w_prefix}{i}_") for i, node in enumerate(w_rows)]
        rows += [(node, f"{b_prefix}{p}_") for p, node in enumerate(b_rows)]
        yield l, rows, cols, w_ohms + b_ohms


def resistor_lines(resistors, suffix: str = "") -> str:
    """The ``R`` lines of crossbar groups ``(name prefix, row nodes, column nodes, ohms[row][column])``
    as PySpice prints them (``repr`` of each value), each followed by ``suffix`` (e.g. ``tc1=...``)."""
    lines = []
    for prefix, sources, targets, ohms in resistors:
        for i, src in enumerate(sources):
            head = f"R{prefix}{i}_"
            tails = [f" {src} {dst} " for dst in targets]
            lines.extend(
                [f"{head}{j}{tail}{r!r}{suffix}" for j, (tail, r) in enumerate(zip(tails, ohms[i], strict=True))]
            )
    return "\n".join(lines) + "\n" if lines else ""


def _tc_suffix(spec) -> str:
    """``tc1=... tc2=...`` for the crossbar devices' lines (empty without coefficients)."""
    if not spec.has_temperature_coefficients:
        return ""
    return f" tc1={float(spec.conductance_tc1)!r} tc2={float(spec.conductance_tc2)!r}"


def build_network(circuit: Circuit, title: str, bulk: bool | None = None) -> SpiceCircuit:
    """Every element of ``circuit`` but the input sources, nudging currents and capacitors, as a
    PySpice ``Circuit`` titled ``title``: bias sources, crossbars (with wires when
    ``spec.wire_ohm`` is set), amplifiers, diode rails and diodes or the user's neuron subcircuits.

    ``bulk``: write the crossbar resistors through ``raw_spice`` (``None``: above :data:`BULK_RESISTORS`).
    """
    spec = circuit.spec
    net = SpiceCircuit(title)
    gnd = net.gnd

    for l in range(spec.depth):
        if spec.bias_V is not None:
            plus, minus = _bias_nodes(l)
            net.V(f"B{l}P", plus, gnd, float(spec.bias_V))
            net.V(f"B{l}N", minus, gnd, -float(spec.bias_V))
    _drivers_and_nudge_loads(net, spec)

    suffix = _tc_suffix(spec)  # PySpice's resistor has no tc1/tc2: such decks are written as lines
    if spec.wire_ohm is not None:
        elements = _wired_resistors(circuit)
        if bulk is None:
            bulk = len(elements) > BULK_RESISTORS
        if bulk or suffix:
            net.raw_spice += "".join(
                f"R{name} {a} {b} {r!r}{'' if name.startswith('S') else suffix}\n" for name, a, b, r in elements
            )
        else:
            for name, a, b, r in elements:
                net.R(name, a, b, r)
        return _amplifiers_and_neurons(net, circuit)

    resistors = _resistors(circuit)
    if bulk is None:
        bulk = sum(len(rows) * len(cols) for _, rows, cols, _ in resistors) > BULK_RESISTORS
    if bulk or suffix:
        net.raw_spice += resistor_lines(resistors, suffix)
    else:
        for prefix, sources, targets, ohms in resistors:
            for i, src in enumerate(sources):
                for j, dst in enumerate(targets):
                    net.R(f"{prefix}{i}_{j}", src, dst, ohms[i][j])
    return _amplifiers_and_neurons(net, circuit)


POLE_OHM = 1000.0
"""Resistance of each amplifier's pole network (its capacitor, added by transient decks, sets the
time constant ``A / (2 pi GBW)``)."""


def pole_node(layer: int, index: int) -> str:
    """The node of amplifier ``index``'s pole capacitor (after free layer ``layer``)."""
    return f"L{layer}_Q{index}"


def _drivers_and_nudge_loads(net: SpiceCircuit, spec) -> None:
    """The input drivers' output resistances ``RDRV{k}`` and the nudging sources' ``RNUDGE{j}``
    (:mod:`analog.peripherals`), when they are not ideal."""
    p = spec.peripherals
    if p.driver_ohm is not None:
        for k in range(spec.n_sources):
            net.R(f"DRV{k}", node_name(0, k), driver_node(k), float(p.driver_ohm))
    if p.nudge_out_ohm is not None:
        for j in range(spec.n_outputs):
            net.R(f"NUDGE{j}", node_name(spec.depth, j), net.gnd, float(p.nudge_out_ohm))


def _amplifiers_and_neurons(net: SpiceCircuit, circuit: Circuit) -> SpiceCircuit:
    spec = circuit.spec
    sizes = spec.nodes_per_layer()
    gnd = net.gnd
    p = spec.peripherals
    drawn = None if circuit.amp_offset is None else circuit.amp_offset.detach().double().tolist()
    k = 0
    for l in range(1, spec.depth):
        if spec.paired(l):
            _inverting_stages(net, spec, l, sizes[l])
        if not spec.has_amplifier(l):
            continue
        gain = float(spec.amplifier_gains[l - 1])
        for j in range(sizes[l]):
            node = node_name(l, j)
            out, cross = _amplifier_nodes(l, j)
            # With an output resistance the forward stage drives L{l}_E{j}, then RAOUT to L{l}_A{j};
            # with a gain-bandwidth it drives the pole L{l}_P{j} -> RPOLE -> L{l}_Q{j} (CPOLE to
            # ground: transient decks) and a unity buffer EBUF from there.
            stage = out if p.amp_out_ohm is None else f"L{l}_E{j}"
            buffered = stage
            if p.amp_gbw_Hz is not None:
                stage = f"L{l}_P{j}"
                net.R(f"POLE_{node}", stage, pole_node(l, j), POLE_OHM)
                net.VCVS(f"BUF_{node}", buffered, gnd, pole_node(l, j), gnd, voltage_gain=1.0)
            offset = float(p.amp_offset_V) + (0.0 if drawn is None else drawn[k])
            k += 1
            if p.amp_swing_V is None and offset == 0.0:
                net.VCVS(f"AMP_{node}", stage, gnd, node, gnd, voltage_gain=gain)
            else:
                x = f"(v({node})+({offset!r}))"
                if p.amp_swing_V is None:
                    expression = f"{gain!r}*{x}"
                else:
                    swing = float(p.amp_swing_V)
                    expression = f"{swing!r}*tanh({gain / swing!r}*{x})"
                net.BehavioralSource(f"AMP_{node}", stage, gnd, voltage_expression=expression)
            if p.amp_out_ohm is not None:
                net.R(f"AOUT_{node}", buffered, out, float(p.amp_out_ohm))
            net.V(f"SENSE_{node}", out, cross, 0.0)
            net.CCCS(f"AMP_{node}", node, gnd, f"VSENSE_{node}", current_gain=1.0 / gain)
            if p.amp_in_ohm is not None:
                net.R(f"AIN_{node}", node, gnd, float(p.amp_in_ohm))

    add_neurons(net, spec, sizes, circuit.diode_area, circuit.diode_emission)
    return net


def _inverting_stages(net: SpiceCircuit, spec, layer: int, n: int) -> None:
    """The ``-`` rails of dual-rail layer ``layer`` (:attr:`~analog.circuit.CircuitSpec.hidden_pairs`):
    per node a VCVS of gain ``-A`` (``A`` the layer's amplifier gain, 1 without one), a 0 V sense
    source and a CCCS returning ``-I / A`` to the node, the bidirectional amplifier inverted."""
    gain = spec.gains()[layer - 1] if spec.has_amplifier(layer) else 1.0
    for j in range(n):
        node = node_name(layer, j)
        out, cross = _inverted_nodes(layer, j)
        net.VCVS(f"INV_{node}", out, net.gnd, node, net.gnd, voltage_gain=-gain)
        net.V(f"ISENSE_{node}", out, cross, 0.0)
        net.CCCS(f"INV_{node}", node, net.gnd, f"VISENSE_{node}", current_gain=-1.0 / gain)


def nudge_source(net: SpiceCircuit, spec, index: int, current: float | str) -> None:
    """The nudging current source into output node ``index``: ``current`` amperes (a value, or an
    expression such as a ``pwl``). With a compliance (:mod:`analog.peripherals`) it is a behavioral
    source whose current fades as the node runs out of headroom: ``I sigmoid((C - v) / K)`` when
    sourcing, ``I sigmoid((v + C) / K)`` when sinking."""
    p = spec.peripherals
    node = node_name(spec.depth, index)
    if p.nudge_compliance_V is None:
        if isinstance(current, str):
            net.BehavioralSource(f"NUDGE{index}", net.gnd, node, current_expression=current)
        else:
            net.I(f"NUDGE{index}", net.gnd, node, float(current))
        return
    i = current if isinstance(current, str) else repr(float(current))
    c, k = float(p.nudge_compliance_V), float(p.nudge_knee_V)
    fade = f"(u({i})/(1+exp((v({node})-({c!r}))/{k!r}))+(1-u({i}))/(1+exp((-({c!r})-v({node}))/{k!r})))"
    net.BehavioralSource(f"NUDGE{index}", net.gnd, node, current_expression=f"({i})*{fade}")


def add_neurons(
    net: SpiceCircuit, spec, sizes, area: torch.Tensor | None = None, emission: torch.Tensor | None = None
) -> None:
    """The nonlinearity at every free node: two diodes to the rails, or the user's neuron subcircuit.
    ``area``: per-diode ``Is`` factors ``[2, sum n_l]`` (instance ``area``), ``None`` for 1;
    ``emission``: per-diode factors of ``N`` (one ``.model`` card per diode), ``None`` for 1."""
    user = spec.user_models
    if user is not None:
        # Validated and re-printed by analog.models: no user text reaches the deck unparsed.
        net.raw_spice = user.spice() + net.raw_spice
        if user.neuron_subckt is not None:
            for l in range(1, spec.depth + 1):
                for j in range(sizes[l]):
                    node = node_name(l, j)
                    net.X(f"NRN_{node}", user.neuron_subckt, node)
            return
    model = DIODE_MODEL if user is None or user.diode_model is None else user.diode_model
    gnd = net.gnd
    diode = spec.diode
    if model == DIODE_MODEL and (spec.diode_up_V is not None or spec.diode_down_V is not None):
        net.model(DIODE_MODEL, "D", **_card(diode, diode.n))
    if spec.diode_up_V is not None:
        net.V("RAIL_UP", "RAIL_UP", gnd, float(spec.diode_up_V))
    if spec.diode_down_V is not None:
        net.V("RAIL_DN", "RAIL_DN", gnd, float(spec.diode_down_V))
    factors = None if area is None else area.detach().double().tolist()
    n_factors = None if emission is None else emission.detach().double().tolist()
    if n_factors is not None and model != DIODE_MODEL:
        raise ValueError("diode_emission: a spread of N needs the built-in diode model, not the user's diode_model")
    flat = 0
    for l in range(1, spec.depth + 1):
        for j in range(sizes[l]):
            node = node_name(l, j)
            for side, row, present in (
                ("UP", 0, spec.diode_up_V is not None),
                ("DN", 1, spec.diode_down_V is not None),
            ):
                if not present:
                    continue
                # ngspice's instance area: the block's own times the diode's spread factor.
                area = diode.area if factors is None else diode.area * float(factors[row][flat])
                extra = {} if area == 1.0 and factors is None else {"area": area}
                own = model
                if n_factors is not None:
                    # ngspice has no instance parameter for N: one model card per diode.
                    own = f"{DIODE_MODEL}_{side}_{node}"
                    n = diode.n * float(n_factors[row][flat])
                    net.model(own, "D", **_card(diode, n))
                anode, cathode = (node, "RAIL_UP") if side == "UP" else ("RAIL_DN", node)
                net.D(f"{side}_{node}", anode, cathode, model=own, **extra)
            flat += 1
