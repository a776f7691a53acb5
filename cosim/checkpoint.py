"""The checkpoint of a ``cosim train`` run: its format, writing it and reading it back.

A checkpoint is one ``torch.save`` file holding only tensors and primitive containers, so that
``torch.load(..., weights_only=True)`` reads it without running code:

* ``format`` — :data:`CHECKPOINT_FORMAT`;
* ``epoch`` — epochs done; ``metrics`` — their metric rows;
* ``config`` — the run's effective configuration as JSON text;
* ``model`` — the model's ``state_dict``: programmed conductances, what the devices hold, and the
  device realisations (spread factors, stuck masks, diode draws), so it reloads the exact chip;
* ``optimizer``, ``scheduler``, ``rng`` — what an exact resume needs.

Every reader goes through :func:`read_checkpoint` (the file is loaded once); what is wrong with a
file is a :class:`~cosim.config.ConfigError` naming the file, the flag it came from and the problem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cosim.config import ConfigError, RunConfig, parse_config
from cosim.io import atomic_save

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "MODELS_DIR",
    "Checkpoint",
    "model_state",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 2
"""2: the device realisations are model buffers (format 1 re-derived them from the seed)."""


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: its configuration, the model state and the rest of the stored dict."""

    path: Path
    config: RunConfig
    model: dict[str, torch.Tensor]
    state: dict
    """Everything stored (``optimizer``, ``scheduler``, ``rng``, ``metrics``, ``epoch``, ...)."""

    @property
    def epoch(self) -> int:
        return int(self.state.get("epoch", 0))

    @property
    def metrics(self) -> list[dict]:
        return [dict(r) for r in self.state.get("metrics", [])]


def save_checkpoint(path: str | Path, config: RunConfig, model: dict, **state) -> None:
    """Write a checkpoint atomically: ``config`` and the model ``state_dict``, plus ``state``
    (``epoch``, ``metrics``, ``optimizer``, ``scheduler``, ``rng``)."""
    payload = {"format": CHECKPOINT_FORMAT, "config": config.model_dump_json(), "model": model, **state}
    atomic_save(path, lambda tmp: torch.save(payload, tmp))


def _load(path: Path, flag: str) -> object:
    if not path.is_file():
        raise ConfigError(f"{flag}: {path} does not exist (give the checkpoint.pt of a `cosim train` run)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt, foreign or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{flag}: {path} is not a readable checkpoint ({first})") from None


def _model(state: dict, path: Path, flag: str) -> dict[str, torch.Tensor]:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{flag}: {path} is not a `cosim train` checkpoint of format {CHECKPOINT_FORMAT}")
    model = state.get("model")
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise ConfigError(f"{flag}: {path} holds no model state (a dict of tensors under 'model')")
    return model


_CONDUCTANCE = re.compile(r"(^|\.)(weights\.\d+|biases\.\d+|written_\d+)$")
"""State-dict keys of an analog block's conductances (programmed and held by the devices)."""


def _check_finite(model: dict[str, torch.Tensor], path: Path, flag: str) -> None:
    for key, tensor in model.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConfigError(
                f"{flag}: {path}: model tensor {key!r} contains NaN or inf values (the run diverged before "
                "this checkpoint; use an earlier one or train again with a lower train.lr)"
            )
        if _CONDUCTANCE.search(key) and tensor.is_floating_point() and tensor.numel() and float(tensor.min()) <= 0:
            # Training clips every conductance into [g_min, g_max] with g_min > 0: this file was edited or corrupted.
            raise ConfigError(
                f"{flag}: {path}: model tensor {key!r} holds conductances down to {float(tensor.min()):g} S; "
                "conductances must be > 0 S (a trained checkpoint keeps them in [g_min_S, g_max_S]; use "
                "another checkpoint)"
            )


MODELS_DIR = "models"
"""Where a run keeps copies of its model libraries (``models/block{i}.lib``)."""


def _with_run_libraries(data, path: Path):
    """A stored configuration whose model libraries point at the run's own copies when the stored
    path no longer exists (the run folder moved, the original library was changed or deleted)."""
    blocks = data.get("model", {}).get("blocks", []) if isinstance(data, dict) else []
    for block in blocks if isinstance(blocks, list) else []:
        model_file = block.get("model_file") if isinstance(block, dict) else None
        if isinstance(model_file, str) and not Path(model_file).is_file():
            copy = path.parent / MODELS_DIR / Path(model_file).name
            if copy.is_file():
                block["model_file"] = str(copy)
    return data


def read_checkpoint(path: str | Path, flag: str = "--checkpoint") -> Checkpoint:
    """The validated checkpoint at ``path``: format, model tensors (all finite) and a stored
    configuration that passes today's validation. ``flag`` names the option in error messages."""
    path = Path(path)
    state = _load(path, flag)
    if not isinstance(state, dict):
        raise ConfigError(f"{flag}: {path} is not a `cosim train` checkpoint of format {CHECKPOINT_FORMAT}")
    model = _model(state, path, flag)
    try:
        config = parse_config(_with_run_libraries(json.loads(state["config"]), path), f"{path} (stored configuration)")
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{flag}: {path} holds no valid configuration: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{flag}: {path} holds a configuration nested too deeply to read") from None
    _check_finite(model, path, flag)
    return Checkpoint(path, config, model, state)


def model_state(path: str | Path, flag: str = "--checkpoint") -> dict[str, torch.Tensor]:
    """The model ``state_dict`` of a checkpoint, or of a file holding a plain ``state_dict``
    (``torch.save(model.state_dict(), path)``)."""
    path = Path(path)
    state = _load(path, flag)
    if not isinstance(state, dict):
        raise ConfigError(f"{flag}: {path} holds no state dict")
    model = _model(state, path, flag) if "format" in state else state
    if not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise ConfigError(f"{flag}: {path} holds no state dict (a dict of tensors)")
    _check_finite(model, path, flag)
    return model
