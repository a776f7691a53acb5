"""Charge storage of the neuron diode: ngspice 39's level-1 junction (depletion) and diffusion
charge (``dioload.c``, temperature scaling of ``diotemp.c``), for the fast transient.

A diode card's ``CJO``, ``VJ``, ``M``, ``FC`` and ``TT`` define the charge ``q(vd)`` stored at the
junction voltage ``vd`` (on the internal node, behind the series resistance ``RS``):

    q_dep = VJ' CJ' (1 - (1 - vd / VJ')^(1 - M)) / (1 - M),     C_dep = CJ' (1 - vd / VJ')^(-M)    (vd < FC VJ')
    q_dep = CJ' F1 + (CJ' / F2) (F3 (vd - FC VJ') + M / (2 VJ') (vd^2 - (FC VJ')^2)),
    C_dep = (CJ' / F2) (F3 + M vd / VJ')                                                        (vd >= FC VJ')
    F1 = VJ' (1 - (1 - FC)^(1 - M)) / (1 - M),   F2 = (1 - FC)^(1 + M),   F3 = 1 - FC (1 + M)       (Q)
    q_dif = TT I_d(vd),   C_dif = TT dI_d/dvd

where ``CJ' = AREA CJO(T)`` and ``VJ' = VJ(T)`` (:class:`JunctionCharge`, (VJ)) and ``I_d`` is the
junction current with ngspice's ``gmin`` (ngspice 39 multiplies the current it loads, ``gmin``
included, by ``TT``; :meth:`~analog.diode.DiodeModel.junction_current`). Above ``FC VJ'`` the
depletion charge is the quadratic whose capacitance continues ``C_dep`` linearly, with value and
slope continuous at ``FC VJ'``.

:func:`stage_current` is the diode inside one implicit integration stage: the charge balance of
its junction ``q(u) - b = d h (I_RS - I_d(u))``, with ``I_RS = (vd - u) / RS`` through the series
resistance, solved for the junction voltage ``u`` given the terminal voltage ``vd``, so that the
node equations see the diode as a nonlinear conductance (its junction a state of its own).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from analog.diode import BOLTZMANN_J_PER_K, ELECTRON_CHARGE_C, ZERO_CELSIUS_K, DiodeModel

__all__ = ["JunctionCharge", "StageJunction", "card_charge", "stage_current"]

_REFTEMP_K = 300.15
"""ngspice's ``REFTEMP`` (27 C), the reference of its band-gap and junction-potential formulas."""
_GRADING_MAX = 0.9
"""ngspice 39 limits the grading coefficient to 0.9 (with a warning); cards above it are refused."""


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field}: {message}")


def _pb_factor(temperature_K: float) -> float:
    """``pbfact`` of ``diotemp.c``: the junction potential's band-gap term at ``temperature_K``,
    volts (silicon band gap ``1.16 - 7.02e-4 T^2 / (T + 1108)`` eV)."""
    vt = BOLTZMANN_J_PER_K * temperature_K / ELECTRON_CHARGE_C
    egfet = 1.16 - (7.02e-4 * temperature_K**2) / (temperature_K + 1108.0)
    arg = -egfet / (2.0 * BOLTZMANN_J_PER_K * temperature_K) + 1.1150877 / (BOLTZMANN_J_PER_K * 2.0 * _REFTEMP_K)
    return -2.0 * vt * (1.5 * math.log(temperature_K / _REFTEMP_K) + ELECTRON_CHARGE_C * arg)


