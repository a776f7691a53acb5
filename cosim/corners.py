"""A trained design under other conditions: corners (temperature, supplies, wires, converters,
read noise) and Monte Carlo over device realisations, without retraining.

The checkpoint holds the programmed conductances and the devices they were programmed into. With
the devices unchanged the exact trained chip is evaluated; with ``--draws N`` or a changed
``devices`` key the same programmed conductances go into ``N`` freshly drawn chips (device spread,
stuck devices, diode spreads), as when one trained design is written into many dies.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from analog.operating_point import operating_point as circuit_operating_point
from analog.solvers.base import Equilibrium
from cosim.block import AnalogBlock
from cosim.build import build_model, build_solver, torch_dtype
from cosim.checkpoint import read_checkpoint
from cosim.cluster import IN_PROCESS, Cluster
from cosim.conditions import Conditions, apply_conditions
from cosim.config import MAX_SEED, ConfigError, RunConfig
from cosim.data import load_dataset
from cosim.evaluate import EVAL_BATCH
from cosim.losses import loss_value
from cosim.metrics import TOP5, reports_top5, top_k_correct
from cosim.model import FFEBM
from cosim.ngspice_jobs import ModelState, spread_outputs

__all__ = ["DRAW_SEED_STRIDE", "evaluate_checkpoint", "operating_point"]

DRAW_SEED_STRIDE = 7919
"""Seed offset between device draws (a prime, so draws do not repeat the training seeds)."""
_DEVICE_BUFFER = re.compile(r"\.arrays\.\d+\.(factor|offset|stuck|drift_nu)$|\.diode_(area|emission)$|\.amp_offset$")


def operating_point(block: AnalogBlock, source_V: torch.Tensor, eq: Equilibrium) -> dict:
    """:func:`analog.operating_point.operating_point` of one block's free phase, with its name."""
    return {"name": block.name, **circuit_operating_point(block.circuit(), source_V, eq)}


def _draw_config(config: RunConfig, draw: int) -> RunConfig:
    data = config.model_dump()
    devices = (config.seed.devices + DRAW_SEED_STRIDE * (draw + 1)) % (MAX_SEED + 1)
    data["seed"] = {**data["seed"], "devices": devices}
    return type(config).model_validate(data)


def _model(config: RunConfig, state: dict, input_shape, solver, fresh_devices: bool) -> FFEBM:
    model = build_model(config, input_shape, solver=solver)
    if fresh_devices:
        drawn = {k: v for k, v in model.state_dict().items() if _DEVICE_BUFFER.search(k)}
        state = {**{k: v for k, v in state.items() if not _DEVICE_BUFFER.search(k)}, **drawn}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"--checkpoint: the model does not match its configuration: {exc}") from None
    return model


@torch.no_grad()
def _evaluate(model: FFEBM, config: RunConfig, x, y, n_classes: int) -> dict:
    model.eval()
    blocks = model.analog_blocks()
    captured: dict[str, torch.Tensor] = {}

    def first_batch(module, args) -> None:  # a pre-hook that returns nothing leaves the input as it is
        captured.setdefault(module.name, module.spec.source_voltages(args[0].flatten(1)))

    hooks = [b.register_forward_pre_hook(first_batch) for b in blocks]
    dtype = next(model.parameters()).dtype
    outputs = []
    try:
        for start in range(0, len(y), EVAL_BATCH):
            outputs.append(model(x[start : start + EVAL_BATCH].to(dtype)).cpu())
    finally:
        for hook in hooks:
            hook.remove()
    ops = []
    for block in blocks:  # the operating point of the first batch, solved again by the block's solver
        source_V = captured[block.name].to(dtype)
        ops.append(operating_point(block, source_V, block.solver.solve(block.circuit(), source_V)))
    return _metrics(config, torch.cat(outputs), y, n_classes, ops)


def _evaluate_spread(client, model: FFEBM, config: RunConfig, x, y, n_classes: int, say) -> dict:
    """:func:`_evaluate` of a float64 model with ngspice on ``client``'s cluster (the same numbers)."""
    state = ModelState.of(model, config, x.shape[1:])
    out, ops = spread_outputs(client, state, x, config.solver, say, operating_points=EVAL_BATCH)
    return _metrics(config, out, y, n_classes, ops)


