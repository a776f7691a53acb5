"""A training run: its directory, its state, and opening one anew or from its checkpoint.

A run directory holds (all written atomically):

* ``config.json`` — the effective configuration (after command-line overrides);
* ``metrics.csv`` — one row per epoch (see :mod:`cosim.metrics`);
* ``checkpoint.pt`` — see :mod:`cosim.checkpoint`;
* ``curves.png``, ``solver_iterations.png`` and ``summary.json`` at the end.

:func:`open_run` checks everything that can be wrong (configuration, data, model, device, the
directory) before anything is written; :func:`start_run` then prepares the directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from analog.solvers.base import EquilibriumSolver
from cosim.build import build_model, build_solver, make_optimizer, make_schedule, resolve_device, torch_dtype
from cosim.checkpoint import CHECKPOINT_FILE, MODELS_DIR, Checkpoint, read_checkpoint, save_checkpoint
from cosim.config import AnalogBlockConfig, ConfigError, RunConfig, parse_config, resolve_config
from cosim.data import Dataset, load_dataset
from cosim.io import atomic_write_json, atomic_write_text, check_output_dir
from cosim.metrics import METRICS_FILE, metrics_text
from cosim.model import FFEBM
from cosim.optim import schedule_spans_run
from cosim.run_lock import LOCK_FILE, RunLock, lock_run_dir

__all__ = [
    "ARTIFACTS",
    "CONFIG_FILE",
    "CURVES_PLOT",
    "SOLVER_PLOT",
    "SUMMARY_FILE",
    "TrainingRun",
    "build_run",
    "open_run",
    "save_run",
    "start_run",
]

CONFIG_FILE = "config.json"
CURVES_PLOT = "curves.png"
SOLVER_PLOT = "solver_iterations.png"
SUMMARY_FILE = "summary.json"
ARTIFACTS = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, CURVES_PLOT, SOLVER_PLOT, SUMMARY_FILE)
"""Files a run writes into its directory (``--force`` removes exactly these)."""


@dataclass
class TrainingRun:
    config: RunConfig
    data: Dataset
    model: FFEBM
    solver: EquilibriumSolver
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffle: torch.Generator
    device: torch.device
    dtype: torch.dtype
    run_dir: Path
    rows: list[dict] = field(default_factory=list)
    """Metric rows of the epochs done so far (restored from the checkpoint on resume)."""
    lock: RunLock | None = None
    """The run directory's lock, held from :func:`start_run` to :meth:`close`."""

    @property
    def epochs_done(self) -> int:
        return len(self.rows)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train_y) / self.config.train.batch_size)

    def close(self) -> None:
        """Release the solver (ngspice workers) and the run directory."""
        try:
            self.solver.close()
        finally:
            if self.lock is not None:
                self.lock.release()


def _override(config: RunConfig, source: str, section: str, **values) -> RunConfig:
    """``config`` with ``section.key = value`` replaced, validated again like a file."""
    data = config.model_dump()
    data[section] = {**data[section], **values}
    return parse_config(data, source)


def _resumed_config(run_dir: Path, config_name: str | None) -> Checkpoint:
    checkpoint = read_checkpoint(run_dir / CHECKPOINT_FILE, "--resume")
    if config_name is not None and resolve_config(config_name).model_dump() != checkpoint.config.model_dump():
        raise ConfigError(
            f"--config: {config_name} differs from the configuration the run in {run_dir} was "
            "started with; omit --config to resume it as it was"
        )
    return checkpoint


def _new_run_dir(config: RunConfig, out: str | Path | None, force: bool) -> Path:
    run_dir = Path(out) if out is not None else Path("runs") / config.name
    check_output_dir(run_dir, "--out" if out is not None else f"name ({config.name!r} gives runs/{config.name})")
    # A lock file alone is what a refused or killed start leaves: the folder holds no run.
    if run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()) and not force:
        raise ConfigError(
            f"run directory {run_dir} exists and is not empty; continue it with --resume {run_dir}, "
            "overwrite it with --force, or choose another with --out"
        )
    return run_dir


