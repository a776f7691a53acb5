"""Hopfield (DHN) energy blocks: EP vs the exact gradient, the exact gradient vs finite differences,
the fixed-point iteration's invariants, and the block inside `cosim train` / `cosim gradcheck`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analog.readout import Measurement
from analog.solvers.base import SolverError
from cosim import FFEBM, EquilibriumPropagation, HopfieldBlock, HopfieldSpec, gradient_method
from cosim.build import build_model
from cosim.cli import main
from cosim.config import parse_config, parse_toml
from cosim.gradcheck import gradcheck, model_gradients
from cosim.metrics import read_metrics

CONVERGED = {"t1": 2000, "t2": 2000, "tol": 1e-13}
"""Phases run to the solver's precision: gradients are compared at the fixed point itself."""


def dense_model(activation: str, seed: int = 0, **options) -> FFEBM:
    """A digital layer, a dense Hopfield block and a digital readout: the block's input gradient
    reaches the digital layer's parameters, so the check covers ``dL/dx`` too."""
    torch.manual_seed(seed)
    spec = HopfieldSpec(sizes=(10, 12, 8, 6), activation=activation, init_scale=1.0, **{**CONVERGED, **options})
    return FFEBM([nn.Linear(8, 10), nn.Sigmoid(), HopfieldBlock(spec, seed=seed), nn.Linear(6, 5)])


def conv_model(activation: str, seed: int = 0, **options) -> FFEBM:
    torch.manual_seed(seed)
    spec = HopfieldSpec(
        channels=(2, 3, 4), kernel_size=3, padding=1, activation=activation, init_scale=1.0, **{**CONVERGED, **options}
    )
    return FFEBM(
        [nn.Conv2d(1, 2, 3, padding=1), nn.Sigmoid(), HopfieldBlock(spec, seed=seed), nn.Flatten(), nn.Linear(64, 5)]
    )


MODELS = {"dense": (dense_model, (8,)), "conv": (conv_model, (1, 4, 4))}


def data(shape, n=12, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen), torch.randint(0, 5, (n,), generator=gen)


def ce(y):
    return lambda out: F.cross_entropy(out, y)


def smallest(result, method, beta):
    return next(r for r in result.table() if r["method"] == method and r["beta"] == beta)


@pytest.mark.parametrize("kind", MODELS)
def test_centered_ep_matches_exact_with_beta_squared_slope(kind):
    """Smooth activation: the textbook O(beta^2) bias of centered EP, O(beta) of one-sided EP."""
    build, shape = MODELS[kind]
    x, y = data(shape)
    betas = [0.08, 0.04, 0.02, 0.01]
    result = gradcheck(build("sigmoid"), ce(y), x, betas)
    assert smallest(result, "ep-centered", 0.01)["cosine"] >= 0.999
    assert 1.8 <= result.slope_centered <= 2.2
    assert 0.8 <= result.slope_one_sided <= 1.2
    params = {r["param"] for r in result.rows}
    assert {"blocks.0.weight", "blocks.2.synapses.0", "blocks.2.synapse_biases.1"} <= params  # blocks.0: via dL/dx


@pytest.mark.parametrize("kind", MODELS)
def test_clamp_block_centered_ep_is_exact_while_no_unit_crosses_a_kink(kind):
    """``clamp`` is piecewise linear, so the nudged fixed point is linear in beta until a unit
    crosses a kink, and centered EP (a difference of bilinear terms) is then exact: its error is
    what the crossings cause, and vanishes once beta is below the nearest kink. One-sided EP keeps
    the quadratic term, an O(beta) bias."""
    build, shape = MODELS[kind]
    x, y = data(shape)
    betas = [1e-4, 1e-5, 1e-6]
    result = gradcheck(build("clamp"), ce(y), x, betas)
    for beta in (1e-4, 1e-5):
        row = smallest(result, "ep-centered", beta)
        assert row["cosine"] >= 0.999999 and row["rel_error"] < 1e-6, row
    assert 0.9 <= result.slope_one_sided <= 1.1


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("activation", ["clamp", "sigmoid"])
def test_implicit_gradient_matches_finite_differences(kind, activation):
    build, shape = MODELS[kind]
    model = build(activation, tol=1e-15 if activation == "sigmoid" else 1e-14)
    model.set_gradient_method(gradient_method("implicit"))
    x, y = data(shape, n=6)
    loss_fn = ce(y)
    grads = model_gradients(model, loss_fn, x)
    block = model.blocks[2]
    h = 1e-6
    for name, p in (("blocks.2.synapses.0", block.synapses[0]), ("blocks.2.synapse_biases.1", block.synapse_biases[1])):
        for idx in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            with torch.no_grad():
                p[idx] += h
                up = loss_fn(model(x)).item()
                p[idx] -= 2 * h
                down = loss_fn(model(x)).item()
                p[idx] += h
            fd = (up - down) / (2 * h)
            assert grads[name][idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), (name, idx)


