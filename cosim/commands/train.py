"""``cosim train``: train an ff-EBM end to end, then validate the trained model in ngspice."""

from __future__ import annotations

from pathlib import Path

from cosim.checkpoint import CHECKPOINT_FILE
from cosim.cluster import Cluster
from cosim.commands.common import CONFIG_HELP, add_cluster_arguments, add_set_argument, overrides, say
from cosim.runs import CURVES_PLOT, SOLVER_PLOT, SUMMARY_FILE, open_run, start_run
from cosim.training import finish, train

__all__ = ["register", "run"]


def run(args) -> int:
    cluster = Cluster(args.workers, args.scheduler).checked()  # before the training, not after it
    run = open_run(
        args.config, args.resume, args.out, args.force, args.epochs, args.device, args.solver, overrides(args)
    )
    try:
        start_run(run, fresh=args.resume is None)
    except BaseException:
        run.close()
        raise
    config, data = run.config, run.data
    say(
        f"{'resuming' if run.rows else 'training'} {config.name} in {run.run_dir}: {data.name} "
        f"({len(data.train_y)} train / {len(data.test_y)} test), {config.train.epochs} epochs, "
        f"batch {config.train.batch_size}, {config.train.method} beta={config.train.beta}, "
        f"{run.solver.name} solver on {run.device}" + (f", from epoch {run.epochs_done + 1}" if run.rows else "")
    )
    try:
        train(run, say=say)
        summary, code = finish(run, ngspice=not args.no_ngspice, say=say, cluster=cluster)
    except FloatingPointError as exc:
        say(f"cosim train: {exc} (last checkpoint: {run.run_dir / CHECKPOINT_FILE})")
        return 3
    except KeyboardInterrupt:
        say(f"cosim train: resume with `cosim train --resume {run.run_dir}`")
        raise
    finally:
        run.close()
    print(
        f"test accuracy {100 * summary['test_accuracy']:.2f}% after {summary['epochs']} epochs "
        f"({summary['seconds_per_epoch']:.1f} s/epoch)"
    )
    print(f"plots: {run.run_dir / CURVES_PLOT}, {run.run_dir / SOLVER_PLOT}")
    print(f"summary: {run.run_dir / SUMMARY_FILE}")
    return code


def register(sub) -> None:
    p = sub.add_parser("train", help="train an ff-EBM (EP in analog blocks), then validate it in ngspice")
    p.add_argument("--config", default=None, help=CONFIG_HELP)
    add_set_argument(p)
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--force", action="store_true", help="overwrite the outputs of a run already in the directory")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--device", default=None, help="cpu or cuda (override the config's device)")
    p.add_argument(
        "--solver",
        choices=["auto", "fast", "fast-layerwise", "ngspice"],
        default=None,
        help="training solver (default: config)",
    )
    p.add_argument("--no-ngspice", action="store_true", help="skip the ngspice validation after training")
    add_cluster_arguments(p, "the ngspice validation after training")
    p.set_defaults(func=run)