def open_run(
    config_name: str | None = None,
    resume: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
    epochs: int | None = None,
    device: str | None = None,
    solver: str | None = None,
    overrides: list[tuple[str, object]] = (),
) -> TrainingRun:
    """A new run of ``config_name`` (a TOML file or preset) in ``out`` (default
    ``runs/<config name>``), or the run in ``resume`` continued from its checkpoint, with the
    command-line overrides ``epochs``, ``device``, ``solver`` and ``overrides`` (``--set``, new runs
    only). Validates everything; writes nothing."""
    checkpoint = None
    if resume is not None:
        run_dir = Path(resume)
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise ConfigError("--out: a resumed run stays in its directory; give --resume RUN_DIR only")
        if overrides:
            raise ConfigError("--set: a resumed run keeps the configuration it was started with; omit --set")
        checkpoint = _resumed_config(run_dir, config_name)
        config, source = checkpoint.config, f"{checkpoint.path} (stored configuration)"
    else:
        if config_name is None:
            raise ConfigError("--config: required (a TOML file or a preset name such as digits-demo)")
        config, source = resolve_config(config_name, overrides), config_name
        run_dir = _new_run_dir(config, out, force)
    if epochs is not None and epochs != config.train.epochs:
        if checkpoint is not None and schedule_spans_run(config.train.schedule):
            raise ConfigError(
                f"--epochs: the {config.train.schedule} schedule of a resumed run is fixed by its epoch count "
                f"({config.train.epochs}); only a run whose schedule does not span the run (none, steplr, "
                "exponentiallr, ...) can be extended"
            )
        config = _override(config, f"{source} with --epochs", "train", epochs=epochs)
    if device is not None:
        config = parse_config({**config.model_dump(), "device": device}, f"{source} with --device")
    if solver is not None:
        config = _override(config, f"{source} with --solver", "solver", name=solver)
    if checkpoint is not None and len(checkpoint.metrics) > config.train.epochs:
        raise ConfigError(
            f"--epochs: the run already has {len(checkpoint.metrics)} epochs, more than {config.train.epochs}"
        )
    return build_run(config, run_dir, checkpoint)


def build_run(config: RunConfig, run_dir: Path, checkpoint: Checkpoint | None = None) -> TrainingRun:
    """Data, model, optimizer and schedule of ``config`` (restored from ``checkpoint``); writes nothing."""
    device = resolve_device(config.device)
    dtype = torch_dtype(config)
    data = load_dataset(config.data, config.seed.data)
    solver = build_solver(config.solver)
    model = build_model(config, data.input_shape, solver=solver, n_classes=data.n_classes, device=device).to(device)
    optimizer = make_optimizer(model, config.train)
    steps = math.ceil(len(data.train_y) / config.train.batch_size)
    scheduler = make_schedule(optimizer, config.train, config.train.epochs * steps)
    shuffle = torch.Generator().manual_seed(config.seed.init)
    run = TrainingRun(config, data, model, solver, optimizer, scheduler, shuffle, device, dtype, run_dir)
    if checkpoint is not None:
        state = checkpoint.state
        try:
            model.load_state_dict(checkpoint.model)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            shuffle.set_state(state["rng"]["shuffle"])
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ConfigError(f"--resume: {checkpoint.path} does not match its model: {exc}") from None
        run.rows = checkpoint.metrics
        if run.epochs_done != checkpoint.epoch:
            raise ConfigError(f"--resume: {checkpoint.path} is inconsistent (epoch vs metric rows)")
    return run


def _keep_model_libraries(config: RunConfig, run_dir: Path) -> RunConfig:
    """``config`` with every model library copied into ``run_dir/models/`` (as validated and
    re-printed) and pointing there, so the run does not depend on the user's file any more."""
    data = json.loads(config.model_dump_json())
    changed = False
    for i, block in enumerate(config.model.blocks):
        user = block.user_models() if isinstance(block, AnalogBlockConfig) else None
        if user is None:
            continue
        copy = run_dir / MODELS_DIR / f"block{i}.lib"
        atomic_write_text(copy, user.spice())
        data["model"]["blocks"][i]["model_file"] = str(copy.resolve())
        changed = True
    return parse_config(data, f"{run_dir / CONFIG_FILE}") if changed else config


def start_run(run: TrainingRun, fresh: bool) -> None:
    """Create the run directory (``fresh``: remove a previous run's artifacts, which only
    ``--force`` lets exist) and write the effective configuration and the metrics so far. The run
    directory's lock is taken first: a second writer is refused before anything is changed."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.lock = lock_run_dir(run.run_dir)
    if fresh:
        for name in ARTIFACTS:
            (run.run_dir / name).unlink(missing_ok=True)
        run.config = _keep_model_libraries(run.config, run.run_dir)
    atomic_write_json(run.run_dir / CONFIG_FILE, json.loads(run.config.model_dump_json()))
    if run.rows:
        atomic_write_text(run.run_dir / METRICS_FILE, metrics_text(run.rows))


def save_run(run: TrainingRun) -> None:
    """Checkpoint the run: model, optimizer, schedule, generators and the metric rows."""
    save_checkpoint(
        run.run_dir / CHECKPOINT_FILE,
        run.config,
        run.model.state_dict(),
        epoch=run.epochs_done,
        optimizer=run.optimizer.state_dict(),
        scheduler=None if run.scheduler is None else run.scheduler.state_dict(),
        rng={"shuffle": run.shuffle.get_state(), "torch": torch.get_rng_state()},
        metrics=[dict(r) for r in run.rows],
    )
