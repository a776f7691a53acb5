"""The neuron diode: ngspice 39's level-1 diode (``dioload.c``, ``diotemp.c``) with series resistance
and reverse breakdown, without charge storage, so that the fast solvers and ngspice solve the same
circuit to rounding error:

* forward and weak reverse bias (``vd >= -3 n Vt``): ``I = Is (exp(vd / (n Vt)) - 1)``;
* deeper reverse bias: ``I = -Is (1 + (3 n Vt / (e vd))**3)`` (SPICE3's smooth reverse model);
* with a breakdown voltage ``BV``, below ``-xbv``: ``I = -Is exp(-(xbv + vd) / (NBV Vt))``, ``xbv``
  being where ngspice puts the knee so that ``IBV`` flows at ``-BV`` (:meth:`DiodeModel.breakdown_voltage`);
* ngspice adds ``gmin * vd`` across every junction (``gmin = 1e-12 S`` by default);
* ``Is`` is scaled from ``TNOM`` to the device temperature (``XTI``, ``EG``) and by the instance
  area; a series resistance ``RS`` makes the junction voltage implicit (solved per diode).

The thermal voltage uses ngspice's constants (CODATA 2014) at the device temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BOLTZMANN_J_PER_K = 1.38064852e-23
ELECTRON_CHARGE_C = 1.6021766208e-19
ZERO_CELSIUS_K = 273.15

NGSPICE_RELTOL = 1e-9
"""ngspice's ``reltol`` in every deck (:mod:`analog.netlist`). Besides Newton's tolerance it sets where
``diotemp.c``'s iteration for the breakdown knee stops, so the fast model uses the same value."""

LOG2_E = 1.0 / math.log(2.0)
"""``log2(e)``: ``exp(x)`` is computed as ``exp2(x LOG2_E)`` where it is hot
(:meth:`DiodeModel.junction_current`)."""

__all__ = [
    "BOLTZMANN_J_PER_K",
    "ELECTRON_CHARGE_C",
    "LOG2_E",
    "NGSPICE_RELTOL",
    "ZERO_CELSIUS_K",
    "DiodeModel",
    "thermal_voltage",
]


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field}: {message}")


def thermal_voltage(temperature_C: float) -> float:
    """``k T / q`` in volts with ngspice's constants; ``temperature_C`` in degrees Celsius."""
    return BOLTZMANN_J_PER_K * (temperature_C + ZERO_CELSIUS_K) / ELECTRON_CHARGE_C