def test_implicit_gradient_equals_backprop_through_the_unrolled_iteration():
    """The other exact reference: autograd through many iterations of the same update."""
    spec = HopfieldSpec(sizes=(6, 7, 5, 4), init_scale=1.0, **CONVERGED)
    block = HopfieldBlock(spec, method=gradient_method("implicit"), seed=3)
    x, _ = data((6,), n=5)
    target = torch.rand(5, 4, generator=torch.Generator().manual_seed(4))
    loss = ((block(x) - target) ** 2).sum()
    exact = torch.autograd.grad(loss, list(block.parameters()))
    c = block.couplings(list(block.parameters()))
    states = list(block.zero_states(x))
    for _ in range(300):
        for group in ((0, 2), (1,)):
            for l in group:
                states[l] = c.drive(l, states, x).clamp(0, 1)
    unrolled = torch.autograd.grad(((states[-1] - target) ** 2).sum(), list(block.parameters()))
    for a, b in zip(exact, unrolled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", ["clamp", "sigmoid"])
@pytest.mark.parametrize("clamp_output", [True, False])
def test_energy_decreases_every_iteration(activation, clamp_output):
    spec = HopfieldSpec(sizes=(10, 12, 8, 6), activation=activation, clamp_output=clamp_output, t1=1, init_scale=1.5)
    block = HopfieldBlock(spec, seed=5)
    x, _ = data((10,))
    states = block.zero_states(x)
    energies = [block.energy(x, states)]
    for _ in range(30):
        states = block.relax(x, "free", init=states).states
        energies.append(block.energy(x, states))
    for before, after in itertools.pairwise(energies):
        assert bool((after <= before + 1e-12).all())
    assert bool((energies[-1] < energies[0]).all())


def test_zero_nudge_leaves_the_free_fixed_point():
    block = HopfieldBlock(HopfieldSpec(channels=(2, 3, 4), kernel_size=3, padding=1, **CONVERGED), seed=2)
    x, _ = data((2, 5, 5))
    free = block.relax(x, "free")
    nudged = block.relax(x, "positive", init=free.states, nudge=torch.zeros_like(free.states[-1]))
    assert nudged.iterations == 1
    for a, b in zip(free.states, nudged.states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_tolerance_stops_early_and_steps_report_the_last_change():
    x, _ = data((10,))
    spec = HopfieldSpec(sizes=(10, 12, 8, 6), t1=500, tol=1e-9)
    block = HopfieldBlock(spec)
    block(x)
    stats = block.stats["free"]
    assert 1 <= stats["iterations"] < 500 and stats["change"] <= 1e-9
    fixed = HopfieldBlock(HopfieldSpec(sizes=(10, 12, 8, 6), t1=3))
    fixed(x)
    assert fixed.stats["free"]["iterations"] == 3 and fixed.stats["free"]["change"] > 1e-9


def test_a_phase_that_misses_its_tolerance_fails_with_the_fix():
    x, _ = data((10,))
    block = HopfieldBlock(HopfieldSpec(sizes=(10, 40, 40, 6), t1=2, tol=1e-12, init_scale=3.0))
    with pytest.raises(SolverError, match=r"free phase: the states still moved by .* raise t1"):
        block(x)


def test_training_metrics_show_the_hopfield_phases_when_iterating_to_tolerance():
    block = HopfieldBlock(HopfieldSpec(sizes=(10, 8, 6), t1=200, t2=200, tol=1e-8))
    model = FFEBM([block])
    x, _ = data((10,))
    model(x).sum().backward()
    stats = model.solver_stats()
    assert {"hopfield.free.iterations", "hopfield.positive.change", "hopfield.negative.iterations"} <= set(stats)
    assert stats["hopfield.positive.change"] <= 1e-8


def test_a_hopfield_block_refuses_an_ep_measurement():
    block = HopfieldBlock(HopfieldSpec(sizes=(4, 3)))
    with pytest.raises(ValueError, match="reads its states exactly"):
        block.method = EquilibriumPropagation(measurement=Measurement(bits=8))


MIXED = """
name = "hop"
seed = 3

[data]
train_subset = 480
test_subset = 128

[[model.blocks]]
type = "linear"
in_features = 64
out_features = 32

[[model.blocks]]
type = "relu"

[[model.blocks]]
type = "hopfield"
sizes = [32, 24, 10]
t1 = 20
t2 = 8
{extra}

[[model.blocks]]
type = "scale"
factor = 10.0

[train]
epochs = 2
batch_size = 16
lr = 0.01
beta = 0.1
schedule = "none"
ngspice_eval_samples = 0
"""


def write(tmp_path: Path, extra: str = "", text: str = MIXED) -> Path:
    path = tmp_path / "hop.toml"
    if extra.startswith("t1"):
        text = text.replace("t1 = 20\n", "")
    path.write_text(text.format(extra=extra), encoding="utf-8")
    return path


def test_a_digital_and_hopfield_model_trains_on_digits(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", str(write(tmp_path)), "--out", str(out), "--no-ngspice"]) == 0
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["test_accuracy"] > 0.5
    assert rows[-1]["hopfield0.free.iterations_mean"] == 20
    assert rows[-1]["hopfield0.negative.iterations_mean"] == 8
    # Its convergence column is the last state change, not a (meaningless) KCL residual.
    assert 0 <= rows[-1]["hopfield0.free.change_max"] < 1
    assert "hopfield0.free.residual_A_max" not in rows[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "ep-centered" and summary["conductances"] == 0
    # The checkpoint reads back (its couplings are no conductances, and may be negative).
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["test_accuracy"] == pytest.approx(rows[-1]["test_accuracy"])


SWITCH = """
[[model.blocks]]
type = "{kind}"
sizes = [64, 16, 10]

[[model.blocks]]
type = "scale"
factor = 20.0
"""


def test_the_block_type_switches_a_circuit_for_its_idealisation():
    """The same ``sizes`` under ``type = "analog"`` and ``type = "hopfield"``: the same input and
    output shapes, and the same train.method and beta reach both blocks' backward."""
    x = torch.rand(4, 64)
    for kind, name in (("analog", "analog0"), ("hopfield", "hopfield0")):
        config = parse_config(parse_toml(SWITCH.format(kind=kind), "switch") | {"train": {"beta": 0.05}})
        model = build_model(config, (64,), n_classes=10)
        out = model(x.to(torch.float64))
        assert out.shape == (4, 10)
        F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
        (block,) = model.energy_blocks()
        assert block.name == name and block.method.beta == 0.05 and block.method.variant == "centered"
        assert {"free", "positive", "negative"} <= set(block.stats)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("t1 = 0", "model.blocks[2].t1"),
        ('activation = "relu"', "model.blocks[2].activation"),
        ("tol = 2.0", "model.blocks[2].tol"),
        ("kernel_size = 3", "model.blocks[2].kernel_size"),
        ("input_gain_V = 4.0", "model.blocks[2].input_gain_V"),  # a circuit key left behind by the switch
        ("channels = [1, 4]", "model.blocks[2].sizes"),
    ],
)
def test_bad_hopfield_keys_exit_2_naming_the_key(tmp_path, capsys, extra, key):
    code = main(["train", "--config", str(write(tmp_path, extra)), "--out", str(tmp_path / "run"), "--no-ngspice"])
    assert code == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_sizes_exit_2(tmp_path, capsys):
    text = MIXED.replace("sizes = [32, 24, 10]", "sizes = [32]")
    assert main(["train", "--config", str(write(tmp_path, text=text)), "--out", str(tmp_path / "run")]) == 2
    assert "model.blocks[2].sizes" in capsys.readouterr().err


CONV = """
name = "hop-conv"
seed = 1

[data]
train_subset = 64

[[model.blocks]]
type = "reshape"
shape = [1, 8, 8]

[[model.blocks]]
type = "hopfield"
channels = [1, 2, 2]
kernel_size = 3
padding = 1
activation = "sigmoid"
init_scale = 1.0
t1 = 2000
t2 = 2000
tol = 1e-13

[[model.blocks]]
type = "flatten"

[[model.blocks]]
type = "linear"
in_features = 128
out_features = 10

[gradcheck]
samples = 8
betas = [0.08, 0.04, 0.02]
"""


def test_gradcheck_command_on_a_conv_hopfield_block(tmp_path, capsys):
    path = tmp_path / "conv.toml"
    path.write_text(CONV, encoding="utf-8")
    assert main(["gradcheck", "--config", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 1.8 <= result["slope_centered"] <= 2.2
    best = [r for r in result["results"] if r["param"] == "all" and r["method"] == "ep-centered" and r["beta"] == 0.02]
    assert best[0]["cosine"] >= 0.999
