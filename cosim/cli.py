"""The ``cosim`` command line: ``solve``, ``gradcheck``, ``train`` and friends.

Exit codes: 0 success; 2 bad input (configuration, data, files), with a one-paragraph message and
no traceback; 3 a solver that failed on valid input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from analog.circuit import Circuit
from analog.solvers.base import SolverError
from cosim.config import ConfigError, RunConfig, load_config
from cosim.energy import add_energy_command
from cosim.export import add_netlist_command
from cosim.train import add_train_command

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config(name: str) -> RunConfig:
    """A path to a TOML file, or the name of a preset in ``configs/`` (``digits-demo``)."""
    path = Path(name)
    if not path.exists() and not name.endswith(".toml") and (CONFIG_DIR / f"{name}.toml").exists():
        path = CONFIG_DIR / f"{name}.toml"
    return load_config(path)


def _say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _analog_config(config: RunConfig, index: int):
    analog = [b for b in config.model.blocks if b.type == "analog"]
    if index >= len(analog):
        raise ConfigError(f"solve.block: the model has {len(analog)} analog block(s), got index {index}")
    return analog[index]


def cmd_solve(args) -> int:
    from cosim.build import build_solver, circuit_spec, torch_dtype

    config = resolve_config(args.config)
    spec = circuit_spec(_analog_config(config, config.solve.block))
    dtype = torch_dtype(config)
    circuit = Circuit.random(spec, seed=config.seed, dtype=dtype)
    n = config.solve.samples
    if config.solve.inputs == "data":
        from cosim.data import load_dataset

        data = load_dataset(config.data, config.seed)
        x = data.test_x[:n].flatten(1).to(dtype)
        if x.shape[1] != spec.n_inputs:
            raise ConfigError(
                f"solve.inputs = 'data': block {config.solve.block} takes {spec.n_inputs} inputs but "
                f"{config.data.dataset} samples have {x.shape[1]}; use solve.inputs = 'random'"
            )
    else:
        gen = torch.Generator().manual_seed(config.seed)
        x = torch.rand(n, spec.n_inputs, generator=gen, dtype=dtype)
    source_V = spec.source_voltages(x)
    names = ["fast", "ngspice"] if args.solver == "both" else [args.solver]
    report: dict = {
        "samples": int(x.shape[0]),
        "nodes": sum(spec.layer_sizes[1:]),
        "layer_sizes": list(spec.layer_sizes),
    }
    results = {}
    for name in names:
        solver = build_solver(config.solver, name)
        try:
            if name == "fast":
                solver.solve(circuit, source_V)  # warm-up: first-call allocations are not the solver
            start = time.perf_counter()
            eq = solver.solve(circuit, source_V)
            elapsed = time.perf_counter() - start
        finally:
            close = getattr(solver, "close", None)
            if close:
                close()
        results[name] = eq
        report[f"{name}_ms_per_sample"] = 1e3 * elapsed / x.shape[0]
        report[f"{name}_iterations"] = eq.iterations
        report[f"{name}_residual_A"] = float(eq.residual_A.max())
        _say(
            f"{name:8s} {x.shape[0]} samples in {elapsed * 1e3:.1f} ms "
            f"({1e3 * elapsed / x.shape[0]:.3f} ms/sample), {eq.iterations} iterations, "
            f"KCL residual {float(eq.residual_A.max()):.2e} A",
            args.json,
        )
    if len(results) == 2:
        diff = (results["fast"].all_voltages().double() - results["ngspice"].all_voltages().double()).abs()
        report["max_abs_diff_V"] = float(diff.max())
        report["mean_abs_diff_V"] = float(diff.mean())
        _say(
            f"agreement: max |V_fast - V_ngspice| = {report['max_abs_diff_V']:.3e} V over {diff.numel()} node voltages",
            args.json,
        )
    if args.json:
        print(json.dumps(report))
    else:
        out = results[names[0]].output
        _say(f"output voltages of sample 0: {[round(v, 6) for v in out[0].tolist()]}")
    return 0


def cmd_gradcheck(args) -> int:
    from cosim.build import build_model, build_solver
    from cosim.data import load_dataset
    from cosim.gradcheck import gradcheck, plot_gradcheck
    from cosim.losses import make_loss

    config = resolve_config(args.config)
    data = load_dataset(config.data, config.seed)
    solver = build_solver(config.solver, args.solver)
    try:
        model = build_model(config, data.input_shape, solver=solver)
        n = config.gradcheck.samples
        x = data.train_x[:n].to(next(model.parameters()).dtype)
        y = data.train_y[:n]
        loss_fn = make_loss(config.train.loss, y, data.n_classes)
        betas = args.betas or config.gradcheck.betas
        result = gradcheck(model, loss_fn, x, betas, config.gradcheck.methods, progress=lambda m: _say(m, args.json))
    finally:
        close = getattr(solver, "close", None)
        if close:
            close()
    if args.plot:
        plot_gradcheck(result, args.plot)
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
    else:
        print(f"{'method':12s} {'beta':>8s} {'cosine':>12s} {'rel_error':>10s}   (all parameters)")
        for row in result.table():
            print(f"{row['method']:12s} {row['beta']:8.4g} {row['cosine']:12.8f} {row['rel_error']:10.3e}")
        print(
            f"slope of rel. error vs beta: centered {result.slope_centered:.3f}, one-sided {result.slope_one_sided:.3f}"
        )
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def cmd_sweep(args) -> int:
    from cosim.sweep import Sweep, SweepError, parse_grid, run_sweep

    path = Path(args.config)
    if not path.exists() and (CONFIG_DIR / f"{args.config}.toml").exists():
        path = CONFIG_DIR / f"{args.config}.toml"
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    grid = [parse_grid(g) for g in args.grid]
    sweep = Sweep(path.read_text(encoding="utf-8"), str(path), grid, args.seeds, args.metric)
    try:
        ran = run_sweep(sweep, args.out, args.scheduler, args.workers, say=lambda m: _say(m))
    except SweepError as exc:
        print(f"cosim sweep: {exc}", file=sys.stderr)
        return 3
    _say(f"sweep: ran {len(ran)} rows")
    return 0


def _positive_floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--betas: expected numbers like '0.1,0.05', got {text!r}") from None
    if not values or any(not (0 < v <= 1) for v in values):
        raise argparse.ArgumentTypeError(f"--betas: every beta must be in (0, 1], got {text!r}")
    return values


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is already 2; keep its message short
        self.print_usage(sys.stderr)
        self.exit(2, f"cosim: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cosim", description="Circuit-level co-simulation of ff-EBMs trained with EP.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("solve", help="solve a batch of one analog block with the fast solver, ngspice or both")
    p.add_argument("--config", required=True, help="TOML file or preset name (configs/NAME.toml)")
    p.add_argument("--solver", choices=["fast", "ngspice", "both"], default="both")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("gradcheck", help="compare EP gradients with the exact gradient, per parameter and beta")
    p.add_argument("--config", required=True)
    p.add_argument("--solver", choices=["fast", "ngspice"], default="fast")
    p.add_argument("--betas", type=_positive_floats, default=None, help="e.g. '0.2,0.1,0.05'")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="PNG of relative error vs beta")
    p.set_defaults(func=cmd_gradcheck)

    add_train_command(sub)

    add_energy_command(sub)

    p = sub.add_parser("sweep", help="Monte Carlo sweep of config values x seeds on Dask (resumable)")
    p.add_argument("--config", required=True, help="base configuration (TOML file or preset name)")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=[v1,v2,...]", help="swept key (repeatable)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--metric", choices=["gradcheck", "train"], default="gradcheck")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerun to resume)")
    p.set_defaults(func=cmd_sweep)

    add_netlist_command(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"cosim {args.command}: {exc}", file=sys.stderr)
        return 2
    except SolverError as exc:
        print(f"cosim {args.command}: solver failed: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"cosim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
