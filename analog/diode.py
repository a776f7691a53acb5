"""The neuron diode: ngspice 39's level-1 diode (``dioload.c``, ``diotemp.c``) with series resistance,
without breakdown or charge storage, so that the fast solvers and ngspice solve the same circuit to
rounding error:

* forward and weak reverse bias (``vd >= -3 n Vt``): ``I = Is (exp(vd / (n Vt)) - 1)``;
* deeper reverse bias: ``I = -Is (1 + (3 n Vt / (e vd))**3)`` (SPICE3's smooth reverse model);
* ngspice adds ``gmin * vd`` across every junction (``gmin = 1e-12 S`` by default);
* ``Is`` is scaled from ``TNOM`` to the device temperature (``XTI``, ``EG``); a series resistance
  ``RS`` makes the junction voltage implicit (solved per diode).

The thermal voltage uses ngspice's constants (CODATA 2014) at the device temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BOLTZMANN_J_PER_K = 1.38064852e-23
ELECTRON_CHARGE_C = 1.6021766208e-19
ZERO_CELSIUS_K = 273.15

__all__ = ["BOLTZMANN_J_PER_K", "ELECTRON_CHARGE_C", "ZERO_CELSIUS_K", "DiodeModel", "thermal_voltage"]


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field}: {message}")


def thermal_voltage(temperature_C: float) -> float:
    """``k T / q`` in volts with ngspice's constants; ``temperature_C`` in degrees Celsius."""
    return BOLTZMANN_J_PER_K * (temperature_C + ZERO_CELSIUS_K) / ELECTRON_CHARGE_C


