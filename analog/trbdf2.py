"""The coefficients of TR-BDF2 (Bank et al. 1985; Hosea & Shampine 1996), shared by the transient
integrators (:mod:`analog.settling`, :mod:`analog.settling_general`) and the junction states
(:mod:`analog.settling_charge`): a trapezoid stage to ``t + GAMMA h``, a BDF2 stage to ``t + h``,
``D = GAMMA / 2`` and the local-error constant ``LTE`` (see :mod:`analog.settling`)."""

from __future__ import annotations

import math

__all__ = ["GAMMA", "LTE", "D"]

GAMMA = 2.0 - math.sqrt(2.0)
D = GAMMA / 2.0
LTE = (-3.0 * GAMMA**2 + 4.0 * GAMMA - 2.0) / (12.0 * (2.0 - GAMMA))
