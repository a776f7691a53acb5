"""Progress of long loops (training batches, sweep rows): a tqdm bar on a terminal, timed plain
lines in a log.

A bar redraws itself with carriage returns, which a log file (``nohup``, a batch job, ``2> log``)
keeps as one unreadable line, so tqdm is shown only when the stream is a terminal. Elsewhere
:class:`LogProgress` writes one line at most every ``interval_s`` seconds (and none for a loop that
ends sooner), with the count, the rate and the estimated time left:

    epoch 1/10: 300/938 batches (32%), 2.61 s/batch, about 28 min left, loss=0.3125 acc=0.904
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["LOG_INTERVAL_S", "LogProgress", "progress"]

LOG_INTERVAL_S = 60.0
"""Seconds between two progress lines in a log."""


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


class LogProgress:
    """tqdm's ``update`` / ``set_postfix`` interface, as timed lines on ``file``."""

    def __init__(self, total: int, desc: str, unit: str, file: TextIO, interval_s: float = LOG_INTERVAL_S):
        self.total, self.desc, self.unit, self.file, self.interval_s = total, desc, unit, file, interval_s
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.perf_counter()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to clean up: a line is written only when one is due."""

    def set_postfix(self, refresh: bool = True, **values) -> None:
        """Values shown at the end of the next line (``loss=0.31``)."""
        self.postfix = " ".join(f"{key}={value}" for key, value in values.items())

    def update(self, n: int = 1) -> None:
        """``n`` more done; writes a line when ``interval_s`` has passed since the last one."""
        self.n += n
        now = time.perf_counter()
        if now - self.last < self.interval_s or self.n >= self.total:
            return
        self.last = now
        per = (now - self.start) / self.n
        line = (
            f"{self.desc}: {self.n}/{self.total} {_plural(self.unit)} ({100 * self.n / self.total:.0f}%), "
            f"{per:.3g} s/{self.unit}, about {_duration(per * (self.total - self.n))} left"
        )
        print(line + (f", {self.postfix}" if self.postfix else ""), file=self.file, flush=True)


def progress(total: int, desc: str, unit: str, file: TextIO | None = None, interval_s: float | None = None):
    """A progress display for ``total`` steps of ``unit`` on ``file`` (stderr by default): a tqdm
    bar that clears itself on a terminal, else :class:`LogProgress` lines every ``interval_s`` s
    (default :data:`LOG_INTERVAL_S`)."""
    file = sys.stderr if file is None else file
    if file.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=file, leave=False, dynamic_ncols=True)
    return LogProgress(total, desc, unit, file, LOG_INTERVAL_S if interval_s is None else interval_s)
