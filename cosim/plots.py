"""Every figure the project draws: training curves and solver iterations (from the rows of
``metrics.csv``), the gradient check, the energy report (breakdown, settling waveforms, solver
convergence) and the sweep plots.

Each function takes the data it shows and writes one PNG atomically, so a figure is either complete
or absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cosim.io import atomic_save
from cosim.units import si

__all__ = [
    "plot_breakdown",
    "plot_convergence",
    "plot_curves",
    "plot_gradcheck",
    "plot_solver_iterations",
    "plot_sweep",
    "plot_waveforms",
    "solver_columns",
]

_ITERATIONS = re.compile(r"^(?P<block>[^.]+)\.(?P<phase>[^.]+)\.iterations_mean$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int = 120) -> None:
    plt = _pyplot()
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
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


# ------------------------------------------------------------------------------------------------
# Gradient check.


def plot_gradcheck(rows: Sequence[dict], slopes: dict[str, float], path: str | Path) -> None:
    """Relative error vs beta (log-log), one line per method, over all parameters; ``rows`` are
    :meth:`cosim.gradcheck.GradcheckResult.table` rows."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for method, slope in slopes.items():
        mine = [r for r in rows if r["method"] == method]
        ax.loglog(
            [r["beta"] for r in mine], [r["rel_error"] for r in mine], "o-", label=f"{method} (slope {slope:.2f})"
        )
    ax.set_xlabel("beta (fraction of full-scale nudging current)")
    ax.set_ylabel("relative error vs exact gradient")
    ax.set_title("EP gradient error vs beta")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, path)


# ------------------------------------------------------------------------------------------------
# Energy report.

_ENERGY_PARTS = [
    ("analog_J", "analog phases"),
    ("input_lines_J", "input lines (C V^2)"),
    ("dac_J", "DAC"),
    ("adc_J", "ADC"),
    ("digital_J", "digital MACs"),
    ("ep_update_J", "EP update MACs"),
]


