"""The netlist builder: golden netlists, element inventory, and a plain `ngspice -b` run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import torch

from analog.circuit import Circuit, CircuitSpec
from analog.netlist import build_batch, build_operating_point, netlist_text, probes
from tests.golden import REGENERATE, golden_circuits

ROOT = Path(__file__).resolve().parents[1]


def _elements(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and not line.startswith((".", "*"))]


@pytest.mark.parametrize("name", sorted(golden_circuits()))
def test_golden_netlist_is_unchanged(name):
    circuit, source_V, nudge_A = golden_circuits()[name]
    text = netlist_text(build_operating_point(circuit, source_V, nudge_A))
    golden = (ROOT / "netlists" / f"{name}.cir").read_text()
    assert text == golden, (
        f"netlists/{name}.cir differs from what analog.netlist builds now. If the builder changed "
        f"on purpose, regenerate the golden netlists with `{REGENERATE}` (from the repository root) "
        "and review the diff."
    )


def test_small_netlist_inventory():
    circuit, _, _ = golden_circuits()["golden_small"]
    spec = circuit.spec  # (2, 3, 2), pairs, bias, both diodes, nudged
    elements = _elements((ROOT / "netlists" / "golden_small.cir").read_text())
    kinds = Counter(e[0][0] for e in elements)
    weights = sum(a * b for a, b in spec.weight_shapes())
    biases = sum(a * b for a, b in spec.bias_shapes())
    free = sum(spec.layer_sizes[1:])
    assert kinds["R"] == weights + biases == 4 * 3 + 3 * 2 + 2 * 3 + 2 * 2
    assert kinds["D"] == 2 * free
    # inputs (2 pairs) + 2 bias sources per layer + 2 rails; one nudging current per output
    assert kinds["V"] == 4 + 2 * 2 + 2
    assert kinds["I"] == 2
    assert kinds["E"] == kinds["F"] == kinds["B"] == 0
    by_name = {e[0]: e[1:] for e in elements}
    assert by_name["RW0_3_2"][:2] == ["L0_N3", "L1_N2"]
    assert by_name["RB1_1_0"][:2] == ["L1_BN", "L2_N0"]
    assert by_name["VB1N"] == ["L1_BN", "0", "-1.0"]
    assert by_name["DUP_L2_N1"] == ["L2_N1", "RAIL_UP", "DNEURON"]
    assert by_name["DDN_L1_N0"] == ["RAIL_DN", "L1_N0", "DNEURON"]
    assert by_name["VRAIL_UP"] == ["RAIL_UP", "0", "0.3"]
    assert by_name["INUDGE1"][:2] == ["0", "L2_N1"]
    assert float(by_name["RW0_0_0"][2]) == pytest.approx(1 / circuit.weights[0][0, 0].item(), rel=1e-15)
    text = (ROOT / "netlists" / "golden_small.cir").read_text()
    assert ".model DNEURON D (EG=1.11 IS=1e-14 N=1.0 TNOM=27.0 XTI=3.0)" in text
    for option in ("TEMP = 27.0", "TNOM = 27.0", "gmin = 1e-12", "reltol = 1e-09", "bypass = 0"):
        assert f".options {option}" in text
    assert text.rstrip().endswith(".op\n.end")


def test_amplifier_netlist_inventory():
    circuit, _, _ = golden_circuits()["golden_amp"]
    assert circuit.spec.layer_sizes == (2, 3, 3, 2) and circuit.spec.amplifier_gains == (4.0, None)
    elements = _elements((ROOT / "netlists" / "golden_amp.cir").read_text())
    kinds = Counter(e[0][0] for e in elements)
    assert kinds["E"] == kinds["F"] == 3
    assert kinds["D"] == 3 + 3 + 2
    assert not any(e[0].startswith("DDN") or e[0] == "VRAIL_DN" for e in elements)
    by_name = {e[0]: e[1:] for e in elements}
    for j in range(3):
        assert by_name[f"EAMP_L1_N{j}"] == [f"L1_A{j}", "0", f"L1_N{j}", "0", "4.0"]
        assert by_name[f"VSENSE_L1_N{j}"] == [f"L1_A{j}", f"L1_X{j}", "0.0"]
        assert by_name[f"FAMP_L1_N{j}"] == [f"L1_N{j}", "0", f"VSENSE_L1_N{j}", "0.25"]
        for k in range(3):  # the crossbar after the amplifier hangs on the sense side
            assert by_name[f"RW1_{j}_{k}"][:2] == [f"L1_X{j}", f"L2_N{k}"]
    assert by_name["RW2_0_0"][:2] == ["L2_N0", "L3_N0"]  # no amplifier after layer 2


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_deck_sweeps_the_samples(batch):
    spec = CircuitSpec(layer_sizes=(2, 2, 1))
    circuit = Circuit.random(spec, seed=3)
    source_V = torch.arange(batch * spec.n_sources, dtype=torch.float64).reshape(batch, -1) / 10
    nudge_A = torch.full((batch, 1), 1e-7, dtype=torch.float64)
    text = netlist_text(build_batch(circuit, source_V, nudge_A))
    assert f".dc VIDX 0 {batch - 1} 1" in text
    by_name = {e[0]: e[1:] for e in _elements(text)}
    assert by_name["VIDX"] == ["IDX", "0", "0.0"]
    values = [repr(float(v)) for v in source_V[:, 1]] * (2 if batch == 1 else 1)
    points = ", ".join(f"{b}, {v}" for b, v in enumerate(values))
    assert " ".join(by_name["BIN1"]) == f"L0_N1 0 v=pwl(v(IDX), {points})"
    assert by_name["BNUDGE0"][:2] == ["0", "L2_N0"]
    assert probes(circuit, batched=True).input_currents[1] == "bin1#branch"


def test_values_keep_full_double_precision():
    spec = CircuitSpec(layer_sizes=(1, 1), input_pairs=False, diode_up_V=None, diode_down_V=None)
    circuit = Circuit.random(spec, seed=0)
    x = 0.1 + 0.2  # 0.30000000000000004
    text = netlist_text(build_batch(circuit, torch.tensor([[x], [1 / 3]], dtype=torch.float64)))
    assert "0.30000000000000004" in text and "0.3333333333333333" in text
    assert "DNEURON" not in text  # no diodes, no model card


def test_bad_shapes_are_refused():
    circuit = Circuit.random(CircuitSpec(layer_sizes=(2, 2)), seed=0)
    with pytest.raises(ValueError, match=r"source voltages: expected shape \[batch >= 1, 4\]"):
        build_batch(circuit, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="nudging currents"):
        build_batch(circuit, torch.zeros(3, 4, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN/inf"):
        build_operating_point(circuit, torch.tensor([0.0, float("nan"), 0.0, 0.0], dtype=torch.float64))


def _read_ascii_raw(path: Path) -> dict[str, float]:
    """Vectors of a one-point ngspice ASCII raw file (``SPICE_ASCIIRAWFILE=1``)."""
    lines = path.read_text().splitlines()
    start = lines.index("Variables:") + 1
    count = int(next(line for line in lines if line.startswith("No. Variables:")).split(":")[1])
    names = [lines[start + k].split()[1].lower() for k in range(count)]
    values_at = lines.index("Values:") + 1
    raw = " ".join(lines[values_at : values_at + count]).split()[1:]  # drop the point index
    return {n: float(v) for n, v in zip(names, raw, strict=True)}


@pytest.mark.ngspice
@pytest.mark.skipif(
    shutil.which("ngspice") is None, reason="the ngspice program is not installed (apt-get install ngspice)"
)
def test_golden_netlist_runs_in_plain_ngspice(tmp_path, ngspice_solver):
    from analog.ngspice import ngspice_library

    if ngspice_library() is None:
        pytest.skip("libngspice is not installed (apt-get install ngspice libngspice0 libngspice0-dev)")
    raw = tmp_path / "golden_small.raw"
    result = subprocess.run(
        ["ngspice", "-b", "-r", str(raw), str(ROOT / "netlists" / "golden_small.cir")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SPICE_ASCIIRAWFILE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"error", result.stderr, re.IGNORECASE), result.stderr
    batch_vectors = _read_ascii_raw(raw)

    circuit, source_V, nudge_A = golden_circuits()["golden_small"]
    eq = ngspice_solver.solve(circuit, source_V[None], nudge_A[None])
    assert batch_vectors["v(l2_n1)"] == pytest.approx(eq.voltages[1][0, 1].item(), abs=1e-12)
    assert -batch_vectors["i(vin0)"] == pytest.approx(eq.input_currents_A[0, 0].item(), abs=1e-15)


def _bulk_cases():
    cases = {name: case for name, case in golden_circuits().items()}
    spec = CircuitSpec(layer_sizes=(5, 7, 4, 3), amplifier_gains=(2.0, None), diode_down_V=None)
    circuit = Circuit.random(spec, seed=21)
    # Edge values of the device range and conductances whose reciprocals print with an exponent.
    w0 = circuit.weights[0].clone()
    w0[0, :3] = torch.tensor([spec.conductance.g_min_S, spec.conductance.g_max_S, 1 / 3 * 1e-5])
    circuit = Circuit(spec, (w0, *circuit.weights[1:]), circuit.biases)
    x = torch.rand((1, spec.n_inputs), generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    cases["random"] = (circuit, spec.source_voltages(x)[0], None)
    return cases


@pytest.mark.parametrize("name", ["golden_amp", "golden_small", "random"])
def test_bulk_resistor_lines_equal_pyspice_elements(name):
    """The raw-SPICE resistor path prints exactly PySpice's element lines (names, values, order);
    PySpice places raw SPICE right after the title, so that is the only difference in the deck."""
    circuit, source_V, nudge_A = _bulk_cases()[name]
    spec = circuit.spec
    batch_nudge = None if nudge_A is None else nudge_A[None].repeat(3, 1)
    for build, args in (
        (build_operating_point, (circuit, source_V, nudge_A)),
        (build_batch, (circuit, source_V[None].repeat(3, 1), batch_nudge)),
    ):
        elementwise = netlist_text(build(*args, bulk=False)).splitlines()
        bulk = netlist_text(build(*args, bulk=True)).splitlines()
        resistors = [line for line in elementwise if line.startswith("R")]
        assert len(resistors) == sum(a * b for a, b in (*spec.weight_shapes(), *spec.bias_shapes()))
        others = [line for line in elementwise if not line.startswith("R")]
        assert bulk == [others[0], *resistors, *others[1:]]
    if name in golden_circuits():  # small circuits take the element path by default
        golden = (ROOT / "netlists" / f"{name}.cir").read_text()
        assert netlist_text(build_operating_point(circuit, source_V, nudge_A)) == golden
