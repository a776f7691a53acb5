"""The second catalogue of bad inputs (issue 12): each one is refused with exit code 2, a message that
names the key, flag or file, no traceback, and nothing written anywhere under the test's folder
(every case runs with the working directory there, so ``runs/<name>`` is watched too).

Each case is a function of the test folder that prepares its files and returns the command line
and a fragment the message must contain. Everything runs in-process (``cosim.cli.main``)."""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from cosim.cli import main

SIZES = "[64, 3, 10]"


def config_text(top: str = "", sizes: str = SIZES, block: str = "", more: str = "", data: str = "", tail: str = ""):
    """A tiny digits configuration with the given pieces put in place (TOML needs top-level keys first)."""
    return (
        f"{top}\n[[model.blocks]]\ntype = 'analog'\nsizes = {sizes}\n{block}\n{more}\n"
        f"[data]\ntrain_subset = 16\ntest_subset = 8\n{data}\n"
        f"[train]\nepochs = 1\nbatch_size = 8\nngspice_eval_samples = 0\n{tail}\n"
        "[gradcheck]\nsamples = 4\nbetas = [0.05]\nmethods = ['ep-centered']\n[energy]\nngspice = false\nsamples = 2\n"
    )


def write_config(tmp: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def train(tmp: Path, text: str, out: Path | None = None) -> list[str]:
    out = out or tmp / "run"
    return ["train", "--config", str(write_config(tmp, text)), "--out", str(out), "--no-ngspice"]


def train_named(tmp: Path, top: str) -> list[str]:
    return ["train", "--config", str(write_config(tmp, config_text(top=top))), "--no-ngspice"]


# --- data files -------------------------------------------------------------------------------


def _split(n: int = 12):
    rng = np.random.default_rng(0)

    def part(size):
        return rng.random((size, 784), dtype=np.float32), rng.integers(0, 10, size)

    return part(n), part(n // 2), part(n // 3)


def mnist_config(tmp: Path, change) -> list[str]:
    """Training on a pickled MNIST whose training part is ``change((x, y))``."""
    split = list(_split())
    split[0] = change(split[0])
    data = tmp / "mnist.pkl.gz"
    with gzip.open(data, "wb") as fh:
        pickle.dump(tuple(split), fh, protocol=4)
    text = config_text(sizes="[784, 3, 10]", data=f"dataset = 'mnist'\nroot = '{data}'\n")
    return train(tmp, text)


def _object_images(xy):
    x = np.empty(len(xy[0]), dtype=object)
    for i in range(len(x)):
        x[i] = xy[0][i]
    return x, xy[1]


# --- model libraries --------------------------------------------------------------------------


def library_config(tmp: Path, library: str, use: str) -> list[str]:
    lib = tmp / "models.lib"
    lib.write_text(library, encoding="utf-8")
    return train(tmp, config_text(block=f"model_file = '{lib}'\n{use}\n"))


# --- checkpoints ------------------------------------------------------------------------------


def checkpoint(tmp: Path, change=None, finished: bool = True) -> Path:
    """A run folder ``tmp/done`` as `cosim train` leaves it (config, summary, a checkpoint of a
    finished 1-epoch run), the checkpoint's model state passed through ``change``."""
    from cosim.build import build_model
    from cosim.checkpoint import save_checkpoint
    from cosim.config import parse_config

    config = parse_config(tomllib.loads(config_text()))
    state = build_model(config, (64,)).state_dict()
    if change is not None:
        state = change(dict(state))
    run = tmp / "done"
    run.mkdir()
    row = {"epoch": 1, "loss": 1.0, "train_accuracy": 0.5, "test_accuracy": 0.5, "lr": 1e-3, "seconds": 1.0}
    save_checkpoint(run / "checkpoint.pt", config, state, epoch=1 if finished else 0, metrics=[row])
    (run / "summary.json").write_text('{"test_accuracy": 0.5}\n')
    (run / "config.json").write_text(config.model_dump_json())
    return run / "checkpoint.pt"


def _negative(state):
    state["blocks.0.weights.0"] = -state["blocks.0.weights.0"]
    return state


def _nan(state):
    state["blocks.0.weights.0"] = torch.full_like(state["blocks.0.weights.0"], float("nan"))
    return state


def energy(tmp: Path, *extra: str) -> list[str]:
    return ["energy", "--config", str(write_config(tmp, config_text())), *extra]


def gradcheck(tmp: Path, plot: Path) -> list[str]:
    return ["gradcheck", "--config", str(write_config(tmp, config_text())), "--plot", str(plot)]


def a_file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("x")
    return path


READ_ONLY = Path("/proc/cosim-catalogue")
"""A folder no one can create, root included (the test suite runs as root, for which a chmod'ed
folder stays writable)."""


# --- sweeps -----------------------------------------------------------------------------------


def sweep(tmp: Path, *extra: str, grid: str = "measurement.bits=[8,12]", text: str | None = None) -> list[str]:
    config = write_config(tmp, text or config_text(), "sweep.toml")
    return ["sweep", "--config", str(config), "--grid", grid, "--seeds", "1", "--out", str(tmp / "sw"), *extra]


def earlier_sweep(tmp: Path) -> None:
    """``tmp/sw`` as a gradcheck sweep of ``measurement.bits=[8,12]`` over config_text() left it."""
    from cosim.io import atomic_write_json
    from cosim.sweep import Sweep
    from cosim.sweep_folder import write_identity

    grid = [("measurement.bits", [8, 12])]
    made = Sweep(config_text(), "sweep.toml", grid, 1, "gradcheck")
    out = tmp / "sw"
    write_identity(out, made.identity, made.keys, len(made.points))
    point = made.points[0]
    row = {"id": point["id"], "values": point["values"], "seed": 0, "metrics": {"cosine": 0.99}}
    atomic_write_json(out / "rows" / f"{point['id']}.json", row)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rerun(tmp: Path, *extra: str, **kw) -> list[str]:
    earlier_sweep(tmp)
    return sweep(tmp, *extra, **kw)


CASES = {
    # model build
    "output width vs class count": (lambda t: train(t, config_text(sizes="[64, 3, 4]")), "the data has 10 classes"),
    "80 GB of conductances": (
        lambda t: train(t, config_text(sizes="[100000, 100000, 10]", block="input_pairs = false")),
        "model.blocks[0].sizes: the analog blocks need about",
    ),
    # schedulers
    "CosineAnnealingLR T_max = 0": (
        lambda t: train(t, config_text(tail="schedule = 'cosineannealinglr'\nschedule_options = {T_max = 0}")),
        "train.schedule_options.T_max",
    ),
    "StepLR negative step_size": (
        lambda t: train(t, config_text(tail="schedule = 'steplr'\nschedule_options = {step_size = -5}")),
        "train.schedule_options.step_size",
    ),
    "StepLR fractional step_size": (
        lambda t: train(t, config_text(tail="schedule = 'steplr'\nschedule_options = {step_size = 2.5}")),
        "train.schedule_options.step_size",
    ),
    "StepLR zero step_size": (
        lambda t: train(t, config_text(tail="schedule = 'steplr'\nschedule_options = {step_size = 0}")),
        "train.schedule_options.step_size",
    ),
    "MultiStepLR bad milestones": (
        lambda t: train(t, config_text(tail="schedule = 'multisteplr'\nschedule_options = {milestones = [-1, 2.5]}")),
        "train.schedule_options.milestones",
    ),
    "StepLR gamma above 1": (
        lambda t: train(t, config_text(tail="schedule = 'steplr'\nschedule_options = {step_size = 5, gamma = 1.5}")),
        "train.schedule_options.gamma",
    ),
    "ExponentialLR gamma 0": (
        lambda t: train(t, config_text(tail="schedule = 'exponentiallr'\nschedule_options = {gamma = 0.0}")),
        "train.schedule_options.gamma",
    ),
    "LinearLR start_factor 0 (refused by its constructor)": (
        lambda t: train(t, config_text(tail="schedule = 'linearlr'\nschedule_options = {start_factor = 0.0}")),
        "train.schedule_options: train.schedule LinearLR refused",
    ),
    # converter and measurement ranges
    "ADC lo NaN": (
        lambda t: train(t, config_text(more="[[model.blocks]]\ntype = 'adc'\nlo = nan\n")),
        "model.blocks[1].lo",
    ),
    "ADC hi inf": (
        lambda t: train(t, config_text(more="[[model.blocks]]\ntype = 'adc'\nhi = inf\n")),
        "model.blocks[1].hi",
    ),
    "measurement range NaN": (
        lambda t: train(t, config_text(tail="[measurement]\nrange_V = nan")),
        "measurement.range_V",
    ),
    "block measurement range inf": (
        lambda t: train(t, config_text(block="measurement = {range_A = inf}")),
        "model.blocks[0].measurement.range_A",
    ),
    # seeds, nesting, names
    "seed 2^63 - 1": (lambda t: train(t, config_text(top=f"seed = {2**63 - 1}")), "seed: must be an integer in [0,"),
    "50,000-deep nested array": (
        lambda t: train(t, config_text(top="x = " + "[" * 50_000 + "]" * 50_000)),
        "nested too deeply",
    ),
    "name through ..": (lambda t: train_named(t, "name = '../../x'"), "name: must be a plain name"),
    "absolute name": (lambda t: train_named(t, f"name = '{t / 'abs'}'"), "name: must be a plain name"),
    "hidden name": (lambda t: train_named(t, "name = '.x'"), "name: must be a plain name"),
    "101-character name": (lambda t: train_named(t, f"name = '{'a' * 101}'"), "name: must be a plain name"),
    # data files
    "images and labels of different lengths": (
        lambda t: mnist_config(t, lambda xy: (xy[0], xy[1][:5])),
        "12 images but 5 labels",
    ),
    "1-D images": (lambda t: mnist_config(t, lambda xy: (xy[0][:, 0], xy[1])), "data.root"),
    "string images": (lambda t: mnist_config(t, lambda xy: (xy[0].astype(str), xy[1])), "data.root"),
    "object images": (lambda t: mnist_config(t, _object_images), "data.root"),
    "float labels": (
        lambda t: mnist_config(t, lambda xy: (xy[0], xy[1] + 0.5)),
        "not an integer array",
    ),
    "pixels of 1e30": (lambda t: mnist_config(t, lambda xy: (xy[0] * 1e30, xy[1])), "images span"),
    # model libraries (bounded by the model-library work; listed here with the rest)
    "unbalanced .model parentheses": (
        lambda t: library_config(t, ".model DX D (IS=1e-14\n", "diode_model = 'DX'"),
        "unbalanced parentheses",
    ),
    "zero-ohm resistor": (
        lambda t: library_config(t, ".subckt N1 n\nR1 n 0 0\n.ends\n", "neuron_subckt = 'N1'"),
        "is not positive",
    ),
    "negative resistor": (
        lambda t: library_config(t, ".subckt N1 n\nR1 n 0 -1k\n.ends\n", "neuron_subckt = 'N1'"),
        "is not positive",
    ),
    "1e999-ohm resistor": (
        lambda t: library_config(t, ".subckt N1 n\nR1 n 0 1e999\n.ends\n", "neuron_subckt = 'N1'"),
        "not a finite number",
    ),
    # checkpoints
    "--resume with negative conductances": (
        lambda t: ["train", "--resume", str(checkpoint(t, _negative).parent), "--no-ngspice"],
        "--resume: ",
    ),
    "--resume of a finished run with NaN conductances": (
        lambda t: ["train", "--resume", str(checkpoint(t, _nan).parent), "--no-ngspice"],
        "contains NaN or inf",
    ),
    "energy of a checkpoint with negative conductances": (
        lambda t: energy(t, "--checkpoint", str(checkpoint(t, _negative)), "--out", str(t / "e")),
        "conductances must be > 0 S",
    ),
    "energy of a checkpoint with NaN conductances": (
        lambda t: energy(t, "--checkpoint", str(checkpoint(t, _nan)), "--out", str(t / "e")),
        "--checkpoint: ",
    ),
    "netlist of a checkpoint with negative conductances": (
        lambda t: ["netlist", "--checkpoint", str(checkpoint(t, _negative)), "--out", str(t / "n")],
        "conductances must be > 0 S",
    ),
    # output paths
    "train --out onto a file": (lambda t: train(t, config_text(), a_file(t)), "--out: "),
    "train --out below a file": (
        lambda t: train(t, config_text(), a_file(t) / "run"),
        "is a file, not a folder",
    ),
    "train --out in a read-only folder": (
        lambda t: train(t, config_text(), READ_ONLY),
        "--out: cannot write into /proc",
    ),
    "energy --out onto a file": (lambda t: energy(t, "--out", str(a_file(t))), "--out: "),
    "energy --out in a read-only folder": (lambda t: energy(t, "--out", str(READ_ONLY)), "--out: cannot write"),
    "netlist --out in a read-only folder": (
        lambda t: ["netlist", "--checkpoint", str(checkpoint(t)), "--out", str(READ_ONLY)],
        "--out: cannot write",
    ),
    "gradcheck --plot a directory": (lambda t: gradcheck(t, t), "--plot: "),
    "gradcheck --plot in a missing folder": (lambda t: gradcheck(t, t / "none" / "p.png"), "does not exist"),
    "gradcheck --plot in a read-only folder": (lambda t: gradcheck(t, Path("/proc/p.png")), "--plot: cannot write"),
    # sweeps
    "--grid through a non-table": (lambda t: sweep(t, grid="train.epochs.x=[1]"), "--grid train.epochs.x"),
    "--scheduler on a closed port": (
        lambda t: sweep(t, "--scheduler", f"tcp://127.0.0.1:{closed_port()}"),
        "--scheduler: nothing answers",
    ),
    "--scheduler not an address": (lambda t: sweep(t, "--scheduler", "not a url"), "--scheduler: 'not a url'"),
    "--scheduler without a port": (lambda t: sweep(t, "--scheduler", "tcp://localhost"), "--scheduler: "),
    "sweep --out onto a file": (lambda t: sweep(t, "--out", str(a_file(t))), "--out: "),
    "sweep rerun with another metric": (lambda t: _rerun(t, "--metric", "train"), "--metric is train"),
    "sweep rerun with another base config": (
        lambda t: _rerun(t, text=config_text(tail="lr = 0.01")),
        "the base configuration differs",
    ),
    "sweep rerun with another grid key": (lambda t: _rerun(t, grid="devices.d2d_sigma=[0.0,0.1]"), "--grid is"),
    "sweep rerun with other grid values": (lambda t: _rerun(t, grid="measurement.bits=[8,10]"), "--grid is"),
    "seed on the grid with --seeds 3": (lambda t: sweep(t, "--seeds", "3", grid="seed=[5,6]"), "--seeds: "),
}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time, and every folder. A folder's
    own mtime is left out: the writability probe creates and removes a file in it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[str((Path(dirpath) / name).relative_to(root))] = (-1, -1)
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_with_exit_2_and_nothing_written(case, tmp_path, capsys, monkeypatch):
    make, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    argv = make(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before, "a refused command must not write anything"
    assert not (tmp_path.parent / "x").exists(), "name = '../../x' wrote outside runs/"


def test_an_unphysical_equilibrium_is_a_solver_error_never_exit_0(tmp_path, capsys, monkeypatch):
    """A solve whose KCL residual stays far above tolerance (here: forged on a converged result)
    ends the command with exit 3 and the residual named, not with results."""
    import dataclasses

    from analog.solvers.auto import AutoSolver

    solve = AutoSolver.solve

    def unbalanced(self, circuit, source_V, *args, **kw):
        eq = solve(self, circuit, source_V, *args, **kw)
        if len(source_V) <= 2:  # build_model's shape check on a dummy batch of 2 stays physical
            return eq
        return dataclasses.replace(eq, residual_A=eq.residual_A + 1e-3)

    monkeypatch.setattr(AutoSolver, "solve", unbalanced)
    code = main(train(tmp_path, config_text()))
    out, err = capsys.readouterr()
    assert code == 3, err
    assert "KCL residual of 1.000e-03 A" in err and "Traceback" not in err, err
    assert "test accuracy" not in out
