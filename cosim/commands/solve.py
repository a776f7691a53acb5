"""``cosim solve``: solve a batch of one analog block with the fast solver, ngspice or both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from analog.circuit import Circuit
from analog.conv_circuit import ConvCircuit
from analog.operating_point import conv_operating_point, operating_point
from cosim.block import check_kcl
from cosim.build import build_conv_solver, build_solver, torch_dtype
from cosim.commands.common import (
    CONFIG_HELP,
    add_set_argument,
    check_out_dir,
    operating_point_lines,
    overrides,
    say,
)
from cosim.config import AnalogBlockConfig, ConfigError, RunConfig, resolve_config
from cosim.data import load_dataset
from cosim.io import atomic_write_json
from cosim.limits import check_memory
from cosim.model_config import AnalogConvBlockConfig

__all__ = ["register", "run"]

SOLVE_FILE = "solve.json"


def _analog_config(config: RunConfig, index: int) -> AnalogBlockConfig | AnalogConvBlockConfig:
    analog = [b for b in config.model.blocks if isinstance(b, AnalogBlockConfig | AnalogConvBlockConfig)]
    if index >= len(analog):
        raise ConfigError(f"solve.block: the model has {len(analog)} analog block(s), got index {index}")
    return analog[index]


def _inputs(config: RunConfig, n_inputs: int, dtype: torch.dtype) -> torch.Tensor:
    n = config.solve.samples
    if config.solve.inputs == "random":
        return torch.rand(n, n_inputs, generator=torch.Generator().manual_seed(config.seed.init), dtype=dtype)
    data = load_dataset(config.data, config.seed.data)
    x = data.test_x[:n].flatten(1).to(dtype)
    if x.shape[1] != n_inputs:
        raise ConfigError(
            f"solve.inputs = 'data': block {config.solve.block} takes {n_inputs} inputs but "
            f"{config.data.dataset} samples have {x.shape[1]}; use solve.inputs = 'random'"
        )
    return x


def run(args) -> int:
    config = resolve_config(args.config, overrides(args))
    out = check_out_dir(args.out) if args.out is not None else None
    block = _analog_config(config, config.solve.block)
    spec = block.circuit_spec()
    dtype = torch_dtype(config)
    conv = isinstance(block, AnalogConvBlockConfig)
    if conv:
        circuit, solvers = ConvCircuit.random(spec, seed=config.seed.init, dtype=dtype), build_conv_solver
    else:
        where = f"analog block {config.solve.block} sizes"
        check_memory([spec], dtype, config.solve.samples, torch.device("cpu"), where)
        circuit, solvers = Circuit.random(spec, seed=config.seed.init, dtype=dtype), build_solver
    x = _inputs(config, spec.n_inputs, dtype)
    source_V = spec.source_voltages(x)
    names = ["fast", "ngspice"] if args.solver == "both" else [args.solver]
    report: dict = {
        "samples": int(x.shape[0]),
        "nodes": sum(spec.layer_sizes[1:]),
        "layer_sizes": list(spec.layer_sizes),
    }
    results = {}
    for name in names:
        with solvers(config.solver, name) as solver:
            if name != "ngspice":
                solver.solve(circuit, source_V)  # warm-up: first-call allocations are not the solver
            start = time.perf_counter()
            eq = solver.solve(circuit, source_V)
            elapsed = time.perf_counter() - start
        check_kcl(eq, spec, f"analog block {config.solve.block}")
        results[name] = eq
        report[f"{name}_ms_per_sample"] = 1e3 * elapsed / x.shape[0]
        report[f"{name}_iterations"] = eq.iterations
        report[f"{name}_residual_A"] = float(eq.residual_A.max())
        say(
            f"{name:8s} {x.shape[0]} samples in {elapsed * 1e3:.1f} ms "
            f"({1e3 * elapsed / x.shape[0]:.3f} ms/sample), {eq.iterations} iterations, "
            f"KCL residual {float(eq.residual_A.max()):.2e} A",
            args.json,
        )
    if len(results) == 2:
        diff = (results["fast"].all_voltages().double() - results["ngspice"].all_voltages().double()).abs()
        report["max_abs_diff_V"] = float(diff.max())
        report["mean_abs_diff_V"] = float(diff.mean())
        say(
            f"agreement: max |V_fast - V_ngspice| = {report['max_abs_diff_V']:.3e} V over {diff.numel()} node voltages",
            args.json,
        )
    if conv:
        op = conv_operating_point(circuit, results[names[0]])
    else:
        op = operating_point(circuit, source_V, results[names[0]])
    report["operating_point"] = op
    if not args.json:
        print(f"operating point ({names[0]} solver, free phase):")
        print("\n".join(operating_point_lines(f"block {config.solve.block}", op)))
    if out is not None:
        atomic_write_json(out / SOLVE_FILE, report)
        say(f"report: {out / SOLVE_FILE}", args.json)
    if args.json:
        print(json.dumps(report))
    else:
        output = results[names[0]].output
        say(f"output voltages of sample 0: {[round(v, 6) for v in output[0].tolist()]}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("solve", help="solve a batch of one analog block with the fast solver, ngspice or both")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    add_set_argument(p)
    p.add_argument("--solver", choices=["auto", "fast", "fast-layerwise", "ngspice", "both"], default="both")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", type=Path, default=None, help="folder for solve.json (the report)")
    p.set_defaults(func=run)
