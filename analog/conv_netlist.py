"""A convolutional block (:mod:`analog.conv_circuit`) unrolled into a SPICE deck, through PySpice.

Every kernel tap becomes one resistor per position where it has a device, so the deck is the
physical crossbar: ``RW{l}_{c}_{r}_{i}_{j}_{y}_{x}`` joins row terminal ``(r, y + i - p, x + j - p)``
of layer ``l`` to node ``(c, y, x)`` of layer ``l + 1``. Nodes are named as in :mod:`analog.netlist`
(``L{l}_N{n}``, ``n`` the flat channel-major index ``c H W + y W + x``; layer 0: the sources, ``+``
then ``-``). Each hidden node ``L{l}_N{n}`` drives its ``-`` rail through an inverting bidirectional
amplifier: the VCVS ``EINV_L{l}_N{n}`` (gain -1) drives ``L{l}_A{n}``, the 0 V source
``VSENSE_L{l}_N{n}`` senses its current ``I`` on the way to the crossbar row ``L{l}_X{n}``, and
the CCCS ``FINV_L{l}_N{n}`` draws ``I / A = -I`` out of the node. Bias sources ``VB{l}P`` /
``VB{l}N``, the diodes and the rails are those of the dense deck. One ``.dc`` sweep holds the
whole batch (:func:`analog.netlist.build_batch`'s scheme).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PySpice.Spice.Netlist import Circuit as SpiceCircuit

from analog.circuit import node_name
from analog.conv_circuit import ConvCircuit

# The dense deck's sweep expression, options and neurons, shared so that both decks are solved alike.
from analog.netlist import (
    SWEEP_NODE,
    SWEEP_SOURCE,
    Deck,
    deck_with_options,
    netlist_text,
    parameter_sources,
    pwl_expression,
)
from analog.network import add_neurons

__all__ = ["ConvProbes", "build_conv_batch", "build_conv_export", "conv_netlist_text", "conv_probes", "conv_resistors"]


@dataclass(frozen=True)
class ConvProbes:
    """The ngspice vectors of a conv deck (lower case): node voltages per free layer, the input
    sources' and the bias sources' branch currents."""

    voltages: tuple[tuple[str, ...], ...]
    input_currents: tuple[str, ...]
    bias_currents: tuple[tuple[str, ...], ...]

    def all(self) -> tuple[str, ...]:
        return (
            *(n for layer in self.voltages for n in layer),
            *self.input_currents,
            *(n for layer in self.bias_currents for n in layer),
        )


def conv_probes(circuit: ConvCircuit) -> ConvProbes:
    spec = circuit.spec
    return ConvProbes(
        voltages=tuple(
            tuple(node_name(l, n).lower() for n in range(spec.layer_sizes[l])) for l in range(1, spec.depth + 1)
        ),
        input_currents=tuple(f"bin{k}#branch" for k in range(spec.n_sources)),
        bias_currents=tuple(tuple(f"vb{l}{s}#branch" for s in ("p", "n")[: spec.n_bias]) for l in range(spec.depth)),
    )


def conv_resistors(spec) -> int:
    """Resistors of the unrolled deck: a kernel tap has a device at every position whose row
    terminal lies inside the map ('same' padding: fewer at the border), plus the bias devices of
    every node."""
    (h, w), k, p = spec.side, spec.kernel_size, spec.padding
    inside = sum(min(h, h + p - i) - max(0, p - i) for i in range(k)) * sum(
        min(w, w + p - j) - max(0, p - j) for j in range(k)
    )
    taps = sum(c_out * rows for c_out, rows, _, _ in spec.kernel_shapes())
    return taps * inside + spec.n_bias * sum(spec.layer_sizes[1:])


def _row_node(circuit: ConvCircuit, l: int, r: int, pos: int) -> str:
    """Crossbar ``l``'s row terminal of channel ``r`` at flat position ``pos``."""
    if l == 0:
        return node_name(0, r * circuit.spec.positions + pos)
    c = circuit.spec.channels[l]
    n = (r % c) * circuit.spec.positions + pos
    return node_name(l, n) if r < c else f"L{l}_X{n}"


