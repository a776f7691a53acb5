"""`cosim config`: the resolved configuration with every default reads back as the same
configuration; the schema is JSON; `cosim --version`."""

from __future__ import annotations

import json
import tomllib

import pytest

from cosim.cli import main
from cosim.commands.config import to_toml
from cosim.config import PRESET_DIR, load_config, parse_config, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_shown_configuration_reads_back_as_the_same(name):
    config = load_config(PRESET_DIR / f"{name}.toml")
    text = to_toml(config)
    assert parse_config(tomllib.loads(text)) == config
    if any(block.type == "analog" for block in config.model.blocks):  # every circuit default is shown
        assert "diode_eg_eV = 1.11" in text and "# wire_ohm = none (unset)" in text
    else:  # a model of Hopfield reference blocks has no circuit
        assert "diode_eg_eV" not in text


def test_cli_config_show_schema_presets_version(tmp_path, capsys):
    assert main(["config", "show", "digits-demo", "--out", str(tmp_path / "shown.toml")]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "shown.toml").read_text() and 'name = "digits-demo"' in printed
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "model" in schema["required"] and "AnalogBlockConfig" in schema["$defs"]
    assert main(["config", "presets"]) == 0
    assert capsys.readouterr().out.split() == preset_names()
    assert main(["config", "show"]) == 2
    assert "name a TOML file or a preset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("cosim ")


def test_set_overrides_a_key_on_every_command(tmp_path, capsys):
    assert main(["config", "show", "digits-demo", "--set", "train.epochs=3", "--set", "devices.d2d_sigma=0.05"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 3 and shown["devices"]["d2d_sigma"] == 0.05
    assert main(["solve", "--config", "solve-64-32-10", "--solver", "fast", "--set", "solve.samples=4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 4
    out = tmp_path / "run"
    args = ["train", "--config", "digits-demo", "--out", str(out), "--no-ngspice"]
    sets = ["--set", "train.epochs=1", "--set", "data.train_subset=32", "--set", "data.test_subset=16"]
    assert main([*args, *sets]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 1
    assert main(["train", "--resume", str(out), "--set", "train.epochs=2"]) == 2
    assert "a resumed run keeps the configuration" in capsys.readouterr().err
    assert main(["solve", "--config", "solve-64-32-10", "--set", "solve.sampels=4"]) == 2
    assert "solve.sampels: unknown key" in capsys.readouterr().err
    assert main(["solve", "--config", "solve-64-32-10", "--set", "solve.samples.x=4"]) == 2
    assert "--set solve.samples.x" in capsys.readouterr().err
