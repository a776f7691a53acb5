"""ngspice validation in one process and on a Dask LocalCluster, side by side: seconds per sample
per worker, wall time and the speed-up with ``--workers`` workers.

    python benchmarks/ngspice_cluster.py [--config mnist-drn-xs] [--samples 512] [--workers 2] [--json]

The model is the preset's block at its initial conductances (the time per sample does not depend
on training), classified on the first ``--samples`` test samples of the preset's data: first with
ngspice in this process (one ngspice worker), then with the samples cut into the solver's chunks
and spread over a LocalCluster (:mod:`cosim.ngspice_jobs`). Both must predict the same classes; the
benchmark says so. Run it on an otherwise idle machine: each worker needs a core of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cosim.build import build_model
from cosim.cluster import Cluster
from cosim.config import resolve_config
from cosim.data import load_dataset
from cosim.evaluate import ngspice_validation


def measure(config_name: str, samples: int, workers: int) -> dict:
    config = resolve_config(config_name)
    data = load_dataset(config.data, config.seed.data)
    model = build_model(config, data.input_shape, n_classes=data.n_classes)
    report: dict = {"config": config_name, "samples": samples, "workers": workers}
    for where, cluster in (("here", Cluster()), ("cluster", Cluster(workers=workers))):
        start = time.perf_counter()
        check = ngspice_validation(model, data.test_x, data.test_y, "cpu", torch.float64, samples, config, cluster)
        if check.get("ngspice_error"):
            raise RuntimeError(f"{where}: {check['ngspice_error']}")
        report[f"wall_s_{where}"] = time.perf_counter() - start
        report[f"ngspice_accuracy_{where}"] = check["ngspice_test_accuracy"]
    report["s_per_sample_one_worker"] = report["wall_s_here"] / samples
    report["s_per_sample_cluster"] = report["wall_s_cluster"] / samples
    report["s_per_sample_per_worker_cluster"] = workers * report["wall_s_cluster"] / samples
    report["speedup"] = report["wall_s_here"] / report["wall_s_cluster"]
    report["same_accuracy"] = report["ngspice_accuracy_here"] == report["ngspice_accuracy_cluster"]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="mnist-drn-xs")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = measure(args.config, args.samples, args.workers)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"{args.config}, {args.samples} test samples: one process {report['wall_s_here']:.1f} s "
        f"({report['s_per_sample_one_worker']:.3f} s/sample); LocalCluster of {args.workers} workers "
        f"{report['wall_s_cluster']:.1f} s ({report['s_per_sample_cluster']:.3f} s/sample, "
        f"{report['s_per_sample_per_worker_cluster']:.3f} s/sample per worker); speed-up "
        f"{report['speedup']:.2f}x; same accuracy: {report['same_accuracy']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
