"""Digital feedforward blocks (torch) and the converters at the analog/digital boundary."""

from digital.blocks import Gain, Reshape
from digital.converters import Converter

__all__ = ["Converter", "Gain", "Reshape"]
