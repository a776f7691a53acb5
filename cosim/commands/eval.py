"""``cosim eval``: a trained checkpoint under other conditions and device draws (corners, Monte
Carlo), without retraining."""

from __future__ import annotations

import json
from pathlib import Path

from cosim.cluster import Cluster
from cosim.commands.common import add_cluster_arguments, check_out_dir, operating_point_lines, say
from cosim.conditions import parse_condition
from cosim.corners import evaluate_checkpoint
from cosim.io import atomic_write_json

__all__ = ["register", "run"]

EVAL_FILE = "eval.json"


def run(args) -> int:
    out = check_out_dir(args.out)
    conditions = [parse_condition(text) for text in args.set]
    report = evaluate_checkpoint(
        args.checkpoint, conditions, args.solver, args.draws, args.samples, say=lambda m: say(m, args.json),
        cluster=Cluster(args.workers, args.scheduler),
    )  # fmt: skip
    atomic_write_json(out / EVAL_FILE, report)
    if args.json:
        print(json.dumps(report))
        return 0
    where = ", ".join(f"{k}={v}" for k, v in report["conditions"].items()) or "as trained"
    print(f"{report['samples']} test samples, {args.solver} solver, {where}")
    if report["draws"] > 1:
        print(
            f"test accuracy over {report['draws']} device draws: mean {100 * report['test_accuracy_mean']:.2f}%, "
            f"std {100 * report['test_accuracy_std']:.2f}, min {100 * report['test_accuracy_min']:.2f}%"
            + ("" if "test_top5_accuracy" not in report else f"; top-5 mean {100 * report['test_top5_accuracy']:.2f}%")
        )
    else:
        top5 = report.get("test_top5_accuracy")
        top5_text = "" if top5 is None else f" (top-5 {100 * top5:.2f}%)"
        print(f"test accuracy {100 * report['test_accuracy']:.2f}%{top5_text}, loss {report['loss']:.4f}")
    for block in report["blocks"]:
        print("\n".join(operating_point_lines(block["name"], block)))
    print(f"report: {out / EVAL_FILE}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained checkpoint under other conditions and device draws")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint.pt of a `cosim train` run")
    p.add_argument("--solver", choices=["auto", "fast", "fast-layerwise", "ngspice"], default="auto")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a condition, e.g. temperature_C=85, devices.d2d_sigma=0.1, model.blocks[0].wire_ohm=10 (repeatable)",
    )  # fmt: skip
    p.add_argument("--draws", type=int, default=1, help="device realisations (mean/std/min over them)")
    p.add_argument("--samples", type=int, default=0, help="test samples (0: all)")
    add_cluster_arguments(p, "the ngspice solves (--solver ngspice)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.add_argument("--out", type=Path, required=True, help="folder for eval.json")
    p.set_defaults(func=run)
