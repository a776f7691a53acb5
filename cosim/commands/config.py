"""``cosim config``: the fully resolved configuration of a file or preset (every default shown),
the JSON schema of configurations, and the list of presets."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from cosim.commands.common import CONFIG_HELP, add_set_argument, check_out_dir, overrides
from cosim.config import ConfigError, RunConfig, preset_names, resolve_config
from cosim.io import atomic_write_text

__all__ = ["register", "run", "to_toml"]


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _pairs(values: dict) -> list[str]:
    return [f"# {k} = none (unset)" if v is None else f"{k} = {_value(v)}" for k, v in values.items()]


def to_toml(config: RunConfig) -> str:
    """``config`` as TOML with every key; ``None`` (TOML has no null) is shown as a comment."""
    data = json.loads(config.model_dump_json())
    lines = _pairs({k: v for k, v in data.items() if not isinstance(v, dict)})
    for section, values in data.items():
        if section == "model":
            for block in values["blocks"]:
                lines += ["", "[[model.blocks]]", *_pairs(block)]
        elif isinstance(values, dict):
            lines += ["", f"[{section}]", *_pairs(values)]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what is printed reads back
    return text


def run(args) -> int:
    if args.action == "show":
        if args.config is None:
            raise ConfigError("config show: name a TOML file or a preset, e.g. cosim config show digits-demo")
        text = to_toml(resolve_config(args.config, overrides(args)))
        if args.out:
            check_out_dir(Path(args.out).parent)
            atomic_write_text(args.out, text)
        print(text, end="")
    elif args.action == "schema":
        text = json.dumps(RunConfig.model_json_schema(), indent=2) + "\n"
        if args.out:
            check_out_dir(Path(args.out).parent)
            atomic_write_text(args.out, text)
        else:
            print(text, end="")
    else:
        print("\n".join(preset_names()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("config", help="show a resolved configuration with every default, the JSON schema, the presets")
    p.add_argument("action", choices=["show", "schema", "presets"])
    p.add_argument("config", nargs="?", default=None, help=f"with show: {CONFIG_HELP}")
    p.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    add_set_argument(p)
    p.set_defaults(func=run)