def plot_breakdown(report: dict, path: str | Path) -> None:
    """Energy per inference and per training sample: stacked (left) and per part on a log scale."""
    plt = _pyplot()
    columns = [("inference", report["per_inference_J"]), ("training sample", report["per_training_sample_J"])]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    bottom = [0.0, 0.0]
    for key, label in _ENERGY_PARTS:
        values = [c.get(key, 0.0) for _, c in columns]
        ax.bar([c for c, _ in columns], values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, total in enumerate(bottom):
        ax.annotate(si(total, "J"), (i, total), ha="center", va="bottom")
    ax.set_ylabel("energy per sample (J)")
    ax.set_title(f"{report['name']}: energy breakdown ({report['method']})")
    ax.legend(fontsize=8)
    # The same parts side by side on a log scale: the analog phases are often orders of magnitude
    # below the converters and digital compute, invisible in the stack.
    width = 0.4
    for i, (name, column) in enumerate(columns):
        values = [max(column.get(key, 0.0), 1e-30) for key, _ in _ENERGY_PARTS]
        bx.bar([k + (i - 0.5) * width for k in range(len(_ENERGY_PARTS))], values, width=width, label=name)
    bx.set_yscale("log")
    bx.set_ylim(bottom=min(v for _, c in columns for v in c.values() if v > 0) / 10)
    bx.set_xticks(range(len(_ENERGY_PARTS)), [label for _, label in _ENERGY_PARTS], rotation=25, ha="right", fontsize=8)
    bx.set_ylabel("energy per sample (J)")
    bx.set_title("per part (log scale)")
    bx.legend(fontsize=8)
    _save(fig, path)


def plot_waveforms(details: dict, path: str | Path, max_nodes: int = 6) -> None:
    """Settling of the last ``max_nodes`` free nodes (outputs first) in every phase of every
    block; ``details`` maps a block name to its :class:`cosim.energy.PhaseResult` list."""
    plt = _pyplot()
    n_rows = len(details)
    n_cols = max(len(r) for r in details.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows), squeeze=False)
    for i, (name, results) in enumerate(details.items()):
        for j, result in enumerate(results):
            ax = axes[i][j]
            tr = result.transient
            n = tr.voltages.shape[2]
            nodes = list(range(n - 1, max(n - 1 - max_nodes, -1), -1))  # output nodes first
            t_ns = tr.times_s * 1e9
            delta = tr.voltages[:, 0] - tr.voltages[0, 0]
            for k, node in enumerate(nodes):
                ax.plot(t_ns, delta[:, node], color=f"C{k}", lw=1)
            waves = result.ngspice.get("waves")
            if waves:
                w = waves[0]
                step = max(1, len(w.times_s) // 40)
                d = w.voltages - w.voltages[0]
                for k, node in enumerate(nodes):
                    ax.plot(w.times_s[::step] * 1e9, d[::step, node], "o", ms=2.5, color=f"C{k}", mfc="none")
            ax.axvline(float(tr.settle_time_s[0]) * 1e9, color="k", ls="--", lw=0.8)
            ax.set_title(f"{name} {result.name}" + (" (lines: fast, o: ngspice)" if waves else ""), fontsize=9)
            ax.set_xlabel("time (ns)")
            ax.set_ylabel("v(t) - v(0) (V)")
        for j in range(len(results), n_cols):
            axes[i][j].axis("off")
    _save(fig, path, dpi=110)


def plot_convergence(details: dict, path: str | Path) -> None:
    """Fast-solver KCL residual per Newton iteration (left) and ngspice's iteration counts."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    labels, dc, tran = [], [], []
    for name, results in details.items():
        for result in results:
            history = result.equilibrium.history.get("residual_A", [])
            worst = [max(max(step), 1e-30) for step in history]
            ax.semilogy(range(len(worst)), worst, marker="o", ms=3, label=f"{name} {result.name}")
            labels.append(f"{name}\n{result.name}")
            dc.append(result.ngspice.get("dc_iterations", 0))
            tran.append(result.ngspice.get("tran_iterations", 0))
    ax.set_xlabel("Newton iteration (fast solver)")
    ax.set_ylabel("largest KCL residual over the batch (A)")
    ax.set_title("fast solver: residual per iteration")
    ax.legend(fontsize=8)
    x = range(len(labels))
    bx.bar([i - 0.2 for i in x], dc, width=0.4, label="DC (.dc sweep, whole batch)")
    bx.bar([i + 0.2 for i in x], tran, width=0.4, label=".tran (ngspice samples)")
    bx.set_xticks(list(x), labels, fontsize=7)
    if any(dc) or any(tran):
        bx.set_yscale("log")
    bx.set_ylabel("ngspice iterations")
    bx.set_title("ngspice iteration counts" if any(dc) else "ngspice not run (energy.ngspice = false)")
    bx.legend(fontsize=8)
    _save(fig, path, dpi=110)


# ------------------------------------------------------------------------------------------------
# Sweeps.


def _levels(rows: list[dict], key: str) -> list[str]:
    """The distinct values of ``key`` as JSON text, numbers in numeric order, ``null`` last."""

    def order(text: str):
        value = json.loads(text)
        if value is None:
            return (2, 0.0, "")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (0, float(value), "")
        return (1, 0.0, text)

    return sorted({json.dumps(r["values"][key]) for r in rows}, key=order)


def _numeric(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", key)


_UNITS = (("_ohm", "Ohm"), ("_eV", "eV"), ("_V", "V"), ("_A", "A"), ("_S", "S"), ("_F", "F"), ("_C", "C"), ("_s", "s"))
_NULL_MEANS = (("bits", "exact"), ("wire_ohm", "ideal wires"), ("levels", "analog"), ("sigma", "none"))


def _axis_label(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    unit = next((u for suffix, u in _UNITS if leaf.endswith(suffix)), None)
    return f"{key} ({unit})" if unit else key


def _null_label(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    return next((label for part, label in _NULL_MEANS if part in leaf), "null")


def _mean_std(rows: list[dict], metric: str) -> tuple[float, float, int]:
    values = [r["metrics"][metric] for r in rows if isinstance(r["metrics"].get(metric), int | float)]
    return (float(np.mean(values)), float(np.std(values)), len(values)) if values else (float("nan"), 0.0, 0)


def _sweep_panel(ax, rows: list[dict], key: str, others: list[str], metric: str) -> None:
    """``metric`` against ``key``: one line per combination of the other keys' values, mean +/- std
    over the seeds of each point; a ``null`` value is drawn as a dashed reference line."""
    levels = [json.loads(v) for v in _levels(rows, key)]
    numeric = [v for v in levels if v is not None]
    is_numeric = bool(numeric) and _numeric(numeric)
    combos = sorted({json.dumps([r["values"][k] for k in others]) for r in rows})
    for n, combo in enumerate(combos):
        color = f"C{n % 10}"
        mine = [r for r in rows if json.dumps([r["values"][k] for k in others]) == combo]
        label = ", ".join(
            f"{k}={v if v is not None else _null_label(k)}" for k, v in zip(others, json.loads(combo), strict=True)
        )
        xs, means, stds = [], [], []
        for value in numeric if is_numeric else levels:
            mean, std, count = _mean_std([r for r in mine if r["values"][key] == value], metric)
            if count:
                xs.append(value if is_numeric else str(value))
                means.append(mean)
                stds.append(std)
        style = "o-" if is_numeric else "o"  # categorical points are not joined
        ax.errorbar(xs, means, yerr=stds, fmt=style, color=color, capsize=3, label=label or None)
        if is_numeric and None in levels:
            mean, _, count = _mean_std([r for r in mine if r["values"][key] is None], metric)
            if count:
                ax.axhline(
                    mean, color=color, ls="--", lw=1, label=f"{_null_label(key)}" + (f" ({label})" if label else "")
                )
    if is_numeric and min(numeric) > 0 and max(numeric) / min(numeric) >= 100:
        ax.set_xscale("log")
    ax.set_xlabel(_axis_label(key))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_sweep(rows: list[dict], keys: list[str], out: str | Path) -> list[Path]:
    """For each swept key with two or more values, each metric against it (one line per value of
    the other keys, mean +/- std over seeds; numeric axes in numeric order, logarithmic where the
    values span decades; ``null`` as a dashed reference named for what it means), and a heatmap of
    each metric over the first two keys (mean over seeds). Returns the files written into ``out``."""
    plt = _pyplot()
    out = Path(out)
    if not rows:
        return []
    metrics = sorted({m for r in rows for m, v in r["metrics"].items() if isinstance(v, int | float) and m != "wall_s"})
    seeds = len({r["seed"] for r in rows})
    paths = []
    varied = [k for k in keys if len(_levels(rows, k)) >= 2]  # a key with one value is no axis
    for key in varied:
        others = [k for k in varied if k != key]
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            _sweep_panel(ax, rows, key, others, metric)
        fig.suptitle(f"mean +/- std over {seeds} seed(s) per point ({len(rows)} rows)")
        path = out / f"sweep_{_safe_name(key)}.png"
        _save(fig, path, dpi=110)
        paths.append(path)
    if len(varied) >= 2:
        paths += [_heatmap(rows, varied[0], varied[1], metric, out) for metric in metrics]
    return paths


def _heatmap(rows: list[dict], kx: str, ky: str, metric: str, out: Path) -> Path:
    plt = _pyplot()
    lx, ly = _levels(rows, kx), _levels(rows, ky)
    grid = np.full((len(ly), len(lx)), np.nan)
    for i, vy in enumerate(ly):
        for j, vx in enumerate(lx):
            vals = [
                r["metrics"][metric]
                for r in rows
                if json.dumps(r["values"][kx]) == vx and json.dumps(r["values"][ky]) == vy
            ]
            if vals:
                grid[i, j] = np.mean(vals)
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(lx)), [_null_label(kx) if v == "null" else v for v in lx])
    ax.set_yticks(range(len(ly)), [_null_label(ky) if v == "null" else v for v in ly])
    ax.set_xlabel(_axis_label(kx))
    ax.set_ylabel(_axis_label(ky))
    for i in range(len(ly)):
        for j in range(len(lx)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label=f"{metric} (mean over seeds)")
    path = out / f"heatmap_{metric}.png"
    _save(fig, path, dpi=110)
    return path
