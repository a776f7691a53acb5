"""How the chip reads the quantities EP is computed from: node voltages and input-source currents.

EP needs, for every node, the change ``a - b`` between two phases (``+beta``/``-beta``, or one of
them and the free phase) and, once, the absolute value of one phase. Two readouts:

* ``single-ended`` (the default): every phase is digitised by the absolute ADC (``bits`` over
  ``+/-range``), and ``a - b`` is the difference of two codes. The nudge moves the nodes by far
  less than the ADC's full scale, so at 8-12 bits that difference is a few LSBs: the gradient is
  mostly quantisation error.
* ``differential``: phase ``b`` is held on a sample-and-hold and digitised by the absolute ADC;
  while phase ``a`` settles, a differential amplifier reads ``a - b`` against the held value at
  every node (gain ``diff_gain``, one per free layer: the nudge moves the output layer ~100x more
  than a hidden layer) and at every input source's current sense (gain ``diff_gain_A``), and its
  own ADC (``diff_bits`` over ``+/-diff_range``, at the amplifier's output) digitises it. The
  input-referred offset (fixed per channel) and noise (fresh per reading) add before the gain.

Only node-level readings enter EP: one absolute reading per node and one differential reading
per node and input source; the voltage across each device is formed from them (see
:func:`cosim.gradients.ep_estimates`). :meth:`Measurement.sized_for` sizes the gain (and the current range) so that
the nudge response fills a chosen fraction of the differential range; the response itself is
measured by :func:`cosim.gradients.nudge_response`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from analog.solvers.base import Equilibrium

__all__ = ["MODES", "Measurement", "Reading"]

MODES = ("single-ended", "differential")


@dataclass(frozen=True)
class Reading:
    """What EP is computed from: one phase as the absolute ADC read it, and the change to the other."""

    held: Equilibrium
    """Phase ``b`` (its voltages and input currents as read; the rest as solved)."""
    delta_V: tuple[torch.Tensor, ...]
    """``v(a) - v(b)`` per free layer as read, each ``[B, n_l]``, volts."""
    delta_input_A: torch.Tensor
    """``I(a) - I(b)`` of every input source as read, ``[B, n_sources]``, amperes."""


def _bits(value, name: str) -> None:
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 24):
        raise ValueError(f"{name}: must be an integer in [1, 24] or None, got {value!r}")


@dataclass(frozen=True)
class Measurement:
    """The EP measurement chain of one analog block (``[measurement]``)."""

    bits: int | None = None
    """Resolution of the absolute ADC that reads node voltages and source currents (``None``: exact)."""
    range_V: float = 1.0
    """The absolute voltage ADC reads ``[-range_V, range_V]`` volts."""
    range_A: float = 1e-3
    """The absolute current ADC reads ``[-range_A, range_A]`` amperes."""
    mode: str = "single-ended"
    """``single-ended`` (every phase through the absolute ADC) or ``differential`` (the held phase
    through the absolute ADC, the change to the other through the differential chain below)."""
    diff_gain: float | tuple[float, ...] = 1.0
    """Gain of the differential voltage amplifiers, dimensionless: one value for every node, or
    one per free layer (hidden layers first, the output layer last)."""
    diff_gain_A: float = 1.0
    """Gain of the differential current channels at the input sources, dimensionless."""
    diff_bits: int | None = None
    """Resolution of the differential ADC (``None``: the amplified difference is read exactly)."""
    diff_range_V: float = 1.0
    """The differential voltage ADC reads ``[-diff_range_V, diff_range_V]`` volts at the amplifier
    output (an input range of ``diff_range_V / diff_gain``)."""
    diff_range_A: float = 1e-3
    """The differential current ADC reads ``[-diff_range_A, diff_range_A]`` amperes at the output."""
    offset_V: float = 0.0
    """Input-referred offset of each voltage channel, volts: a std, one fixed draw per channel."""
    offset_A: float = 0.0
    """Input-referred offset of each current channel, amperes (std, one fixed draw per channel)."""
    noise_V: float = 0.0
    """Input-referred rms noise of each differential voltage reading, volts (fresh per reading)."""
    noise_A: float = 0.0
    """Input-referred rms noise of each differential current reading, amperes."""
    offset_seed: int = 0
    """Seed of the per-channel offsets (the same channels keep the same offsets on every reading)."""

    def __post_init__(self) -> None:
        _bits(self.bits, "bits")
        _bits(self.diff_bits, "diff_bits")
        for name, hi in (("range_V", 100.0), ("range_A", 10.0), ("diff_range_V", 100.0), ("diff_range_A", 10.0)):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= hi):
                raise ValueError(f"{name}: must be in (0, {hi:g}], got {value!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        gains = self.diff_gain if isinstance(self.diff_gain, tuple) else (self.diff_gain,)
        for name, values in (("diff_gain", gains), ("diff_gain_A", (self.diff_gain_A,))):
            if not values or not all(
                isinstance(g, int | float) and not isinstance(g, bool) and math.isfinite(g) and 0 < g <= 1e9
                for g in values
            ):
                raise ValueError(f"{name}: every gain must be in (0, 1e9], got {getattr(self, name)!r}")
        for name, hi in (("offset_V", 1.0), ("noise_V", 1.0), ("offset_A", 1.0), ("noise_A", 1.0)):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= hi):
                raise ValueError(f"{name}: must be in [0, {hi:g}], got {value!r}")
        differential_keys = ("diff_bits", "offset_V", "offset_A", "noise_V", "noise_A")
        if self.mode == "single-ended":
            given = [k for k in differential_keys if getattr(self, k)]
            if self.diff_gain != 1.0 or self.diff_gain_A != 1.0:
                given.append("diff_gain")
            if given:
                # A differential setting in single-ended mode would be silently ignored.
                raise ValueError(f"mode: {', '.join(given)} need mode = 'differential'")
        if not isinstance(self.offset_seed, int) or self.offset_seed < 0:
            raise ValueError(f"offset_seed: must be an integer >= 0, got {self.offset_seed!r}")

    @property
    def exact(self) -> bool:
        """Every reading is the solver's value (no ADC, offset or noise anywhere)."""
        diff_ideal = self.diff_bits is None and not (self.offset_V or self.offset_A or self.noise_V or self.noise_A)
        return self.bits is None and (self.mode == "single-ended" or diff_ideal)

    @staticmethod
    def _adc(x: torch.Tensor, bits: int | None, full_scale: float) -> torch.Tensor:
        if bits is None:
            return x
        step = 2 * full_scale / (2**bits - 1)
        return torch.round(x.clamp(-full_scale, full_scale) / step) * step

    def read(self, eq: Equilibrium) -> Equilibrium:
        """The phase as the absolute ADC reads it (``eq`` itself without one)."""
        if self.bits is None:
            return eq
        return replace(
            eq,
            voltages=tuple(self._adc(v, self.bits, self.range_V) for v in eq.voltages),
            source_currents=(self._adc(eq.input_currents_A, self.bits, self.range_A), eq.bias_currents_A),
        )

    def _offsets(self, width: int, std: float, salt: int, like: torch.Tensor) -> torch.Tensor | float:
        if not std:
            return 0.0
        gen = torch.Generator().manual_seed(self.offset_seed * 1_000_003 + salt)
        return (std * torch.randn(width, generator=gen, dtype=torch.float64)).to(like)

    def layer_gains(self, n_layers: int) -> tuple[float, ...]:
        """The voltage gain of each of ``n_layers`` free layers."""
        if not isinstance(self.diff_gain, tuple):
            return (float(self.diff_gain),) * n_layers
        if len(self.diff_gain) != n_layers:
            raise ValueError(
                f"diff_gain: {len(self.diff_gain)} gains given for a block of {n_layers} free layers "
                "(give one per free layer, or one for all)"
            )
        return tuple(float(g) for g in self.diff_gain)

    def _differential(self, d: torch.Tensor, offset, noise: float, gain: float, full_scale: float) -> torch.Tensor:
        """One differential channel: input-referred offset and noise, gain, ADC, referred back."""
        x = d + offset
        if noise:
            x = x + noise * torch.randn(d.shape, dtype=torch.float64).to(d)
        return self._adc(gain * x, self.diff_bits, full_scale) / gain

    def read_pair(self, a: Equilibrium, b: Equilibrium) -> Reading:
        """Phase ``b`` held and the change ``a - b``, as this measurement chain reads them."""
        held = self.read(b)
        if self.mode == "single-ended":
            ra = self.read(a)
            delta_V = tuple(va - vb for va, vb in zip(ra.voltages, held.voltages, strict=True))
            return Reading(held, delta_V, ra.input_currents_A - held.input_currents_A)
        sizes = [v.shape[1] for v in a.voltages]
        offsets = self._offsets(sum(sizes), self.offset_V, 0, a.voltages[0])
        delta_V, start = [], 0
        for va, vb, n, gain in zip(a.voltages, b.voltages, sizes, self.layer_gains(len(sizes)), strict=True):
            channel = offsets if isinstance(offsets, float) else offsets[start : start + n]
            delta_V.append(self._differential(va - vb, channel, self.noise_V, gain, self.diff_range_V))
            start += n
        d_input = a.input_currents_A - b.input_currents_A
        current_offsets = self._offsets(d_input.shape[1], self.offset_A, 1, d_input)
        delta_A = self._differential(d_input, current_offsets, self.noise_A, self.diff_gain_A, self.diff_range_A)
        return Reading(held, tuple(delta_V), delta_A)

    def sized_for(self, response_V, response_A: float | None = None, fraction: float = 0.5) -> Measurement:
        """This chain in differential mode with gains that put the largest expected change
        ``a - b`` at ``fraction`` of the differential ADC's full scale: ``response_V`` volts (one
        value, or one per free layer, giving one gain per layer) and ``response_A`` amperes at the
        input sources (sets ``diff_gain_A``). The largest change, not a typical one, so that no
        channel clips; :func:`cosim.gradients.nudge_response` measures both."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction: must be in (0, 1], got {fraction!r}")
        per_layer = isinstance(response_V, list | tuple)
        responses = tuple(response_V) if per_layer else (response_V,)
        if not responses or not all(r > 0 for r in responses):
            raise ValueError(f"response_V: the nudge response must be > 0 V, got {response_V!r}")
        gains = tuple(min(1e9, fraction * self.diff_range_V / r) for r in responses)
        sized = replace(self, mode="differential", diff_gain=gains if per_layer else gains[0])
        if response_A is not None and response_A > 0:
            sized = replace(sized, diff_gain_A=min(1e9, fraction * self.diff_range_A / response_A))
        return sized
