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


def _save(fig, path: str | Path, dpi: int = 120, rect=(0, 0, 1, 1)) -> None:
    plt = _pyplot()
    fig.tight_layout(rect=rect)
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)


def plot_curves(rows: Sequence[dict], path: str | Path, title: str = "") -> None:
    """Training loss (left) and train/test accuracy in percent (right, top-5 dashed where the rows
    have it) against the epoch."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax_loss.plot(epochs, [r["loss"] for r in rows], "o-", ms=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean over the epoch)")
    ax_loss.set_yscale("log")
    ax_loss.grid(True, which="both", alpha=0.3)
    for n, part in enumerate(("train", "test")):
        ax_acc.plot(epochs, [100 * r[f"{part}_accuracy"] for r in rows], "o-", ms=3, color=f"C{n}", label=part)
        if f"{part}_top5_accuracy" in rows[0]:
            top5 = [100 * r[f"{part}_top5_accuracy"] for r in rows]
            ax_acc.plot(epochs, top5, "o--", ms=3, color=f"C{n}", label=f"{part} top-5")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend()
    _integer_epochs(ax_loss, ax_acc)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _integer_epochs(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def solver_columns(rows: Sequence[dict]) -> list[tuple[str, str, str]]:
    """``(column, block, phase)`` of every mean-iterations column, in column order."""
    out = []
    for column in rows[0] if rows else {}:
        match = _ITERATIONS.match(column)
        if match:
            out.append((column, match["block"], match["phase"]))
    return out


_PHASE_STYLE = {"free": ("-", "o"), "positive": ("--", "^"), "negative": (":", "v")}


def plot_solver_iterations(rows: Sequence[dict], path: str | Path, title: str = "", solver: str = "") -> None:
    """Mean solver iterations per batch of each phase of each analog block: one colour per block,
    one line style and marker per phase (free solid, +beta dashed, -beta dotted); ``solver`` names
    whose iterations they are (Newton steps of ``fast``, layer sweeps of ``fast-layerwise``, ...)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours: dict[str, str] = {}
    for column, block, phase in solver_columns(rows):
        colour = colours.setdefault(block, f"C{len(colours)}")
        style, marker = _PHASE_STYLE.get(phase, ("-.", "s"))
        label = f"{block} {({'positive': '+beta', 'negative': '-beta'}).get(phase, phase)}"
        ax.plot(epochs, [r[column] for r in rows], ls=style, marker=marker, ms=3, color=colour, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{solver + ' ' if solver else ''}solver iterations per batch (mean)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    _integer_epochs(ax)
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
    ("analog_J", "array (settle + hold)"),
    ("peripherals_J", "drivers/amplifiers (quiescent)"),
    ("input_lines_J", "input lines (C V^2)"),
    ("dac_J", "DACs"),
    ("adc_J", "ADCs"),
    ("digital_J", "digital MACs"),
    ("ep_update_J", "EP update MACs (digital)"),
    ("programming_J", "device programming"),
]


