"""The sub-volt preset digits-lowpower is the design it claims: nonlinear, milliwatt, nanosecond."""

from __future__ import annotations

import torch

from analog.energy import equilibrium_power
from analog.operating_point import operating_point
from analog.solvers import FastSolver
from cosim.build import build_model
from cosim.config import resolve_config
from cosim.data import load_dataset


def test_lowpower_preset_is_nonlinear_and_under_ten_milliwatts():
    config = resolve_config("digits-lowpower")
    data = load_dataset(config.data, config.seed.data)
    model = build_model(config, data.input_shape, n_classes=data.n_classes)
    (block,) = model.analog_blocks()
    circuit = block.circuit()
    assert not circuit.ideal_peripherals and circuit.spec.full_scale_current_A() == 1e-5 * 0.2
    source_V = block.spec.source_voltages(data.test_x[:64].flatten(1).double())
    eq = FastSolver().solve(circuit, source_V)
    op = operating_point(circuit, source_V, eq)
    # Sub-volt signals, and the junctions' knees inside the signal range (the rails sit towards the
    # signal): the nodes reach them once training spreads them (a third conduct after 30 epochs);
    # with the default rails at 0 V the knee would sit at ~0.5 V, out of reach of 0.2 V inputs.
    spec = block.spec
    knee = op["layers"][0]["knee_V"]
    assert 0.4 < knee < 0.6
    assert 0 < spec.diode_up_V + knee < spec.input_gain_V and -spec.input_gain_V < spec.diode_down_V - knee < 0
    assert max(max(abs(x["node_min_V"]), abs(x["node_max_V"])) for x in op["layers"]) < 0.2
    power = equilibrium_power(circuit, source_V, eq)
    assert float(power.delivered_W.max()) < 10e-3  # static power per phase
    assert float(((power.delivered_W - power.dissipated_W).abs() / power.delivered_W).max()) < 1e-12


def test_lowpower_preset_settles_in_nanoseconds():
    from analog.settling import Capacitances, TransientOptions
    from analog.settling_general import simulate

    config = resolve_config("digits-lowpower")
    data = load_dataset(config.data, config.seed.data)
    model = build_model(config, data.input_shape, n_classes=data.n_classes)
    (block,) = model.analog_blocks()
    circuit = block.circuit()
    source_V = block.spec.source_voltages(data.test_x[:2].flatten(1).double())
    final = torch.cat(FastSolver().solve(circuit, source_V).voltages, dim=1)
    caps = config.energy.capacitances()
    tr = simulate(circuit, caps, source_V, torch.zeros_like(final), final, options=TransientOptions())
    assert 1e-10 < float(tr.settle_time_s.max()) < 20e-9
    assert isinstance(caps, Capacitances)
