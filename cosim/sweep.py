"""Monte Carlo sweeps of device and circuit parameters on Dask: ``cosim sweep``.

The cartesian product of ``--grid KEY=[v1,v2,...]`` options times ``--seeds`` seeds; each point is
one task on a Dask cluster (a ``LocalCluster`` by default, an existing scheduler with
``--scheduler ADDRESS``; HPC clusters through dask-jobqueue, see the README). Each finished task
becomes one row file ``rows/<id>.json`` (atomic), so rerunning the same command runs only the rows
that are missing; ``results.csv`` (one tidy row per point x seed) and the plots are rebuilt from the
row files.

``KEY`` is a dotted path into the configuration, with list indices: ``devices.d2d_sigma``,
``train.measure_bits``, ``model.blocks[3].input_gain_V``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cosim.build import build_model
from cosim.checkpoint import read_checkpoint
from cosim.cluster import Cluster
from cosim.conditions import Conditions, apply_conditions
from cosim.config import ConfigError, RunConfig, parse_config, parse_toml, set_path
from cosim.corners import evaluate_checkpoint
from cosim.data import load_dataset
from cosim.gradcheck import gradcheck
from cosim.io import atomic_write_json, atomic_write_text, check_output_dir
from cosim.losses import make_loss
from cosim.plots import plot_sweep
from cosim.progress import progress
from cosim.sweep_folder import (
    RESULTS_FILE,
    ROWS_DIR,
    RUNS_DIR,
    check_identity,
    clear_sweep,
    sweep_identity,
    write_identity,
)
from cosim.training import train_config

__all__ = [
    "Sweep",
    "SweepError",
    "collect_rows",
    "parse_grid",
    "run_sweep",
    "set_path",
    "write_table",
]

METRICS = ("gradcheck", "train", "eval")
SEED_KINDS = ("devices", "init", "data", "all")


def parse_grid(text: str) -> tuple[str, list]:
    """``KEY=[v1,v2]`` (JSON list; ``null`` for None) or ``KEY=v1,v2`` -> ``(KEY, values)``."""
    if "=" not in text:
        raise ConfigError(f"--grid {text!r}: expected KEY=[v1,v2,...], e.g. devices.d2d_sigma=[0,0.05,0.1]")
    key, _, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    try:
        values = json.loads(raw if raw.startswith("[") else f"[{raw}]")
    except json.JSONDecodeError:
        raise ConfigError(f"--grid {key}: values {raw!r} are not a list like [1, 2, 3] (JSON; null for None)") from None
    if not isinstance(values, list) or not values:
        raise ConfigError(f"--grid {key}: give at least one value")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ConfigError(f"--grid {key}: repeated values in {raw}")
    return key, values


def _row_id(values: dict, seed: int) -> str:
    text = json.dumps({"values": values, "seed": seed}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class Sweep:
    """The points of a sweep, validated before anything runs.

    ``metric`` ``gradcheck`` and ``train`` vary the configuration ``base_text`` (TOML); ``eval``
    varies the conditions (:mod:`cosim.conditions`) under which the trained ``checkpoint`` is
    evaluated, each seed a device draw (the trained chip itself with one seed and no ``devices`` key).
    ``vary`` names the seed the ``seeds`` runs differ in (``devices``, ``init``, ``data`` or ``all``),
    so that a variability sweep does not also change the data split and the initialisation.
    """

    def __init__(
        self,
        base_text: str | None,
        base_source: str,
        grid: list[tuple[str, list]],
        seeds: int,
        metric: str,
        checkpoint: str | Path | None = None,
        vary: str = "devices",
        overrides: list[tuple[str, object]] = (),
    ):
        if metric not in METRICS:
            raise ConfigError(f"--metric: must be one of {', '.join(METRICS)}, got {metric!r}")
        if seeds < 1:
            raise ConfigError(f"--seeds: must be >= 1, got {seeds}")
        keys = [k for k, _ in grid]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"--grid: a key is given twice ({keys})")
        if vary not in SEED_KINDS:
            raise ConfigError(f"--vary: one of {', '.join(SEED_KINDS)}, got {vary!r}")
        self.keys, self.metric, self.points = keys, metric, []
        if metric == "eval":
            self._eval_points(checkpoint, grid, seeds)
            return
        base = parse_toml(base_text, base_source)
        for key, value in overrides:  # --set: part of the base, so part of the folder's identity
            set_path(base, key, value, flag="--set")
        base_config = parse_config(base, base_source)
        if "seed" in keys and seeds != 1:
            raise ConfigError(
                f"--seeds: the grid sweeps seed itself, so each point runs once; give --seeds 1 (got {seeds})"
            )
        if "seed" in keys and not all(isinstance(v, int) and not isinstance(v, bool) for v in dict(grid)["seed"]):
            raise ConfigError(f"--grid seed: seeds must be integers, got {dict(grid)['seed']}")
        self.identity = {**sweep_identity(base_config, metric, grid), "seeds_vary": vary}
        base["seed"] = base_config.seed.model_dump()  # a table, so that seed.KIND can be set
        for combo in itertools.product(*[values for _, values in grid]):
            values = dict(zip(keys, combo, strict=True))
            for seed in [values["seed"]] if "seed" in values else range(seeds):
                data = copy.deepcopy(base)
                if "seed" not in values:
                    data["seed"] = seed if vary == "all" else {**data["seed"], vary: data["seed"][vary] + seed}
                for key, value in values.items():
                    set_path(data, key, value)
                label = ", ".join(f"{k}={v}" for k, v in values.items())
                parse_config(data, f"{base_source} with {label}, seed {seed}")
                self.points.append({"id": _row_id(values, seed), "values": values, "seed": seed, "config": data})

    def _eval_points(self, checkpoint, grid, seeds: int) -> None:
        if checkpoint is None:
            raise ConfigError("--checkpoint: --metric eval evaluates a trained checkpoint; give its checkpoint.pt")
        if "seed" in self.keys:
            raise ConfigError("--grid seed: in an evaluation sweep the seeds are device draws; use --seeds N")
        stored = read_checkpoint(checkpoint)
        self.identity = sweep_identity(stored.config, "eval", grid, checkpoint=checkpoint)
        for combo in itertools.product(*[values for _, values in grid]):
            values = dict(zip(self.keys, combo, strict=True))
            conditions = Conditions(stored.config, list(values.items()))
            apply_conditions(stored.config, conditions, str(checkpoint))  # every point is checked now
            fresh = seeds > 1 or conditions.redraws_devices
            for seed in range(seeds):
                task = {"checkpoint": str(checkpoint), "conditions": list(values.items()), "draw": seed, "fresh": fresh}
                self.points.append({"id": _row_id(values, seed), "values": values, "seed": seed, "config": task})


def run_point(config_data: dict, metric: str, run_dir: str | None = None) -> dict:
    """One task: build, measure, return the metrics. Runs inside a Dask worker."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    if metric == "eval":
        metrics = _eval_metric(config_data)
    else:
        config = parse_config(config_data)
        metrics = _gradcheck_metric(config) if metric == "gradcheck" else _train_metric(config, run_dir)
    metrics["wall_s"] = time.perf_counter() - start
    return metrics