def _crossbars(net: SpiceCircuit, circuit: ConvCircuit) -> None:
    spec = circuit.spec
    h, w = spec.side
    p = spec.padding
    for l, kernel in enumerate(circuit.kernels):
        ohms = (1.0 / kernel.detach().cpu().double()).tolist()
        c_out, rows, k, _ = kernel.shape
        for c in range(c_out):
            for r in range(rows):
                for i in range(k):
                    for j in range(k):
                        for y in range(max(0, p - i), min(h, h + p - i)):
                            for x in range(max(0, p - j), min(w, w + p - j)):
                                row = _row_node(circuit, l, r, (y + i - p) * w + x + j - p)
                                col = node_name(l + 1, c * spec.positions + y * w + x)
                                net.R(f"W{l}_{c}_{r}_{i}_{j}_{y}_{x}", row, col, ohms[c][r][i][j])
    for l, bias in enumerate(circuit.biases):
        if not bias.numel():
            continue
        net.V(f"B{l}P", f"L{l}_BP", net.gnd, float(spec.bias_V))
        net.V(f"B{l}N", f"L{l}_BN", net.gnd, -float(spec.bias_V))
        ohms = (1.0 / bias.detach().cpu().double()).tolist()
        for s, terminal in enumerate((f"L{l}_BP", f"L{l}_BN")):
            for n in range(spec.layer_sizes[l + 1]):
                net.R(f"B{l}_{s}_{n}", terminal, node_name(l + 1, n), ohms[s][n // spec.positions])


def _inverters(net: SpiceCircuit, circuit: ConvCircuit) -> None:
    gnd = net.gnd
    for l in range(1, circuit.spec.depth):
        for n in range(circuit.spec.layer_sizes[l]):
            node = node_name(l, n)
            net.VCVS(f"INV_{node}", f"L{l}_A{n}", gnd, node, gnd, voltage_gain=-1.0)
            net.V(f"SENSE_{node}", f"L{l}_A{n}", f"L{l}_X{n}", 0.0)
            net.CCCS(f"INV_{node}", node, gnd, f"VSENSE_{node}", current_gain=-1.0)


def _network(circuit: ConvCircuit, title: str) -> SpiceCircuit:
    """The unrolled crossbars, inverting amplifiers, bias sources, diodes and rails (no inputs)."""
    net = SpiceCircuit(title)
    _crossbars(net, circuit)
    _inverters(net, circuit)
    add_neurons(net, circuit.spec, (0, *circuit.spec.layer_sizes[1:]))
    return net


def _check_sources(circuit: ConvCircuit, v, i) -> None:
    spec = circuit.spec
    if v.ndim != 2 or v.shape[1] != spec.n_sources or not v.shape[0]:
        raise ValueError(f"source voltages: expected shape [batch >= 1, {spec.n_sources}], got {list(v.shape)}")
    if i is not None and i.shape != (v.shape[0], spec.n_outputs):
        raise ValueError(f"nudging currents: expected shape [{v.shape[0]}, {spec.n_outputs}], got {list(i.shape)}")


def build_conv_batch(circuit: ConvCircuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None) -> Deck:
    """The batch as one deck with a ``.dc`` sweep of ``VIDX`` over its samples ``0..B-1``.

    ``source_V``: ``[B, 2 C_0 H W]`` (V); ``nudge_A``: ``[B, C_L H W]`` (A) injected into the
    output nodes, or ``None``."""
    spec = circuit.spec
    v = source_V.detach().cpu().double().numpy()
    i = None if nudge_A is None else nudge_A.detach().cpu().double().numpy()
    _check_sources(circuit, v, i)
    batch = v.shape[0]
    net = _network(circuit, f"ffebm conv DRN {spec.channels} on {spec.side[0]}x{spec.side[1]}, batch of {batch}")
    net.V(SWEEP_SOURCE[1:], SWEEP_NODE, net.gnd, 0.0)
    for k in range(spec.n_sources):
        net.BehavioralSource(f"IN{k}", node_name(0, k), net.gnd, voltage_expression=pwl_expression(v[:, k]))
    if i is not None:
        for n in range(spec.n_outputs):
            net.BehavioralSource(
                f"NUDGE{n}", net.gnd, node_name(spec.depth, n), current_expression=pwl_expression(i[:, n])
            )
    deck = deck_with_options(circuit, net)
    deck.dc(**{SWEEP_SOURCE: slice(0, batch - 1, 1)})
    return deck


def build_conv_export(circuit: ConvCircuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None) -> Deck:
    """A self-contained ``.op`` deck of one sample for plain ``ngspice -b``, as
    :func:`analog.netlist.build_export` writes for dense blocks: every input voltage and nudging
    current is a parameter (``.param vin{k}=...`` driving ``VIN{k}``, ``.param inudge{n}=...``
    driving ``INUDGE{n}``; nudging 0 A when ``nudge_A`` is ``None``).

    ``source_V``: ``[2 C_0 H W]`` or ``[1, 2 C_0 H W]`` (V); ``nudge_A``: ``[C_L H W]`` (A)."""
    spec = circuit.spec
    v = source_V.detach().cpu().double().numpy().reshape(1, -1)
    i = (
        torch.zeros(1, spec.n_outputs, dtype=torch.float64).numpy()
        if nudge_A is None
        else nudge_A.detach().cpu().double().numpy().reshape(1, -1)
    )
    _check_sources(circuit, v, i)
    net = _network(circuit, f"ffebm conv DRN {spec.channels} on {spec.side[0]}x{spec.side[1]} exported")
    parameter_sources(net, v[0], i[0], spec.depth)
    deck = deck_with_options(circuit, net)
    deck.operating_point()
    return deck


def conv_netlist_text(circuit: ConvCircuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None) -> str:
    """The SPICE text of :func:`build_conv_batch`."""
    return netlist_text(build_conv_batch(circuit, source_V, nudge_A))
