"""``cosim train``: train an ff-EBM end to end and validate the trained model in ngspice.

One epoch shuffles the training set with a seeded :class:`torch.Generator`, steps a torch optimizer
on the hybrid gradient (EP in the analog blocks, backprop in the digital ones), clips every
conductance into its device range after each step and evaluates the test set with the free phase.

A run directory holds (all written atomically):

* ``config.json`` — the effective configuration (after command-line overrides);
* ``metrics.csv`` — one row per epoch: loss, accuracies, learning rate, mean solver iterations and
  largest KCL residual of every phase of every analog block, wall time;
* ``checkpoint.pt`` — model, optimizer, scheduler, RNG states, epoch, configuration and metric rows,
  only tensors and primitive containers (``torch.load(..., weights_only=True)`` reads it);
* ``curves.png``, ``solver_iterations.png`` and ``summary.json`` at the end.

``--resume`` restores the checkpoint and continues: the shuffling generator, the optimizer and the
schedule continue where they stopped, so every metric except the wall time equals the one of an
uninterrupted run.

After training, ``train.ngspice_eval_samples`` test samples are classified again with every analog
block solved by ngspice (the ground truth), next to the fast solver on the same samples.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from analog.solvers.base import EquilibriumSolver, SolverError
from cosim.build import build_model, build_solver, torch_dtype
from cosim.config import ConfigError, RunConfig, parse_config
from cosim.data import Dataset, load_dataset
from cosim.io import atomic_save, atomic_write_json, atomic_write_text
from cosim.losses import loss_value
from cosim.model import FFEBM
from cosim.optim import analog_scale, build_optimizer, build_schedule, schedule_spans_run
from cosim.plots import plot_curves, plot_solver_iterations

__all__ = ["ARTIFACTS", "add_train_command", "cmd_train", "load_checkpoint", "read_metrics", "train_config"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
CURVES_PLOT = "curves.png"
SOLVER_PLOT = "solver_iterations.png"
SUMMARY_FILE = "summary.json"
ARTIFACTS = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, CURVES_PLOT, SOLVER_PLOT, SUMMARY_FILE)
"""Files a run writes into its directory (``--force`` removes exactly these)."""

CHECKPOINT_FORMAT = 1
EVAL_BATCH = 512
"""Samples per batch when only the free phase runs (evaluation)."""
_PHASE_ORDER = {"free": 0, "positive": 1, "negative": 2}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Setup: everything that can be wrong is checked here, before the run directory is touched.


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

    @property
    def epochs_done(self) -> int:
        return len(self.rows)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train_y) / self.config.train.batch_size)


def _override(config: RunConfig, source: str, section: str, **values) -> RunConfig:
    """``config`` with ``section.key = value`` replaced, validated again like a file."""
    data = config.model_dump()
    data[section] = {**data[section], **values}
    return parse_config(data, source)


def resolve_device(name: str) -> torch.device:
    """A torch device for ``cpu`` / ``cuda`` / ``cuda:N``; a CUDA device must be present."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: {name!r} is not a device; use 'cpu' or 'cuda' (or 'cuda:N')") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: {name!r} is not supported; use 'cpu' or 'cuda' (or 'cuda:N')")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {name!r} was asked for but torch finds no CUDA GPU (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'none'}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def make_optimizer(model: FFEBM, config: RunConfig) -> torch.optim.Optimizer:
    """One parameter group for the digital parameters (``lr``, ``weight_decay``) and one per analog
    block, whose conductances are in siemens: ``lr * analog_lr_scale``, no weight decay (a decay
    towards 0 S has no device meaning). The default scale makes ``lr`` act on conductances measured
    in units of the device range ``R = g_max - g_min``: Adam's steps do not depend on the gradient's
    units, so its scale is ``R``; SGD's step is ``lr`` times a gradient in 1/S, so its scale is ``R^2``."""
    train = config.train
    groups, analog = [], set()
    for block in model.analog_blocks():
        params = block.conductances()
        device_range = block.spec.conductance
        span = device_range.g_max_S - device_range.g_min_S
        scale = train.analog_lr_scale or analog_scale(train.optimizer, span)
        groups.append({"params": params, "lr": train.lr * scale, "weight_decay": 0.0})
        analog.update(id(p) for p in params)
    digital = [p for p in model.parameters() if id(p) not in analog]
    if digital:
        groups.insert(0, {"params": digital, "lr": train.lr, "weight_decay": train.weight_decay})
    try:
        return build_optimizer(train.optimizer, groups, train.lr, train.momentum, train.optimizer_options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _scheduler(optimizer, config: RunConfig, steps: int):
    try:
        return build_schedule(config.train.schedule, optimizer, steps, config.train.schedule_options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dictionary (tensors on the CPU); a missing or unreadable file is a
    :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--resume: {path} does not exist (nothing to resume; start a run with --config)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ConfigError(f"--resume: {path} is not a readable checkpoint: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"--resume: {path} is not a `cosim train` checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def prepare(args: argparse.Namespace) -> TrainingRun:
    """Validate the configuration, data, model, device and run directory; write nothing."""
    from cosim.cli import resolve_config

    state = None
    if args.resume is not None:
        run_dir = Path(args.resume)
        if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
            raise ConfigError("--out: a resumed run stays in its directory; give --resume RUN_DIR only")
        state = load_checkpoint(run_dir / CHECKPOINT_FILE)
        source = f"{run_dir / CHECKPOINT_FILE} (stored configuration)"
        try:
            config = parse_config(json.loads(state["config"]), source)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--resume: {source} holds no valid configuration: {exc}") from None
        if args.config is not None:
            given = resolve_config(args.config)
            if given.model_dump() != config.model_dump():
                raise ConfigError(
                    f"--config: {args.config} differs from the configuration the run in {run_dir} was "
                    "started with; omit --config to resume it as it was"
                )
    else:
        if args.config is None:
            raise ConfigError("--config: required (a TOML file or a preset name such as digits-demo)")
        config = resolve_config(args.config)
        source = args.config
        run_dir = Path(args.out) if args.out is not None else Path("runs") / config.name
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--out: {run_dir} exists and is not a directory")
        if run_dir.is_dir() and any(run_dir.iterdir()) and not args.force:
            raise ConfigError(
                f"run directory {run_dir} exists and is not empty; continue it with --resume {run_dir}, "
                "overwrite it with --force, or choose another with --out"
            )
    if args.epochs is not None and args.epochs != config.train.epochs:
        if state is not None and schedule_spans_run(config.train.schedule):
            raise ConfigError(
                f"--epochs: the {config.train.schedule} schedule of a resumed run is fixed by its epoch count "
                f"({config.train.epochs}); only a run whose schedule does not span the run (none, steplr, "
                "exponentiallr, ...) can be extended"
            )
        config = _override(config, f"{source} with --epochs", "train", epochs=args.epochs)
    if args.device is not None:
        config = parse_config({**config.model_dump(), "device": args.device}, f"{source} with --device")
    if args.solver is not None:
        config = _override(config, f"{source} with --solver", "solver", name=args.solver)
    if state is not None and len(state["metrics"]) > config.train.epochs:
        raise ConfigError(
            f"--epochs: the run already has {len(state['metrics'])} epochs, more than {config.train.epochs}"
        )

    return build_run(config, run_dir, state)


def build_run(config: RunConfig, run_dir: Path, state: dict | None = None) -> TrainingRun:
    """Data, model, optimizer and schedule of ``config`` (restored from a checkpoint ``state``);
    writes nothing."""
    device = resolve_device(config.device)
    dtype = torch_dtype(config)
    data = load_dataset(config.data, config.seed)
    solver = build_solver(config.solver)
    model = build_model(config, data.input_shape, solver=solver).to(device)
    optimizer = make_optimizer(model, config)
    steps = math.ceil(len(data.train_y) / config.train.batch_size)
    scheduler = _scheduler(optimizer, config, config.train.epochs * steps)
    shuffle = torch.Generator().manual_seed(config.seed)
    run = TrainingRun(config, data, model, solver, optimizer, scheduler, shuffle, device, dtype, run_dir)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            shuffle.set_state(state["rng"]["shuffle"])
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ConfigError(f"--resume: {run_dir / CHECKPOINT_FILE} does not match its model: {exc}") from None
        run.rows = [dict(r) for r in state["metrics"]]
        if run.epochs_done != int(state["epoch"]):
            raise ConfigError(f"--resume: {run_dir / CHECKPOINT_FILE} is inconsistent (epoch vs metric rows)")
    return run


# ------------------------------------------------------------------------------------------------
# Training and evaluation.


class _SolverTally:
    """Mean iterations and largest KCL residual of every ``block.phase`` over the batches of an epoch."""

    def __init__(self) -> None:
        self.iterations: dict[str, list[float]] = {}
        self.residual: dict[str, float] = {}

    def add(self, stats: dict[str, float]) -> None:
        for key, value in stats.items():
            block_phase, _, kind = key.rpartition(".")
            if kind == "iterations":
                self.iterations.setdefault(block_phase, []).append(value)
            elif kind == "residual_A":
                self.residual[block_phase] = max(self.residual.get(block_phase, 0.0), value)

    def columns(self) -> dict[str, float]:
        def order(key: str):
            block, _, phase = key.partition(".")
            return block, _PHASE_ORDER.get(phase, 9), phase

        out = {}
        for key in sorted(self.iterations, key=order):
            values = self.iterations[key]
            out[f"{key}.iterations_mean"] = sum(values) / len(values)
            out[f"{key}.residual_A_max"] = self.residual.get(key, float("nan"))
        return out


@torch.no_grad()
@torch.no_grad()
def accuracy(model: FFEBM, x: torch.Tensor, y: torch.Tensor, device, dtype, batch_size: int = EVAL_BATCH) -> float:
    """Fraction of ``x`` classified as ``y`` (arg-max of the model output), free phase only."""
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        out = model(x[start : start + batch_size].to(device=device, dtype=dtype))
        correct += int((out.argmax(1).cpu() == y[start : start + batch_size]).sum())
    return correct / len(y)


def train_epoch(run: TrainingRun, epoch: int) -> dict:
    """One pass over the shuffled training set; returns the epoch's metric row (without timing)."""
    config, data, model, optimizer = run.config, run.data, run.model, run.optimizer
    batch_size = config.train.batch_size
    model.train()
    order = torch.randperm(len(data.train_y), generator=run.shuffle)
    tally = _SolverTally()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(
        total=run.steps_per_epoch,
        desc=f"epoch {epoch}/{config.train.epochs}",
        file=sys.stderr,
        disable=None,  # no bar when stderr is not a terminal
        leave=False,
        dynamic_ncols=True,
    )
    with bar:
        for step, start in enumerate(range(0, len(order), batch_size)):
            index = order[start : start + batch_size]
            x = data.train_x[index].to(device=run.device, dtype=run.dtype)
            y = data.train_y[index]
            for block in model.analog_blocks():
                block.stats.clear()
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_value(config.train.loss, out, y.to(run.device), data.n_classes)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch}, batch {step}: the loss is {loss.item()}; "
                    "lower train.lr or train.beta, or check the readout scale"
                )
            loss.backward()
            optimizer.step()
            model.clip_()
            if run.scheduler is not None:
                run.scheduler.step()
            tally.add(model.solver_stats())
            n = len(y)
            loss_sum += loss.item() * n
            correct += int((out.detach().argmax(1).cpu() == y).sum())
            seen += n
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
    base = optimizer.param_groups[0]
    lr_factor = base["lr"] / base.get("initial_lr", base["lr"])
    return {
        "epoch": epoch,
        "loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "test_accuracy": float("nan"),
        "lr": config.train.lr * lr_factor,
        **tally.columns(),
    }


def save_checkpoint(run: TrainingRun) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": run.epochs_done,
        "config": run.config.model_dump_json(),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "rng": {"shuffle": run.shuffle.get_state(), "torch": torch.get_rng_state()},
        "metrics": [dict(r) for r in run.rows],
    }
    atomic_save(run.run_dir / CHECKPOINT_FILE, lambda tmp: torch.save(state, tmp))


