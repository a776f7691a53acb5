"""The EP readout: single-ended ADCs vs a held phase plus gained differential reads of the change."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from analog import CircuitSpec
from analog.readout import Measurement
from analog.solvers import FastSolver
from cosim import FFEBM, AnalogBlock, EquilibriumPropagation
from cosim.config import ConfigError, parse_config, resolve_config
from cosim.gradcheck import gradcheck, model_gradients
from cosim.gradients import nudge_response, recommend_beta
from digital.blocks import Gain

BETA = 0.1


def digits_like(seed=0):
    """A digits-shaped ff-EBM (64 pixels as +/- pairs, 6 V drive, output gain 30), hidden layer
    smaller than digits-demo's 256 to keep the test quick."""
    spec = CircuitSpec((64, 48, 10), input_gain_V=6.0)
    block = AnalogBlock(spec, solver=FastSolver(), seed=seed, method=EquilibriumPropagation(beta=BETA))
    return FFEBM([block, Gain(30.0)])


def data(n=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, generator=gen, dtype=torch.float64), torch.randint(0, 10, (n,), generator=gen)


def loss_of(y):
    return lambda out: F.cross_entropy(out, y)


def output_gradient(model, x, y):
    """``dL/dv_out`` arriving at the analog block, and its source voltages."""
    block = model.analog_blocks()[0]
    out = block(x).detach().requires_grad_()
    F.cross_entropy(30.0 * out, y).backward()
    return out.grad, block.spec.source_voltages(x)


def with_measurement(model, measurement):
    block = model.analog_blocks()[0]
    block.method = replace(block.method, measurement=measurement)
    return model


def cosine(model, x, y, measurement):
    result = gradcheck(with_measurement(model, measurement), loss_of(y), x, [BETA], methods=["ep-centered"])
    return result.table()[0]["cosine"]


def sized(model, x, y, bits=8, fraction=0.5):
    block = model.analog_blocks()[0]
    grad, source_V = output_gradient(model, x, y)
    response_V, response_A = nudge_response(block.method, block.solver, block.circuit(), source_V, grad)
    base = Measurement(bits=bits, mode="differential", diff_bits=bits)
    return base.sized_for(list(response_V), response_A, fraction), response_V


def test_differential_8_bit_readout_matches_exact_where_single_ended_fails():
    model = digits_like()
    x, y = data()
    differential, response_V = sized(model, x, y)
    # The nudge moves the hidden nodes ~100x less than the outputs: one gain per layer.
    assert response_V[0] < 0.1 * response_V[1]
    assert cosine(model, x, y, differential) >= 0.99
    assert cosine(model, x, y, Measurement(bits=8)) < 0.5  # the nudge sits below one LSB
    # The same differential chain with one gain for every node (the output layer's) is not enough.
    one_gain = replace(differential, diff_gain=differential.diff_gain[1])
    assert cosine(model, x, y, one_gain) < 0.9


def test_ideal_differential_readout_equals_the_exact_reading_estimate():
    model = digits_like()
    x, y = data()
    exact = model_gradients(with_measurement(model, Measurement()), loss_of(y), x)
    ideal = Measurement(mode="differential", diff_gain=(1234.5, 6.7), diff_gain_A=89.0)
    assert not Measurement().exact or ideal.exact  # no bits, offset or noise anywhere
    measured = model_gradients(with_measurement(model, ideal), loss_of(y), x)
    for name, g in exact.items():
        assert torch.allclose(measured[name], g, rtol=1e-9, atol=1e-12 * g.abs().max()), name


def test_offset_and_noise_degrade_the_estimate_measurably():
    model = digits_like()
    x, y = data()
    differential, response_V = sized(model, x, y, bits=None)
    clean = cosine(model, x, y, differential)
    assert clean > 0.9999
    hidden = response_V[0]  # the smallest swing: offsets and noise of its size swamp it
    torch.manual_seed(0)
    with_offset = cosine(model, x, y, replace(differential, offset_V=hidden))
    with_noise = cosine(model, x, y, replace(differential, noise_V=hidden))
    assert with_offset < clean - 0.01 and with_noise < clean - 0.01
    tiny = cosine(model, x, y, replace(differential, offset_V=1e-3 * hidden, noise_V=1e-3 * hidden))
    assert tiny > 0.999  # ...and offsets a thousand times smaller do not


