"""Training an ff-EBM end to end, then validating the trained model in ngspice.

One epoch shuffles the training set with a seeded :class:`torch.Generator`, crops and flips the
images of each batch when ``data.augment`` asks (drawn from the data seed and the epoch, see
:mod:`cosim.data.augment`), steps a torch optimizer
on the hybrid gradient (EP in the analog blocks, backprop in the digital ones), writes every
requested conductance into the devices after each step and evaluates the test set with the free
phase. A resumed run (:func:`cosim.runs.open_run`) continues the shuffling generator, the optimizer
and the schedule where they stopped, so every metric except the wall time equals the one of an
uninterrupted run.

After training, ``train.ngspice_eval_samples`` test samples are classified again with every analog
block solved by ngspice (:func:`cosim.evaluate.ngspice_validation`), here or on a Dask cluster.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from analog.operating_point import nudge_report
from cosim.checkpoint import CHECKPOINT_FILE
from cosim.cluster import IN_PROCESS, Cluster
from cosim.config import RunConfig
from cosim.data import make_augmentation
from cosim.evaluate import block_operating_points, ngspice_validation, top_k_accuracy
from cosim.io import atomic_write_json, atomic_write_text
from cosim.losses import loss_value
from cosim.metrics import METRICS_FILE, TOP5, SolverTally, epoch_line, metrics_text, reports_top5, top_k_correct
from cosim.plots import plot_curves, plot_solver_iterations
from cosim.progress import progress
from cosim.runs import CURVES_PLOT, SOLVER_PLOT, SUMMARY_FILE, TrainingRun, build_run, save_run

__all__ = ["finish", "train", "train_config", "train_epoch"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_epoch(run: TrainingRun, epoch: int) -> dict:
    """One pass over the shuffled training set; returns the epoch's metric row (without timing)."""
    config, data, model, optimizer = run.config, run.data, run.model, run.optimizer
    batch_size = config.train.batch_size
    augmentation = make_augmentation(config.data, config.seed.data, data)
    augment = augmentation.epoch(epoch) if augmentation is not None else None
    top5 = reports_top5(data.n_classes)
    model.train()
    order = torch.randperm(len(data.train_y), generator=run.shuffle)
    tally = SolverTally()
    loss_sum, correct, correct5, seen = 0.0, 0, 0, 0
    bar = progress(run.steps_per_epoch, f"epoch {epoch}/{config.train.epochs}", "batch")
    with bar:
        for step, start in enumerate(range(0, len(order), batch_size)):
            index = order[start : start + batch_size]
            x = data.train_x[index]
            if augment is not None:
                x = augment(x)
            x = x.to(device=run.device, dtype=run.dtype)
            y = data.train_y[index]
            for block in model.energy_blocks():
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
            scores = out.detach().cpu()
            correct += top_k_correct(scores, y, 1)
            correct5 += top_k_correct(scores, y, TOP5) if top5 else 0
            seen += n
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
    base = optimizer.param_groups[0]
    lr_factor = base["lr"] / base.get("initial_lr", base["lr"])
    row = {"epoch": epoch, "loss": loss_sum / seen, "train_accuracy": correct / seen, "test_accuracy": float("nan")}
    if top5:
        row.update(train_top5_accuracy=correct5 / seen, test_top5_accuracy=float("nan"))
    return {**row, "lr": config.train.lr * lr_factor, **tally.columns()}


def train(run: TrainingRun, say: Callable[[str], None] = _stderr) -> None:
    """Train from ``run.epochs_done`` to ``config.train.epochs``, writing metrics and checkpoints."""
    config = run.config
    for epoch in range(run.epochs_done + 1, config.train.epochs + 1):
        start = time.perf_counter()
        row = train_epoch(run, epoch)
        top5 = reports_top5(run.data.n_classes)
        test = top_k_accuracy(
            run.model, run.data.test_x, run.data.test_y, run.device, run.dtype, (1, TOP5) if top5 else (1,)
        )
        row["test_accuracy"] = test[1]
        if top5:
            row["test_top5_accuracy"] = test[TOP5]
        # The operating point as training moves it: diodes past their knee on a few test samples.
        probe = run.data.test_x[:OPERATING_POINT_PROBE]
        for op in block_operating_points(run.model, probe, run.device, run.dtype):
            row[f"{op['name']}.diodes_conducting"] = op["diodes_conducting_fraction"]
        row["seconds"] = time.perf_counter() - start
        run.rows.append(row)
        # The checkpoint holds the metric rows and is written first: with checkpoint_every = 1,
        # metrics.csv never shows an epoch that a resume would run again (a resume rewrites it).
        if epoch % config.train.checkpoint_every == 0 or epoch == config.train.epochs:
            save_run(run)
        atomic_write_text(run.run_dir / METRICS_FILE, metrics_text(run.rows))
        say(epoch_line(row, config.train.epochs))


