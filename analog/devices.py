"""Synaptic devices: the conductance range, the device model (:class:`DeviceConfig`), how the
arrays are read (:class:`IOConfig`), and the per-device draws of one conductance tensor
(:class:`DeviceArray`). The neuron diode is :mod:`analog.diode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from analog.presets import preset as device_preset

__all__ = ["ConductanceRange", "DeviceArray", "DeviceConfig", "IOConfig"]


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field}: {message}")


@dataclass(frozen=True)
class ConductanceRange:
    """The programmable range of one synaptic device."""

    g_min_S: float = 1e-6
    """Lowest conductance a device can be programmed to, siemens (> 0)."""
    g_max_S: float = 1e-4
    """Highest conductance, siemens (> g_min_S)."""

    def __post_init__(self) -> None:
        for name in ("g_min_S", "g_max_S"):
            value = getattr(self, name)
            _require(
                isinstance(value, int | float) and math.isfinite(value) and 0 < value < 1,
                name,
                f"must be a conductance in (0, 1) S, got {value!r}",
            )
        _require(
            self.g_min_S < self.g_max_S,
            "g_min_S",
            f"must be below g_max_S ({self.g_max_S!r} S), got {self.g_min_S!r} S",
        )


@dataclass(frozen=True)
class DeviceConfig:
    """The device model of one analog block: how its synapses (and neuron diodes) differ from their
    nominal values and how they respond to writes.

    Named after aihwkit's ``PulsedDevice`` where they overlap; how the devices are read is
    :class:`IOConfig`, how EP's quantities are measured :class:`analog.readout.Measurement`. All
    defaults are ideal. Variability, faults and drift exponents are drawn once per device (seeded);
    write noise at every update. :meth:`from_preset` starts from a published device
    (:mod:`analog.presets`).
    """

    preset: str | None = None
    """The :mod:`analog.presets` entry these values started from (a record: the fields below are
    what is simulated; a configuration file fills them from the preset, see :meth:`from_preset`)."""
    levels: int | None = None
    """Programmable conductance levels, evenly spaced over ``[g_min, g_max]`` (``None``: analog)."""
    stochastic_rounding: bool = False
    """Round each written conductance to a neighbouring level with probabilities that preserve its
    expected value (otherwise: to the nearest level, which swallows updates below half a level)."""
    d2d_sigma: float = 0.0
    """Device-to-device spread of the programmed conductance: each device multiplies (``proportional``)
    or offsets (``absolute``, in units of ``g_max - g_min``) its target by a fixed random draw."""
    d2d_distribution: str = "normal"
    """``normal`` (factor ``1 + sigma z``) or ``lognormal`` (factor ``exp(sigma z)``)."""
    d2d_mode: str = "proportional"
    """``proportional`` (multiplicative spread) or ``absolute`` (additive, ``sigma (g_max - g_min) z``)."""
    write_noise_sigma: float = 0.0
    """Cycle-to-cycle write noise: std of the written update as a fraction of its size."""
    pulse_noise_sigma: float = 0.0
    """Cycle-to-cycle spread of each programming pulse's step, as a fraction of the step
    ``(g_max - g_min) / (levels - 1)`` (aihwkit's ``dw_min_std``): an update of ``n = |delta| /
    step`` pulses gets a std of ``sigma step sqrt(n)``. Needs ``levels``."""
    nonlinearity: float = 0.0
    """Soft bounds in [0, 1]: an increase is scaled by ``1 - nl (g - g_min)/(g_max - g_min)``, a
    decrease by ``1 - nl (g_max - g)/(g_max - g_min)`` (0: linear updates, 1: full soft bounds)."""
    asymmetry: float = 0.0
    """In (-1, 1): decreases are scaled by ``1 - asymmetry`` relative to increases."""
    stuck_at_min_fraction: float = 0.0
    """Fraction of devices stuck at ``g_min`` (never move under updates)."""
    stuck_at_max_fraction: float = 0.0
    """Fraction of devices stuck at ``g_max``."""
    diode_is_sigma: float = 0.0
    """Device-to-device spread of the neuron diodes' saturation current: each diode's ``Is`` is
    multiplied by ``exp(sigma z)`` (ngspice's instance ``area``), drawn once per diode."""
    diode_n_sigma: float = 0.0
    """Device-to-device spread of the neuron diodes' emission coefficient: each diode's ``N`` is
    multiplied by ``exp(sigma z)``, drawn once per diode and kept within ngspice's [0.5, 10]."""
    amp_offset_sigma_V: float = 0.0
    """Mismatch of the bidirectional amplifiers: each amplifier's input offset is drawn once as
    ``sigma z`` volts (added to the block's systematic ``amp_offset_V``, :mod:`analog.peripherals`)."""
    drift_nu: float = 0.0
    """Conductance drift exponent: a device read ``t`` seconds after programming (``io.drift_time_s``)
    presents ``G0 ((t + t0) / t0)^-nu`` (the power law of PCM, aihwkit's ``PCMLikeNoiseModel``
    convention: ``t`` counts from programming, ``G0`` is the state verified at ``t0``)."""
    drift_nu_sigma: float = 0.0
    """Device-to-device spread of ``nu``: each device draws ``|nu + sigma z|`` once."""
    drift_t0_s: float = 1.0
    """Reference time ``t0`` of the drift law, seconds (> 0)."""
    write_pulse_s: float | None = None
    """Duration of one programming pulse, seconds (``None``: programming time is not counted)."""
    write_pulse_V: float | None = None
    """Amplitude of one programming pulse across a two-terminal device, volts: a pulse costs
    ``V^2 G t`` at the device's conductance ``G`` (unless ``write_pulse_J`` gives it)."""
    write_pulse_J: float | None = None
    """Energy of one programming pulse, joules, when it is not ``V^2 G t`` (e.g. a three-terminal
    ECRAM written through its gate); overrides ``write_pulse_V``."""

    @classmethod
    def from_preset(cls, name: str, **overrides) -> DeviceConfig:
        """The devices of preset ``name`` (:mod:`analog.presets`) with ``overrides`` on top."""
        return cls(**{"preset": name, **device_preset(name).devices, **overrides})

    def __post_init__(self) -> None:
        if self.preset is not None:
            device_preset(self.preset)
        if self.levels is not None:
            _require(
                isinstance(self.levels, int) and not isinstance(self.levels, bool) and 2 <= self.levels <= 2**20,
                "levels",
                f"must be an integer in [2, 1048576] or None, got {self.levels!r}",
            )
        for name, hi in (
            ("d2d_sigma", 2.0),
            ("write_noise_sigma", 10.0),
            ("diode_is_sigma", 5.0),
            ("diode_n_sigma", 1.0),
            ("amp_offset_sigma_V", 1.0),
            ("pulse_noise_sigma", 100.0),
            ("drift_nu", 1.0),
            ("drift_nu_sigma", 1.0),
        ):
            value = getattr(self, name)
            _require(math.isfinite(value) and 0 <= value <= hi, name, f"must be in [0, {hi}], got {value!r}")
        _require(
            self.d2d_distribution in ("normal", "lognormal"),
            "d2d_distribution",
            f"must be 'normal' or 'lognormal', got {self.d2d_distribution!r}",
        )
        _require(
            self.d2d_mode in ("proportional", "absolute"),
            "d2d_mode",
            f"must be 'proportional' or 'absolute', got {self.d2d_mode!r}",
        )
        _require(0 <= self.nonlinearity <= 1, "nonlinearity", f"must be in [0, 1], got {self.nonlinearity!r}")
        _require(-1 < self.asymmetry < 1, "asymmetry", f"must be in (-1, 1), got {self.asymmetry!r}")
        for name in ("stuck_at_min_fraction", "stuck_at_max_fraction"):
            value = getattr(self, name)
            _require(0 <= value <= 1, name, f"must be a fraction in [0, 1], got {value!r}")
        _require(
            self.stuck_at_min_fraction + self.stuck_at_max_fraction <= 1,
            "stuck_at_max_fraction",
            "stuck_at_min_fraction + stuck_at_max_fraction must not exceed 1",
        )
        _require(
            not self.pulse_noise_sigma or self.levels is not None,
            "pulse_noise_sigma",
            "needs levels (the pulse step is the level spacing)",
        )
        for name, lo, hi, unit in (
            ("write_pulse_s", 0.0, 1.0, "s"),
            ("write_pulse_V", 0.0, 20.0, "V"),
            ("write_pulse_J", 0.0, 1e-6, "J"),
        ):
            value = getattr(self, name)
            _require(
                value is None or (isinstance(value, int | float) and math.isfinite(value) and lo < value <= hi),
                name,
                f"must be in ({lo:g}, {hi:g}] {unit} or None, got {value!r}",
            )
        _require(
            self.write_pulse_V is None or self.write_pulse_s is not None,
            "write_pulse_V",
            "needs write_pulse_s (a pulse's energy is V^2 G t)",
        )
        _require(
            math.isfinite(self.drift_t0_s) and 0 < self.drift_t0_s <= 1e9,
            "drift_t0_s",
            f"must be in (0, 1e9] s, got {self.drift_t0_s!r}",
        )

    @property
    def ideal(self) -> bool:
        """Whether the devices behave as the nominal conductances (the write pulses' cost is not
        behaviour: it only enters the programming energy)."""
        return replace(self, write_pulse_s=None, write_pulse_V=None, write_pulse_J=None) == DeviceConfig()

    @property
    def counts_programming(self) -> bool:
        """Whether writes can be counted as pulses (levels give the step) with a pulse energy."""
        return self.levels is not None and (self.write_pulse_J is not None or self.write_pulse_V is not None)


@dataclass(frozen=True)
class IOConfig:
    """How the circuit reads the devices of one analog block in each phase (aihwkit's
    ``IOParameters`` for the array read). The default reads them exactly."""

    read_noise_sigma: float = 0.0
    """Conductance read noise per phase, fraction of each conductance (fresh draw every phase)."""
    drift_time_s: float = 0.0
    """Time since the devices were programmed, seconds (0: just programmed); the devices present
    their drifted conductance (``DeviceConfig.drift_nu``). An inference condition:
    ``cosim eval --set io.drift_time_s=86400`` reads the chip one day later."""

    def __post_init__(self) -> None:
        for name, hi in (("read_noise_sigma", 1.0), ("drift_time_s", 1e10)):
            value = getattr(self, name)
            _require(
                isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= hi,
                name,
                f"must be in [0, {hi:g}], got {value!r}",
            )

    @property
    def ideal(self) -> bool:
        return self == IOConfig()


class DeviceArray(nn.Module):
    """The devices behind one conductance tensor: fixed per-device draws, reads and writes.

    ``read(target)`` is what the circuit sees; ``write(previous, requested)`` is what a device
    becomes when an optimizer asks to move it from ``previous`` to ``requested``. The per-device
    draws are buffers (``factor``, ``offset``: device-to-device spread; ``stuck``: faults;
    ``drift_nu``: drift exponents, ``None`` without drift), so a module's ``state_dict`` holds the
    exact devices and ``.to(device)`` moves them.
    """

    STUCK_NONE, STUCK_MIN, STUCK_MAX = 0, 1, 2

    def __init__(self, config: DeviceConfig, g_range: ConductanceRange, shape, generator: torch.Generator):
        super().__init__()
        self.config, self.range = config, g_range
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        span = g_range.g_max_S - g_range.g_min_S
        if config.d2d_mode == "absolute":
            offset, factor = config.d2d_sigma * span * z, torch.ones(shape, dtype=torch.float64)
        elif config.d2d_distribution == "lognormal":
            offset, factor = torch.zeros(shape, dtype=torch.float64), torch.exp(config.d2d_sigma * z)
        else:
            offset, factor = torch.zeros(shape, dtype=torch.float64), 1.0 + config.d2d_sigma * z
        draw = torch.rand(shape, generator=generator, dtype=torch.float64)
        stuck = torch.zeros(shape, dtype=torch.int8)
        stuck[draw < config.stuck_at_min_fraction] = self.STUCK_MIN
        stuck[
            (draw >= config.stuck_at_min_fraction)
            & (draw < config.stuck_at_min_fraction + config.stuck_at_max_fraction)
        ] = self.STUCK_MAX
        self.register_buffer("factor", factor)
        """Multiplicative device-to-device factor of each device's conductance."""
        self.register_buffer("offset", offset)
        """Additive device-to-device offset of each device's conductance, siemens."""
        self.register_buffer("stuck", stuck)
        """``STUCK_NONE``, ``STUCK_MIN`` or ``STUCK_MAX`` per device."""
        nu = None
        if config.drift_nu or config.drift_nu_sigma:
            # Drawn after the older draws, and only with drift, so that devices without drift keep
            # the draws (and checkpoints) they had before drift existed.
            nu = torch.full(shape, config.drift_nu, dtype=torch.float64)
            if config.drift_nu_sigma:
                z = torch.randn(shape, generator=generator, dtype=torch.float64)
                nu = (nu + config.drift_nu_sigma * z).abs()  # aihwkit's |mu + sigma z|
        self.register_buffer("drift_nu", nu)
        """Drift exponent of each device (``None``: no drift)."""

    def _pin(self, g: torch.Tensor) -> torch.Tensor:
        if not self.stuck.any():
            return g
        stuck = self.stuck.to(g.device)
        g = torch.where(stuck == self.STUCK_MIN, torch.full_like(g, self.range.g_min_S), g)
        return torch.where(stuck == self.STUCK_MAX, torch.full_like(g, self.range.g_max_S), g)

    def read(
        self, target: torch.Tensor, io: IOConfig | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Conductance each device presents (S) for programmed ``target``, read as ``io`` says
        (drift after ``io.drift_time_s``; read noise: a fresh draw from ``generator``, else torch's
        global RNG). Never below ``1e-3 g_min``."""
        g = target * self.factor.to(target) + self.offset.to(target)
        g = self._pin(g)
        if io is not None and io.drift_time_s and self.drift_nu is not None:
            t0 = self.config.drift_t0_s
            g = g * torch.pow((io.drift_time_s + t0) / t0, -self.drift_nu.to(g))
        if io is not None and io.read_noise_sigma:
            noise = torch.randn(g.shape, generator=generator, dtype=torch.float64).to(g)
            g = g * (1.0 + io.read_noise_sigma * noise)
        return g.clamp(min=1e-3 * self.range.g_min_S)

    def quantize(self, g: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.config.levels is None:
            return g
        lo, hi = self.range.g_min_S, self.range.g_max_S
        step = (hi - lo) / (self.config.levels - 1)
        x = (g - lo) / step
        if self.config.stochastic_rounding:
            floor = torch.floor(x)
            draw = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x)
            x = floor + (draw < x - floor).to(x.dtype)
        else:
            x = torch.round(x)
        return (x * step + lo).clamp(lo, hi)

    def write(
        self, previous: torch.Tensor, requested: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Programmed targets after asking each device to move from ``previous`` to ``requested``
        (write noise drawn from ``generator``, else torch's global RNG)."""
        cfg, lo, hi = self.config, self.range.g_min_S, self.range.g_max_S
        delta = requested - previous
        if cfg.nonlinearity:
            x = (previous - lo) / (hi - lo)
            up = 1.0 - cfg.nonlinearity * x
            down = 1.0 - cfg.nonlinearity * (1.0 - x)
            delta = torch.where(delta > 0, delta * up, delta * down)
        if cfg.asymmetry:
            delta = torch.where(delta < 0, delta * (1.0 - cfg.asymmetry), delta)
        if cfg.write_noise_sigma:
            noise = torch.randn(delta.shape, generator=generator, dtype=torch.float64).to(delta)
            delta = delta * (1.0 + cfg.write_noise_sigma * noise)
        if cfg.pulse_noise_sigma:
            # n independent pulses of std sigma*step each: the update's std is sigma*step*sqrt(n).
            step = (hi - lo) / (cfg.levels - 1)
            noise = torch.randn(delta.shape, generator=generator, dtype=torch.float64).to(delta)
            delta = delta + cfg.pulse_noise_sigma * torch.sqrt(step * delta.abs()) * noise
        g = self.quantize((previous + delta).clamp(lo, hi), generator)
        return self._pin(g)

    def programming(self, previous: torch.Tensor, requested: torch.Tensor) -> dict[str, float] | None:
        """The pulses, energy and time of writing ``requested`` over ``previous`` (both ``[R, C]``,
        siemens, ``requested`` clipped to the range); ``None`` unless
        :attr:`DeviceConfig.counts_programming`.

        A device asked to move by ``delta`` receives ``|delta| / step`` pulses in expectation
        (``step = (g_max - g_min) / (levels - 1)``, the level spacing; soft bounds then shrink what
        each pulse achieves, not how many are sent). A pulse costs ``write_pulse_J`` or
        ``write_pulse_V^2 G write_pulse_s`` at the device's present conductance ``G``. The rows are
        written one after another, every column of a row in parallel: the time is the sum over the
        rows of the row's largest pulse count, times the pulse duration.
        """
        cfg = self.config
        if not cfg.counts_programming:
            return None
        lo, hi = self.range.g_min_S, self.range.g_max_S
        step = (hi - lo) / (cfg.levels - 1)
        pulses = (requested.clamp(lo, hi) - previous).abs() / step
        if self.stuck.any():
            pulses = torch.where(self.stuck != self.STUCK_NONE, 0.0, pulses)  # a stuck device gets none
        if cfg.write_pulse_J is not None:
            energy = float(pulses.sum()) * cfg.write_pulse_J
        else:
            energy = float((pulses * previous).sum()) * cfg.write_pulse_V**2 * cfg.write_pulse_s
        rows = pulses.reshape(pulses.shape[0], -1) if pulses.ndim > 1 else pulses.reshape(1, -1)
        time_s = float(rows.amax(1).sum()) * cfg.write_pulse_s if cfg.write_pulse_s is not None else float("nan")
        return {"pulses": float(pulses.sum()), "energy_J": energy, "time_s": time_s}
