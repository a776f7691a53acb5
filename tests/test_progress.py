"""Progress of long loops: a bar on a terminal, timed plain lines in a log (cosim.progress)."""

from __future__ import annotations

import io
import re

from tqdm import tqdm

import cosim.progress
from cosim.cli import main
from cosim.progress import LogProgress, progress
from tests.test_train import tiny_config


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_timed_lines_with_count_rate_and_time_left():
    log = io.StringIO()
    with progress(4, "epoch 1/3", "batch", file=log, interval_s=0.0) as bar:
        assert isinstance(bar, LogProgress)
        for k in range(4):
            bar.update()
            bar.set_postfix(loss=f"{0.5 / (k + 1):.4f}", refresh=False)
    lines = log.getvalue().splitlines()
    # One line per update but the last (the epoch's own line follows it), each a plain line.
    assert len(lines) == 3 and "\r" not in log.getvalue()
    assert re.fullmatch(r"epoch 1/3: 1/4 batches \(25%\), [0-9.e-]+ s/batch, about \d+ s left", lines[0]), lines[0]
    assert lines[2].startswith("epoch 1/3: 3/4 batches (75%)") and lines[2].endswith(", loss=0.2500")


def test_a_log_gets_nothing_before_the_interval_has_passed():
    log = io.StringIO()
    with progress(1000, "sweep", "row", file=log, interval_s=3600.0) as bar:
        for _ in range(999):
            bar.update()
    assert log.getvalue() == ""


def test_a_terminal_gets_a_bar():
    bar = progress(10, "sweep", "row", file=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()


def test_training_logs_its_batches(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cosim.progress, "LOG_INTERVAL_S", 0.0)
    config = tiny_config(tmp_path, epochs=1, train=64)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-ngspice"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1: 3/4 batches (75%)" in err and "s left, loss=" in err
