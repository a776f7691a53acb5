"""What a sweep folder holds and what it was made for.

A row file is named by its grid values and seed only, so a folder may be resumed only by the sweep
that started it: ``sweep.json`` records a hash of the base configuration (its validated content,
so that comments and key order do not count), the metric and the grid. A rerun with any of them
changed is refused with the difference named; ``--force`` starts the folder over, removing the
sweep's own files (rows, table, plots, ``sweep.json``) and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from cosim.config import ConfigError, RunConfig
from cosim.io import atomic_write_json

__all__ = [
    "RESULTS_FILE",
    "ROWS_DIR",
    "RUNS_DIR",
    "SWEEP_FILE",
    "check_identity",
    "clear_sweep",
    "config_hash",
    "file_hash",
    "sweep_identity",
    "write_identity",
]

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
ROWS_DIR = "rows"
RUNS_DIR = "runs"
"""A training sweep keeps each row's run (checkpoint, metrics, plots) in ``runs/<row id>/``."""
_PLOTS = ("sweep_*.png", "heatmap_*.png")
"""What :func:`cosim.plots.plot_sweep` writes."""


def config_hash(config: RunConfig) -> str:
    """SHA-256 of the validated configuration (defaults filled in, comments and order ignored)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a checkpoint an evaluation sweep runs on)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sweep_identity(
    base: RunConfig, metric: str, grid: list[tuple[str, list]], checkpoint: str | Path | None = None
) -> dict:
    """What a sweep folder's rows depend on besides their own values and seed (for an evaluation
    sweep also the checkpoint's content)."""
    identity = {"config_sha256": config_hash(base), "metric": metric, "grid": {k: v for k, v in grid}}
    if checkpoint is not None:
        identity["checkpoint_sha256"] = file_hash(checkpoint)
    return identity


def _differences(stored: dict, identity: dict) -> list[str]:
    out = []
    if stored.get("config_sha256") != identity["config_sha256"]:
        out.append(
            "the base configuration differs (its validated content hashes to "
            f"{identity['config_sha256'][:12]}, the folder's to {str(stored.get('config_sha256'))[:12]})"
        )
    if stored.get("metric") != identity["metric"]:
        out.append(f"--metric is {identity['metric']}, the folder holds {stored.get('metric')} rows")
    if stored.get("checkpoint_sha256") != identity.get("checkpoint_sha256"):
        out.append("--checkpoint holds another trained model than the one the folder's rows evaluated")
    if stored.get("seeds_vary") != identity.get("seeds_vary"):
        out.append(f"--vary is {identity.get('seeds_vary')}, the folder's rows vary {stored.get('seeds_vary')}")
    if stored.get("grid") != identity["grid"]:
        out.append(f"--grid is {json.dumps(identity['grid'])}, the folder's is {json.dumps(stored.get('grid'))}")
    return out


def check_identity(out: Path, identity: dict) -> None:
    """Refuse to resume ``out`` when it holds another sweep (or files that are no sweep's)."""
    path = out / SWEEP_FILE
    if not path.exists():
        if (out / ROWS_DIR).exists() or (out / RESULTS_FILE).exists():
            raise ConfigError(
                f"--out: {out} holds sweep rows but no {SWEEP_FILE} saying which sweep made them; "
                "use another --out, or --force to start it over"
            )
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--out: {path} is not readable ({exc}); use --force to start the folder over") from None
    diffs = _differences(stored if isinstance(stored, dict) else {}, identity)
    if diffs:
        raise ConfigError(
            f"--out: {out} holds another sweep: "
            + "; ".join(diffs)
            + ". Rerun with the folder's configuration, metric and grid to resume it, give another --out, "
            "or add --force to start the folder over"
        )


def clear_sweep(out: Path) -> None:
    """Remove a sweep's own files from ``out`` (rows, training runs, results, plots, ``sweep.json``)."""
    rows = out / ROWS_DIR
    if rows.is_dir():
        for row in rows.glob("*.json"):
            row.unlink()
    if (out / RUNS_DIR).is_dir():
        shutil.rmtree(out / RUNS_DIR)
    for pattern in (RESULTS_FILE, SWEEP_FILE, *_PLOTS):
        for path in out.glob(pattern):
            if path.is_file():
                path.unlink()


def write_identity(out: Path, identity: dict, keys: list[str], points: int) -> None:
    atomic_write_json(out / SWEEP_FILE, {**identity, "keys": keys, "points": points})
