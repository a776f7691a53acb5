"""``cosim gradcheck``: EP vs the exact gradient for every parameter and beta."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cosim.build import build_model, build_solver
from cosim.cluster import Cluster
from cosim.commands.common import CONFIG_HELP, add_cluster_arguments, add_set_argument, check_out_file, overrides, say
from cosim.config import ConfigError, resolve_config
from cosim.data import load_dataset
from cosim.fidelity import fidelity_table
from cosim.gradcheck import gradcheck
from cosim.losses import make_loss
from cosim.ngspice_jobs import ModelState, spread_gradients
from cosim.plots import plot_gradcheck

__all__ = ["register", "run"]


def run(args) -> int:
    config = resolve_config(args.config, overrides(args))
    if args.plot is not None:
        check_out_file(args.plot, "--plot")
    cluster = Cluster(args.workers, args.scheduler)
    if cluster.spread and (args.solver != "ngspice" or args.fidelity):
        raise ConfigError(
            "--workers/--scheduler: a cluster spreads the ngspice solves of a gradient check; give --solver "
            "ngspice (without --fidelity, which runs in this process)"
        )
    cluster = cluster.checked()
    data = load_dataset(config.data, config.seed.data)
    if args.fidelity:
        return _fidelity(args, config, data)
    progress = lambda m: say(m, args.json)  # noqa: E731
    # On a cluster its tasks solve; this process only builds the model.
    local = "fast" if cluster.spread else args.solver
    with build_solver(config.solver, local) as solver, cluster.spread_client() as client:
        model = build_model(config, data.input_shape, solver=solver, n_classes=data.n_classes)
        n = config.gradcheck.samples
        x, y = data.train_x[:n].to(next(model.parameters()).dtype), data.train_y[:n]
        loss_fn = make_loss(config.train.loss, y, data.n_classes)
        betas = args.betas or config.gradcheck.betas
        spread = None
        if client is not None:
            state = ModelState.of(model, config, data.input_shape, data.n_classes, float64=False)
            spread = spread_gradients(client, state, config.train.loss, x, y, config.solver, progress)
        result = gradcheck(model, loss_fn, x, betas, config.gradcheck.methods, progress=progress, gradients=spread)
    if args.plot:
        plot_gradcheck(result.table(), result.slopes, args.plot)
    if args.json:
        print(
            json.dumps(
                {
                    "results": result.rows,
                    "slope_centered": result.slope_centered,
                    "slope_one_sided": result.slope_one_sided,
                }
            )
        )
        return 0
    print(f"{'method':12s} {'beta':>8s} {'cosine':>12s} {'rel_error':>10s}   (all parameters)")
    for row in result.table():
        print(f"{row['method']:12s} {row['beta']:8.4g} {row['cosine']:12.8f} {row['rel_error']:10.3e}")
    print(f"slope of rel. error vs beta: centered {result.slope_centered:.3f}, one-sided {result.slope_one_sided:.3f}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _fidelity(args, config, data) -> int:
    beta = (args.betas or config.gradcheck.betas)[0]
    with build_solver(config.solver, args.solver) as solver:
        rows = fidelity_table(
            args.config, overrides(args), config, data, solver, beta, progress=lambda m: say(m, args.json)
        )
    if args.json:
        print(json.dumps({"beta": beta, "method": "ep-centered", "fidelity": rows}))
        return 0
    print(f"EP (centered, beta={beta:g}) vs the exact gradient of each circuit, all parameters")
    print(f"{'non-ideality':22s} {'value':>10s} {'cosine':>12s} {'rel_error':>10s} {'output shift':>13s}")
    for row in rows:
        key = "ideal" if row["key"] is None else row["key"]
        value = "" if row["value"] is None else f"{row['value']:g}"
        print(f"{key:22s} {value:>10s} {row['cosine']:12.8f} {row['rel_error']:10.3e} {row['output_shift']:13.3e}")
    if not any(str(r["key"]).startswith("amp_") for r in rows):
        print("(amplifier keys skipped: not every analog block has amplifiers)")
    if any(block.type == "analog-conv" for block in config.model.blocks):
        print("(the settings go to the dense analog blocks; conv analog blocks keep ideal peripherals)")
    return 0


def _positive_floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--betas: expected numbers like '0.1,0.05', got {text!r}") from None
    if not values or any(not (0 < v <= 1) for v in values):
        raise argparse.ArgumentTypeError(f"--betas: every beta must be in (0, 1], got {text!r}")
    return values


def register(sub) -> None:
    p = sub.add_parser("gradcheck", help="compare EP gradients with the exact gradient, per parameter and beta")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    add_set_argument(p)
    p.add_argument(
        "--solver",
        choices=["auto", "fast", "fast-layerwise", "ngspice"],
        default="fast",
        help="equilibrium solver (default: fast, Newton, converged to rounding: the layer sweeps of "
        "'auto' stop at 1e-12 V, the floor of the smallest EP errors on nearly linear blocks)",
    )
    p.add_argument("--betas", type=_positive_floats, default=None, help="e.g. '0.2,0.1,0.05'")
    add_cluster_arguments(p, "the gradients with --solver ngspice (one task per method and beta)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="PNG of relative error vs beta")
    p.add_argument(
        "--fidelity",
        action="store_true",
        help="EP vs exact for each peripheral non-ideality (driver/amplifier resistances, offset, swing, "
        "nudging-source resistance and compliance) at the first beta",
    )
    p.set_defaults(func=run)
