"""Data files never run code: a crafted ``mnist.pkl.gz`` is refused by every command that reads
data (exit 2, the file named, nothing executed), also when a checkpoint's stored configuration
names it, also when it returns valid-looking arrays; the real MNIST copy still loads as it did."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cosim.config import ConfigError, DataConfig, parse_config
from cosim.data import load_dataset
from cosim.pickles import UnsafePickleError, check_array_pickle, load_array_pickle

ROOT = Path(__file__).resolve().parent.parent
MNIST_PICKLE = ROOT.parent / "shared" / "data" / "mnist.pkl.gz"

CONFIG = """
name = "hostile"
seed = 0

[data]
dataset = "mnist"
root = "{root}"
train_subset = 12
test_subset = 4

[[model.blocks]]
type = "analog"
sizes = [784, 6, 10]
input_gain_V = 4.0

[[model.blocks]]
type = "scale"
factor = 20.0

[train]
epochs = 1
batch_size = 6
lr = 0.01
beta = 0.1
ngspice_eval_samples = 0

[gradcheck]
samples = 2
betas = [0.1]
methods = ["ep-centered"]

[energy]
samples = 1
ngspice = false
"""


def _valid_split(n: int = 12) -> tuple:
    rng = np.random.default_rng(1)

    def part(size):
        return rng.random((size, 784), dtype=np.float32), rng.integers(0, 10, size)

    return part(n), part(n // 2), part(n // 3)


class _RunsShell:
    """Unpickling calls ``os.system``, which creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _RunsCodeReturnsData:
    """Unpickling ``eval``s code that creates ``marker`` and then returns a valid MNIST split: the
    variant that, read with ``pickle.load``, would train and exit 0."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        payload = pickle.dumps(_valid_split(), protocol=4)
        code = f"(open({str(self.marker)!r}, 'w').close(), __import__('pickle').loads({payload!r}))[1]"
        return eval, (code,)


def _write(path: Path, obj, protocol: int = 4) -> Path:
    with gzip.open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def _config(tmp_path: Path, root: Path, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(CONFIG.format(root=root), encoding="utf-8")
    return path


def _cosim(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cosim.cli", *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def _assert_refused(proc: subprocess.CompletedProcess, data: Path, marker: Path) -> None:
    assert not marker.exists(), "the hostile pickle ran"
    assert proc.returncode == 2, proc.stderr
    assert f"data.root: {data}" in proc.stderr and "nothing in it was run" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_hostile_fixtures_do_run_code_under_plain_pickle(tmp_path):
    # The refusals below mean something only if these files would really execute code.
    shell_marker, eval_marker = tmp_path / "shell-ran", tmp_path / "eval-ran"
    with gzip.open(_write(tmp_path / "a.pkl.gz", (_RunsShell(shell_marker),)), "rb") as fh:
        pickle.load(fh)
    with gzip.open(_write(tmp_path / "b.pkl.gz", _RunsCodeReturnsData(eval_marker)), "rb") as fh:
        split = pickle.load(fh)
    assert shell_marker.exists() and eval_marker.exists()
    assert [len(x) for x, _ in split] == [12, 6, 4]


@pytest.mark.parametrize("variant", ["shell", "valid-data"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_loader_refuses_hostile_pickles_and_runs_nothing(tmp_path, variant, protocol):
    marker = tmp_path / "ran"
    hostile = _RunsShell(marker) if variant == "shell" else _RunsCodeReturnsData(marker)
    data = _write(tmp_path / "mnist.pkl.gz", hostile, protocol)
    with pytest.raises(
        UnsafePickleError, match=r"references (posix|os)\.system|references (__builtin__|builtins)\.eval"
    ):
        check_array_pickle(data)
    with pytest.raises(
        UnsafePickleError, match=r"references (posix|os)\.system|references (__builtin__|builtins)\.eval"
    ):
        load_array_pickle(data)
    # The config validator runs the opcode scan; a file swapped after the configuration was read
    # reaches the loader itself, which refuses it on its own.
    config = parse_config({"model": {"blocks": [{"type": "analog", "sizes": [784, 10]}]}, "data": {"dataset": "mnist"}})
    swapped = config.data.model_copy(update={"root": str(data)})
    with pytest.raises(ConfigError, match=rf"data\.root: {re.escape(str(data))}.*nothing in it was run"):
        load_dataset(swapped)
    assert not marker.exists()


def test_scan_follows_memoized_names(tmp_path):
    marker = tmp_path / "ran"
    # protocol 4 by hand: "os" is memoized, fetched back with BINGET, then STACK_GLOBAL "os.system".
    code = f"touch '{marker}'".encode()
    evil = b"\x80\x04\x8c\x02os\x94N0h\x00\x8c\x06system\x93" + b"\x8c" + bytes([len(code)]) + code + b"\x85R."
    path = tmp_path / "memo.pkl"
    path.write_bytes(evil)
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        check_array_pickle(path)
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        load_array_pickle(path)
    assert not marker.exists()


def test_guarded_numpy_globals_refuse_misuse(tmp_path):
    class ObjectArray:
        def __reduce__(self):
            return np.array([1, "x"], dtype=object).__reduce__()

    with pytest.raises(UnsafePickleError, match="not a plain numeric type"):
        load_array_pickle(_write(tmp_path / "obj.pkl.gz", (ObjectArray(),)))

    class DirectNdarray:  # REDUCE of numpy.ndarray itself (e.g. a huge uninitialized allocation)
        def __reduce__(self):
            return np.ndarray, ((10**12,),)

    with pytest.raises(UnsafePickleError, match="does not parse"):
        load_array_pickle(_write(tmp_path / "nd.pkl.gz", (DirectNdarray(),)))


def test_wrong_arrays_are_refused_with_the_file_and_the_fix(tmp_path):
    good = _valid_split()
    label_ten = good[0][1].copy()
    label_ten[3] = 10
    cases = {
        "not 0..9": ((good[0][0], label_ten), good[1], good[2]),
        "images span": ((good[0][0] * 3, good[0][1]), good[1], good[2]),
        "not a float array of shape [n, 784]": ((good[0][0][:, :100], good[0][1]), good[1], good[2]),
        "not an integer array": ((good[0][0], good[0][1].astype(np.float32)), good[1], good[2]),
        "12 images but 5 labels": ((good[0][0], good[0][1][:5]), good[1], good[2]),
        "not a (train, valid, test) triple": good[:2],
        "not a pair": (good[0][0], good[1], good[2]),
    }
    for problem, split in cases.items():
        data = _write(tmp_path / "mnist.pkl.gz", split)
        pattern = rf"data\.root: {re.escape(str(data))}.*{re.escape(problem)}.*classic mnist\.pkl\.gz"
        with pytest.raises(ConfigError, match=pattern) as info:
            load_dataset(DataConfig(dataset="mnist", root=str(data)))
        assert "[n, 784]" in str(info.value), problem


def test_special_files_and_oversized_pickles_are_refused_at_once(tmp_path):
    fifo = tmp_path / "mnist.pkl.gz"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"neither a regular file nor a folder"):
        load_dataset(DataConfig(dataset="mnist", root=str(fifo)))
    with pytest.raises(UnsafePickleError, match="not a regular file"):
        load_array_pickle(fifo)
    with pytest.raises(UnsafePickleError, match="not a regular file"):
        load_array_pickle("/dev/zero")
    assert time.perf_counter() - start < 1.0
    forged = tmp_path / "forged.pkl"  # protocol 4 BINBYTES8 declaring 10 GiB, then 100 bytes
    forged.write_bytes(b"\x80\x04\x8e" + (10 * 1024**3).to_bytes(8, "little") + b"x" * 100)
    start = time.perf_counter()
    with pytest.raises(UnsafePickleError, match=r"holds \(or declares\) more than"):
        load_array_pickle(forged)
    with pytest.raises(UnsafePickleError, match=r"holds \(or declares\) more than"):
        check_array_pickle(forged)
    assert time.perf_counter() - start < 0.5
    bomb = _write(tmp_path / "bomb.pkl.gz", np.zeros(2_000_000, dtype=np.float32))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UnsafePickleError, match=r"holds \(or declares\) more than 1000000 bytes"):
        load_array_pickle(bomb, limit=1_000_000)


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_PICKLE.is_file(), reason=f"no local MNIST copy at {MNIST_PICKLE}")
def test_real_mnist_loads_identically_to_a_plain_pickle_load():
    safe = load_array_pickle(MNIST_PICKLE)
    check_array_pickle(MNIST_PICKLE)
    # A plain pickle.load, allowed here only because this is the trusted shared copy.
    with gzip.open(MNIST_PICKLE, "rb") as fh:
        plain = pickle.load(fh, encoding="latin1")
    assert len(safe) == len(plain) == 3
    for (x, y), (px, py) in zip(safe, plain, strict=True):
        assert x.dtype == px.dtype and y.dtype == py.dtype
        assert np.array_equal(x, px) and np.array_equal(y, py)
    data = load_dataset(DataConfig(dataset="mnist", root=str(MNIST_PICKLE)))
    assert torch.equal(data.test_x, torch.tensor(plain[2][0])) and torch.equal(data.test_y, torch.tensor(plain[2][1]))
    assert len(data.train_y) == 60_000


# ---------------------------------------------------------------------------------------------
# Every command that reads data, run as a user runs it.


@pytest.fixture
def hostile(tmp_path):
    """``(data file, marker)``: the file is a valid tiny MNIST now; ``swap()`` makes it hostile."""
    data = _write(tmp_path / "mnist.pkl.gz", _valid_split())
    marker = tmp_path / "ran"

    def swap(variant: str = "shell"):
        _write(data, _RunsShell(marker) if variant == "shell" else _RunsCodeReturnsData(marker))

    return data, marker, swap


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["shell", "valid-data"])
def test_cli_train_refuses_hostile_data(tmp_path, hostile, variant):
    data, marker, swap = hostile
    swap(variant)
    proc = _cosim(
        "train", "--config", str(_config(tmp_path, data)), "--out", str(tmp_path / "run"), "--no-ngspice", cwd=tmp_path
    )
    _assert_refused(proc, data, marker)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_resume_netlist_energy_sweep_gradcheck_refuse_hostile_data(tmp_path, hostile):
    data, marker, swap = hostile
    config, run = _config(tmp_path, data), tmp_path / "run"
    proc = _cosim("train", "--config", str(config), "--out", str(run), "--no-ngspice", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    checkpoint = run / "checkpoint.pt"
    assert checkpoint.is_file()
    swap()
    commands = {
        "train --resume": ("train", "--resume", str(run), "--epochs", "2", "--no-ngspice"),
        "netlist": ("netlist", "--checkpoint", str(checkpoint), "--sample", "0", "--out", str(tmp_path / "net")),
        "energy": ("energy", "--config", str(config), "--out", str(tmp_path / "energy")),
        "sweep": (
            "sweep",
            "--config",
            str(config),
            "--grid",
            "train.lr=[0.01]",
            "--seeds",
            "1",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "sweep"),
        ),
        "gradcheck": ("gradcheck", "--config", str(config)),
    }
    for name, args in commands.items():
        proc = _cosim(*args, cwd=tmp_path)
        _assert_refused(proc, data, marker)
        assert f"cosim {args[0]}:" in proc.stderr, name
    assert not (tmp_path / "net").exists() and not (tmp_path / "energy").exists()
    assert not (tmp_path / "sweep").exists()
