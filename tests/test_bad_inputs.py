"""A catalogue of bad inputs (configurations, model files, checkpoints, data choices): each one gives
its documented message, exit code 2, no traceback, and nothing written to the run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from cosim.cli import main

BLOCK = '[[model.blocks]]\ntype = "analog"\nsizes = [4, 3, 2]\n'

# name -> (config text, model-file text or None, expected message fragment)
CONFIGS = {
    "invalid toml": ("name = \n", None, "is not valid TOML"),
    "unknown top-level key": ("nmae = 'x'\n" + BLOCK, None, "nmae: unknown key"),
    "unknown block key": (BLOCK + "diode_m = 1.0\n", None, "model.blocks[0].diode_m: unknown key"),
    "no blocks": ("[model]\nblocks = []\n", None, "model.blocks"),
    "one size": ('[[model.blocks]]\ntype = "analog"\nsizes = [4]\n', None, "model.blocks[0].sizes"),
    "zero size": (
        '[[model.blocks]]\ntype = "analog"\nsizes = [4, 0, 2]\n',
        None,
        "model.blocks[0].sizes[1]: must be an integer in [1,",
    ),
    "sizes not a list": ('[[model.blocks]]\ntype = "analog"\nsizes = "4-3-2"\n', None, "model.blocks[0].sizes"),
    "g_min above g_max": (BLOCK + "g_min_S = 1e-3\ng_max_S = 1e-4\n", None, "must be below g_max_S"),
    "g_max infinite": (BLOCK + "g_max_S = inf\n", None, "model.blocks[0].g_max_S"),
    "input gain nan": (BLOCK + "input_gain_V = nan\n", None, "model.blocks[0].input_gain_V"),
    "diode_n out of range": (BLOCK + "diode_n = 20.0\n", None, "model.blocks[0].diode_n"),
    "amplifier gains length": (BLOCK + "amplifier_gains = [2.0, 3.0]\n", None, "amplifier_gains needs 1"),
    "dtype": ('dtype = "float16"\n' + BLOCK, None, "dtype"),
    "negative seed": ("seed = -1\n" + BLOCK, None, "seed"),
    "learning rate": (BLOCK + "[train]\nlr = -1.0\n", None, "train.lr"),
    "solver workers": (BLOCK + "[solver]\nworkers = 0\n", None, "solver.workers"),
    "test fraction": ("[data]\ntest_fraction = 1.5\n" + BLOCK, None, "data.test_fraction"),
    "unknown block type": ('[[model.blocks]]\ntype = "lstm"\n', None, "model.blocks[0]"),
    "diode_model without model_file": (BLOCK + 'diode_model = "DX"\n', None, "need model_file"),
    "model_file missing": (BLOCK + 'model_file = "nope.lib"\ndiode_model = "DX"\n', None, "not found"),
    "diode_model and diode_is_A": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\ndiode_is_A = 1e-13\n',
        ".model DX D (IS=1e-14)\n",
        "diode_model replaces diode_is_A",
    ),
    "diode_model not an identifier": (BLOCK + 'model_file = "{lib}"\ndiode_model = "D X;"\n', "", "diode_model"),
    "model file: control block": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        ".model DX D (IS=1e-14)\n.control\nshell touch x\n.endc\n",
        "control blocks",
    ),
    "model file: backquote": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        ".model DX D (IS=`echo 1`)\n",
        "backquotes",
    ),
    "model file: include outside": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        ".include /etc/passwd\n",
        "inside the model file's folder",
    ),
    "model file: options": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        ".options reltol=1\n",
        ".options is not allowed",
    ),
    "model file: top-level element": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        "R1 a 0 1k\n",
        "outside a .subckt",
    ),
    "model file: bad value": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        ".model DX D (IS=abc)\n",
        "is not a number",
    ),
    "model file: bad model type": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        ".model DX ZZ (IS=1)\n",
        "type 'ZZ'",
    ),
    "model file: unclosed subckt": (
        BLOCK + 'model_file = "{lib}"\nneuron_subckt = "N1"\n',
        ".subckt N1 n\nR1 n 0 1k\n",
        "never closed",
    ),
    "model file: transient source": (
        BLOCK + 'model_file = "{lib}"\nneuron_subckt = "N1"\n',
        ".subckt N1 n\nV1 n 0 PULSE(0 1 1n)\n.ends\n",
        "only DC sources",
    ),
    "model file: undefined model": (
        BLOCK + 'model_file = "{lib}"\nneuron_subckt = "N1"\n',
        ".subckt N1 n\nD1 n 0 DNONE\n.ends\n",
        "DNONE",
    ),
    "model file: diode_model not defined": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DY"\n',
        ".model DX D (IS=1e-14)\n",
        "no .model 'DY'",
    ),
    "model file: two-pin neuron": (
        BLOCK + 'model_file = "{lib}"\nneuron_subckt = "N2"\n',
        ".subckt N2 a b\nR1 a b 1k\n.ends\n",
        "exactly one pin",
    ),
    "model file: not ascii": (
        BLOCK + 'model_file = "{lib}"\ndiode_model = "DX"\n',
        ".model DX D (IS=1e-14) * \u00b5\n",
        "not plain ASCII",
    ),
    "fast solver with a neuron subckt": (
        BLOCK + 'model_file = "{lib}"\nneuron_subckt = "N1"\n[solver]\nname = "fast"\n',
        ".subckt N1 n\nR1 n 0 1k\n.ends\n",
        "fast solver cannot simulate the neuron subcircuit 'N1'",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config_or_model_file(case, tmp_path, capsys):
    text, library, expected = CONFIGS[case]
    lib = tmp_path / "models.lib"
    if library is not None:
        lib.write_text(library, encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(text.replace("{lib}", str(lib)), encoding="utf-8")
    run = tmp_path / "run"
    code = main(["train", "--config", str(config), "--out", str(run), "--no-ngspice"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err, err
    assert "Traceback" not in err
    assert not run.exists(), "nothing may be written for a refused configuration"


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path / "run")]) == 2
    assert "config file not found" in capsys.readouterr().err and not (tmp_path / "run").exists()


GOOD = BLOCK + "\n[data]\ntrain_subset = 16\ntest_subset = 8\n"


def _checkpoint(tmp_path: Path, **changes) -> Path:
    """A checkpoint in `cosim train`'s format for a 4-3-2 block, with ``changes`` applied."""
    import tomllib

    from cosim.build import build_model
    from cosim.checkpoint import CHECKPOINT_FORMAT
    from cosim.config import parse_config

    config = parse_config(tomllib.loads(GOOD.replace("[4, 3, 2]", "[64, 3, 2]")))
    model = build_model(config, (64,))
    state = {"format": CHECKPOINT_FORMAT, "epoch": 1, "config": config.model_dump_json(), "model": model.state_dict()}
    state.update(changes)
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    return path


