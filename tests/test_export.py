"""`cosim netlist`: netlists exported from a trained checkpoint run in plain `ngspice -b` and give
the fast solver's free-phase outputs."""

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A checkpoint written by `cosim train` itself (one epoch on 48 digits), so the format is real."""
    folder = tmp_path_factory.mktemp("trained")
    config = folder / "digits.toml"
    config.write_text(DIGITS, encoding="utf-8")
    assert main(["train", "--config", str(config), "--out", str(folder / "run"), "--no-ngspice"]) == 0
    return folder / "run" / "checkpoint.pt"


def _read_ascii_raw(path: Path) -> dict[str, float]:
    lines = path.read_text().splitlines()
    count = int(next(line for line in lines if line.startswith("No. Variables:")).split(":")[1])
    start = lines.index("Variables:") + 1
    names = [lines[start + k].split()[1].lower() for k in range(count)]
    at = lines.index("Values:") + 1
    values = " ".join(lines[at : at + count]).split()[1:]
    return {n: float(v) for n, v in zip(names, values, strict=True)}


def _fast_outputs(checkpoint: Path, sample: int) -> list[torch.Tensor]:
    """Free-phase output voltages of every analog block for test sample ``sample`` (fast solver)."""
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
    hooks = [b.register_forward_hook(lambda m, a, out: outputs.append(out[0])) for b in model.analog_blocks()]
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
    worst = 0.0
    for k, fast in enumerate(expected):
        deck = out / f"analog{k}.cir"
        text = deck.read_text()
        assert ".param inudge0=0.0" in text and "{vin0}" in text and text.rstrip().endswith(".end")
        raw = tmp_path / f"analog{k}.raw"
        result = subprocess.run(
            ["ngspice", "-b", "-r", str(raw), str(deck)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
            env={**os.environ, "SPICE_ASCIIRAWFILE": "1"},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        vectors = _read_ascii_raw(raw)
        n_layers = max(int(n[3 : n.index("_")]) for n in vectors if n.startswith("v(l") and "_n" in n)
        spice = torch.tensor([vectors[f"v(l{n_layers}_n{j})"] for j in range(fast.numel())], dtype=torch.float64)
        worst = max(worst, (spice - fast).abs().max().item())
    print(f"exported netlists vs fast solver: max |dV| = {worst:.3e} V")
    assert worst <= 1e-6


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
