"""Atomic writes give files the permissions a plain ``open()`` would (0666 less the umask), so
colleagues on a shared server can read run outputs; an existing file keeps its own mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cosim.io import atomic_save, atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda value: os.umask(value)
    finally:
        os.umask(old)


def _plain_open_mode(folder: Path) -> int:
    probe = folder / "probe"
    with open(probe, "w"):
        pass
    mode = _mode(probe)
    probe.unlink()
    return mode


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    assert _plain_open_mode(tmp_path) == expected
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"a": 1})
    atomic_save(tmp_path / "c.bin", lambda tmp: tmp.write_bytes(b"\0"))
    for name in ("a.txt", "b.json", "c.bin"):
        assert _mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.bin"]


def test_existing_file_keeps_its_mode_and_failures_leave_it_alone(tmp_path, umask):
    path = tmp_path / "private.json"
    atomic_write_text(path, "old")
    os.chmod(path, 0o600)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o600

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        atomic_save(path, broken)
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["private.json"]


def test_cli_run_outputs_are_readable_by_the_group_and_others(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[data]\ntrain_subset = 32\ntest_subset = 16\n[[model.blocks]]\ntype = "analog"\nsizes = [64, 10]\n'
        "[train]\nepochs = 1\nbatch_size = 16\nngspice_eval_samples = 0\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cosim.cli", "train", "--config", str(config), "--out", str(out), "--no-ngspice"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        umask=0o022,
    )
    assert proc.returncode == 0, proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 4
    assert {p.name: _mode(p) for p in files} == {p.name: 0o644 for p in files}
