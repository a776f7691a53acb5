"""Device models: the conductance range of the synapses and the Shockley diode of the neurons.

The diode equations are those of ngspice 39's level-1 diode (``dioload.c``) without series
resistance, capacitance or breakdown, so that the fast solver and ngspice solve the same
circuit to rounding error:

* forward and weak reverse bias (``vd >= -3 n Vt``): ``I = Is (exp(vd / (n Vt)) - 1)``;
* deeper reverse bias: ``I = -Is (1 + (3 n Vt / (e vd))**3)`` (SPICE3's smooth reverse model);
* ngspice adds ``gmin * vd`` across every junction (``gmin = 1e-12 S`` by default).

The thermal voltage uses ngspice's constants (CODATA 2014) at the device temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BOLTZMANN_J_PER_K = 1.38064852e-23
ELECTRON_CHARGE_C = 1.6021766208e-19
ZERO_CELSIUS_K = 273.15

__all__ = ["ConductanceRange", "DiodeModel", "thermal_voltage"]


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field}: {message}")


def thermal_voltage(temperature_C: float) -> float:
    """``k T / q`` in volts with ngspice's constants; ``temperature_C`` in degrees Celsius."""
    return BOLTZMANN_J_PER_K * (temperature_C + ZERO_CELSIUS_K) / ELECTRON_CHARGE_C


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
                isinstance(value, int | float) and math.isfinite(value) and value > 0,
                name,
                f"must be a finite conductance > 0 S, got {value!r}",
            )
        _require(
            self.g_min_S < self.g_max_S,
            "g_min_S",
            f"must be below g_max_S ({self.g_max_S!r} S), got {self.g_min_S!r} S",
        )

    @property
    def on_off_ratio(self) -> float:
        return self.g_max_S / self.g_min_S


@dataclass(frozen=True)
class DiodeModel:
    """Shockley diode as simulated by ngspice (level 1, no series resistance, no breakdown)."""

    is_A: float = 1e-14
    """Saturation current ``IS``, amperes (> 0)."""
    n: float = 1.0
    """Emission coefficient ``N`` (dimensionless, in [0.5, 10])."""
    temperature_C: float = 27.0
    """Device temperature, degrees Celsius (ngspice's default is 27 C)."""
    gmin_S: float = 1e-12
    """Conductance ngspice places across every junction, siemens (its ``gmin`` option)."""

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.is_A) and 0 < self.is_A < 1e-3,
            "is_A",
            f"saturation current must be in (0, 1e-3) A, got {self.is_A!r}",
        )
        _require(
            math.isfinite(self.n) and 0.5 <= self.n <= 10,
            "n",
            f"emission coefficient must be in [0.5, 10], got {self.n!r}",
        )
        _require(
            math.isfinite(self.temperature_C) and -273.15 < self.temperature_C <= 500,
            "temperature_C",
            f"must be in (-273.15, 500] C, got {self.temperature_C!r}",
        )
        _require(
            math.isfinite(self.gmin_S) and 0 <= self.gmin_S < 1e-6,
            "gmin_S",
            f"must be in [0, 1e-6) S, got {self.gmin_S!r}",
        )

    @property
    def vte_V(self) -> float:
        """``n Vt``: the emission coefficient times the thermal voltage, volts."""
        return self.n * thermal_voltage(self.temperature_C)

    def current(self, vd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Junction current ``I(vd)`` (A, anode to cathode) and its conductance ``dI/dvd`` (S).

        Branch-free: the forward expression is evaluated at ``max(vd, -3 n Vt)`` and the reverse
        one at ``min(vd, -3 n Vt)``; both meet at ``-3 n Vt`` with equal value and slope, so their
        sum minus the value at the meeting point is the piecewise model.
        """
        vte, i_s = self.vte_V, self.is_A
        knee = -3.0 * vte
        evd = torch.exp(vd.clamp(min=knee) / vte)
        vd_r = vd.clamp(max=knee)
        ratio = (3.0 * vte / math.e) / vd_r
        arg = ratio * ratio * ratio
        e3 = math.exp(-3.0)
        i = i_s * (evd - arg - (1.0 + e3)) + self.gmin_S * vd
        g = i_s * (evd / vte + 3.0 * arg / vd_r - e3 / vte) + self.gmin_S
        return i, g

    def cocontent(self, vd: torch.Tensor) -> torch.Tensor:
        """``integral_0^vd I(v) dv`` in watts: the diode's term of the circuit's co-content."""
        vte, i_s = self.vte_V, self.is_A
        knee = -3.0 * vte
        vd_f = vd.clamp(min=knee)
        vd_r = vd.clamp(max=knee)
        k = (3.0 * vte / math.e) ** 3
        phi_f = i_s * (vte * torch.expm1(vd_f / vte) - vd_f)
        # Reverse branch shifted to vanish at the knee, where the forward branch takes over.
        phi_r = -i_s * (vd_r - knee) + 0.5 * i_s * k * (1.0 / vd_r**2 - 1.0 / knee**2)
        return phi_f + phi_r + 0.5 * self.gmin_S * vd**2
