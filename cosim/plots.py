"""Training plots from the rows of ``metrics.csv``: loss and accuracy curves, solver iterations.

Every function takes the metric rows (dicts of column name -> number, one per epoch) and writes one
PNG atomically, so a figure is either complete or absent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from cosim.io import atomic_save

__all__ = ["plot_curves", "plot_solver_iterations", "solver_columns"]

_ITERATIONS = re.compile(r"^(?P<block>[^.]+)\.(?P<phase>[^.]+)\.iterations_mean$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def plot_curves(rows: Sequence[dict], path: str | Path, title: str = "") -> None:
    """Training loss (left) and train/test accuracy in percent (right) against the epoch."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax_loss.plot(epochs, [r["loss"] for r in rows], "o-", ms=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean over the epoch)")
    ax_loss.set_yscale("log")
    ax_loss.grid(True, which="both", alpha=0.3)
    for key, label in (("train_accuracy", "train"), ("test_accuracy", "test")):
        ax_acc.plot(epochs, [100 * r[key] for r in rows], "o-", ms=3, label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def solver_columns(rows: Sequence[dict]) -> list[tuple[str, str, str]]:
    """``(column, block, phase)`` of every mean-iterations column, in column order."""
    out = []
    for column in rows[0] if rows else {}:
        match = _ITERATIONS.match(column)
        if match:
            out.append((column, match["block"], match["phase"]))
    return out


def plot_solver_iterations(rows: Sequence[dict], path: str | Path, title: str = "") -> None:
    """Mean solver iterations per batch of each phase (free, nudged) of each analog block."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for column, block, phase in solver_columns(rows):
        ax.plot(epochs, [r[column] for r in rows], "o-", ms=3, label=f"{block} {phase}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("solver iterations per batch (mean)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    ax.set_title(title or "equilibrium solver iterations per phase")
    _save(fig, path)
