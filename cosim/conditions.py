"""Conditions under which a trained design is evaluated: ``KEY=VALUE`` overrides of its stored
configuration that change how the chip runs, never what was trained.

Allowed (``i`` indexes ``model.blocks``; a key without an index applies to every analog block):

* temperature and process: ``temperature_C``, ``diode_is_A``, ``diode_n``, ``diode_xti``,
  ``diode_eg_eV``, the breakdown ``diode_bv_V``, ``diode_ibv_A``, the devices' ``conductance_tc1`` /
  ``conductance_tc2``, and supplies ``bias_V``,
  ``diode_up_V``, ``diode_down_V``;
* the crossbar wires: ``wire_ohm``;
* the peripherals (:mod:`analog.peripherals`): driver output resistance ``driver_ohm``, amplifier
  ``amp_out_ohm``, ``amp_in_ohm``, ``amp_offset_V``, ``amp_swing_V``, nudging source
  ``nudge_out_ohm``, ``nudge_compliance_V``, ``nudge_knee_V``;
* the devices and their reads: ``devices.KEY``, ``io.KEY`` (top level or ``model.blocks[i].``);
  a changed ``devices`` key gives the trained conductances to freshly drawn devices; the time since
  programming ``io.drift_time_s`` reads the trained chip's own devices after drift;
* converters at the boundary: ``model.blocks[i].bits``, ``.lo``, ``.hi`` of a ``dac``/``adc`` block;
* the solver: ``solver.KEY``.

Everything else (layer sizes, input pairs, amplifier gains, the conductance range, digital layers)
would change the trained architecture or the meaning of its parameters and is refused with why.
"""

from __future__ import annotations

import json
import re

from cosim.config import ConfigError, RunConfig, parse_config, parse_override, set_path
from cosim.model_config import PERIPHERAL_KEYS, AnalogBlockConfig, AnalogConvBlockConfig, ConverterConfig

__all__ = ["ANALOG_KEYS", "Conditions", "apply_conditions", "parse_condition"]

ANALOG_KEYS = (
    "temperature_C",
    "diode_is_A",
    "diode_n",
    "diode_xti",
    "diode_eg_eV",
    "conductance_tc1",
    "conductance_tc2",
    "diode_bv_V",
    "diode_ibv_A",
    "bias_V",
    "diode_up_V",
    "diode_down_V",
    "wire_ohm",
    *PERIPHERAL_KEYS,
)
"""Keys of an analog block that are conditions, not design."""
_CONVERTER_KEYS = ("bits", "lo", "hi")
_SECTIONS = ("devices", "io")
_BLOCK_KEY = re.compile(r"^model\.blocks\[(\d+)\]\.(.+)$")


def parse_condition(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(KEY, value)`` (see :func:`cosim.config.parse_override`)."""
    return parse_override(text)


class Conditions:
    """Validated overrides: which keys, and whether the devices must be drawn anew."""

    def __init__(self, config: RunConfig, items: list[tuple[str, object]]):
        self.items = items
        self.paths: dict[str, object] = {}
        """Every override as the configuration path it sets."""
        self.redraws_devices = False
        analog = [i for i, b in enumerate(config.model.blocks) if isinstance(b, AnalogBlockConfig)]
        conv = [i for i, b in enumerate(config.model.blocks) if isinstance(b, AnalogConvBlockConfig)]
        for key, value in items:
            if key in ANALOG_KEYS and conv:
                # A conv block takes the conditions it has keys for and refuses the others, so that no
                # block of the chip silently stays at the trained condition.
                if key not in AnalogConvBlockConfig.model_fields:
                    raise ConfigError(f"--set {key}: model.blocks[{conv[0]}] (analog-conv) has no such key")
                analog = sorted(set(analog) | set(conv))
            for path in self._paths(config, analog, key):
                self.paths[path] = value

    def _paths(self, config: RunConfig, analog: list[int], key: str) -> list[str]:
        if key == "devices.preset" or key.endswith(".devices.preset"):
            # A stored configuration lists every device key, which would win over the preset's
            # values, and the preset's conductance range is the trained design: refuse, do not
            # pretend to switch technology.
            raise ConfigError(
                f"--set {key}: a trained chip cannot change device technology (the preset sets the "
                "conductance range the conductances were trained in); set single devices.KEY values instead"
            )
        head = key.split(".", 1)[0]
        if head == "solver":
            return [key]
        if head in _SECTIONS:
            self.redraws_devices |= head == "devices"
            return [key]
        if key in ANALOG_KEYS:
            return [f"model.blocks[{i}].{key}" for i in analog]
        match = _BLOCK_KEY.match(key)
        if match is None:
            raise ConfigError(self._refusal(key))
        index, rest = int(match[1]), match[2]
        if index >= len(config.model.blocks):
            raise ConfigError(f"--set {key}: the model has {len(config.model.blocks)} blocks")
        block = config.model.blocks[index]
        if isinstance(block, AnalogBlockConfig):
            section = rest.split(".", 1)[0]
            if rest in ANALOG_KEYS or (section in _SECTIONS and "." in rest):
                self.redraws_devices |= section == "devices"
                return [key]
        elif isinstance(block, ConverterConfig) and rest in _CONVERTER_KEYS:
            return [key]
        raise ConfigError(self._refusal(key, block.type))

    @staticmethod
    def _refusal(key: str, block_type: str | None = None) -> str:
        where = f" of a {block_type} block" if block_type else ""
        return (
            f"--set {key}: not a condition{where}; it would change the trained design (its architecture "
            f"or what its parameters mean). Conditions are {', '.join(ANALOG_KEYS)} (all analog blocks or "
            "model.blocks[i].KEY), devices.KEY, io.KEY, solver.KEY, and bits/lo/hi of a dac/adc block"
        )

    def as_dict(self) -> dict[str, object]:
        return dict(self.paths)


def apply_conditions(config: RunConfig, conditions: Conditions, source: str) -> RunConfig:
    """``config`` with the conditions set, validated again like a file."""
    data = json.loads(config.model_dump_json())
    for path, value in conditions.paths.items():
        set_path(data, path, value, flag="--set")
    return parse_config(data, f"{source} with --set")
