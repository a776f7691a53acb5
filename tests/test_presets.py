"""Device presets (values as cited, overrides win) and conductance drift (power law, buffers, eval)."""

from __future__ import annotations

import math
import tomllib

import pytest
import torch

from analog.devices import ConductanceRange, DeviceArray, DeviceConfig, IOConfig
from analog.presets import DEVICE_PRESETS
from cosim.checkpoint import CHECKPOINT_FILE
from cosim.conditions import Conditions
from cosim.config import ConfigError, parse_config
from cosim.corners import evaluate_checkpoint
from cosim.runs import build_run
from cosim.training import train

# The cited values, typed again from the sources named in analog/presets.py, so that a typo in
# either place fails: (g_min_S, g_max_S, levels, d2d_sigma, pulse_noise_sigma, nonlinearity,
# asymmetry, drift_nu, drift_nu_sigma, drift_t0_s).
CITED = {
    "rram": (1e-6, 1e-4, 1001, 0.24, 3.75, 1.0, 0.0, 0.0, 0.0, 1.0),
    "pcm": (1e-7, 25e-6, 201, 0.1, 0.6, 0.96, 0.0, 0.049, 0.01, 20.0),
    "ecram": (1e-6, 1e-4, 1001, 0.05, 0.3, 0.45, 0.0, 0.0, 0.0, 1.0),
}
FIELDS = ("levels", "d2d_sigma", "pulse_noise_sigma", "nonlinearity", "asymmetry", "drift_nu", "drift_nu_sigma")

BLOCKS = """
[[model.blocks]]
type = "analog"
sizes = [64, 16, 10]
input_gain_V = 4.0
[[model.blocks]]
type = "scale"
factor = 20.0
"""


def config(extra: str = "", blocks: str = BLOCKS):
    return parse_config(tomllib.loads(extra + blocks))


@pytest.mark.parametrize("name", sorted(CITED))
def test_each_preset_parses_with_its_cited_values(name):
    g_min, g_max, *values, t0 = CITED[name]
    cfg = config(f'[devices]\npreset = "{name}"\n')
    devices, block = cfg.block_section(0, "devices"), cfg.model.blocks[0]
    assert devices.preset == name and devices.stochastic_rounding
    assert dict(zip(FIELDS, values, strict=True)) == {f: getattr(devices, f) for f in FIELDS}
    assert devices.drift_t0_s == t0 and (block.g_min_S, block.g_max_S) == (g_min, g_max)
    assert block.circuit_spec().conductance == ConductanceRange(g_min, g_max)
    # The library constructor gives the same devices; every value the preset sets names its source.
    assert DeviceConfig.from_preset(name) == devices
    preset = DEVICE_PRESETS[name]
    assert set(preset.devices) | {"g_min_S", "g_max_S"} <= set(preset.sources)
    assert all(len(text) > 20 for text in preset.sources.values())


def test_written_keys_win_over_the_preset_and_read_back():
    cfg = config(
        '[devices]\npreset = "pcm"\nd2d_sigma = 0.0\n',
        BLOCKS.replace("input_gain_V = 4.0", "input_gain_V = 4.0\ng_max_S = 5e-5\ndevices = {drift_nu = 0.1}"),
    )
    devices = cfg.block_section(0, "devices")
    assert devices.d2d_sigma == 0.0 and devices.drift_nu == 0.1 and devices.levels == 201
    assert (cfg.model.blocks[0].g_min_S, cfg.model.blocks[0].g_max_S) == (1e-7, 5e-5)
    assert parse_config(cfg.model_dump(mode="json")) == cfg  # what a checkpoint stores reads back the same


def test_a_block_preset_replaces_the_top_level_preset_but_not_the_written_keys():
    cfg = config(
        '[devices]\npreset = "pcm"\nasymmetry = 0.2\n',
        BLOCKS.replace("input_gain_V = 4.0", 'input_gain_V = 4.0\ndevices = {preset = "ecram"}'),
    )
    devices = cfg.block_section(0, "devices")
    assert devices.preset == "ecram" and devices.levels == 1001 and devices.asymmetry == 0.2
    assert devices.drift_t0_s == 1.0 and devices.drift_nu == 0.0  # nothing of pcm shows through
    assert cfg.model.blocks[0].g_max_S == 1e-4
    assert parse_config(cfg.model_dump(mode="json")) == cfg


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"devices\.preset: unknown device preset 'reram'; known: ecram, pcm, rram"):
        config('[devices]\npreset = "reram"\n')
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.devices\.preset: unknown"):
        config("", BLOCKS.replace("input_gain_V = 4.0", 'input_gain_V = 4.0\ndevices = {preset = "flash"}'))
    with pytest.raises(ValueError, match="known: ecram, pcm, rram"):
        DeviceConfig(preset="flash")


def drift_array(nu=0.05, sigma=0.0, t0=20.0, shape=(50, 40), seed=0):
    cfg = DeviceConfig(drift_nu=nu, drift_nu_sigma=sigma, drift_t0_s=t0)
    return DeviceArray(cfg, ConductanceRange(), shape, torch.Generator().manual_seed(seed))