def _eval_metric(task: dict) -> dict:
    report = evaluate_checkpoint(
        task["checkpoint"], [tuple(c) for c in task["conditions"]], first_draw=task["draw"], fresh_devices=task["fresh"]
    )
    metrics = {"test_accuracy": report["test_accuracy"], "loss": report["loss"]}
    for block in report["blocks"]:
        metrics[f"{block['name']}.diodes_conducting_fraction"] = block["diodes_conducting_fraction"]
        metrics[f"{block['name']}.output_swing_V"] = block["output_swing_V"]
    return metrics


def _gradcheck_metric(config: RunConfig) -> dict:
    data = load_dataset(config.data, config.seed.data)
    model = build_model(config, data.input_shape, n_classes=data.n_classes)
    n = config.gradcheck.samples
    x = data.train_x[:n].to(next(model.parameters()).dtype)
    loss_fn = make_loss(config.train.loss, data.train_y[:n], data.n_classes)
    beta = min(config.gradcheck.betas)
    method = config.gradcheck.methods[0]
    result = gradcheck(model, loss_fn, x, [beta], [method])
    row = result.table()[0]
    return {"cosine": row["cosine"], "rel_error": row["rel_error"]}


def _train_metric(config: RunConfig, run_dir: str | None) -> dict:
    summary = train_config(config, run_dir)
    return {k: summary[k] for k in ("test_accuracy", "train_accuracy", "final_loss") if k in summary}