def metrics_text(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns and k != "seconds")
    columns.append("seconds")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of ``metrics.csv`` as dicts of floats (``epoch`` an int)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (int(v) if k == "epoch" else float(v) if v else float("nan")) for k, v in r.items()} for r in rows]


def _epoch_line(row: dict, epochs: int) -> str:
    phases = [
        f"{k.removesuffix('.iterations_mean')} {v:.1f} it" for k, v in row.items() if k.endswith(".iterations_mean")
    ]
    return (
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  train {100 * row['train_accuracy']:.2f}%  "
        f"test {100 * row['test_accuracy']:.2f}%  " + "  ".join(phases) + f"  {row['seconds']:.1f} s"
    )


def train(run: TrainingRun) -> None:
    """Train from ``run.epochs_done`` to ``config.train.epochs``, writing metrics and checkpoints."""
    config = run.config
    for epoch in range(run.epochs_done + 1, config.train.epochs + 1):
        start = time.perf_counter()
        row = train_epoch(run, epoch)
        row["test_accuracy"] = accuracy(run.model, run.data.test_x, run.data.test_y, run.device, run.dtype)
        row["seconds"] = time.perf_counter() - start
        run.rows.append(row)
        # The checkpoint holds the metric rows and is written first: with checkpoint_every = 1,
        # metrics.csv never shows an epoch that a resume would run again (a resume rewrites it).
        if epoch % config.train.checkpoint_every == 0 or epoch == config.train.epochs:
            save_checkpoint(run)
        atomic_write_text(run.run_dir / METRICS_FILE, metrics_text(run.rows))
        _say(_epoch_line(row, config.train.epochs))


