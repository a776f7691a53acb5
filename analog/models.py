"""User device models: the validated content of a SPICE model library, and which of its models an
analog block uses (:class:`UserModels`). Reading a library file — the whitelist parser and its
limits — is :mod:`analog.model_library`.

Supported statements in a ``.subckt`` body: ``R C L`` (two nodes, value), ``D`` (two nodes, model),
``V I`` (two nodes, ``[DC] value``), ``E G`` (four nodes, gain), ``F H`` (two nodes, controlling
source, gain), ``B`` (two nodes, ``V=`` or ``I=`` expression) and ``X`` (nodes, subcircuit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analog.diode import DiodeModel
from analog.diode_charge import JunctionCharge

__all__ = ["ModelCard", "ModelFileError", "ModelLibrary", "SubCircuit", "UserModels", "is_number", "number"]

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?(meg|mil|[tgkmunpf])?\Z", re.IGNORECASE)
_DIODE_FAST_PARAMS = {"IS", "N", "TNOM", "XTI", "EG", "RS", "BV", "IBV", "NBV", "TCV", "AREA"}
"""Diode card parameters the fast solver represents (:class:`~analog.diode.DiodeModel`)."""
_DIODE_CHARGE_PARAMS = {"CJO", "CJ0", "VJ", "M", "FC", "TT"}
"""Charge-storage parameters: no effect on a DC solution; the fast transient simulates them
(:meth:`UserModels.junction_charge`, :mod:`analog.diode_charge`)."""
_SCALE = {
    "t": 1e12,
    "g": 1e9,
    "meg": 1e6,
    "k": 1e3,
    "mil": 25.4e-6,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
    "p": 1e-12,
    "f": 1e-15,
}


class ModelFileError(ValueError):
    """A model library that cannot be used; the message names the file, the line and the rule."""


def is_number(text: str) -> bool:
    """Whether ``text`` is a SPICE number (digits, optional exponent and scale suffix)."""
    return _NUMBER.match(text) is not None


def number(text: str) -> float:
    """A SPICE number (``1.5k``, ``2meg``, ``1e-14``) as a float; :class:`ValueError` otherwise."""
    match = _NUMBER.match(text)
    if not match:
        raise ValueError(f"not a number: {text!r}")
    suffix = (match.group(4) or "").lower()
    return float(text[: len(text) - len(suffix)]) * _SCALE.get(suffix, 1.0)


@dataclass(frozen=True)
class ModelCard:
    name: str
    kind: str
    params: tuple[tuple[str, str], ...]
    """``(KEY, value)`` pairs, keys upper case, values as written (validated)."""

    def spice(self) -> str:
        return f".model {self.name} {self.kind} ({' '.join(f'{k}={v}' for k, v in self.params)})"


@dataclass(frozen=True)
class SubCircuit:
    name: str
    pins: tuple[str, ...]
    params: tuple[tuple[str, str], ...]
    body: tuple[str, ...]
    """Validated element lines, re-printed."""

    def spice(self) -> str:
        head = " ".join((".subckt", self.name, *self.pins))
        if self.params:
            head += " params: " + " ".join(f"{k}={v}" for k, v in self.params)
        return "\n".join((head, *self.body, f".ends {self.name}"))


@dataclass(frozen=True)
class ModelLibrary:
    """The validated content of a model library file (and the files it includes)."""

    source: str
    models: tuple[ModelCard, ...]
    subcircuits: tuple[SubCircuit, ...]

    def model(self, name: str) -> ModelCard | None:
        return next((m for m in self.models if m.name.lower() == name.lower()), None)

    def subcircuit(self, name: str) -> SubCircuit | None:
        return next((s for s in self.subcircuits if s.name.lower() == name.lower()), None)

    def spice(self) -> str:
        """Every card and subcircuit, re-printed from what was parsed (never the raw text)."""
        parts = ["* user models (validated and re-printed by analog.models)"]
        parts += [m.spice() for m in self.models] + [s.spice() for s in self.subcircuits]
        return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class UserModels:
    """Which user models of a library an analog block uses.

    ``diode_model``: a ``.model NAME D`` card for every neuron diode (replaces the block's own
    ``IS``/``N``). ``neuron_subckt``: a one-pin ``.subckt`` placed at every free node *instead of*
    the two diodes (the pin is the node; current flows from the node into the subcircuit).
    """

    library: ModelLibrary
    diode_model: str | None = None
    neuron_subckt: str | None = None

    def __post_init__(self) -> None:
        source = self.library.source
        if self.diode_model is None and self.neuron_subckt is None:
            raise ModelFileError(f"model file {source}: name a diode_model or a neuron_subckt to use from it")
        if self.diode_model is not None:
            card = self.library.model(self.diode_model)
            if card is None:
                known = [m.name for m in self.library.models] or "none"
                raise ModelFileError(f"model file {source}: no .model {self.diode_model!r} (defined: {known})")
            if card.kind != "D":
                raise ModelFileError(f"model file {source}: .model {card.name} is a {card.kind}, not a diode (D)")
        if self.neuron_subckt is not None:
            sub = self.library.subcircuit(self.neuron_subckt)
            if sub is None:
                known = [s.name for s in self.library.subcircuits] or "none"
                raise ModelFileError(f"model file {source}: no .subckt {self.neuron_subckt!r} (defined: {known})")
            if len(sub.pins) != 1:
                raise ModelFileError(
                    f"model file {source}: neuron subcircuit {sub.name} must have exactly one pin (the "
                    f"neuron node), it has {len(sub.pins)}: {' '.join(sub.pins)}"
                )

    def diode(self, temperature_C: float = 27.0, tnom_C: float = 27.0, area: float = 1.0) -> DiodeModel | None:
        """The diode card as a :class:`DiodeModel` at ``temperature_C`` when the fast solver can
        represent it, else ``None``; a card without ``TNOM`` was measured at ``tnom_C`` (the
        deck's ``.options TNOM``). ``area``: the instance area of every diode; a card's own
        ``AREA`` (ngspice takes it when the instance gives none) is refused alongside another."""
        if self.diode_model is None:
            return None
        card = self.library.model(self.diode_model)
        params = dict(card.params)
        if not set(params) <= _DIODE_FAST_PARAMS | _DIODE_CHARGE_PARAMS:
            return None
        where = f"model file {self.library.source}: .model {card.name}"
        if "AREA" in params and area != 1.0:
            raise ModelFileError(
                f"{where} sets AREA={params['AREA']} and the block sets diode_area = {area!r}; ngspice would take "
                "the instance's and ignore the card's: set one of them"
            )
        defaults = DiodeModel()

        def value(key: str, default):
            return number(params[key]) if key in params else default

        try:
            return DiodeModel(
                is_A=value("IS", defaults.is_A),
                n=value("N", defaults.n),
                temperature_C=temperature_C,
                tnom_C=value("TNOM", tnom_C),
                xti=value("XTI", defaults.xti),
                eg_eV=value("EG", defaults.eg_eV),
                rs_ohm=value("RS", defaults.rs_ohm),
                bv_V=value("BV", defaults.bv_V),
                ibv_A=value("IBV", defaults.ibv_A),
                nbv=value("NBV", defaults.nbv),
                tcv_V_per_K=value("TCV", defaults.tcv_V_per_K),
                area=value("AREA", area),
            )
        except ValueError as exc:
            raise ModelFileError(f"{where}: {exc}") from None

    def fast_refusal(self) -> str | None:
        """Why the fast solver cannot simulate these models (``None``: it can)."""
        source = self.library.source
        if self.neuron_subckt is not None:
            return (
                f"the fast solver cannot simulate the neuron subcircuit {self.neuron_subckt!r} from {source}; "
                "use the ngspice solver (solver.name = 'ngspice')"
            )
        if self.diode_model is not None and self.diode() is None:
            card = self.library.model(self.diode_model)
            extra = sorted(k for k, _ in card.params if k not in _DIODE_FAST_PARAMS | _DIODE_CHARGE_PARAMS)
            return (
                f"the fast solver cannot simulate diode model {card.name!r} from {source}: it represents "
                f"{', '.join(sorted(_DIODE_FAST_PARAMS))} (and accepts {', '.join(sorted(_DIODE_CHARGE_PARAMS))}, "
                f"which do not change a DC solution) only, the card also sets {', '.join(extra)}; "
                "use the ngspice solver (solver.name = 'ngspice')"
            )
        return None

    def junction_charge(self, temperature_C: float = 27.0, tnom_C: float = 27.0) -> JunctionCharge | None:
        """The diode card's charge storage at ``temperature_C`` (a card without ``TNOM`` was
        measured at ``tnom_C``), or ``None`` when the card stores none (``CJO`` and ``TT`` zero or
        absent): then the transients model each junction by the linear ``energy.diode_F``."""
        if self.diode_model is None:
            return None
        card = self.library.model(self.diode_model)
        params = dict(card.params)
        values = {}
        for key, name in (("CJO", "cjo_F"), ("CJ0", "cjo_F"), ("VJ", "vj_V"), ("M", "m"), ("FC", "fc"), ("TT", "tt_s")):
            if key in params:
                values[name] = number(params[key])
        if not values.get("cjo_F") and not values.get("tt_s"):
            return None
        tnom = number(params["TNOM"]) if "TNOM" in params else tnom_C
        try:
            return JunctionCharge(**values, temperature_C=temperature_C, tnom_C=tnom)
        except ValueError as exc:
            raise ModelFileError(f"model file {self.library.source}: .model {card.name}: {exc}") from None

    def spice(self) -> str:
        return self.library.spice()