def _negative(state):
    state = dict(state)
    state["blocks.0.weights.0"] = -state["blocks.0.weights.0"]
    return state


CHECKPOINTS = {
    "missing": (lambda p: p / "none.pt", "does not exist"),
    "not a checkpoint": (lambda p: (p / "x.pt").write_bytes(b"not a zip") and p / "x.pt", "not a readable checkpoint"),
    "unsafe pickle": (
        lambda p: torch.save(argparse.Namespace(a=1), p / "n.pt") or p / "n.pt",
        "not a readable checkpoint",
    ),
    "wrong format": (lambda p: _checkpoint(p, format=99), "not a `cosim train` checkpoint"),
    "no model": (lambda p: _checkpoint(p, model=None), "holds no model state"),
    "bad config json": (lambda p: _checkpoint(p, config="{"), "holds no valid configuration"),
    "invalid stored config": (lambda p: _checkpoint(p, config='{"model": {"blocks": []}}'), "model.blocks"),
    "nan conductance": (
        lambda p: _checkpoint(p, model={"blocks.0.weights.0": torch.full((128, 3), float("nan"))}),
        "'blocks.0.weights.0' contains NaN or inf",
    ),
    "shape mismatch": (
        lambda p: _checkpoint(p, model={"blocks.0.weights.0": torch.ones(3, 3)}),
        "does not match the configuration",
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_bad_checkpoint(case, tmp_path, capsys):
    make, expected = CHECKPOINTS[case]
    path = make(tmp_path)
    out = tmp_path / "out"
    code = main(["netlist", "--checkpoint", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "Traceback" not in err, err
    assert not out.exists()


def test_conductances_out_of_range_and_bad_sample(tmp_path, capsys):
    path = _checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["model"] = _negative(state["model"])
    torch.save(state, path)
    assert main(["netlist", "--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "conductances must be > 0 S" in capsys.readouterr().err
    good = _checkpoint(tmp_path)
    assert main(["netlist", "--checkpoint", str(good), "--out", str(tmp_path / "o"), "--sample", "100000"]) == 2
    assert "--sample: must be in [0," in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
