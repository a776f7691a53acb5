"""`cosim netlist`: netlists exported from a trained checkpoint (dense and conv analog blocks) run
in plain `ngspice -b` and give the fast solver's free-phase outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cosim.cli import main

DIGITS = """
name = "digits-export"
seed = 5

[data]
train_subset = 48
test_subset = 16

[[model.blocks]]
type = "analog"
sizes = [64, 16, 12]
input_gain_V = 4.0
hidden_pairs = true  # the inverting stages must export and run in plain ngspice too

[[model.blocks]]
type = "linear"
in_features = 12
out_features = 12

[[model.blocks]]
type = "analog"
sizes = [12, 10]
input_gain_V = 2.0

[[model.blocks]]
type = "scale"
factor = 20.0

[train]
epochs = 1
batch_size = 16
lr = 0.01
beta = 0.1
ngspice_eval_samples = 0
"""


# A conv analog block between digital blocks: 1x8x8 digits -> 2x8x8 (dual-rail) -> 2x8x8.
DIGITS_CONV = """
name = "digits-conv-export"
seed = 3

[data]
train_subset = 32
test_subset = 8

[[model.blocks]]
type = "reshape"
shape = [1, 8, 8]

[[model.blocks]]
type = "analog-conv"
channels = [1, 2, 2]
side = [8, 8]
kernel_size = 3
input_gain_V = 12.0
diode_up_V = -0.35  # rails crossed (knees ~0.18 V from 0): the diodes conduct and the deck exercises them
diode_down_V = 0.35

[[model.blocks]]
type = "flatten"

[[model.blocks]]
type = "linear"
in_features = 128
out_features = 10

[train]
epochs = 1
batch_size = 16
lr = 0.05
beta = 0.1
ngspice_eval_samples = 0
"""


def _train(folder: Path, text: str) -> Path:
    config = folder / "config.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["train", "--config", str(config), "--out", str(folder / "run"), "--no-ngspice"]) == 0
    return folder / "run" / "checkpoint.pt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A checkpoint written by `cosim train` itself (one epoch on 48 digits), so the format is real."""
    return _train(tmp_path_factory.mktemp("trained"), DIGITS)


@pytest.fixture(scope="module")
def trained_conv(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("trained_conv"), DIGITS_CONV)


def _read_ascii_raw(path: Path) -> dict[str, float]:
    lines = path.read_text().splitlines()
    count = int(next(line for line in lines if line.startswith("No. Variables:")).split(":")[1])
    start = lines.index("Variables:") + 1
    names = [lines[start + k].split()[1].lower() for k in range(count)]
    at = lines.index("Values:") + 1
    values = " ".join(lines[at : at + count]).split()[1:]
    return {n: float(v) for n, v in zip(names, values, strict=True)}


def _fast_outputs(checkpoint: Path, sample: int) -> list[torch.Tensor]:
    """Free-phase output voltages of every analog block (dense, then conv) for test sample
    ``sample`` (fast solvers)."""
    from analog.solvers import FastSolver
    from cosim.build import build_model
    from cosim.checkpoint import read_checkpoint
    from cosim.data import load_dataset

    stored = read_checkpoint(checkpoint)
    config, state = stored.config, stored.model
    data = load_dataset(config.data, config.seed.data)
    model = build_model(config, data.input_shape, solver=FastSolver(tol_V=1e-13)).to(torch.float64)
    model.load_state_dict(state)
    outputs = []
    blocks = [*model.analog_blocks(), *model.conv_blocks()]
    hooks = [b.register_forward_hook(lambda m, a, out: outputs.append(out[0].flatten())) for b in blocks]
    with torch.no_grad():
        model(data.test_x[sample : sample + 1].to(torch.float64))
    for h in hooks:
        h.remove()
    return outputs