def test_drift_follows_the_power_law_exactly_without_spread():
    array = drift_array()
    g0 = torch.linspace(2e-6, 9e-5, 2000, dtype=torch.float64).reshape(50, 40)
    assert torch.equal(array.read(g0, IOConfig()), g0)  # just programmed: no drift
    for t in (1.0, 3600.0, 86400.0, 30 * 86400.0):
        expected = g0 * ((t + 20.0) / 20.0) ** -0.05
        assert torch.allclose(array.read(g0, IOConfig(drift_time_s=t)), expected, rtol=1e-14, atol=0)
    # One day: (86420 / 20)^-0.05 = 0.6580, i.e. -34%; a sign or t0 error would not give this.
    assert math.isclose(float(array.read(g0, IOConfig(drift_time_s=86400.0))[0, 0] / g0[0, 0]), 0.65803, rel_tol=1e-4)


def test_drift_with_spread_shrinks_every_conductance_monotonically():
    array = drift_array(sigma=0.02)
    nu = array.drift_nu
    assert nu.min() >= 0 and abs(float(nu.mean()) - 0.05) < 0.002 and abs(float(nu.std()) - 0.02) < 0.002
    assert "drift_nu" in dict(array.named_buffers())  # a checkpoint holds each device's exponent
    g0 = torch.full((50, 40), 5e-5, dtype=torch.float64)
    previous = g0
    for t in (10.0, 1e3, 86400.0, 2.6e6):
        g = array.read(g0, IOConfig(drift_time_s=t))
        assert (g <= previous).all() and (g < previous).float().mean() > 0.99
        previous = g


def test_drift_leaves_the_older_device_draws_and_ideal_devices_alone():
    shape, gen = (30, 20), lambda: torch.Generator().manual_seed(4)
    plain = DeviceArray(DeviceConfig(d2d_sigma=0.1), ConductanceRange(), shape, gen())
    drifting = DeviceArray(
        DeviceConfig(d2d_sigma=0.1, drift_nu=0.05, drift_nu_sigma=0.01), ConductanceRange(), shape, gen()
    )
    assert torch.equal(plain.factor, drifting.factor) and plain.drift_nu is None
    assert "drift_nu" not in plain.state_dict()  # checkpoints of devices without drift are unchanged
    g = torch.full(shape, 3e-5, dtype=torch.float64)
    assert torch.equal(plain.read(g, IOConfig(drift_time_s=1e6)), plain.read(g))


def test_pulse_noise_grows_as_the_square_root_of_the_pulse_count():
    torch.manual_seed(0)
    cfg = DeviceConfig(levels=1001, pulse_noise_sigma=3.0)
    array = DeviceArray(cfg, ConductanceRange(), (40000,), torch.Generator().manual_seed(0))
    step = (1e-4 - 1e-6) / 1000
    previous = torch.full((40000,), 2e-5, dtype=torch.float64)
    for pulses in (25, 100):
        moved = array.write(previous, previous + pulses * step) - previous
        expected = 3.0 * step * math.sqrt(pulses)  # >> the rounding error step / sqrt(12)
        assert abs(float(moved.std()) / expected - 1) < 0.05
        assert abs(float(moved.mean()) / (pulses * step) - 1) < 0.05
    with pytest.raises(ValueError, match="pulse_noise_sigma: needs levels"):
        DeviceConfig(pulse_noise_sigma=1.0)


def test_eval_conditions_allow_drift_time_and_refuse_a_technology_change():
    cfg = config('[devices]\npreset = "pcm"\n')
    conditions = Conditions(cfg, [("io.drift_time_s", 86400)])
    assert conditions.paths == {"io.drift_time_s": 86400} and not conditions.redraws_devices
    for key in ("devices.preset", "model.blocks[0].devices.preset"):
        with pytest.raises(ConfigError, match="cannot change device technology"):
            Conditions(cfg, [(key, "rram")])


DRIFT_RUN = """
name = "drift"
seed = 3
[data]
train_subset = 480
test_subset = 160
[devices]
preset = "pcm"
drift_nu_sigma = 0.03
[[model.blocks]]
type = "analog"
sizes = [64, 24, 10]
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
def test_eval_after_a_day_and_a_month_of_drift_loses_accuracy(tmp_path):
    run = build_run(parse_config(tomllib.loads(DRIFT_RUN)), tmp_path)
    train(run, say=lambda _: None)
    checkpoint = run.run_dir / CHECKPOINT_FILE
    fresh, day, month = (
        evaluate_checkpoint(checkpoint, [("io.drift_time_s", t)]) for t in (0.0, 86400.0, 30 * 86400.0)
    )
    assert fresh["test_accuracy"] > 0.6, "the small model must have learnt something for drift to undo"
    # Drift only shrinks conductances and spreads them apart with time: the loss rises monotonically
    # and the accuracy does not recover.
    assert fresh["loss"] < day["loss"] < month["loss"]
    assert month["test_accuracy"] <= day["test_accuracy"] + 0.02 <= fresh["test_accuracy"] + 0.04
    assert month["test_accuracy"] < fresh["test_accuracy"]
