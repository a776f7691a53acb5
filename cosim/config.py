"""Run configuration: TOML files validated by pydantic, unknown keys and out-of-range values refused.

A configuration names the data, the model (an ordered list of digital and analog blocks, see
:mod:`cosim.model_config`), the device model, read and EP-measurement settings of the analog blocks
(library dataclasses, validated as they are), and the settings of each command
(:mod:`cosim.sections`). Every error names the key path (``model.blocks[1].kernel_size``), the
allowed range and, where it helps, the fix. Presets ship in ``cosim/configs/``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from analog.devices import DeviceConfig, IOConfig
from analog.presets import preset
from analog.readout import Measurement
from cosim.model_config import BLOCK_TYPES, AnalogBlockConfig, ModelConfig, Strict
from cosim.sections import (
    MAX_SEED,
    DataConfig,
    EnergyConfig,
    GradcheckConfig,
    SeedConfig,
    SolveConfig,
    SolverConfig,
    TrainConfig,
)

__all__ = [
    "MAX_SEED",
    "PRESET_DIR",
    "AnalogBlockConfig",
    "ConfigError",
    "DataConfig",
    "EnergyConfig",
    "GradcheckConfig",
    "RunConfig",
    "SolveConfig",
    "SolverConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
    "parse_override",
    "parse_toml",
    "preset_names",
    "resolve_config",
    "resolve_config_path",
    "set_path",
]

PRESET_DIR = Path(__file__).resolve().parent / "configs"
"""The presets shipped with the package (``cosim train --config digits-demo``)."""

_MOVED = {
    ("train", "measure_bits"): "measurement.bits",
    ("train", "measure_range_V"): "measurement.range_V",
    ("train", "measure_range_A"): "measurement.range_A",
    ("devices", "read_noise_sigma"): "io.read_noise_sigma",
}
"""Keys of earlier versions and where they live now (named in the unknown-key error)."""

_SECTIONS = {"devices": DeviceConfig, "io": IOConfig, "measurement": Measurement}
"""Per-block overridable sections and the library type each one builds."""


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and how to fix it."""


_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
MAX_NESTING = "nested too deeply"


def _apply_presets(data: dict) -> dict:
    """``data`` with each ``devices.preset`` expanded (:mod:`analog.presets`): the preset's values
    under the keys written in ``[devices]``, under a block's own ``devices`` keys; and its conductance
    range in every analog block that does not write ``g_min_S`` / ``g_max_S``. Applied to the file's
    dictionary before validation, so that what is stored (checkpoints, ``config show``) lists the
    expanded values and reads back as the same configuration."""
    top = data.get("devices")
    model = data.get("model")
    blocks = model.get("blocks") if isinstance(model, dict) else None
    if not isinstance(top, dict):
        top = {}
    top_name = top.get("preset")
    data = dict(data)
    if top_name is not None:
        try:
            data["devices"] = {**preset(top_name).devices, **top}
        except ValueError as exc:
            raise ValueError(f"devices.{exc}") from None
    if not isinstance(blocks, list):
        return data
    expanded = []
    for index, block in enumerate(blocks):
        if not (isinstance(block, dict) and block.get("type") == "analog"):
            expanded.append(block)
            continue
        own = block.get("devices") if isinstance(block.get("devices"), dict) else {}
        name = own.get("preset", top_name)
        block = dict(block)
        if name is not None:
            try:
                chosen = preset(name)
            except ValueError as exc:
                raise ValueError(f"model.blocks[{index}].devices.{exc}") from None
            if "preset" in own:
                # Every key, so that the top-level preset's values do not show through where this
                # preset leaves a default, and so that the stored block reads back the same.
                written = {k: v for k, v in top.items() if k != "preset"}
                block["devices"] = {**dataclasses.asdict(DeviceConfig()), **chosen.devices, **written, **own}
            block.setdefault("g_min_S", chosen.g_min_S)
            block.setdefault("g_max_S", chosen.g_max_S)
        expanded.append(block)
    data["model"] = {**model, "blocks": expanded}
    return data


