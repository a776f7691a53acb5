"""Numbers with SI prefixes for reports and figure labels (``3.2 nJ``, ``180 ps``)."""

from __future__ import annotations

import math

__all__ = ["si"]

_PREFIXES = {-18: "a", -15: "f", -12: "p", -9: "n", -6: "u", -3: "m", 0: "", 3: "k"}


def si(value: float, unit: str) -> str:
    """``value`` with three significant digits and the SI prefix that puts it in [1, 1000)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.3g} {unit}"
    exp = min(max(3 * math.floor(math.log10(abs(value)) / 3), -18), 3)
    return f"{value / 10**exp:.3g} {_PREFIXES[exp]}{unit}"