def collect_rows(out: Path, ids: set[str] | None = None) -> list[dict]:
    """The row files of ``out`` (only those in ``ids`` when given)."""
    rows = []
    for path in sorted((out / ROWS_DIR).glob("*.json")):
        if ids is None or path.stem in ids:
            rows.append(json.loads(path.read_text()))
    return rows


def write_table(out: Path, keys: list[str], ids: list[str] | None = None) -> Path:
    """``results.csv``: one row per point and seed, in the order of ``ids`` (the sweep's grid order;
    otherwise by row id); numbers stay numbers, ``null`` is an empty cell."""
    rows = collect_rows(out, None if ids is None else set(ids))
    order = {row_id: n for n, row_id in enumerate(ids or [])}
    rows.sort(key=lambda r: (order.get(r["id"], len(order)), r["id"]))
    metric_cols = sorted({k for r in rows for k in r["metrics"]})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", *keys, "seed", *metric_cols])
    for r in rows:
        writer.writerow(
            [r["id"], *[r["values"].get(k) for k in keys], r["seed"], *[r["metrics"].get(m) for m in metric_cols]]
        )
    path = out / RESULTS_FILE
    atomic_write_text(path, buf.getvalue())
    return path


def run_sweep(
    sweep: Sweep,
    out: Path,
    scheduler: str | None = None,
    workers: int = 2,
    say: Callable[[str], None] = print,
    force: bool = False,
) -> list[str]:
    """Run the missing rows; returns the ids run now. ``out`` must hold nothing or this very sweep
    (``force``: start it over); everything is checked before the first file is written."""
    from distributed import as_completed

    out = Path(out)
    check_output_dir(out, "--out")
    cluster = Cluster(workers, scheduler).checked()
    if not force:
        check_identity(out, sweep.identity)
    elif out.is_dir():
        clear_sweep(out)
    rows_dir = out / ROWS_DIR
    rows_dir.mkdir(parents=True, exist_ok=True)
    write_identity(out, sweep.identity, sweep.keys, len(sweep.points))
    done = {p.stem for p in rows_dir.glob("*.json")}
    todo = [p for p in sweep.points if p["id"] not in done]
    say(f"sweep: {len(sweep.points)} rows, {len(sweep.points) - len(todo)} already done, running {len(todo)}")
    ran: list[str] = []
    failures: list[str] = []
    if todo:
        with cluster.client() as client:
            # A training row keeps its run (checkpoint, metrics, plots) under the sweep folder.
            runs = {p["id"]: str(out / RUNS_DIR / p["id"]) if sweep.metric == "train" else None for p in todo}
            futures = {client.submit(run_point, p["config"], sweep.metric, runs[p["id"]], pure=False): p for p in todo}
            with progress(len(todo), "sweep", "row") as bar:
                for future in as_completed(futures):
                    point = futures[future]
                    bar.update(1)
                    try:
                        metrics = future.result()
                    except Exception as exc:  # one bad point must not lose the others
                        failures.append(f"{point['values']} seed {point['seed']}: {type(exc).__name__}: {exc}")
                        continue
                    row = {"id": point["id"], "values": point["values"], "seed": point["seed"], "metrics": metrics}
                    atomic_write_json(rows_dir / f"{point['id']}.json", row)
                    ran.append(point["id"])
    # Rows of earlier runs with more seeds stay on disk but are not this sweep's points.
    ids = [p["id"] for p in sweep.points]
    table = write_table(out, sweep.keys, ids)
    plots = plot_sweep(collect_rows(out, set(ids)), sweep.keys, out)
    say(f"sweep: table {table}; plots {', '.join(str(p) for p in plots)}")
    if failures:
        raise SweepError(
            f"{len(failures)} of {len(todo)} rows failed (rerun the same command to retry them):\n  "
            + "\n  ".join(failures[:20])
        )
    return ran


class SweepError(RuntimeError):
    """Some rows failed; the others are saved and a rerun retries only the failed ones."""
