"""The operating point of one analog block: is it the nonlinear circuit it was designed to be?

For an equilibrium of a batch, per free layer:

* the fraction of diodes *conducting*: a diode counts when its small-signal conductance reaches
  :data:`KNEE_FRACTION` of the resistive conductance at its node (the crossbar devices on the
  node's lines), i.e. when it visibly bends the node's response. A block in which almost no diode
  conducts (:data:`LINEAR_FRACTION`) computes a linear map, whatever its diode model says;
* the node voltages' span, and the voltage at which a diode of the layer reaches that knee
  (``n Vt ln(1 + KNEE_FRACTION G n Vt / Is)`` past its rail), so that a linear block comes with
  where its rails would have to move;
* the peak line currents: the largest current into a crossbar row (the input drivers' currents
  for crossbar 0) and into a column (a node).

:func:`nudge_report` compares the change a nudge causes at the nodes with the measurement's
least significant bit (:class:`analog.readout.Measurement`): a nudge below one LSB is invisible
to the readout, and EP then measures quantisation noise.
"""

from __future__ import annotations

import math

import torch

from analog.circuit import Circuit
from analog.conv_circuit import ConvCircuit
from analog.readout import Measurement
from analog.solvers.base import Equilibrium
from analog.solvers.general import row_voltages

__all__ = [
    "KNEE_FRACTION",
    "LINEAR_FRACTION",
    "conv_operating_point",
    "nudge_report",
    "operating_point",
    "read_lsb_V",
]

KNEE_FRACTION = 0.1
"""A diode conducts when its small-signal conductance is at least this fraction of its node's."""
LINEAR_FRACTION = 0.01
"""A block with fewer conducting diodes than this fraction is reported as effectively linear."""


def _node_conductance(circuit: Circuit) -> list[torch.Tensor]:
    """Resistive conductance at every node of free layers ``1..L`` (siemens, per node)."""
    out = []
    depth = circuit.spec.depth
    for l in range(depth):
        g = circuit.weights[l].sum(0) + circuit.biases[l].sum(0)
        if l + 1 < depth:
            g = g + circuit.spec.fold_rows(l + 1, circuit.weights[l + 1].sum(1), sign=1.0)
        out.append(g.detach().double())
    return out


def _diode_layers(spec, voltages, node_G, area=None, emission=None) -> tuple[list[dict], float, int]:
    """Per free layer the conducting fraction, the node span and the knee voltage; the block's
    conducting fraction and its number of diodes."""
    diode = spec.diode
    layers, first = [], 0
    conducting_total, diodes_total = 0, 0
    rails = [(row, rail, sign) for row, rail, sign in ((0, spec.diode_up_V, 1.0), (1, spec.diode_down_V, -1.0))]
    rails = [r for r in rails if r[1] is not None]
    for l, v in enumerate(voltages):
        v = v.detach().double()
        nodes = slice(first, first + v.shape[1])
        first += v.shape[1]
        conducting = 0
        for row, rail, sign in rails:
            a = None if area is None else area[row, nodes]
            n = None if emission is None else emission[row, nodes]
            _, g = diode.current(sign * (v - rail), a, n)
            conducting += int((g >= KNEE_FRACTION * node_G[l]).sum())
        diodes = len(rails) * v.numel()
        conducting_total, diodes_total = conducting_total + conducting, diodes_total + diodes
        g_node = float(node_G[l].median())
        knee = diode.vte_V * math.log1p(KNEE_FRACTION * g_node * diode.vte_V / diode.saturation_current())
        layers.append(
            {
                "layer": l + 1,
                "diodes_conducting_fraction": conducting / diodes if diodes else 0.0,
                "node_min_V": float(v.min()),
                "node_max_V": float(v.max()),
                "knee_V": knee,
            }
        )
    return layers, (conducting_total / diodes_total if diodes_total else 0.0), diodes_total


def _report(spec, layers: list[dict], fraction: float, diodes: int, eq: Equilibrium, **currents) -> dict:
    report = {
        "diodes_conducting_fraction": fraction,
        "layers": layers,
        "max_driver_current_A": float(eq.input_currents_A.detach().abs().max()),
        **currents,
        "output_swing_V": float(eq.output.max() - eq.output.min()),
        "max_kcl_residual_A": float(eq.residual_A.max()),
        "warnings": [],
    }
    if diodes and fraction < LINEAR_FRACTION:
        report["warnings"].append(_linear_warning(spec, layers, fraction))
    return report


