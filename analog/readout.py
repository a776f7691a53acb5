"""How the chip reads the quantities EP is computed from: node voltages and input-source currents
through a measurement ADC (``bits`` over ``[-range, range]``), or exactly."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from analog.solvers.base import Equilibrium

__all__ = ["Measurement"]


@dataclass(frozen=True)
class Measurement:
    """The EP measurement ADCs of one analog block."""

    bits: int | None = None
    """Resolution of the ADC that reads the node voltages and source currents (``None``: exact)."""
    range_V: float = 1.0
    """The voltage ADC reads ``[-range_V, range_V]`` volts."""
    range_A: float = 1e-3
    """The current ADC reads ``[-range_A, range_A]`` amperes."""

    def __post_init__(self) -> None:
        bits = self.bits
        if bits is not None and not (isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 24):
            raise ValueError(f"bits: must be an integer in [1, 24] or None, got {bits!r}")
        for name, hi in (("range_V", 100.0), ("range_A", 10.0)):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= hi):
                raise ValueError(f"{name}: must be in (0, {hi:g}], got {value!r}")

    @property
    def exact(self) -> bool:
        return self.bits is None

    def _adc(self, x: torch.Tensor, full_scale: float) -> torch.Tensor:
        step = 2 * full_scale / (2**self.bits - 1)
        return torch.round(x.clamp(-full_scale, full_scale) / step) * step

    def read(self, eq: Equilibrium) -> Equilibrium:
        """The phase as the measurement ADCs read it (``eq`` itself when exact)."""
        if self.exact:
            return eq
        return replace(
            eq,
            voltages=tuple(self._adc(v, self.range_V) for v in eq.voltages),
            source_currents=(self._adc(eq.input_currents_A, self.range_A), eq.bias_currents_A),
        )