def plot_breakdown(report: dict, path: str | Path) -> None:
    """The energy report for a design review: energy per inference and per training sample, one
    horizontal bar per part on a log scale with its value (parts that cost nothing are listed with
    "0"), the power of every phase (array static and peripheral quiescent), and the assumptions."""
    plt = _pyplot()
    columns = [("per inference", report["per_inference_J"]), ("per training sample", report["per_training_sample_J"])]
    phases = [(b["name"], row) for b in report["blocks"] for row in b["phases"]]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    labels = [label for _, label in _ENERGY_PARTS]
    positive = [v for _, c in columns for k, _ in _ENERGY_PARTS if (v := c.get(k, 0.0)) > 0]
    floor = min(positive) / 30 if positive else 1e-18
    for ax, (title, column) in zip(axes[:2], columns, strict=False):
        values = [column.get(key, 0.0) for key, _ in _ENERGY_PARTS]
        y = np.arange(len(values))[::-1]
        ax.barh(y, [max(v, floor) if v > 0 else 0 for v in values], color=[f"C{i}" for i in range(len(values))])
        ax.set_xscale("log")
        ax.set_xlim(floor, max(positive or [1.0]) * 30)
        for yi, v in zip(y, values, strict=True):
            text = si(v, "J") if v > 0 else "0 (not counted or none)"
            ax.annotate(text, (max(v, floor), yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel("energy (J, log scale)")
        ax.set_title(f"{title}: {si(column['total_J'], 'J')} in total", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    px = axes[2]
    names = [f"{block} {row['phase']}\n{si(row['phase_duration_s'], 's')}" for block, row in phases]
    x = np.arange(len(phases))
    static = [row["static_power_W"] for _, row in phases]
    periph = [row.get("peripheral_power_W", 0.0) for _, row in phases]
    factor, unit = _si_scale(max([*static, *periph, 1e-30]), "W")
    px.bar(x - 0.2, [v * factor for v in static], width=0.4, label="array static power")
    px.bar(x + 0.2, [v * factor for v in periph], width=0.4, label="peripheral quiescent power")
    for xi, (a, b) in enumerate(zip(static, periph, strict=True)):
        px.annotate(si(a, "W"), (xi - 0.2, a * factor), ha="center", va="bottom", fontsize=7)
        px.annotate(si(b, "W") if b > 0 else "0", (xi + 0.2, b * factor), ha="center", va="bottom", fontsize=7)
    px.set_xticks(x, names, fontsize=8)
    px.set_ylabel(f"power during the phase ({unit})")
    px.set_title("power per phase (phase duration below)", fontsize=10)
    px.legend(fontsize=8, loc="center")
    assumptions = report.get("assumptions", [])
    fig.suptitle(f"{report['name']}: energy breakdown ({report['method']}, beta {report['beta']})")
    rect = (0, 0, 1, 0.96)
    if assumptions:
        lines = ["assumptions: " + assumptions[0], *(" " * 13 + a for a in assumptions[1:])]
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, va="bottom", family="monospace")
        rect = (0, 0.04 + 0.022 * len(lines), 1, 0.96)
    _save(fig, path, rect=rect)


def _si_scale(value: float, unit: str) -> tuple[float, str]:
    """The factor and unit (``1e3, "mW"``) that put ``value`` in [1, 1000)."""
    text = si(value, unit)
    prefix = text.split(" ")[-1][: -len(unit)]
    exponents = {"a": -18, "f": -15, "p": -12, "n": -9, "u": -6, "m": -3, "": 0, "k": 3}
    return 10.0 ** -exponents.get(prefix, 0), f"{prefix}{unit}"


def plot_waveforms(details: dict, path: str | Path, max_nodes: int = 6) -> None:
    """Settling of the last ``max_nodes`` free nodes (outputs first, named as in the netlist) in
    every phase of every block, for the first sample: the change from the phase's start, in volts
    for the free phase and millivolts for the nudged ones, the settle time marked and given; ngspice's
    ``.tran`` as circles where it ran. ``details`` maps a block name to its
    :class:`cosim.energy.PhaseResult` list."""
    from analog.circuit import node_name

    plt = _pyplot()
    n_rows = len(details)
    n_cols = max(len(r) for r in details.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.4 * n_cols, 3.4 * n_rows), squeeze=False)
    for i, (name, results) in enumerate(details.items()):
        for j, result in enumerate(results):
            ax = axes[i][j]
            tr = result.transient
            sizes = result.equilibrium.voltages
            flat = [(l + 1, k) for l, layer in enumerate(sizes) for k in range(layer.shape[1])]
            n = tr.voltages.shape[2]
            nodes = list(range(n - 1, max(n - 1 - max_nodes, -1), -1))  # output nodes first
            nudged = result.nudge_A is not None
            scale, unit = (1e3, "mV") if nudged else (1.0, "V")
            t_ns = tr.times_s * 1e9
            delta = (tr.voltages[:, 0] - tr.voltages[0, 0]) * scale
            for k, node in enumerate(nodes):
                ax.plot(t_ns, delta[:, node], color=f"C{k}", lw=1, label=node_name(*flat[node]))
            waves = result.ngspice.get("waves")
            if waves:
                w = waves[0]
                step = max(1, len(w.times_s) // 40)
                d = (w.voltages - w.voltages[0]) * scale
                for k, node in enumerate(nodes):
                    ax.plot(w.times_s[::step] * 1e9, d[::step, node], "o", ms=2.5, color=f"C{k}", mfc="none")
            settle = float(tr.settle_time_s[0])
            ax.axvline(settle * 1e9, color="k", ls="--", lw=0.8)
            ax.annotate(
                f"settled {si(settle, 's')}",
                (settle * 1e9, 0.95),
                xycoords=("data", "axes fraction"),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=7,
                va="top",
            )
            phase = {"+beta": "+beta (nudged)", "-beta": "-beta (nudged)"}.get(result.name, result.name)
            ax.set_title(f"{name} {phase}, sample 0" + (" (lines: fast, o: ngspice)" if waves else ""), fontsize=9)
            ax.set_xlabel("time (ns)")
            ax.set_ylabel(f"v(t) - v(0) ({unit})")
            ax.legend(fontsize=6, ncol=2)
        for j in range(len(results), n_cols):
            axes[i][j].axis("off")
    _save(fig, path, dpi=110)


def plot_convergence(details: dict, path: str | Path) -> None:
    """Fast-solver KCL residual per Newton iteration, one line per phase; next to it ngspice's DC and
    ``.tran`` iteration counts when ngspice ran (no empty panel otherwise)."""
    plt = _pyplot()
    ran = any(r.ngspice for results in details.values() for r in results)
    fig, axes = plt.subplots(1, 2 if ran else 1, figsize=(11 if ran else 6, 4), squeeze=False)
    ax = axes[0][0]
    labels, dc, tran = [], [], []
    for b, (name, results) in enumerate(details.items()):
        for result in results:
            history = result.equilibrium.history.get("residual_A", [])
            worst = [max(max(step), 1e-30) for step in history]
            phase = {"+beta": "positive", "-beta": "negative"}.get(result.name, "free")
            style, marker = _PHASE_STYLE[phase]
            ax.semilogy(
                range(len(worst)), worst, ls=style, marker=marker, ms=3, color=f"C{b}", label=f"{name} {result.name}"
            )
            labels.append(f"{name}\n{result.name}")
            dc.append(result.ngspice.get("dc_iterations", 0))
            tran.append(result.ngspice.get("tran_iterations", 0))
    ax.set_xlabel("Newton iteration (fast solver, float64)")
    ax.set_ylabel("largest KCL residual over the batch (A)")
    ax.set_title("fast solver: residual per iteration, each phase")
    ax.xaxis.set_major_locator(__import__("matplotlib.ticker").ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    if ran:
        bx = axes[0][1]
        x = range(len(labels))
        bx.bar([i - 0.2 for i in x], dc, width=0.4, label="DC (.dc sweep, whole batch)")
        bx.bar([i + 0.2 for i in x], tran, width=0.4, label=".tran (ngspice samples)")
        bx.set_xticks(list(x), labels, fontsize=7)
        bx.set_yscale("log")
        bx.set_ylabel("ngspice iterations")
        bx.set_title("ngspice iteration counts")
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
