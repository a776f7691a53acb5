"""Per-epoch training metrics: the solver tally of an epoch, ``metrics.csv``, the epoch line.

A metric row is a dict of column name -> number: ``epoch``, ``loss``, ``train_accuracy``,
``test_accuracy`` (top-1), ``train_top5_accuracy`` and ``test_top5_accuracy`` (only for datasets of
more than 5 classes, see :func:`reports_top5`), ``lr``, then for every analog block and phase
``<block>.<phase>.iterations_mean`` and ``<block>.<phase>.residual_A_max`` (for a Hopfield block
``<block>.<phase>.change_max``, its largest last state change);
``<block>.write.pulses_epoch``, ``.energy_J_epoch`` and ``.time_s_epoch`` (the devices'
programming over the epoch, when the devices count it, see
:meth:`analog.devices.DeviceArray.programming`); ``<block>.nudge.L<l>_dv_V_max`` (the largest
change a nudge caused at free layer ``l``); ``<block>.diodes_conducting`` (the fraction of diodes
past their knee on a few test samples, :mod:`analog.operating_point`); and ``seconds`` last.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

__all__ = [
    "METRICS_FILE",
    "TOP5",
    "SolverTally",
    "epoch_line",
    "metrics_text",
    "read_metrics",
    "reports_top5",
    "top_k_correct",
]

METRICS_FILE = "metrics.csv"
_PHASE_ORDER = {"free": 0, "positive": 1, "negative": 2}
TOP5 = 5


def reports_top5(n_classes: int) -> bool:
    """Whether top-5 accuracy is reported next to top-1: for more than 5 classes (with 5 or fewer,
    every sample is in its top 5)."""
    return n_classes > TOP5


def top_k_correct(out: torch.Tensor, y: torch.Tensor, k: int) -> int:
    """Samples whose label ``y`` ``[n]`` is among the ``k`` largest of their row of ``out``
    ``[n, classes]``. For ``k = 1`` this is the arg-max (the first of tied maxima) as everywhere else."""
    if k == 1:
        return int((out.argmax(1) == y).sum())
    top = out.topk(min(k, out.shape[1]), dim=1).indices
    return int((top == y[:, None]).any(1).sum())


class SolverTally:
    """Mean iterations and largest KCL residual of every ``block.phase`` over the batches of an epoch."""

    def __init__(self) -> None:
        self.iterations: dict[str, list[float]] = {}
        self.residual: dict[str, float] = {}
        self.change: dict[str, float] = {}
        self.sums: dict[str, float] = {}
        self.maxima: dict[str, float] = {}

    def add(self, stats: dict[str, float]) -> None:
        """One batch's ``{"<block>.<phase>.iterations": n, "<block>.<phase>.residual_A": r}`` (a
        Hopfield block reports ``<block>.<phase>.change``, its last state change, instead), plus
        ``<block>.write.{pulses,energy_J,time_s}`` (summed over the epoch) and
        ``<block>.nudge.L<l>_dv_V`` (the largest over the epoch)."""
        for key, value in stats.items():
            block_phase, _, kind = key.rpartition(".")
            if block_phase.endswith(".write"):
                self.sums[key] = self.sums.get(key, 0.0) + value
            elif block_phase.endswith(".nudge"):
                self.maxima[key] = max(self.maxima.get(key, 0.0), value)
            elif kind == "iterations":
                self.iterations.setdefault(block_phase, []).append(value)
            elif kind == "residual_A":
                self.residual[block_phase] = max(self.residual.get(block_phase, 0.0), value)
            elif kind == "change":
                self.change[block_phase] = max(self.change.get(block_phase, 0.0), value)

    def columns(self) -> dict[str, float]:
        def order(key: str):
            block, _, phase = key.partition(".")
            return block, _PHASE_ORDER.get(phase, 9), phase

        out = {}
        for key in sorted(self.iterations, key=order):
            values = self.iterations[key]
            out[f"{key}.iterations_mean"] = sum(values) / len(values)
            if key in self.change:  # an iteration of states, not a circuit: no KCL residual
                out[f"{key}.change_max"] = self.change[key]
            else:
                out[f"{key}.residual_A_max"] = self.residual.get(key, float("nan"))
        out.update({f"{k}_epoch": v for k, v in sorted(self.sums.items())})
        out.update({f"{k}_max": v for k, v in sorted(self.maxima.items())})
        return out


def metrics_text(rows: list[dict]) -> str:
    """The rows as CSV text, columns in first-seen order and ``seconds`` last."""
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


def epoch_line(row: dict, epochs: int) -> str:
    """One line of progress for a finished epoch."""
    phases = [
        f"{k.removesuffix('.iterations_mean')} {v:.1f} it" for k, v in row.items() if k.endswith(".iterations_mean")
    ]

    def accuracy(part: str) -> str:
        top5 = row.get(f"{part}_top5_accuracy")
        return f"{100 * row[f'{part}_accuracy']:.2f}%" + ("" if top5 is None else f" (top-5 {100 * top5:.2f}%)")

    return (
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  train {accuracy('train')}  "
        f"test {accuracy('test')}  " + "  ".join(phases) + f"  {row['seconds']:.1f} s"
    )