def _metrics(config: RunConfig, out: torch.Tensor, y, n_classes: int, ops: list[dict]) -> dict:
    predicted = out.argmax(1)
    per_class = {}
    for c in range(n_classes):
        mask = y == c
        if mask.any():
            per_class[str(c)] = float((predicted[mask] == c).double().mean())
    top5 = {"test_top5_accuracy": top_k_correct(out, y, TOP5) / len(y)} if reports_top5(n_classes) else {}
    return {
        "test_accuracy": float((predicted == y).double().mean()),
        **top5,
        "loss": float(loss_value(config.train.loss, out.double(), y, n_classes)),
        "per_class_accuracy": per_class,
        "blocks": ops,
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    conditions: list[tuple[str, object]] = (),
    solver: str = "fast",
    draws: int = 1,
    samples: int = 0,
    say: Callable[[str], None] = lambda _: None,
    first_draw: int = 0,
    fresh_devices: bool | None = None,
    cluster: Cluster = IN_PROCESS,
) -> dict:
    """Test accuracy (and top-5 accuracy for more than 5 classes), loss, per-class accuracy and
    operating point of a trained checkpoint under
    ``conditions`` (``(KEY, value)``, see :mod:`cosim.conditions`), over ``draws`` device
    realisations, on the first ``samples`` test samples (0: all), with the ``fast`` or ``ngspice``
    solver. ``first_draw`` numbers the draws (a sweep's seed); ``fresh_devices`` forces fresh draws
    (``None``: fresh when ``draws > 1`` or a ``devices`` key changed). With ``ngspice`` on a
    ``cluster`` that spreads, each draw's samples go to its workers in chunks
    (:func:`cosim.ngspice_jobs.spread_outputs`) with the same results. Everything is checked
    before the first solve."""
    if draws < 1:
        raise ConfigError(f"--draws: must be >= 1, got {draws}")
    if samples < 0:
        raise ConfigError(f"--samples: must be >= 0 (0: every test sample), got {samples}")
    if solver not in ("auto", "fast", "fast-layerwise", "ngspice"):
        raise ConfigError(f"--solver: 'auto', 'fast', 'fast-layerwise' or 'ngspice', got {solver!r}")
    if cluster.spread and solver != "ngspice":
        raise ConfigError(
            f"--workers/--scheduler: a cluster spreads ngspice's solves; give --solver ngspice (the {solver} "
            "solver runs in this process)"
        )
    cluster = cluster.checked()
    stored = read_checkpoint(checkpoint)
    resolved = Conditions(stored.config, list(conditions))
    config = apply_conditions(stored.config, resolved, str(checkpoint))
    data = load_dataset(stored.config.data, stored.config.seed.data)  # the split the design was tested on
    n = len(data.test_y) if samples == 0 else min(samples, len(data.test_y))
    x, y = data.test_x[:n], data.test_y[:n]
    fresh = draws > 1 or resolved.redraws_devices if fresh_devices is None else fresh_devices
    results = []
    # On a cluster its tasks solve; this process only builds the models.
    local = "fast" if cluster.spread else solver
    with build_solver(config.solver, local) as equilibrium, cluster.spread_client() as client:
        for draw in range(draws):
            start = time.perf_counter()
            draw_config = _draw_config(config, first_draw + draw) if fresh else config
            model = _model(draw_config, stored.model, data.input_shape, equilibrium, fresh)
            if solver == "ngspice":
                model = model.to(device="cpu", dtype=torch.float64)
            else:
                model = model.to(dtype=torch_dtype(config))
            if client is None:
                result = _evaluate(model, config, x, y, data.n_classes)
            else:
                result = _evaluate_spread(client, model, draw_config, x, y, data.n_classes, say)
            results.append(result)
            label = f"draw {draw + 1}/{draws}" if fresh else "trained chip"
            say(f"{label}: test accuracy {100 * result['test_accuracy']:.2f}% ({time.perf_counter() - start:.1f} s)")
    accuracies = [r["test_accuracy"] for r in results]
    report = {
        "checkpoint": str(checkpoint),
        "solver": solver,
        "samples": n,
        "draws": draws,
        "fresh_devices": fresh,
        "conditions": resolved.as_dict(),
        **results[0],
        "test_accuracy": statistics.fmean(accuracies),
    }
    if "test_top5_accuracy" in results[0]:
        report["test_top5_accuracy"] = statistics.fmean(r["test_top5_accuracy"] for r in results)
    if draws > 1:
        report.update(
            test_accuracy_mean=statistics.fmean(accuracies),
            test_accuracy_std=statistics.pstdev(accuracies),
            test_accuracy_min=min(accuracies),
            draw_accuracies=accuracies,
        )
    return report