class RunConfig(Strict):
    name: str = "run"
    """The run's folder name under ``runs/``: a plain name, never a path."""
    seed: SeedConfig = Field(default_factory=SeedConfig)
    """``seed = N`` (all draws), or ``[seed] data = .. init = .. devices = ..`` (see :class:`SeedConfig`)."""
    dtype: Literal["float64", "float32"] = "float64"
    device: str = "cpu"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    solver: SolverConfig = Field(default_factory=SolverConfig)
    devices: DeviceConfig = Field(default_factory=DeviceConfig)
    """Device model of every analog block (:class:`analog.devices.DeviceConfig`); a block's own
    ``devices`` table overrides single keys. ``preset = "rram"`` (or ``pcm``, ``ecram``) starts from
    a published device and its conductance range (:mod:`analog.presets`); written keys win."""
    io: IOConfig = Field(default_factory=IOConfig)
    """How every analog block's devices are read in each phase (:class:`analog.devices.IOConfig`)."""
    measurement: Measurement = Field(default_factory=Measurement)
    """The ADCs EP reads node voltages and source currents through (:class:`analog.readout.Measurement`)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    solve: SolveConfig = Field(default_factory=SolveConfig)
    gradcheck: GradcheckConfig = Field(default_factory=GradcheckConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        # The name becomes runs/<name>, which --force cleans: a path here would write or delete elsewhere.
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"must be a plain name of 1-100 letters, digits, '.', '_' or '-' that does not start with "
                f"a dot (it names the folder runs/<name>), got {name[:120]!r}; to write elsewhere use --out"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _device_presets(cls, data):
        return _apply_presets(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _block_sections(self):
        for index, block in enumerate(self.model.blocks):
            if isinstance(block, AnalogBlockConfig):
                for section in _SECTIONS:
                    self.block_section(index, section)
                if block.hidden_pairs and self.block_section(index, "devices").amp_offset_sigma_V:
                    raise ValueError(
                        f"model.blocks[{index}].hidden_pairs: amplifier offset draws (devices.amp_offset_sigma_V) "
                        "with dual-rail layers are not supported; set one or the other"
                    )
        return self

    def block_section(self, index: int, section: str):
        """``devices``, ``io`` or ``measurement`` of analog block ``model.blocks[index]``: the
        top-level section with the block's own keys replaced."""
        block, base = self.model.blocks[index], getattr(self, section)
        if not isinstance(block, AnalogBlockConfig):
            raise ValueError(f"model.blocks[{index}]: a {block.type} block has no {section}")
        override = getattr(block, section)
        if not override:
            return base
        where = f"model.blocks[{index}].{section}"
        known = {f.name for f in dataclasses.fields(base)}
        unknown = sorted(set(override) - known)
        if unknown:
            raise ValueError(
                f"{where}.{unknown[0]}: unknown key (the keys of [{section}] are {', '.join(sorted(known))})"
            )
        try:
            return TypeAdapter(_SECTIONS[section]).validate_python({**dataclasses.asdict(base), **override})
        except ValidationError as exc:
            item = exc.errors()[0]
            key = ".".join(str(p) for p in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if not key and (match := re.match(r"^([A-Za-z_]\w*): (.*)$", message, re.S)):
                key, message = match[1], match[2]
            raise ValueError(f"{where}{'.' + key if key else ''}: {message}") from None


_KEY_MESSAGE = re.compile(r"^(?P<path>[A-Za-z_][\w.]*(?:\[\d+\])*(?:\.[A-Za-z_]\w*)*): (?P<message>.*)$", re.S)


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in BLOCK_TYPES and path.endswith("]"):
            continue  # pydantic's discriminator tag, not a key of the file
        else:
            path += ("." if path else "") + str(part)
    return path


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration {source}:"]
    for item in error.errors():
        path = _key_path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            moved = _MOVED.get(tuple(item["loc"][-2:]))
            message = (
                f"this key moved to {moved}"
                if moved
                else "unknown key (check its spelling; `cosim config show digits-demo` lists every key)"
            )
        elif item["type"] == "value_error" and (match := _KEY_MESSAGE.match(message)):
            # The library names the field it refuses ("g_min_S: must be ..."): make it the key path.
            key = match["path"]
            path = key if key.startswith("model.blocks[") else f"{path}.{key}" if path else key
            message = match["message"]
        lines.append(f"  {path or '<top>'}: {message}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    except RecursionError:
        raise ConfigError(f"invalid configuration {source}: values are {MAX_NESTING} (flatten the arrays)") from None


def parse_toml(text: str, source: str) -> dict:
    """The TOML document ``text`` as a dict; a syntax error or a document nested deeper than the
    parser's recursion limit is a :class:`ConfigError` naming ``source``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"config file {source}: arrays or tables are {MAX_NESTING} for the TOML parser (flatten them)"
        ) from None


def load_config(path: str | Path, overrides: list[tuple[str, object]] = ()) -> RunConfig:
    """Read and validate a TOML configuration file, with ``overrides`` (``(KEY, value)``, dotted
    keys as ``--set`` gives them) applied before validation."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (give a path to a .toml file or a preset name: {', '.join(preset_names())})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = parse_toml(text, str(path))
    for key, value in overrides:
        set_path(data, key, value, flag="--set")
    source = str(path) + (" with --set " + ", ".join(f"{k}={v}" for k, v in overrides) if overrides else "")
    return parse_config(data, source)


def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(KEY, value)``; the value is JSON (``null``, numbers, ``true``, lists) or text."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=5 or devices.d2d_sigma=0.1")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def resolve_config_path(name: str | Path) -> Path:
    """A path to a TOML file, or the name of a shipped preset (``digits-demo``): a file that exists
    wins over a preset of the same name."""
    path = Path(name)
    preset = PRESET_DIR / f"{name}.toml"
    if not path.exists() and not str(name).endswith(".toml") and preset.is_file():
        return preset
    return path


def resolve_config(name: str | Path, overrides: list[tuple[str, object]] = ()) -> RunConfig:
    """The validated configuration of a TOML file or a preset name (see :func:`resolve_config_path`),
    with ``overrides`` (see :func:`load_config`)."""
    return load_config(resolve_config_path(name), overrides)


_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")


def set_path(data: dict, key: str, value, flag: str = "--grid") -> None:
    """Set ``key`` (dotted, with ``[i]`` indices) in a nested dict/list, creating tables as needed;
    errors name ``flag``."""
    node = data
    parts = key.split(".")
    for n, part in enumerate(parts):
        match = _PATH_PART.match(part)
        if not match:
            raise ConfigError(f"{flag} {key}: {part!r} is not a key name")
        name, indices = match.group(1), [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
        last = n == len(parts) - 1 and not indices
        if last:
            if not isinstance(node, dict):
                where = ".".join(parts[:n])
                raise ConfigError(f"{flag} {key}: {where} is a value, not a table, so it has no key {name!r}")
            node[name] = value
            return
        if not isinstance(node, dict):
            where = ".".join(parts[:n])
            raise ConfigError(f"{flag} {key}: {where} is a value, not a table, so it has no key {name!r}")
        if name not in node:
            if indices:
                raise ConfigError(f"{flag} {key}: the configuration has no list {name!r}")
            node[name] = {}
        node = node[name]
        for i, index in enumerate(indices):
            if not isinstance(node, list) or index >= len(node):
                raise ConfigError(f"{flag} {key}: index [{index}] is out of range")
            if n == len(parts) - 1 and i == len(indices) - 1:
                node[index] = value
                return
            node = node[index]