@dataclass(frozen=True)
class JunctionCharge:
    """The charge parameters of a level-1 diode card (given at ``tnom_C``) and the device
    temperature. At ``T`` (kelvin; ``diotemp.c``, ``TLEVC = 0``):

        pbo = (VJ - pb(Tnom)) / (Tnom / 300.15),   VJ(T) = pb(T) + (T / 300.15) pbo,
        CJO(T) = CJO (1 + M (4e-4 (T - 300.15) - (VJ(T) - pbo) / pbo))
                     / (1 + M (4e-4 (Tnom - 300.15) - (VJ - pbo) / pbo))                          (VJ)

    with ``pb`` the band-gap term of :func:`_pb_factor`. Refused where ngspice would change the
    card with a warning: ``M > 0.9`` and ``FC VJ(T) > 1``."""

    cjo_F: float = 0.0
    """Zero-bias junction capacitance ``CJO`` per unit area, farads (ngspice default 0)."""
    vj_V: float = 1.0
    """Junction potential ``VJ``, volts (ngspice default 1)."""
    m: float = 0.5
    """Grading coefficient ``M`` (ngspice default 0.5)."""
    fc: float = 0.5
    """Forward-bias depletion capacitance coefficient ``FC`` (ngspice default 0.5)."""
    tt_s: float = 0.0
    """Transit time ``TT``, seconds (ngspice default 0)."""
    temperature_C: float = 27.0
    """Device temperature, degrees Celsius."""
    tnom_C: float = 27.0
    """Temperature at which the card was measured, degrees Celsius."""

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.cjo_F) and 0 <= self.cjo_F < 1e-3, "CJO", f"must be in [0, 1e-3) F, got {self.cjo_F!r}"
        )
        _require(math.isfinite(self.vj_V) and 0 < self.vj_V <= 10, "VJ", f"must be in (0, 10] V, got {self.vj_V!r}")
        _require(
            math.isfinite(self.m) and 0 <= self.m <= _GRADING_MAX,
            "M",
            f"must be in [0, {_GRADING_MAX}] (ngspice limits it to {_GRADING_MAX}), got {self.m!r}",
        )
        _require(math.isfinite(self.fc) and 0 <= self.fc < 1, "FC", f"must be in [0, 1), got {self.fc!r}")
        _require(math.isfinite(self.tt_s) and 0 <= self.tt_s < 1, "TT", f"must be in [0, 1) s, got {self.tt_s!r}")
        for name in ("temperature_C", "tnom_C"):
            value = getattr(self, name)
            _require(
                math.isfinite(value) and -273.15 < value <= 500, name, f"must be in (-273.15, 500] C, got {value!r}"
            )
        t, tnom = self.temperature_C + ZERO_CELSIUS_K, self.tnom_C + ZERO_CELSIUS_K
        pbo = (self.vj_V - _pb_factor(tnom)) / (tnom / _REFTEMP_K)
        pot = _pb_factor(t) + (t / _REFTEMP_K) * pbo
        _require(
            pot > 0,
            "VJ",
            f"the junction potential at {self.temperature_C} C is {pot:.4g} V (<= 0); raise VJ or lower "
            "the temperature",
        )
        cj = self.cjo_F / (1 + self.m * (400e-6 * (tnom - _REFTEMP_K) - (self.vj_V - pbo) / pbo))
        cj *= 1 + self.m * (400e-6 * (t - _REFTEMP_K) - (pot - pbo) / pbo)
        _require(cj >= 0, "CJO", f"the junction capacitance at {self.temperature_C} C is negative ({cj:.4g} F)")
        _require(
            self.fc * pot <= 1.0,
            "VJ",
            f"FC * VJ at {self.temperature_C} C is {self.fc * pot:.4g} V > 1 V, which ngspice limits with a "
            "warning; lower VJ or FC",
        )
        xfc = math.log1p(-self.fc)
        object.__setattr__(self, "_cj", cj)
        object.__setattr__(self, "_pot", pot)
        object.__setattr__(self, "_f1", pot * (1 - math.exp((1 - self.m) * xfc)) / (1 - self.m))
        object.__setattr__(self, "_f2", math.exp((1 + self.m) * xfc))
        object.__setattr__(self, "_f3", 1 - self.fc * (1 + self.m))

    @property
    def cj_F(self) -> float:
        """``CJO(T)`` of (VJ), farads per unit area."""
        return self._cj

    @property
    def pot_V(self) -> float:
        """``VJ(T)`` of (VJ), volts."""
        return self._pot

    @property
    def knee_V(self) -> float:
        """``FC VJ(T)``: where the depletion charge turns quadratic, volts."""
        return self.fc * self._pot

    def depletion(self, vd: torch.Tensor, area: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Depletion charge ``q_dep(vd)`` (C) and capacitance (F) of (Q) at junction voltages ``vd``
        (volts); ``area`` (broadcast against ``vd``) multiplies both, ``None`` for 1."""
        cj, pot, m, knee = self._cj, self._pot, self.m, self.knee_V
        low = vd.clamp(max=knee)
        arg = 1.0 - low / pot
        sarg = torch.exp(-m * torch.log(arg))
        q_low = pot * cj * (1.0 - arg * sarg) / (1.0 - m)
        c_low = cj * sarg
        czof2 = cj / self._f2
        q_high = cj * self._f1 + czof2 * (self._f3 * (vd - knee) + (m / (pot + pot)) * (vd * vd - knee * knee))
        c_high = czof2 * (self._f3 + m * vd / pot)
        above = vd >= knee
        q, c = torch.where(above, q_high, q_low), torch.where(above, c_high, c_low)
        if area is not None:
            q, c = q * area, c * area
        return q, c

    def charge(
        self,
        diode: DiodeModel,
        vd: torch.Tensor,
        area: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
        current: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Total charge ``q(vd)`` (C) and capacitance ``dq/dvd`` (F) of (Q), depletion plus
        diffusion, of ``diode``'s junction at ``vd`` volts. ``current``: the junction's
        ``(I_d, dI_d/dvd)`` at ``vd`` when the caller has it already."""
        q, c = self.depletion(vd, area)
        if self.tt_s:
            i, g = diode.junction_current(vd.clone(), area, emission) if current is None else current
            q, c = q + self.tt_s * i, c + self.tt_s * g
        return q, c

    def energy_J(
        self,
        diode: DiodeModel,
        u: torch.Tensor,
        area: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Energy stored in the charge of a junction at ``u`` volts, ``integral_0^u x dq =
        u q(u) - integral_0^u q``, joules (elementwise). The integral of (Q) in closed form, and of
        the diffusion charge ``TT`` times the junction's co-content."""
        cj, pot, m, knee = self._cj, self._pot, self.m, self.knee_V

        def low(x):
            return pot * cj / (1.0 - m) * (x + pot / (2.0 - m) * ((1.0 - x / pot) ** (2.0 - m) - 1.0))

        x = u.clamp(max=knee)
        above = (u - knee).clamp(min=0.0)
        czof2 = cj / self._f2
        high = cj * self._f1 * above + czof2 * (
            self._f3 * above**2 / 2.0 + (m / (pot + pot)) * ((u**3 - knee**3) / 3.0 - knee**2 * above)
        )
        integral = low(x) + torch.where(u > knee, high, torch.zeros_like(u))
        if area is not None:
            integral = integral * area
        if self.tt_s:
            junction = dataclasses.replace(diode, rs_ohm=0.0)
            integral = integral + self.tt_s * junction.cocontent(u, area, emission)
        q, _ = self.charge(diode, u, area, emission)
        return u * q - integral


def card_charge(spec) -> JunctionCharge | None:  # spec: an analog.circuit.CircuitSpec
    """The charge storage of a block's diodes when its diode card sets ``CJO`` or ``TT``
    (:meth:`analog.models.UserModels.junction_charge`, at the diodes' temperature), else ``None``:
    then both transients model each junction by the linear ``energy.diode_F`` instead."""
    if spec.user_models is None or (spec.diode_up_V is None and spec.diode_down_V is None):
        return None
    return spec.user_models.junction_charge(spec.diode.temperature_C, spec.diode.tnom_C)


@dataclass
class StageJunction:
    """Every diode of a batch at the solution of one integration stage, ``[n_rails, B, N]`` each."""

    voltage: torch.Tensor
    """Junction voltage ``u`` (behind ``RS``), volts."""
    current: torch.Tensor
    """Terminal current ``I_RS`` (junction current plus charging current), amperes."""
    conductance: torch.Tensor
    """``dI_RS/dvd`` at fixed history, siemens."""
    charge: torch.Tensor
    """``q(u)``, coulombs."""
    charging: torch.Tensor
    """``dq/dt``: the terminal current minus the junction's own current, amperes."""
    stage_conductance: torch.Tensor
    """``G = dI_d/du + C(u) / dh``: the junction's own conductance in the stage, siemens."""


def stage_current(
    diode: DiodeModel,
    charge: JunctionCharge,
    vd: torch.Tensor,
    history_C: torch.Tensor,
    dh_s: float,
    start: torch.Tensor,
    area: torch.Tensor | None = None,
    emission: torch.Tensor | None = None,
    iterations: int = 100,
) -> tuple[StageJunction, bool]:
    """The diode in an implicit stage ``q(u) - history_C = dh_s (I_RS - I_d(u))``: its terminal
    current and conductance at the terminal voltage ``vd`` (volts, any shape).

    Without ``RS``, ``u = vd`` and ``I_RS = I_d(vd) + (q(vd) - history_C) / dh_s``. With ``RS``
    (``R = RS / area``) ``u`` solves

        h(u) = I_d(u) + (q(u) - history_C) / dh_s - (vd - u) / R = 0,                          (S)

    increasing with ``h' >= 1 / R``, so the root is within ``R |h(x)|`` of any ``x``: safeguarded
    Newton from ``start`` (the previous junction voltages) inside that bracket, its upward steps
    limited as SPICE's ``pnjlim`` does. Then
    ``dI_RS/dvd = G / (1 + R G)`` with ``G = dI_d/du + C(u) / dh_s``. Returns the stage's
    :class:`StageJunction` and whether (S) converged to rounding."""
    if not diode.rs_ohm:
        i, g = diode.junction_current(vd.clone(), area, emission)
        q, c = charge.charge(diode, vd, area, emission, (i, g))
        charging = (q - history_C) / dh_s
        big_g = g + c / dh_s
        return StageJunction(vd, i + charging, big_g, q, charging, big_g), True
    r = diode.rs_ohm if area is None else diode.rs_ohm / area
    u = start

    def residual(x):
        i, g = diode.junction_current(x.clone(), area, emission)
        q, c = charge.charge(diode, x, area, emission, (i, g))
        return i + (q - history_C) / dh_s - (vd - x) / r, i, g, q, c

    h, i, g, q, c = residual(u)
    width = (h.abs() * r).nan_to_num(posinf=1e3).clamp(max=1e3)
    lo, hi = torch.where(h > 0, u - width, u), torch.where(h > 0, u, u + width)
    converged = False
    vte = diode.vte_V if emission is None else diode.vte_V * emission
    for _ in range(iterations):
        step = -h / (g + c / dh_s + 1.0 / r)
        # Upward steps compressed logarithmically beyond n Vt (SPICE's pnjlim): Newton from below
        # on the exponential overshoots by many n Vt.
        step = torch.where(step > vte, vte * (1.0 + torch.log(step / vte)), step)
        new = u + step
        new = torch.where((new < lo) | (new > hi) | ~torch.isfinite(new), 0.5 * (lo + hi), new)
        done = bool(((new - u).abs() <= 1e-15 * (1.0 + u.abs())).all())
        u = new
        h, i, g, q, c = residual(u)
        lo = torch.where(h <= 0, u, lo)
        hi = torch.where(h >= 0, u, hi)
        if done:
            converged = True
            break
    big_g = g + c / dh_s
    current = (vd - u) / r
    return StageJunction(u, current, big_g / (1.0 + r * big_g), q, current - i, big_g), converged