@dataclass(frozen=True)
class DiodeModel:
    """Shockley diode as simulated by ngspice (level 1, with series resistance ``RS`` and reverse
    breakdown ``BV``/``IBV``), with ngspice's temperature model: the parameters are given at ``tnom_C``
    and the saturation current at the device temperature ``T`` is (``diotemp.c``; Massobrio &
    Antognetti, *Semiconductor Device Modeling with SPICE*, 2nd ed., Sec. 1.6)

        IS(T) = IS exp((T / Tnom - 1) EG / (N Vt(T)) + (XTI / N) ln(T / Tnom)),      (T)

    temperatures in kelvin, so a forward-biased junction's voltage falls by about 2 mV/K. The
    breakdown voltage changes with temperature only through ``TCV``: ``BV(T) = BV - TCV (T - Tnom)``
    (ngspice's default ``TLEV = 0``)."""

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
    bv_V: float | None = None
    """Reverse breakdown voltage ``BV`` at ``tnom_C``, volts (> 0); ``None``: no breakdown (ngspice's
    default). The junction current is ``-IBV`` at ``-BV(T)`` (:meth:`breakdown_voltage`)."""
    ibv_A: float = 1e-3
    """Current at the breakdown voltage ``IBV``, amperes (ngspice's default 1 mA); not scaled by the
    instance area (level 1)."""
    nbv: float | None = None
    """Breakdown emission coefficient ``NBV``; ``None``: ``N`` (ngspice's default, also per diode
    when ``N`` has a spread)."""
    tcv_V_per_K: float = 0.0
    """Linear temperature coefficient ``TCV`` of the breakdown voltage, volts per kelvin."""
    area: float = 1.0
    """Instance area of every diode (ngspice's ``D ... area=``): multiplies ``IS``, divides ``RS``;
    a device spread (:attr:`analog.circuit.Circuit.diode_area`) multiplies it per diode."""

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
        _require(
            math.isfinite(self.area) and 1e-6 <= self.area <= 1e6, "area", f"must be in [1e-6, 1e6], got {self.area!r}"
        )
        self._check_breakdown()

    def _check_breakdown(self) -> None:
        if self.bv_V is None:
            return
        _require(math.isfinite(self.bv_V) and 0 < self.bv_V <= 1e4, "bv_V", f"must be in (0, 1e4] V, got {self.bv_V!r}")
        _require(
            math.isfinite(self.ibv_A) and 0 < self.ibv_A <= 10, "ibv_A", f"must be in (0, 10] A, got {self.ibv_A!r}"
        )
        _require(
            self.nbv is None or (math.isfinite(self.nbv) and 0.5 <= self.nbv <= 100),
            "nbv",
            f"must be in [0.5, 100] or None (N), got {self.nbv!r}",
        )
        _require(
            math.isfinite(self.tcv_V_per_K) and abs(self.tcv_V_per_K) <= 1,
            "tcv_V_per_K",
            f"must be in [-1, 1] V/K, got {self.tcv_V_per_K!r}",
        )
        bv_t = self._breakdown_at_temperature()
        _require(
            bv_t > 0,
            "bv_V",
            f"BV - TCV (T - TNOM) = {bv_t!r} V at {self.temperature_C!r} C: the breakdown voltage must stay > 0 V",
        )

    def saturation_current(self, emission: torch.Tensor | None = None) -> float | torch.Tensor:
        """``IS(T)`` of (T) times the instance :attr:`area`, amperes (ngspice's ``tSatCur``); with
        ``emission`` (a factor on ``N`` per diode) one value per diode, since ``N`` enters the
        temperature scaling."""
        i_s = self.is_A * self.area
        if self.temperature_C == self.tnom_C:
            return i_s
        t = self.temperature_C + ZERO_CELSIUS_K
        ratio = t / (self.tnom_C + ZERO_CELSIUS_K)
        vt = thermal_voltage(self.temperature_C)
        if emission is None:
            return i_s * math.exp((ratio - 1) * self.eg_eV / (self.n * vt) + self.xti / self.n * math.log(ratio))
        n = self.n * emission
        return i_s * torch.exp((ratio - 1) * self.eg_eV / (n * vt) + self.xti / n * math.log(ratio))

    def _breakdown_at_temperature(self) -> float:
        return self.bv_V - self.tcv_V_per_K * (self.temperature_C - self.tnom_C)

    @property
    def vte_brk_V(self) -> float:
        """``NBV Vt``: the breakdown emission coefficient times the thermal voltage, volts."""
        return (self.n if self.nbv is None else self.nbv) * thermal_voltage(self.temperature_C)

    def breakdown_voltage(
        self, area: torch.Tensor | None = None, emission: torch.Tensor | None = None
    ) -> float | torch.Tensor | None:
        """ngspice's knee ``xbv`` of the breakdown branch, volts (``None`` without ``bv_V``): a float,
        or one value per diode with ``area`` / ``emission`` factors (``Is`` enters it).

        ``diotemp.c`` (level 1) solves ``Is (exp((BV - xbv) / (NBV Vt)) - 1 + xbv / Vt) = IBV`` by
        the fixed-point iteration

            xbv <- BV - NBV Vt ln(IBV / Is + 1 - xbv / Vt),    from  xbv = BV - NBV Vt ln(1 + IBV / Is),   (B)

        stopping at the first iterate whose current is within ``reltol IBV`` of ``IBV`` (25 at
        most), ``BV`` being ``BV(T)`` and ``Is`` ``IS(T)`` times the area; where ``IBV < Is BV / Vt``
        it takes ``xbv = BV``. The same iterates are computed here, so ``xbv`` is ngspice's, not
        the exact root (they differ by up to ``reltol NBV Vt``)."""
        if self.bv_V is None:
            return None
        scalar = area is None and emission is None
        if scalar and "_xbv" in self.__dict__:
            return self.__dict__["_xbv"]
        i_s = torch.as_tensor(self.saturation_current(emission), dtype=torch.float64)
        if area is not None:
            i_s = i_s * area.to(torch.float64)
        vt = thermal_voltage(self.temperature_C)
        nvt = self.vte_brk_V if self.nbv is not None or emission is None else self.vte_brk_V * emission.double()
        bv, cbv = self._breakdown_at_temperature(), self.ibv_A
        done = cbv < i_s * (bv / vt)
        xbv = torch.where(done, bv, bv - nvt * torch.log1p(cbv / i_s))
        for _ in range(25):
            new = bv - nvt * torch.log(cbv / i_s + 1 - xbv / vt)
            current = i_s * (torch.exp((bv - new) / nvt) - 1 + new / vt)
            xbv = torch.where(done, xbv, new)
            done = done | ((current - cbv).abs() <= NGSPICE_RELTOL * cbv)
            if bool(done.all()):
                break
        if scalar:
            value = float(xbv)
            object.__setattr__(self, "_xbv", value)  # a pure function of the frozen fields
            return value
        return xbv

    @property
    def vte_V(self) -> float:
        """``n Vt``: the emission coefficient times the thermal voltage, volts."""
        return self.n * thermal_voltage(self.temperature_C)

    def current(
        self,
        vd: torch.Tensor,
        area: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
        breakdown: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Diode current ``I(vd)`` (A, anode to cathode) and its conductance ``dI/dvd`` (S) for the
        voltage ``vd`` across the whole diode. With a series resistance ``R = RS / area`` the
        junction sits at the ``u`` that solves

            I_j(u) = (vd - u) / R,       I = (vd - u) / R,       dI/dvd = g_j / (1 + R g_j),   (RS)

        ``I_j`` being the junction's current (:meth:`junction_current`, ``gmin`` across the
        junction as in ngspice); ``u`` is found by safeguarded Newton per diode (the left side
        rises, the right falls: one root, bracketed by 0 and ``vd``).

        ``breakdown``: :meth:`breakdown_voltage` of these diodes, for callers that evaluate the
        same diodes many times (``None``: computed here)."""
        if breakdown is None and self.bv_V is not None:
            breakdown = self.breakdown_voltage(area, emission)
        if not self.rs_ohm:
            return self.junction_current(vd, area, emission, breakdown)
        r = self._series_ohm(area)
        u = self.junction_voltage(vd, area, emission, breakdown)
        _, g = self.junction_current(u, area, emission, breakdown)
        return (vd - u) / r, g / (1.0 + r * g)

    def _series_ohm(self, area: torch.Tensor | None) -> float | torch.Tensor:
        r = self.rs_ohm / self.area
        return r if area is None else r / area

    def junction_voltage(
        self,
        vd: torch.Tensor,
        area: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
        breakdown: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The junction voltage ``u`` of (RS) for the diode voltage ``vd``, to rounding."""
        if breakdown is None and self.bv_V is not None:
            breakdown = self.breakdown_voltage(area, emission)
        r = self._series_ohm(area)
        vd = vd.detach() if vd.requires_grad else vd
        lo, hi = torch.minimum(vd, torch.zeros_like(vd)), torch.maximum(vd, torch.zeros_like(vd))
        # Forward: the junction carries at most vd / R, so it sits below n Vt ln(1 + vd / (R Is)).
        vte = self.vte_V if emission is None else self.vte_V * emission
        i_s = self.saturation_current(emission) * (1.0 if area is None else area)
        hi = torch.minimum(hi, vte * torch.log1p(hi / (r * i_s)))
        if breakdown is not None:
            # In breakdown it carries at most |vd| / R too, so it sits above -xbv - NBV Vt ln(1 + |vd| / (R Is))
            # (where that lies below the knee -b); Newton from below is monotone there (I_j is concave).
            xbv, b, vbk = self._breakdown_knee(breakdown, vte, emission, vd)
            floor = _at_least(vbk * torch.log1p(lo.abs() / (r * i_s)), b - xbv).add_(xbv).neg_()
            lo = torch.maximum(lo, floor)
        u = torch.where(vd > 0, hi, lo)  # h is convex where forward: Newton from above is monotone
        for _ in range(200):
            i, g = self.junction_current(u, area, emission, breakdown)
            h = i + (u - vd) / r
            lo = torch.where(h <= 0, u, lo)
            hi = torch.where(h >= 0, u, hi)
            new = u - h / (g + 1.0 / r)
            new = torch.where((new >= lo) & (new <= hi), new, 0.5 * (lo + hi))  # NaN bisects too
            if bool(((new - u).abs() <= 1e-15 * (1.0 + u.abs())).all()):
                return new
            u = new
        raise FloatingPointError("diode series resistance: the junction voltage did not converge in 200 steps")

    def _breakdown_knee(self, breakdown, vte, emission, like: torch.Tensor):
        """``(xbv, b, NBV Vt)`` with ``b = max(xbv, 3 n Vt)``: ngspice tests the forward branch first
        (``vd >= -3 n Vt``), so breakdown holds below ``-b``. Floats for nominal diodes, else
        tensors of ``like``'s dtype and device."""
        vbk = self.vte_brk_V if self.nbv is not None or emission is None else self.vte_brk_V * emission
        if not isinstance(breakdown, torch.Tensor) and not isinstance(vte, torch.Tensor):
            return breakdown, max(breakdown, 3.0 * vte), vbk
        xbv = torch.as_tensor(breakdown).to(like)
        return xbv, torch.maximum(xbv, torch.as_tensor(3.0 * vte).to(like)), vbk

    def junction_current(
        self,
        vd: torch.Tensor,
        area: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
        breakdown: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Junction current ``I(vd)`` (A, anode to cathode) and its conductance ``dI/dvd`` (S),
        without the series resistance.

        ``area`` (broadcast against ``vd``): ngspice's instance area factor, multiplying ``Is``
        (not ``gmin``); ``emission``: a factor multiplying ``N`` per diode (each such diode has
        its own ``.model`` card in ngspice); ``None`` for 1; ``breakdown``: as in :meth:`current`.

        Branch-free: the forward expression is evaluated at ``max(vd, -3 n Vt)`` and the reverse
        one at ``min(vd, -3 n Vt)``; both meet at ``-3 n Vt`` with equal value and slope, so their
        sum minus the value at the meeting point is the piecewise model. With breakdown the reverse
        one is evaluated at ``max(min(vd, -3 n Vt), -b)`` and, below ``-b``, replaced by the breakdown
        branch (ngspice's branches do not meet there: its current steps by ``Is (3 n Vt / (e b))^3``,
        kept here, and its slope jumps to ``Is / (NBV Vt)``).
        """
        if breakdown is None and self.bv_V is not None:
            breakdown = self.breakdown_voltage(area, emission)
        vte = self.vte_V if emission is None else self.vte_V * emission
        i_s = self.saturation_current(emission)
        knee = -3.0 * vte
        k = 3.0 * vte / math.e
        e3 = math.exp(-3.0)
        if breakdown is not None:
            xbv, b, vbk = self._breakdown_knee(breakdown, vte, emission, vd)
        # In-place chains: this runs on every node at every Newton iteration. exp(x) is taken as
        # exp2(x log2(e)): the same value to a few ulps, and torch's float64 exp2 is ~3x faster
        # than its exp on CPU (AVX-512, torch 2.13: 11 us against 35 us for 25,600 values).
        if emission is None:
            evd = vd.clamp(min=knee).mul_(LOG2_E / vte).exp2_()
            reverse = vd.clamp(max=knee)
        else:
            evd = torch.maximum(vd, knee).div_(vte).mul_(LOG2_E).exp2_()
            reverse = torch.minimum(vd, knee)
        if breakdown is not None:
            reverse = _at_least(reverse, -b)
        ratio = reverse.reciprocal_().mul_(k)  # k / vd_r
        arg = ratio * ratio * ratio
        i = (evd - arg).sub_(1.0 + e3).mul_(i_s)
        # dI/dvd of the reverse branch: 3 Is arg / vd_r = 3 Is ratio^4 / k
        if emission is None:
            g = arg.mul_(ratio).mul_(3.0 / k).add_(evd, alpha=1.0 / vte).sub_(e3 / vte).mul_(i_s)
        else:
            g = arg.mul_(ratio).mul_(3.0 / k).add_(evd.div_(vte)).sub_(e3 / vte).mul_(i_s)
        if breakdown is not None:
            # Below -b the reverse branch sits at its value and slope at -b (Is units: -(1 + r^3), 3 r^4 / k
            # with r = -k / b); swap them for the breakdown branch -e, e / (NBV Vt).
            e = _at_most(vd, -b).add_(xbv).div_(vbk).mul_(-LOG2_E).exp2_()
            below = (vd < -b).to(vd.dtype).mul_(i_s)
            r_b = -k / b
            i.addcmul_(below, e.neg().add_(1.0 + r_b**3))
            g.addcmul_(below, (e / vbk).sub_(3.0 * r_b**4 / k))
        if area is not None:
            i, g = i.mul_(area), g.mul_(area)
        return i.add_(vd, alpha=self.gmin_S), g.add_(self.gmin_S)

    def cocontent(
        self,
        vd: torch.Tensor,
        area: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
        breakdown: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``integral_0^vd I(v) dv`` in watts: the diode's term of the circuit's co-content. With
        a series resistance it is the junction's co-content at ``u`` plus ``R I^2 / 2`` (since
        ``dvd = du + R dI`` along (RS))."""
        if breakdown is None and self.bv_V is not None:
            breakdown = self.breakdown_voltage(area, emission)
        if self.rs_ohm:
            r = self._series_ohm(area)
            u = self.junction_voltage(vd, area, emission, breakdown)
            current = (vd - u) / r
            return self._junction_cocontent(u, area, emission, breakdown) + 0.5 * r * current**2
        return self._junction_cocontent(vd, area, emission, breakdown)

    def _junction_cocontent(
        self,
        vd: torch.Tensor,
        area: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
        breakdown: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        vte = self.vte_V if emission is None else self.vte_V * emission
        i_s = self.saturation_current(emission)
        knee = -3.0 * vte
        vd_f = torch.maximum(vd, torch.as_tensor(knee, dtype=vd.dtype, device=vd.device))
        vd_r = torch.minimum(vd, torch.as_tensor(knee, dtype=vd.dtype, device=vd.device))
        if breakdown is not None:
            xbv, b, vbk = self._breakdown_knee(breakdown, vte, emission, vd)
            low = _at_most(vd, -b)
            vd_r = _at_least(vd_r, -b)
        k = (3.0 * vte / math.e) ** 3
        phi_f = i_s * (vte * torch.expm1(vd_f / vte) - vd_f)
        # Reverse branch shifted to vanish at the knee, where the forward branch takes over.
        phi_r = -i_s * (vd_r - knee) + 0.5 * i_s * k * (1.0 / vd_r**2 - 1.0 / knee**2)
        phi = phi_f + phi_r
        if breakdown is not None:
            # integral_{-b}^{min(vd, -b)} -Is exp(-(xbv + v) / vbk) dv, zero above -b.
            e_b = torch.exp(torch.as_tensor((b - xbv) / vbk).to(vd))
            phi = phi + i_s * vbk * e_b * torch.expm1(-(low + b) / vbk)
        if area is not None:
            phi = phi * area
        return phi + 0.5 * self.gmin_S * vd**2


def _at_least(x: torch.Tensor, floor: float | torch.Tensor) -> torch.Tensor:
    """``max(x, floor)``, in place for a number (``x`` is a temporary)."""
    return torch.maximum(x, floor) if isinstance(floor, torch.Tensor) else x.clamp_(min=floor)


def _at_most(x: torch.Tensor, ceiling: float | torch.Tensor) -> torch.Tensor:
    """``min(x, ceiling)`` as a new tensor."""
    return torch.minimum(x, ceiling) if isinstance(ceiling, torch.Tensor) else x.clamp(max=ceiling)
