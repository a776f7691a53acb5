"""Analog blocks: resistive-crossbar circuits, device models and equilibrium solvers."""

from analog.circuit import Circuit, CircuitSpec, node_name
from analog.conv_circuit import ConvCircuit, ConvCircuitSpec
from analog.devices import ConductanceRange
from analog.diode import DiodeModel, thermal_voltage

__all__ = [
    "Circuit",
    "CircuitSpec",
    "ConductanceRange",
    "ConvCircuit",
    "ConvCircuitSpec",
    "DiodeModel",
    "node_name",
    "thermal_voltage",
]
