"""The peripherals at the edge of a crossbar: input drivers (DACs), bidirectional amplifiers and the
nudging current sources, with the non-idealities a designer sizes them by.

Every field left at its default is ideal (a 0-ohm driver, Kendall et al.'s VCVS/CCCS pair, an ideal
current source), and the circuit is then exactly :mod:`analog.circuit`'s. With a field set, the
circuit is (element names of the ngspice deck in :mod:`analog.netlist`):

* ``driver_ohm``: each input source ``VIN{k}`` drives its crossbar row through ``RDRV{k}`` (the
  DAC driver's output resistance);
* ``amp_out_ohm``: each amplifier's forward stage drives its row through ``RAOUT_L{l}_N{j}``;
* ``amp_in_ohm``: each amplifier input loads its node with ``RAIN_L{l}_N{j}`` to ground;
* ``amp_offset_V``: the forward stage amplifies ``v + amp_offset_V`` (input-referred offset);
* ``amp_swing_V``: the forward stage's open-circuit output is ``S tanh(A (v + offset) / S)``, a
  smooth limit at ``+/-S`` (its slope is ``A`` at the origin), while the backward CCCS keeps its
  gain ``1 / A``. This one breaks reciprocity: the circuit no longer has a co-content, so EP is
  no longer exact (measure it with ``cosim gradcheck``);
* ``amp_gbw_Hz``: the forward stage settles through a single pole at ``GBW / A`` (transients only:
  ngspice as ``RPOLE``/``CPOLE`` and a unity buffer ``EBUF`` after the forward stage);
* ``nudge_out_ohm``: each nudging current source has its output resistance ``RNUDGE{j}`` from the
  output node to ground, present in every phase (the source is there when it is off);
* ``nudge_compliance_V``: a nudging source delivers its current only while it has headroom: the
  current ``I`` becomes ``I sigmoid((C - v) / K)`` when sourcing (``I > 0``, the node ``v`` must
  stay below ``+C``) and ``I sigmoid((v + C) / K)`` when sinking, ``K = nudge_knee_V``.

Series resistances and loads keep the circuit reciprocal and passive, so EP stays exact with them;
the fast solver solves every field exactly (:mod:`analog.solvers.general`), ngspice with the
elements above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["MAX_PERIPHERAL_OHM", "Peripherals"]

MAX_PERIPHERAL_OHM = 1e9
"""Largest output or input resistance accepted, ohms."""


def _check_ohm(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a resistance in ohms or None (ideal), got {value!r}")
    if not 0 < value <= MAX_PERIPHERAL_OHM:
        raise ValueError(f"{name}: must be in (0, {MAX_PERIPHERAL_OHM:g}] ohm or None (ideal), got {value!r}")


def _check_volts(name: str, value, low: float, high: float, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a voltage{' or None' if allow_none else ''}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}: must be in [{low:g}, {high:g}] V, got {value!r}")


@dataclass(frozen=True)
class Peripherals:
    """Non-idealities of one block's drivers, amplifiers and nudging sources (``None``: ideal)."""

    driver_ohm: float | None = None
    """Output resistance of every input driver (DAC output stage), ohms."""
    amp_out_ohm: float | None = None
    """Output resistance of every amplifier's forward stage, ohms."""
    amp_in_ohm: float | None = None
    """Input resistance of every amplifier (its node to ground), ohms."""
    amp_offset_V: float = 0.0
    """Input-referred offset voltage of every amplifier, volts."""
    amp_swing_V: float | None = None
    """Output swing limit ``+/-S`` of every amplifier's forward stage, volts (smooth, ``tanh``)."""
    amp_gbw_Hz: float | None = None
    """Gain-bandwidth product of every amplifier's forward stage, hertz: a single pole at
    ``GBW / A`` (time constant ``A / (2 pi GBW)``) between its input and its output. Transients only:
    the DC solution does not depend on it."""
    nudge_out_ohm: float | None = None
    """Output resistance of every nudging current source, ohms."""
    nudge_compliance_V: float | None = None
    """Compliance ``C`` of the nudging sources: the node voltage up to which a sourcing one (down
    to ``-C`` for a sinking one) still delivers its current, volts."""
    nudge_knee_V: float = 0.025
    """Width of the compliance edge, volts (the source keeps half its current at the limit)."""

    def __post_init__(self) -> None:
        for name in ("driver_ohm", "amp_out_ohm", "amp_in_ohm", "nudge_out_ohm"):
            _check_ohm(name, getattr(self, name))
        _check_volts("amp_offset_V", self.amp_offset_V, -1.0, 1.0, allow_none=False)
        _check_volts("amp_swing_V", self.amp_swing_V, 1e-3, 100.0, allow_none=True)
        _check_volts("nudge_compliance_V", self.nudge_compliance_V, 1e-3, 100.0, allow_none=True)
        _check_volts("nudge_knee_V", self.nudge_knee_V, 1e-4, 1.0, allow_none=False)
        gbw = self.amp_gbw_Hz
        if gbw is not None and (
            isinstance(gbw, bool) or not isinstance(gbw, int | float) or not (math.isfinite(gbw) and 1e3 <= gbw <= 1e12)
        ):
            raise ValueError(f"amp_gbw_Hz: must be a frequency in [1e3, 1e12] Hz or None (unlimited), got {gbw!r}")

    @property
    def ideal(self) -> bool:
        """Whether every peripheral is ideal (the circuit of :mod:`analog.circuit` as it is)."""
        return not self.set_fields()

    @property
    def reciprocal(self) -> bool:
        """Whether the circuit keeps a co-content (every field but the swing limit keeps it)."""
        return self.amp_swing_V is None

    @property
    def amplifiers_ideal(self) -> bool:
        """Whether the amplifiers are the ideal VCVS/CCCS pair."""
        return self.amp_gbw_Hz is None and not any(k.startswith("amp_") for k in self.set_fields())

    @property
    def dynamic(self) -> bool:
        """Whether transients need the amplifiers' own dynamics (a finite gain-bandwidth)."""
        return self.amp_gbw_Hz is not None

    def set_fields(self) -> list[str]:
        """Names of the fields that make a peripheral non-ideal at DC (the knee alone changes
        nothing; the gain-bandwidth only acts in transients, :attr:`dynamic`)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("nudge_knee_V", "amp_gbw_Hz"):
                continue
            if (f.name == "amp_offset_V" and value != 0.0) or (f.name != "amp_offset_V" and value is not None):
                out.append(f.name)
        return out