@pytest.mark.ngspice
@pytest.mark.skipif(shutil.which("ngspice") is None, reason="the ngspice program is not installed")
def test_exported_netlists_reproduce_the_fast_solver_in_plain_ngspice(trained, tmp_path, capsys):
    out = tmp_path / "netlists"
    assert main(["netlist", "--checkpoint", str(trained), "--out", str(out), "--sample", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "analog0.cir", "analog1.cir"]
    readme = (out / "README.md").read_text()
    assert "vin{k}" in readme and "inudge{j}" in readme and "test sample 3" in readme
    expected = _fast_outputs(trained, 3)
    assert all(out.abs().max() > 1e-2 for out in expected), "outputs must be non-trivial voltages"
    worst = max(_plain_ngspice_dv(out / f"analog{k}.cir", fast, tmp_path) for k, fast in enumerate(expected))
    print(f"exported netlists vs fast solver: max |dV| = {worst:.3e} V")
    assert worst <= 1e-6


def _plain_ngspice_dv(deck: Path, fast: torch.Tensor, tmp_path: Path) -> float:
    """Run ``deck`` unmodified in ``ngspice -b``; the largest |V_ngspice - V_fast| over its outputs."""
    text = deck.read_text()
    assert ".param inudge0=0.0" in text and "{vin0}" in text and text.rstrip().endswith(".end")
    raw = tmp_path / f"{deck.stem}.raw"
    result = subprocess.run(
        ["ngspice", "-b", "-r", str(raw), str(deck)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "SPICE_ASCIIRAWFILE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    vectors = _read_ascii_raw(raw)
    n_layers = max(int(n[3 : n.index("_")]) for n in vectors if n.startswith("v(l") and "_n" in n)
    spice = torch.tensor([vectors[f"v(l{n_layers}_n{j})"] for j in range(fast.numel())], dtype=torch.float64)
    return (spice - fast).abs().max().item()


@pytest.mark.ngspice
@pytest.mark.skipif(shutil.which("ngspice") is None, reason="the ngspice program is not installed")
def test_exported_conv_netlist_is_the_unrolled_crossbar_and_reproduces_the_fast_solver(trained_conv, tmp_path):
    out = tmp_path / "netlists"
    assert main(["netlist", "--checkpoint", str(trained_conv), "--out", str(out), "--sample", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "analog-conv0.cir"]
    readme = (out / "README.md").read_text()
    # Crossbar 0: 2 output channels x 2 row channels (+/- inputs), crossbar 1: 2 x 4 (dual rail);
    # summed over a 3x3 kernel's taps, a tap has 8 positions per axis at the centre and 7 at an edge.
    per_tap_row = (7 + 8 + 7) ** 2
    resistors = (2 * 2 + 2 * 4) * per_tap_row + 2 * (128 + 128)  # + a +/- bias device per node
    assert f"| 1x8x8-2x8x8-2x8x8 | `VIN0`..`VIN127` | `L2_N0`..`L2_N127` | {resistors} |" in readme
    assert "## Conv blocks" in readme
    text = (out / "analog-conv0.cir").read_text()
    assert text.count("\nRW0_") == 2 * 2 * per_tap_row and text.count("\nRW1_") == 2 * 4 * per_tap_row
    assert "EINV_L1_N0" in text and "FINV_L1_N127" in text and "EINV_L2_N0" not in text
    (fast,) = _fast_outputs(trained_conv, 2)
    assert fast.numel() == 128 and fast.abs().max() > 1e-2, "outputs must be non-trivial voltages"
    worst = _plain_ngspice_dv(out / "analog-conv0.cir", fast, tmp_path)
    print(f"exported conv netlist vs fast solver: max |dV| = {worst:.3e} V")
    assert worst <= 1e-8


def test_conv_export_without_sample_and_with_a_bad_checkpoint(trained_conv, tmp_path):
    out = tmp_path / "zero"
    assert main(["netlist", "--checkpoint", str(trained_conv), "--out", str(out)]) == 0
    text = (out / "analog-conv0.cir").read_text()
    assert ".param vin0=0.0" in text and ".param vin127=0.0" in text and text.rstrip().endswith(".end")
    state = torch.load(trained_conv, weights_only=True)
    key = next(k for k in state["model"] if k.endswith("weights.0"))
    state["model"][key][0, 0, 1, 1] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    assert main(["netlist", "--checkpoint", str(bad), "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()


def test_export_without_sample_has_zero_inputs_and_refuses_bad_checkpoints(trained, tmp_path):
    out = tmp_path / "zero"
    assert main(["netlist", "--checkpoint", str(trained), "--out", str(out)]) == 0
    text = (out / "analog0.cir").read_text()
    assert ".param vin0=0.0" in text and "DNEURON" in text
    state = torch.load(trained, weights_only=True)
    key = next(k for k in state["model"] if k.endswith("weights.0"))
    state["model"][key][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    assert main(["netlist", "--checkpoint", str(bad), "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()
