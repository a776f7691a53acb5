"""Dotted configuration keys (``model.blocks[0].wire_ohm``) set in a configuration's plain data,
for sweeps (``--grid``) and evaluation conditions (``--set``)."""

from __future__ import annotations

import re

from cosim.config import ConfigError

__all__ = ["set_path"]

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
