"""Analog blocks: resistive-crossbar circuits, device models and equilibrium solvers."""

from analog.circuit import Circuit, CircuitSpec, node_name
from analog.devices import ConductanceRange
from analog.diode import DiodeModel, thermal_voltage

__all__ = ["Circuit", "CircuitSpec", "ConductanceRange", "DiodeModel", "node_name", "thermal_voltage"]