def _summary(run: TrainingRun, check: dict) -> dict:
    config, run_dir, rows = run.config, run.run_dir, run.rows
    last = rows[-1]
    return {
        "name": config.name,
        "epochs": len(rows),
        "test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in rows),
        "train_accuracy": last["train_accuracy"],
        **(
            {
                "test_top5_accuracy": last["test_top5_accuracy"],
                # rows of a run resumed from a checkpoint written before top-5 was reported lack it
                "best_test_top5_accuracy": max(r.get("test_top5_accuracy", 0.0) for r in rows),
                "train_top5_accuracy": last["train_top5_accuracy"],
            }
            if "test_top5_accuracy" in last
            else {}
        ),
        "n_classes": run.data.n_classes,
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
        "conductances": sum(
            p.numel() for b in (*run.model.analog_blocks(), *run.model.conv_blocks()) for p in b.conductances()
        ),
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


def finish(
    run: TrainingRun, ngspice: bool, say: Callable[[str], None] = _stderr, cluster: Cluster = IN_PROCESS
) -> tuple[dict, int]:
    """Plots, ngspice validation (on ``cluster`` when it spreads, see
    :func:`cosim.evaluate.ngspice_validation`) and ``summary.json``; returns the summary and the
    exit code (3 when the ngspice validation failed)."""
    config, run_dir, rows = run.config, run.run_dir, run.rows
    plot_curves(rows, run_dir / CURVES_PLOT, title=config.name)
    plot_solver_iterations(
        rows, run_dir / SOLVER_PLOT, title=f"{config.name}: solver iterations per phase", solver=config.solver.name
    )
    # A model without analog blocks has nothing for ngspice to solve (Hopfield blocks are ideal).
    circuits = run.model.analog_blocks() or run.model.conv_blocks()
    samples = config.train.ngspice_eval_samples if ngspice and circuits else 0
    if samples:
        where = f" on a {cluster.describe()}" if cluster.spread else ""
        say(f"ngspice validation on {min(samples, len(run.data.test_y))} test samples{where} ...")
    data = run.data
    check = ngspice_validation(
        run.model, data.test_x, data.test_y, run.device, run.dtype, samples, run.config, cluster, say, data.n_classes
    )
    code = 0
    if "ngspice_error" in check:
        say(f"ngspice validation failed: {check['ngspice_error']}")
        code = 3
    elif check["ngspice_test_accuracy"] is not None:
        say(
            f"ngspice validation: {check['ngspice_samples']} test samples, "
            f"ngspice {100 * check['ngspice_test_accuracy']:.2f}% "
            f"vs fast {100 * check['fast_test_accuracy_same_samples']:.2f}%"
            + (
                f", top-5 ngspice {100 * check['ngspice_test_top5_accuracy']:.2f}% "
                f"vs fast {100 * check['fast_test_top5_accuracy_same_samples']:.2f}%"
                if "ngspice_test_top5_accuracy" in check
                else ""
            )
            + f" ({check['ngspice_seconds']:.1f} s)"
        )
    summary = _summary(run, check)
    summary.update(_design_checks(run))
    for op in summary["operating_point"]:
        for line in op["warnings"]:
            say(f"warning: {op['name']}: {line}")
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary, code


OPERATING_POINT_SAMPLES = 256
"""Test samples the trained design's operating point is reported on."""
OPERATING_POINT_PROBE = 64
"""Test samples whose operating point every epoch's metrics record."""


def _design_checks(run: TrainingRun) -> dict:
    """The trained design's operating point (:func:`cosim.evaluate.block_operating_points`, with the
    last epoch's nudge response against each block's readout LSB among its warnings) and the devices'
    programming over the run."""
    x = run.data.test_x[:OPERATING_POINT_SAMPLES]
    ops = block_operating_points(run.model, x, run.device, run.dtype)
    last = run.rows[-1]
    programming = {}
    dense = run.model.analog_blocks()
    for op, block in zip(ops[: len(dense)], dense, strict=True):
        response = [v for k, v in last.items() if k.startswith(f"{block.name}.nudge.L") and k.endswith("_dv_V_max")]
        measurement = getattr(block.method, "measurement", None)
        if response and measurement is not None:
            report = nudge_report(measurement, tuple(response))
            op["nudge"] = report
            op["warnings"] = [*op["warnings"], *report["warnings"]]
        keys = {"pulses": "write.pulses_epoch", "energy_J": "write.energy_J_epoch", "time_s": "write.time_s_epoch"}
        if all(f"{block.name}.{v}" in last for v in keys.values()):
            totals = {k: sum(r.get(f"{block.name}.{v}", 0.0) for r in run.rows) for k, v in keys.items()}
            steps = len(run.rows) * run.steps_per_epoch
            programming[block.name] = {
                **totals,
                "steps": steps,
                "pulses_per_step": totals["pulses"] / steps,
                "energy_J_per_step": totals["energy_J"] / steps,
                "time_s_per_step": totals["time_s"] / steps,
                "energy_J_per_epoch": totals["energy_J"] / len(run.rows),
            }
    return {"operating_point": ops, "programming": programming}


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
            run.close()
    return summary