def operating_point(circuit: Circuit, source_V: torch.Tensor, eq: Equilibrium) -> dict:
    """The summary of the module docstring for one free (or nudged) equilibrium; JSON-able."""
    area = None if circuit.diode_area is None else circuit.diode_area.detach().double()
    emission = None if circuit.diode_emission is None else circuit.diode_emission.detach().double()
    layers, fraction, diodes = _diode_layers(circuit.spec, eq.voltages, _node_conductance(circuit), area, emission)
    row_A, col_A = _line_currents(circuit, source_V, eq)
    return _report(circuit.spec, layers, fraction, diodes, eq, max_row_current_A=row_A, max_column_current_A=col_A)


def conv_operating_point(circuit: ConvCircuit, eq: Equilibrium) -> dict:
    """:func:`operating_point` of a conv block's equilibrium (nominal diodes; no line currents:
    a conv block's rows and columns are the replicated kernel taps, not single wires)."""
    node_G = [d.detach().double().flatten() for d in circuit.diagonal()]
    layers, fraction, diodes = _diode_layers(circuit.spec, eq.voltages, node_G)
    return _report(circuit.spec, layers, fraction, diodes, eq)


def _linear_warning(spec, layers: list[dict], fraction: float) -> str:
    lo = min(x["node_min_V"] for x in layers)
    hi = max(x["node_max_V"] for x in layers)
    knee = layers[0]["knee_V"]
    parts = [
        f"effectively linear: {100 * fraction:.2g}% of diodes conduct (nodes span [{lo:.3g}, {hi:.3g}] V, a "
        f"diode reaches its knee {knee:.3g} V past its rail)"
    ]
    hints = []
    if spec.diode_up_V is not None:
        hints.append(f"diode_up_V <= {hi - knee:.3g}")
    if spec.diode_down_V is not None:
        hints.append(f"diode_down_V >= {lo + knee:.3g}")
    if hints:
        parts.append(f"move the rails towards the signal ({', '.join(hints)}) or raise input_gain_V")
    return "; ".join(parts)


def _line_currents(circuit: Circuit, source_V: torch.Tensor, eq: Equilibrium) -> tuple[float, float]:
    """Largest current into a crossbar row and into a column over the batch, amperes (the row
    voltages as the devices see them, drivers' and amplifiers' non-idealities included)."""
    spec = circuit.spec
    v = tuple(t.detach().to(circuit.dtype) for t in eq.voltages)
    src = source_V.detach().to(circuit.dtype)
    row_max = col_max = 0.0
    for l, g in enumerate(circuit.weights):
        g = g.detach()
        y = v[l]
        if not circuit.ideal_peripherals:
            x = row_voltages(circuit, l, src, v)
        elif l == 0:
            x = src
        else:
            x = spec.row_drive(l, v[l - 1])
        rows = x * g.sum(1) - y @ g.T
        cols = x @ g - y * g.sum(0)
        row_max = max(row_max, float(rows.abs().max()))
        col_max = max(col_max, float(cols.abs().max()))
    return row_max, col_max


def read_lsb_V(measurement: Measurement, layers: int) -> list[float | None]:
    """The voltage step EP's change ``a - b`` is resolved to at each free layer's nodes (input
    referred; ``None``: exact), for ``layers`` free layers."""
    if measurement.mode == "differential":
        if measurement.diff_bits is None:
            return [None] * layers
        step = 2 * measurement.diff_range_V / (2**measurement.diff_bits - 1)
        return [step / g for g in measurement.layer_gains(layers)]
    if measurement.bits is None:
        return [None] * layers
    return [2 * measurement.range_V / (2**measurement.bits - 1)] * layers


def nudge_report(measurement: Measurement, response_V: tuple[float, ...]) -> dict:
    """The largest nudge-induced change per free layer (``response_V``, volts, from
    :func:`cosim.gradients.nudge_response`) against the readout's LSB, with a warning per layer
    whose change stays below one LSB."""
    lsb = read_lsb_V(measurement, len(response_V))
    warnings = [
        f"layer {l + 1}: the nudge moves the nodes by at most {r * 1e3:.3g} mV, below the readout LSB "
        f"{q * 1e3:.3g} mV: raise beta, nudge_scale_V or the differential gain (measurement.diff_gain)"
        for l, (r, q) in enumerate(zip(response_V, lsb, strict=True))
        if q is not None and r < q
    ]
    return {"nudge_response_V": list(response_V), "read_lsb_V": lsb, "warnings": warnings}
