"""Evaluating a trained ff-EBM: accuracy with the free phase only, and the ngspice check.

The ngspice check classifies test samples again with every analog block solved by ngspice (the
ground truth), next to the model's own solver on the same samples: in this process, or spread over
a Dask cluster in chunks (:mod:`cosim.ngspice_jobs`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from analog.operating_point import conv_operating_point, operating_point
from analog.solvers import FastSolver, SolverError
from cosim.build import build_solver
from cosim.cluster import IN_PROCESS, Cluster
from cosim.config import ConfigError, RunConfig
from cosim.metrics import TOP5, reports_top5, top_k_correct
from cosim.model import FFEBM
from cosim.ngspice_jobs import ModelState, spread_outputs

__all__ = [
    "EVAL_BATCH",
    "accuracy",
    "block_operating_points",
    "ngspice_validation",
    "reference_copy",
    "top_k_accuracy",
]

EVAL_BATCH = 512
"""Samples per batch when only the free phase runs (evaluation)."""


@torch.no_grad()
def accuracy(model: FFEBM, x: torch.Tensor, y: torch.Tensor, device, dtype, batch_size: int = EVAL_BATCH) -> float:
    """Fraction of ``x`` classified as ``y`` (arg-max of the model output), free phase only."""
    return top_k_accuracy(model, x, y, device, dtype, (1,), batch_size)[1]


@torch.no_grad()
def top_k_accuracy(
    model: FFEBM, x, y: torch.Tensor, device, dtype, ks: tuple[int, ...] = (1, 5), batch_size: int = EVAL_BATCH
) -> dict[int, float]:
    """``{k: fraction of x whose label y is among the k largest model outputs}`` for each ``k`` of
    ``ks``, in one pass of the free phase (``k = 1``: the arg-max, as :func:`accuracy`). ``x``: a
    float tensor or :class:`cosim.data.ByteImages` (converted batch by batch)."""
    model.eval()
    correct = dict.fromkeys(ks, 0)
    for start in range(0, len(y), batch_size):
        out = model(x[start : start + batch_size].to(device=device, dtype=dtype)).cpu()
        for k in ks:
            correct[k] += top_k_correct(out, y[start : start + batch_size], k)
    return {k: n / len(y) for k, n in correct.items()}


@torch.no_grad()
def block_operating_points(model: FFEBM, x: torch.Tensor, device, dtype) -> list[dict]:
    """:func:`analog.operating_point.operating_point` of every analog block's free phase on ``x``
    (one batch: what the block receives from the blocks before it), each with the block's name:
    the dense blocks first, then the conv blocks (:func:`~analog.operating_point.conv_operating_point`)."""
    model.eval()
    captured: dict[str, torch.Tensor] = {}

    def grab(module, args) -> None:  # a pre-hook that returns nothing leaves the input as it is
        captured[module.name] = module.spec.source_voltages(args[0].flatten(1).to(dtype))

    dense, conv = model.analog_blocks(), model.conv_blocks()
    hooks = [b.register_forward_pre_hook(grab) for b in (*dense, *conv)]
    try:
        model(x.to(device=device, dtype=dtype))
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for block in dense:
        circuit, source_V = block.circuit(), captured[block.name]
        out.append({"name": block.name, **operating_point(circuit, source_V, block.solver.solve(circuit, source_V))})
    for block in conv:
        circuit = block.circuit()
        eq = block.solver.solve(circuit, captured[block.name])
        out.append({"name": block.name, **conv_operating_point(circuit, eq)})
    return out


def reference_copy(model: FFEBM) -> FFEBM:
    """A float64 CPU copy of ``model`` (ngspice computes in float64). The copy gets a fresh fast
    solver: the model's own solver may hold processes and locks, which cannot be copied."""
    solvers = [block.solver for block in model.analog_blocks()]
    placeholder = FastSolver()
    model.set_solver(placeholder)
    try:
        reference = copy.deepcopy(model)
    finally:
        for block, solver in zip(model.analog_blocks(), solvers, strict=True):
            block.solver = solver
    return reference.to(device="cpu", dtype=torch.float64)


_CHECK_KEYS = {
    "fast": ("fast_test_accuracy_same_samples", "fast_test_top5_accuracy_same_samples"),
    "ngspice": ("ngspice_test_accuracy", "ngspice_test_top5_accuracy"),
}
"""Summary keys of the ngspice check: top-1 and top-5 accuracy of each solver on the same samples."""


def ngspice_validation(
    model: FFEBM,
    x: torch.Tensor,
    y: torch.Tensor,
    device,
    dtype,
    samples: int,
    config: RunConfig,
    cluster: Cluster = IN_PROCESS,
    say: Callable[[str], None] = lambda _: None,
    n_classes: int | None = None,
) -> dict:
    """Test accuracy on the first ``samples`` of ``x``, ``y`` with every analog block solved by
    ngspice (with ``config.solver``'s timeout), next to the model's solver on the same samples. On a
    ``cluster`` that spreads (:attr:`~cosim.cluster.Cluster.spread`) the samples go to its workers
    in chunks, one ngspice process each (:func:`cosim.ngspice_jobs.spread_outputs`, a progress line
    per chunk through ``say``), with the same predictions; otherwise ngspice runs here in
    ``config.solver.workers`` processes. With more than 5 classes (``n_classes``) top-5 accuracy
    is reported beside top-1 for both solvers. A solver that fails is reported under
    ``ngspice_error``, not raised."""
    n = min(samples, len(y))
    top5 = n_classes is not None and reports_top5(n_classes)
    ks = (1, TOP5) if top5 else (1,)
    result = {
        "ngspice_samples": n,
        "ngspice_test_accuracy": None,
        "fast_test_accuracy_same_samples": None,
        **({key: None for _, key in _CHECK_KEYS.values()} if top5 else {}),
        "ngspice_seconds": None,
        "ngspice_where": cluster.describe() if cluster.spread else "this process",
    }
    if n == 0:
        return result
    x, y = x[:n], y[:n]

    def record(solver: str, fractions: dict[int, float]) -> None:
        top1, top5_key = _CHECK_KEYS[solver]
        result[top1] = fractions[1]
        if top5:
            result[top5_key] = fractions[TOP5]

    record("fast", top_k_accuracy(model, x, y, device, dtype, ks))
    start = time.perf_counter()
    try:
        if cluster.spread:
            with cluster.client() as client:
                state = ModelState.of(model, config, x.shape[1:])
                out, _ = spread_outputs(client, state, x, config.solver, say)
            record("ngspice", {k: top_k_correct(out, y, k) / n for k in ks})
        else:
            reference = reference_copy(model)
            with build_solver(config.solver, "ngspice") as ngspice:
                reference.set_solver(ngspice)
                record("ngspice", top_k_accuracy(reference, x, y, "cpu", torch.float64, ks, batch_size=n))
    except (ImportError, SolverError, OSError, ConfigError) as exc:
        result["ngspice_error"] = f"{type(exc).__name__}: {exc}"
    result["ngspice_seconds"] = time.perf_counter() - start
    return result