# ------------------------------------------------------------------------------------------------
# After training: ngspice validation, plots, summary.


def ngspice_validation(run: TrainingRun, samples: int) -> dict:
    """Test accuracy on the first ``samples`` test samples with every analog block solved by
    ngspice, next to the fast solver's on the same samples. ngspice computes in float64, so it runs
    on a float64 CPU copy of the trained model."""
    n = min(samples, len(run.data.test_y))
    result = {
        "ngspice_samples": n,
        "ngspice_test_accuracy": None,
        "fast_test_accuracy_same_samples": None,
        "ngspice_seconds": None,
    }
    if n == 0:
        return result
    x, y = run.data.test_x[:n], run.data.test_y[:n]
    result["fast_test_accuracy_same_samples"] = accuracy(run.model, x, y, run.device, run.dtype)
    reference = copy.deepcopy(run.model).to(device="cpu", dtype=torch.float64)
    start = time.perf_counter()
    try:
        from analog.solvers.ngspice import NgspiceSolver

        with NgspiceSolver(workers=run.config.solver.workers) as solver:
            reference.set_solver(solver)
            result["ngspice_test_accuracy"] = accuracy(reference, x, y, "cpu", torch.float64, batch_size=n)
    except (ImportError, SolverError, OSError) as exc:
        result["ngspice_error"] = f"{type(exc).__name__}: {exc}"
    result["ngspice_seconds"] = time.perf_counter() - start
    return result


