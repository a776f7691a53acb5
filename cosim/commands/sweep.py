"""``cosim sweep``: a Monte Carlo sweep of configuration values x seeds on Dask (resumable)."""

from __future__ import annotations

import sys
from pathlib import Path

from cosim.commands.common import CONFIG_HELP, add_set_argument, overrides, say
from cosim.config import ConfigError, resolve_config_path
from cosim.sweep import METRICS, SEED_KINDS, Sweep, SweepError, parse_grid, run_sweep

__all__ = ["register", "run"]


def run(args) -> int:
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    grid = [parse_grid(g) for g in args.grid]
    if args.metric == "eval":
        if args.config is not None:
            raise ConfigError("--config: an evaluation sweep takes its configuration from --checkpoint; omit --config")
        if args.set:
            raise ConfigError("--set: an evaluation sweep's conditions are its --grid keys; move them there")
        sweep = Sweep(None, str(args.checkpoint), grid, args.seeds, args.metric, checkpoint=args.checkpoint)
    else:
        if args.config is None or args.checkpoint is not None:
            raise ConfigError(
                f"--config: --metric {args.metric} sweeps a configuration (give --config, not --checkpoint)"
            )
        path = resolve_config_path(args.config)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        sweep = Sweep(
            path.read_text(encoding="utf-8"), str(path), grid, args.seeds, args.metric, vary=args.vary,
            overrides=overrides(args),
        )  # fmt: skip
    try:
        ran = run_sweep(sweep, args.out, args.scheduler, args.workers, say=say, force=args.force)
    except SweepError as exc:
        print(f"cosim sweep: {exc}", file=sys.stderr)
        return 3
    say(f"sweep: ran {len(ran)} rows")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="Monte Carlo sweep of config values x seeds on Dask (resumable)")
    p.add_argument("--config", default=None, help=f"base configuration (gradcheck, train): {CONFIG_HELP}")
    p.add_argument("--checkpoint", type=Path, default=None, help="trained checkpoint.pt (--metric eval)")
    add_set_argument(p)
    p.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=[v1,v2,...]",
        help="swept key (repeatable); with --metric eval a condition (see cosim eval --set)",
    )
    p.add_argument("--seeds", type=int, default=3, help="runs per grid point, differing in the --vary seed")
    p.add_argument(
        "--vary", choices=list(SEED_KINDS), default="devices",
        help="which seed the --seeds runs differ in: device draws (default), initialisation, data split, or all",
    )  # fmt: skip
    p.add_argument("--metric", choices=list(METRICS), default="gradcheck")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerun to resume)")
    p.add_argument(
        "--force", action="store_true", help="start the folder over: remove its rows, results and plots first"
    )
    p.set_defaults(func=run)