@dataclass(frozen=True)
class DiodeModel:
    """Shockley diode as simulated by ngspice (level 1, with series resistance ``RS``, no
    breakdown), with ngspice's temperature model: the parameters are given at ``tnom_C`` and the saturation current
    at the device temperature ``T`` is (``diotemp.c``; Massobrio & Antognetti, *Semiconductor Device
    Modeling with SPICE*, 2nd ed., Sec. 1.6)

        IS(T) = IS exp((T / Tnom - 1) EG / (N Vt(T)) + (XTI / N) ln(T / Tnom)),      (T)

    temperatures in kelvin, so a forward-biased junction's voltage falls by about 2 mV/K."""

    is_A: float = 1e-14
    """Saturation current ``IS`` at ``tnom_C``, amperes (> 0)."""
    n: float = 1.0
    """Emission coefficient ``N`` (dimensionless, in [0.5, 10])."""
    temperature_C: float = 27.0
    """Device temperature, degrees Celsius (ngspice's ``TEMP``, default 27 C)."""
    gmin_S: float = 1e-12
    """Conductance ngspice places across every junction, siemens (its ``gmin`` option)."""
    tnom_C: float = 27.0
    """Temperature at which the parameters were measured, degrees Celsius (ngspice's ``TNOM``)."""
    xti: float = 3.0
    """Saturation-current temperature exponent ``XTI`` (ngspice's default 3, for a pn junction)."""
    eg_eV: float = 1.11
    """Activation energy ``EG``, electron volts (ngspice's default 1.11, silicon)."""
    rs_ohm: float = 0.0
    """Series resistance ``RS``, ohms, divided by the instance area as in ngspice (0: none). The
    junction voltage is then implicit; :meth:`current` solves it per diode (see (RS))."""

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
        for name in ("temperature_C", "tnom_C"):
            value = getattr(self, name)
            _require(
                math.isfinite(value) and -273.15 < value <= 500, name, f"must be in (-273.15, 500] C, got {value!r}"
            )
        _require(
            math.isfinite(self.gmin_S) and 0 <= self.gmin_S < 1e-6,
            "gmin_S",
            f"must be in [0, 1e-6) S, got {self.gmin_S!r}",
        )
        _require(
            math.isfinite(self.rs_ohm) and 0 <= self.rs_ohm <= 1e6,
            "rs_ohm",
            f"must be in [0, 1e6] ohm, got {self.rs_ohm!r}",
        )
        _require(math.isfinite(self.xti) and 0 <= self.xti <= 50, "xti", f"must be in [0, 50], got {self.xti!r}")
        # ngspice raises an activation energy below 0.1 eV to 0.1 eV; refuse it rather than differ.
        _require(
            math.isfinite(self.eg_eV) and 0.1 <= self.eg_eV <= 10,
            "eg_eV",
            f"must be in [0.1, 10] eV, got {self.eg_eV!r}",
        )

    def saturation_current(self, emission: torch.Tensor | None = None) -> float | torch.Tensor:
        """``IS(T)`` of (T), amperes; with ``emission`` (a factor on ``N`` per diode) one value per
        diode, since ``N`` enters the temperature scaling."""
        if self.temperature_C == self.tnom_C:
            return self.is_A
        t = self.temperature_C + ZERO_CELSIUS_K
        ratio = t / (self.tnom_C + ZERO_CELSIUS_K)
        vt = thermal_voltage(self.temperature_C)
        if emission is None:
            return self.is_A * math.exp((ratio - 1) * self.eg_eV / (self.n * vt) + self.xti / self.n * math.log(ratio))
        n = self.n * emission
        return self.is_A * torch.exp((ratio - 1) * self.eg_eV / (n * vt) + self.xti / n * math.log(ratio))

    @property
    def vte_V(self) -> float:
        """``n Vt``: the emission coefficient times the thermal voltage, volts."""
        return self.n * thermal_voltage(self.temperature_C)

    def current(
        self, vd: torch.Tensor, area: torch.Tensor | None = None, emission: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Diode current ``I(vd)`` (A, anode to cathode) and its conductance ``dI/dvd`` (S) for the
        voltage ``vd`` across the whole diode. With a series resistance ``R = RS / area`` the
        junction sits at the ``u`` that solves

            I_j(u) = (vd - u) / R,       I = (vd - u) / R,       dI/dvd = g_j / (1 + R g_j),   (RS)

        ``I_j`` being the junction's current (:meth:`junction_current`, ``gmin`` across the
        junction as in ngspice); ``u`` is found by safeguarded Newton per diode (the left side
        rises, the right falls: one root, bracketed by 0 and ``vd``)."""
        if not self.rs_ohm:
            return self.junction_current(vd, area, emission)
        r = self.rs_ohm if area is None else self.rs_ohm / area
        u = self.junction_voltage(vd, area, emission)
        _, g = self.junction_current(u, area, emission)
        return (vd - u) / r, g / (1.0 + r * g)

    def junction_voltage(
        self, vd: torch.Tensor, area: torch.Tensor | None = None, emission: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The junction voltage ``u`` of (RS) for the diode voltage ``vd``, to rounding."""
        r = self.rs_ohm if area is None else self.rs_ohm / area
        vd = vd.detach() if vd.requires_grad else vd
        lo, hi = torch.minimum(vd, torch.zeros_like(vd)), torch.maximum(vd, torch.zeros_like(vd))
        # Forward: the junction carries at most vd / R, so it sits below n Vt ln(1 + vd / (R Is)).
        vte = self.vte_V if emission is None else self.vte_V * emission
        i_s = self.saturation_current(emission) * (1.0 if area is None else area)
        hi = torch.minimum(hi, vte * torch.log1p(hi / (r * i_s)))
        u = torch.where(vd > 0, hi, vd)  # h is convex where forward: Newton from above is monotone
        for _ in range(200):
            i, g = self.junction_current(u, area, emission)
            h = i + (u - vd) / r
            lo = torch.where(h <= 0, u, lo)
            hi = torch.where(h >= 0, u, hi)
            new = u - h / (g + 1.0 / r)
            new = torch.where((new < lo) | (new > hi), 0.5 * (lo + hi), new)
            if bool(((new - u).abs() <= 1e-15 * (1.0 + u.abs())).all()):
                return new
            u = new
        raise FloatingPointError("diode series resistance: the junction voltage did not converge in 200 steps")

    def junction_current(
        self, vd: torch.Tensor, area: torch.Tensor | None = None, emission: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Junction current ``I(vd)`` (A, anode to cathode) and its conductance ``dI/dvd`` (S),
        without the series resistance.

        ``area`` (broadcast against ``vd``): ngspice's instance area factor, multiplying ``Is``
        (not ``gmin``); ``emission``: a factor multiplying ``N`` per diode (each such diode has
        its own ``.model`` card in ngspice); ``None`` for 1.

        Branch-free: the forward expression is evaluated at ``max(vd, -3 n Vt)`` and the reverse
        one at ``min(vd, -3 n Vt)``; both meet at ``-3 n Vt`` with equal value and slope, so their
        sum minus the value at the meeting point is the piecewise model.
        """
        vte = self.vte_V if emission is None else self.vte_V * emission
        i_s = self.saturation_current(emission)
        knee = -3.0 * vte
        k = 3.0 * vte / math.e
        e3 = math.exp(-3.0)
        # In-place chains: this runs on every node at every Newton iteration.
        if emission is None:
            evd = vd.clamp(min=knee).mul_(1.0 / vte).exp_()
            ratio = vd.clamp(max=knee).reciprocal_().mul_(k)  # k / vd_r
        else:
            evd = torch.maximum(vd, knee).div_(vte).exp_()
            ratio = torch.minimum(vd, knee).reciprocal_().mul_(k)
        arg = ratio * ratio * ratio
        i = (evd - arg).sub_(1.0 + e3).mul_(i_s)
        # dI/dvd of the reverse branch: 3 Is arg / vd_r = 3 Is ratio^4 / k
        if emission is None:
            g = arg.mul_(ratio).mul_(3.0 / k).add_(evd, alpha=1.0 / vte).sub_(e3 / vte).mul_(i_s)
        else:
            g = arg.mul_(ratio).mul_(3.0 / k).add_(evd.div_(vte)).sub_(e3 / vte).mul_(i_s)
        if area is not None:
            i, g = i.mul_(area), g.mul_(area)
        return i.add_(vd, alpha=self.gmin_S), g.add_(self.gmin_S)

    def cocontent(
        self, vd: torch.Tensor, area: torch.Tensor | None = None, emission: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``integral_0^vd I(v) dv`` in watts: the diode's term of the circuit's co-content. With
        a series resistance it is the junction's co-content at ``u`` plus ``R I^2 / 2`` (since
        ``dvd = du + R dI`` along (RS))."""
        if self.rs_ohm:
            r = self.rs_ohm if area is None else self.rs_ohm / area
            u = self.junction_voltage(vd, area, emission)
            current = (vd - u) / r
            return self._junction_cocontent(u, area, emission) + 0.5 * r * current**2
        return self._junction_cocontent(vd, area, emission)

    def _junction_cocontent(
        self, vd: torch.Tensor, area: torch.Tensor | None = None, emission: torch.Tensor | None = None
    ) -> torch.Tensor:
        vte = self.vte_V if emission is None else self.vte_V * emission
        i_s = self.saturation_current(emission)
        knee = -3.0 * vte
        vd_f = torch.maximum(vd, torch.as_tensor(knee, dtype=vd.dtype, device=vd.device))
        vd_r = torch.minimum(vd, torch.as_tensor(knee, dtype=vd.dtype, device=vd.device))
        k = (3.0 * vte / math.e) ** 3
        phi_f = i_s * (vte * torch.expm1(vd_f / vte) - vd_f)
        # Reverse branch shifted to vanish at the knee, where the forward branch takes over.
        phi_r = -i_s * (vd_r - knee) + 0.5 * i_s * k * (1.0 / vd_r**2 - 1.0 / knee**2)
        phi = phi_f + phi_r
        if area is not None:
            phi = phi * area
        return phi + 0.5 * self.gmin_S * vd**2