def finish(run: TrainingRun, ngspice: bool) -> tuple[dict, int]:
    """Plots, ngspice validation and ``summary.json``; returns the summary and the exit code."""
    config, run_dir, rows = run.config, run.run_dir, run.rows
    plot_curves(rows, run_dir / CURVES_PLOT, title=config.name)
    plot_solver_iterations(rows, run_dir / SOLVER_PLOT, title=f"{config.name}: solver iterations per phase")
    samples = config.train.ngspice_eval_samples if ngspice else 0
    if samples:
        _say(f"ngspice validation on {min(samples, len(run.data.test_y))} test samples ...")
    check = ngspice_validation(run, samples)
    code = 0
    if "ngspice_error" in check:
        _say(f"ngspice validation failed: {check['ngspice_error']}")
        code = 3
    elif check["ngspice_test_accuracy"] is not None:
        _say(
            f"ngspice validation: {check['ngspice_samples']} test samples, "
            f"ngspice {100 * check['ngspice_test_accuracy']:.2f}% "
            f"vs fast {100 * check['fast_test_accuracy_same_samples']:.2f}% ({check['ngspice_seconds']:.1f} s)"
        )
    last = rows[-1]
    summary = {
        "name": config.name,
        "epochs": len(rows),
        "test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in rows),
        "train_accuracy": last["train_accuracy"],
        "final_loss": last["loss"],
        "seconds_per_epoch": sum(r["seconds"] for r in rows) / len(rows),
        "seconds_total": sum(r["seconds"] for r in rows),
        "train_samples": len(run.data.train_y),
        "test_samples": len(run.data.test_y),
        "device": str(run.device),
        "dtype": config.dtype,
        "method": config.train.method,
        "beta": config.train.beta,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "conductances": sum(p.numel() for b in run.model.analog_blocks() for p in b.conductances()),
        **check,
        "files": {
            k: str(run_dir / v)
            for k, v in (
                ("metrics", METRICS_FILE),
                ("checkpoint", CHECKPOINT_FILE),
                ("curves", CURVES_PLOT),
                ("solver_iterations", SOLVER_PLOT),
            )
        },
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary, code


# ------------------------------------------------------------------------------------------------
# Command line.


def cmd_train(args: argparse.Namespace) -> int:
    run = prepare(args)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if args.resume is None:
        for name in ARTIFACTS:  # only with --force can any of these exist here
            (run.run_dir / name).unlink(missing_ok=True)
    atomic_write_json(run.run_dir / CONFIG_FILE, json.loads(run.config.model_dump_json()))
    if run.rows:
        atomic_write_text(run.run_dir / METRICS_FILE, metrics_text(run.rows))
    n_train, n_test = len(run.data.train_y), len(run.data.test_y)
    _say(
        f"{'resuming' if run.rows else 'training'} {run.config.name} in {run.run_dir}: {run.data.name} "
        f"({n_train} train / {n_test} test), {run.config.train.epochs} epochs, batch {run.config.train.batch_size}, "
        f"{run.config.train.method} beta={run.config.train.beta}, {run.solver.name} solver on {run.device}"
        + (f", from epoch {run.epochs_done + 1}" if run.rows else "")
    )
    try:
        train(run)
        summary, code = finish(run, ngspice=not args.no_ngspice)
    except FloatingPointError as exc:
        _say(f"cosim train: {exc} (last checkpoint: {run.run_dir / CHECKPOINT_FILE})")
        return 3
    except KeyboardInterrupt:
        _say(f"cosim train: resume with `cosim train --resume {run.run_dir}`")
        raise
    finally:
        close = getattr(run.solver, "close", None)
        if close:
            close()
    print(
        f"test accuracy {100 * summary['test_accuracy']:.2f}% after {summary['epochs']} epochs "
        f"({summary['seconds_per_epoch']:.1f} s/epoch)"
    )
    print(f"plots: {run.run_dir / CURVES_PLOT}, {run.run_dir / SOLVER_PLOT}")
    print(f"summary: {run.run_dir / SUMMARY_FILE}")
    return code


def train_config(config: RunConfig, run_dir: str | Path | None = None, ngspice: bool = False) -> dict:
    """Train ``config`` from scratch (for sweeps and notebooks) and return its summary. The run's
    files go to ``run_dir``, or to a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="cosim-train-") as tmp:
        run = build_run(config, Path(run_dir) if run_dir is not None else Path(tmp))
        run.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            train(run)
            summary, _ = finish(run, ngspice=ngspice)
        finally:
            close = getattr(run.solver, "close", None)
            if close:
                close()
    return summary


def add_train_command(sub) -> None:
    """Register ``cosim train`` on the CLI's sub-parsers."""
    p = sub.add_parser("train", help="train an ff-EBM (EP in analog blocks), then validate it in ngspice")
    p.add_argument("--config", default=None, help="TOML file or preset name (configs/NAME.toml)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--force", action="store_true", help="overwrite the outputs of a run already in the directory")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--device", default=None, help="cpu or cuda (override the config's device)")
    p.add_argument("--solver", choices=["fast", "ngspice"], default=None, help="training solver (default: config)")
    p.add_argument("--no-ngspice", action="store_true", help="skip the ngspice validation after training")
    p.set_defaults(func=cmd_train)
