"""Configuration validation: every error names the key path; unknown keys are refused; presets parse."""

from __future__ import annotations

import pytest

from cosim.config import PRESET_DIR, ConfigError, RunConfig, load_config, parse_config

CONFIGS = sorted(PRESET_DIR.glob("*.toml"))


def minimal(**sections) -> dict:
    data = {"model": {"blocks": [{"type": "analog", "sizes": [4, 3, 2]}]}}
    data.update(sections)
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.toml")
    return str(info.value)


def test_minimal_config_has_defaults():
    config = parse_config(minimal())
    assert isinstance(config, RunConfig)
    assert config.data.dataset == "digits"
    assert config.train.optimizer == "adam"
    assert config.train.ngspice_eval_samples == 200


def test_nested_block_key_path():
    data = minimal()
    data["model"]["blocks"] = [
        {"type": "reshape", "shape": [1, 2, 2]},
        {"type": "conv", "in_channels": 1, "out_channels": 2, "kernel_size": 0},
        {"type": "flatten"},
    ]
    message = error_of(data)
    assert "model.blocks[1].kernel_size" in message
    assert "conv" not in message.split("model.blocks[1].kernel_size")[1].split(":")[0]
    assert "test.toml" in message


@pytest.mark.parametrize(
    ("section", "values", "path"),
    [
        ("train", {"lr": -1.0}, "train.lr"),
        ("train", {"epochs": "ten"}, "train.epochs"),
        ("train", {"optimizer": "adagradd"}, "train.optimizer"),
        ("train", {"beta": 2.0}, "train.beta"),
        ("data", {"test_fraction": 1.5}, "data.test_fraction"),
        ("solver", {"name": "hspice"}, "solver.name"),
    ],
)
def test_section_value_errors_name_the_key(section, values, path):
    assert path in error_of(minimal(**{section: values}))


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"trian": {"epochs": 2}}, "trian"),
        ({"train": {"lrate": 0.1}}, "train.lrate"),
        ({"model": {"blocks": [{"type": "analog", "sizes": [4, 2], "gain": 3.0}]}}, "model.blocks[0].gain"),
    ],
)
def test_unknown_keys_are_refused(data, path):
    full = minimal()
    full.update(data)
    message = error_of(full)
    assert path in message
    assert "unknown key" in message


def test_cross_field_checks_name_the_block():
    block = {"type": "analog", "sizes": [4, 3, 2], "g_min_S": 1e-4, "g_max_S": 1e-5}
    message = error_of({"model": {"blocks": [block]}})
    assert "model.blocks[0]" in message and "g_min_S" in message
    block = {"type": "analog", "sizes": [4, 3, 3, 2], "amplifier_gains": [2.0]}
    assert "amplifier_gains" in error_of({"model": {"blocks": [block]}})


def test_unknown_block_type():
    message = error_of({"model": {"blocks": [{"type": "transformer"}]}})
    assert "model.blocks[0]" in message


def test_missing_model():
    assert "model" in error_of({})


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_presets_are_valid(path):
    config = load_config(path)
    assert config.name == path.stem


def test_defaults_and_bounds_are_the_librarys():
    from analog.circuit import CircuitSpec
    from analog.devices import DeviceConfig, IOConfig
    from analog.readout import Measurement
    from cosim.gradients import EquilibriumPropagation

    config = parse_config(minimal())
    assert config.model.blocks[0].circuit_spec() == CircuitSpec((4, 3, 2))
    assert config.devices == DeviceConfig() and config.io == IOConfig() and config.measurement == Measurement()
    assert config.train.gradient_method() == EquilibriumPropagation()
    # A bound the library enforces is the configuration's bound, with the key path of the file.
    data = minimal()
    data["model"]["blocks"][0]["input_gain_V"] = 150.0
    assert "model.blocks[0].input_gain_V: must be a voltage in (0, 100] V" in error_of(data)


def test_block_sections_override_the_top_level_key_by_key():
    from cosim.build import build_model

    data = {
        "devices": {"d2d_sigma": 0.1},
        "measurement": {"bits": 10},
        "model": {
            "blocks": [
                {"type": "analog", "sizes": [4, 3, 3], "devices": {"levels": 8}, "measurement": {"range_V": 2.0}},
                {"type": "analog", "sizes": [3, 2], "io": {"read_noise_sigma": 0.01}},
            ]
        },
    }
    config = parse_config(data)
    first, second = (config.block_section(i, "devices") for i in (0, 1))
    assert (first.d2d_sigma, first.levels) == (0.1, 8) and (second.d2d_sigma, second.levels) == (0.1, None)
    model = build_model(config, (4,))
    a, b = model.analog_blocks()
    assert a.devices == first and b.devices == second
    assert (a.io.read_noise_sigma, b.io.read_noise_sigma) == (0.0, 0.01)
    assert (a.method.measurement.bits, a.method.measurement.range_V) == (10, 2.0)
    assert (b.method.measurement.bits, b.method.measurement.range_V) == (10, 1.0)
    data["model"]["blocks"][1]["devices"] = {"levels": 1}
    assert "model.blocks[1].devices.levels: must be an integer in [2," in error_of(data)
    data["model"]["blocks"][1]["devices"] = {"level": 4}
    assert "model.blocks[1].devices.level: unknown key" in error_of(data)


@pytest.mark.parametrize(
    ("section", "key", "moved"),
    [("train", "measure_bits", "measurement.bits"), ("devices", "read_noise_sigma", "io.read_noise_sigma")],
)
def test_moved_keys_name_their_new_place(section, key, moved):
    message = error_of(minimal(**{section: {key: 8 if key == "measure_bits" else 0.01}}))
    assert f"{section}.{key}: this key moved to {moved}" in message
