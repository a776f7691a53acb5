"""End-to-end CLI: `cosim solve` and `cosim gradcheck` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ngspice_available


def cosim(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cosim.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.ngspice
def test_solve_both_reports_agreement_as_json():
    if ngspice_available():
        pytest.skip(ngspice_available())
    proc = cosim("solve", "--config", "solve-64-32-10", "--solver", "both", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("max_abs_diff_V", "samples", "nodes", "fast_ms_per_sample", "ngspice_ms_per_sample"):
        assert key in report
    assert report["samples"] == 64 and report["nodes"] == 42
    assert report["max_abs_diff_V"] <= 1e-8
    assert report["fast_residual_A"] <= 1e-12


@pytest.mark.slow
def test_gradcheck_json_and_plot(tmp_path):
    plot = tmp_path / "err.png"
    proc = cosim("gradcheck", "--config", "gradcheck-ffebm", "--betas", "0.1,0.05,0.025", "--json", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"results", "slope_centered", "slope_one_sided"} <= set(report)
    row = report["results"][0]
    assert {"param", "method", "beta", "cosine", "rel_error"} <= set(row)
    assert 1.8 <= report["slope_centered"] <= 2.2 and 0.8 <= report["slope_one_sided"] <= 1.2
    assert plot.stat().st_size > 1000


@pytest.mark.slow
def test_missing_config_exits_2_without_traceback():
    proc = cosim("solve", "--config", "no-such-config.toml")
    assert proc.returncode == 2
    assert "config file not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bad_beta_list_exits_2():
    proc = cosim("gradcheck", "--config", "gradcheck-ffebm", "--betas", "0.1,abc")
    assert proc.returncode == 2 and "--betas" in proc.stderr