def test_offsets_are_fixed_per_channel_and_noise_is_fresh():
    model = digits_like()
    x, y = data()
    block = model.analog_blocks()[0]
    grad, source_V = output_gradient(model, x, y)
    free = block.solver.solve(block.circuit(), source_V)
    phases, _ = block.method.solve_phases(block.solver, block.circuit(), source_V, free, grad)
    a, b = phases["positive"], phases["negative"]
    offset = Measurement(mode="differential", offset_V=1e-4)
    first, second = offset.read_pair(a, b), offset.read_pair(a, b)
    assert all(torch.equal(p, q) for p, q in zip(first.delta_V, second.delta_V, strict=True))
    shift = first.delta_V[0] - (a.voltages[0] - b.voltages[0])
    assert torch.allclose(shift, shift[:1].expand_as(shift))  # the same offset for every sample
    assert 0.5e-4 < float(shift[0].std()) < 2e-4  # and a different one per channel
    noisy = Measurement(mode="differential", noise_V=1e-4)
    assert not torch.equal(noisy.read_pair(a, b).delta_V[0], noisy.read_pair(a, b).delta_V[0])


def test_recommend_beta_fills_the_asked_fraction_of_the_differential_range():
    model = digits_like()
    x, y = data()
    block = model.analog_blocks()[0]
    grad, source_V = output_gradient(model, x, y)
    gains = (3000.0, 30.0)
    method = replace(block.method, measurement=Measurement(mode="differential", diff_bits=8, diff_gain=gains))
    beta = recommend_beta(method, block.solver, block.circuit(), source_V, grad, fraction=0.5)
    response_V, _ = nudge_response(replace(method, beta=beta), block.solver, block.circuit(), source_V, grad)
    swing = max(g * r for g, r in zip(gains, response_V, strict=True))
    assert abs(swing / 0.5 - 1) < 0.02
    capped = recommend_beta(
        replace(method, measurement=Measurement(mode="differential", diff_gain=1e-3)),
        block.solver,
        block.circuit(),
        source_V,
        grad,
        beta_max=0.3,
    )
    assert capped == 0.3


def test_measurement_validation_names_the_key():
    with pytest.raises(ValueError, match="mode: must be one of single-ended, differential"):
        Measurement(mode="balanced")
    with pytest.raises(ValueError, match="mode: diff_bits, noise_V need mode = 'differential'"):
        Measurement(diff_bits=8, noise_V=1e-6)
    with pytest.raises(ValueError, match="diff_gain: every gain"):
        Measurement(mode="differential", diff_gain=(100.0, -1.0))
    with pytest.raises(ValueError, match="diff_gain: 3 gains given for a block of 2 free layers"):
        Measurement(mode="differential", diff_gain=(1.0, 2.0, 3.0)).layer_gains(2)
    text = '[measurement]\nmode = "differential"\ndiff_bits = 30\n[[model.blocks]]\ntype = "analog"\nsizes = [4, 2]\n'
    with pytest.raises(ConfigError, match=r"measurement\.diff_bits: must be an integer in \[1, 24\]"):
        parse_config(tomllib.loads(text))


def test_digits_demo_adc8_preset_is_the_differential_8_bit_readout():
    cfg = resolve_config("digits-demo-adc8")
    demo = resolve_config("digits-demo")
    m = cfg.block_section(0, "measurement")
    assert (m.mode, m.bits, m.diff_bits, m.diff_gain) == ("differential", 8, 8, (30000.0, 300.0))
    # Everything but the readout (and the name and gradcheck betas) is digits-demo.
    assert cfg.model == demo.model and cfg.train == demo.train and cfg.devices == demo.devices


READOUT_RUN = """
name = "readout"
seed = 2
[data]
train_subset = 480
test_subset = 160
[[model.blocks]]
type = "analog"
sizes = [64, 32, 10]
input_gain_V = 6.0
[[model.blocks]]
type = "scale"
factor = 30.0
[train]
epochs = 3
batch_size = 16
lr = 0.02
beta = 0.1
ngspice_eval_samples = 0
"""


@pytest.mark.slow
def test_training_through_the_differential_8_bit_readout_matches_exact_readings(tmp_path):
    from cosim.runs import build_run
    from cosim.training import train

    def final_accuracy(measurement: str, folder) -> float:
        run = build_run(parse_config(tomllib.loads(READOUT_RUN + measurement)), folder)
        train(run, say=lambda _: None)
        return run.rows[-1]["test_accuracy"]

    # Gains from nudge_response at the initial model (125 uV hidden, 14 mV output at beta 0.1),
    # sized to half the differential range.
    exact = final_accuracy("", tmp_path / "exact")
    differential = final_accuracy(
        '[measurement]\nbits = 8\nmode = "differential"\ndiff_bits = 8\ndiff_gain = [4000.0, 35.0]\n', tmp_path / "d8"
    )
    single_ended = final_accuracy("[measurement]\nbits = 8\n", tmp_path / "s8")
    assert exact > 0.7
    assert differential > exact - 0.05
    assert single_ended < differential - 0.1
