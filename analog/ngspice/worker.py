"""Everything that runs inside an ngspice worker process.

PySpice keeps one shared ngspice instance per process and its memory grows over thousands of runs,
so ngspice is only ever loaded here, in the worker processes of :class:`analog.ngspice.NgspicePool`.
The task functions (:func:`run_sweep`, :func:`run_ops`, :func:`run_tran`) take a netlist as text
and return numpy arrays; every run removes its circuit and destroys its plots.

PySpice 1.5 raises ``NgSpiceCommandError`` on any stderr line, including ngspice's harmless
gmin/source-stepping notes, and does not raise when ngspice refuses a line of the netlist (ngspice
reports that on stderr and answers the next ``run`` with "circuit not parsed"). So every command's
stderr is judged here instead:

* at load, any error line means the netlist does not parse: :class:`NetlistError` quotes ngspice
  (its message names the line) and no retry is attempted, since no option makes a bad line good;
* after a run, :func:`fatal_messages` keeps what is not a stepping note or a plain note/warning;
  a run with fatal messages or incomplete vectors raises :class:`NotConverged`, which the DC solver
  answers with the next rung of :data:`RETRY_LADDER`.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import re
import time

import numpy as np

from analog.solvers.base import SolverError

__all__ = [
    "INSTALL_HINT",
    "RETRY_LADDER",
    "NetlistError",
    "NotConverged",
    "fatal_messages",
    "ngspice_library",
    "run_ops",
    "run_sweep",
    "run_tran",
]

INSTALL_HINT = (
    "install ngspice with `apt-get install ngspice libngspice0 libngspice0-dev`; if the library is "
    "installed under another name, point PySpice at it, e.g. NGSPICE_LIBRARY_PATH=libngspice.so.0"
)

RETRY_LADDER: tuple[tuple[str, str], ...] = (
    ("more iterations with gmin stepping", ".options itl1=2000 itl2=2000 gminsteps=100"),
    ("source stepping", ".options itl1=2000 itl2=2000 gminsteps=0 srcsteps=100"),
    ("relaxed tolerances", ".options itl1=2000 itl2=2000 reltol=1e-6 vntol=1e-9 abstol=1e-12"),
)
"""Rungs tried, in order, on a ``.dc`` deck that did not converge: ``(name, .options line)``. Each
rung's options are added after the deck's own (ngspice lets later ``.options`` override earlier ones)."""

# ngspice messages that do not affect a run whose vectors are complete. Stepping messages are
# benign even when they report a failed stage ("Warning: Dynamic gmin stepping failed"): ngspice
# then tries the next homotopy, and if all fail the analysis aborts and its vectors are incomplete.
_STEPPING = re.compile(r"(gmin|source) stepping", re.IGNORECASE)
_BENIGN = re.compile(r"^(Note: |Warning: )", re.IGNORECASE)
_FATAL = re.compile(r"error|fail|abort|singular|iteration limit|too small|not converge", re.IGNORECASE)
# At load ngspice prints "Error on line ...", "PTerror: syntax error ...", "Error: unknown subckt ...";
# warnings alone ("unrecognized parameter ... ignored") leave a usable circuit.
_PARSE_ERROR = re.compile(r"error", re.IGNORECASE)


def ngspice_library() -> str | None:
    """The ngspice shared library PySpice will load (``NGSPICE_LIBRARY_PATH`` or the system's), or
    ``None`` when none is installed."""
    return os.environ.get("NGSPICE_LIBRARY_PATH") or ctypes.util.find_library("ngspice")


class NotConverged(SolverError):
    """A run whose vectors are incomplete or whose messages are fatal. ``done``: samples of the
    deck solved before the first failure; ``tried``: retry rungs that failed too."""

    def __init__(self, message: str, done: int = 0, tried: tuple[str, ...] = ()):
        super().__init__(message, done, tried)
        self.message, self.done, self.tried = message, done, tried

    def __str__(self) -> str:
        return self.message


class NetlistError(SolverError):
    """ngspice refused a line of the netlist; the message quotes ngspice, which names the line."""


# --------------------------------------------------------------------------------------------
# The shared instance and its commands.

_instance = None


def _ngspice():
    """This worker's ngspice instance, created on first use with PySpice's logging silenced."""
    global _instance
    if _instance is not None:
        return _instance
    # PySpice logs every stderr line, and warns "Unsupported Ngspice version 39" (it works).
    logging.getLogger("PySpice").setLevel(logging.CRITICAL + 1)
    from PySpice.Spice.NgSpice.Shared import NgSpiceShared

    try:
        _instance = NgSpiceShared.new_instance()
    except OSError as first:
        # PySpice asks for libngspice.so, which only the -dev package provides.
        if "NGSPICE_LIBRARY_PATH" in os.environ:
            raise SolverError(f"ngspice: cannot load {NgSpiceShared.LIBRARY_PATH}: {first}; {INSTALL_HINT}") from first
        NgSpiceShared.LIBRARY_PATH = "libngspice.so.0"
        try:
            _instance = NgSpiceShared.new_instance()
        except OSError as second:
            raise SolverError(f"ngspice: cannot load the ngspice library ({second}); {INSTALL_HINT}") from None
    return _instance


def _messages(ngspice) -> list[str]:
    return [line.strip() for line in ngspice.stderr.splitlines() if line.strip()]


def fatal_messages(lines: list[str]) -> list[str]:
    """The messages that make a run unusable (anything but stepping notes and plain notes/warnings)."""
    return [line for line in lines if not (_STEPPING.search(line) or (_BENIGN.match(line) and not _FATAL.search(line)))]


def _command(ngspice, command: str) -> list[str]:
    """Run ``command`` and return its stderr lines, which we judge rather than PySpice."""
    from PySpice.Spice.NgSpice.Shared import NgSpiceCommandError

    try:
        ngspice.exec_command(command)
    except NgSpiceCommandError:
        pass
    return _messages(ngspice)


def _load(ngspice, deck: str, label: str) -> None:
    """Load ``deck``; raises :class:`NetlistError` quoting ngspice when a line does not parse."""
    from PySpice.Spice.NgSpice.Shared import NgSpiceCircuitError

    try:
        ngspice.load_circuit(deck)
    except NgSpiceCircuitError:
        said = "\n  ".join(s for s in (ngspice.stdout.strip(), ngspice.stderr.strip()) if s)
    else:
        lines = _messages(ngspice)
        said = "\n  ".join(lines) if any(_PARSE_ERROR.search(line) for line in lines) else ""
    if said:
        raise NetlistError(
            f"ngspice cannot parse the netlist of {label}; ngspice said:\n  {said}\n"
            "hint: this is not a convergence problem: ngspice rejects a line of the netlist (most often "
            "one from a user model library); fix that line, or export the netlist (cosim netlist) and "
            "run it with `ngspice -b` to see it in place"
        )


def _clear(ngspice) -> None:
    _command(ngspice, "remcirc")
    _command(ngspice, "destroy all")


def _iterations(ngspice) -> int:
    return int(ngspice.ressource_usage("totiter")["Total iterations"])


def _collect(ngspice, names: tuple[str, ...], expected: int, label: str) -> list[np.ndarray]:
    """The vectors ``names`` of the last analysis (``expected`` points each), after checking the
    messages it printed; raises :class:`NotConverged` naming ``label`` and quoting ngspice."""
    messages = _messages(ngspice)
    plot = ngspice.last_plot
    vectors = ngspice.plot(None, plot) if plot != "const" else {}
    missing = [n for n in names if n not in vectors or len(vectors[n]._data) != expected]
    fatal = fatal_messages(messages)
    if missing or fatal:
        quoted = "\n  ".join(fatal or messages) or "(no message)"
        incomplete = f"{len(missing)} vectors incomplete (e.g. {missing[0]}); " if missing else ""
        done = min((len(vectors[n]._data) if n in vectors else 0) for n in names) if missing else 0
        raise NotConverged(
            f"ngspice failed on {label}: {incomplete}ngspice said:\n  {quoted}\n"
            "hint: check that the conductances and inputs are in range, or export the netlist "
            "(cosim netlist) and run it with `ngspice -b` to inspect it",
            min(done, expected - 1),
        )
    # Vector.data is not public in PySpice 1.5; its to_waveform() would wrap every value in a unit.
    return [np.array(vectors[n]._data.real, dtype=np.float64) for n in names]


# --------------------------------------------------------------------------------------------
# Tasks: one deck each, submitted by the pool.


def _with_options(deck: str, options: str) -> str:
    """``deck`` with an ``.options`` line inserted before its analysis line."""
    lines = deck.splitlines()
    at = max(i for i, line in enumerate(lines) if line.startswith((".dc ", ".op")))
    return "\n".join([*lines[:at], options, *lines[at:]]) + "\n"


def _sweep_once(ngspice, deck: str, names: tuple[str, ...], points: int, label: str) -> tuple[list, int]:
    try:
        _load(ngspice, deck, label)
        _command(ngspice, "run")
        return _collect(ngspice, names, points, label), _iterations(ngspice)
    finally:
        _clear(ngspice)


def run_sweep(deck: str, names: tuple[str, ...], points: int, label: str) -> dict:
    """Run one ``.dc`` deck of ``points`` samples, climbing :data:`RETRY_LADDER` if it does not
    converge (raises :class:`NotConverged` when every rung fails, :class:`NetlistError` at once when
    the deck does not parse).

    Returns ``{"vectors": [points] array per name, "iterations": ngspice's total, "seconds": worker
    time, "rungs": rungs that failed before one succeeded}``.
    """
    start = time.perf_counter()
    ngspice = _ngspice()
    failed: list[str] = []
    first = None
    for rung, options in (("default", ""), *RETRY_LADDER):
        try:
            run = _with_options(deck, options) if options else deck
            vectors, iterations = _sweep_once(ngspice, run, names, points, label)
        except NotConverged as exc:
            failed.append(rung)
            first = first or exc
            continue
        seconds = time.perf_counter() - start
        return {"vectors": vectors, "iterations": iterations, "seconds": seconds, "rungs": failed}
    raise NotConverged(first.message, first.done, tuple(failed))


def run_ops(deck: str, names: tuple[str, ...], sources: dict[str, np.ndarray], first: int) -> dict:
    """Run the ``.op`` deck of sample ``first``, then, for each next sample, set every source in
    ``sources`` (element name -> ``[n]`` values, sample ``first`` first) with ``alter`` and run
    ``op`` again: one analysis, hence one matrix ordering, per sample. Returns what
    :func:`run_sweep` returns (``rungs`` empty)."""
    start = time.perf_counter()
    ngspice = _ngspice()
    count = len(next(iter(sources.values())))
    per_sample: list[list[np.ndarray]] = []
    iterations = 0
    try:
        _load(ngspice, deck, f"sample {first}")
        for b in range(count):
            if b:
                for element, values in sources.items():
                    said = _command(ngspice, f"alter {element} dc = {float(values[b])!r}")
                    if said:
                        raise SolverError(f"ngspice: `alter {element}` failed: {' '.join(said)}")
                _command(ngspice, "destroy all")
            _command(ngspice, "run" if b == 0 else "op")
            try:
                per_sample.append(_collect(ngspice, names, 1, f"sample {first + b}"))
            except NotConverged as exc:
                raise NotConverged(exc.message, b, ("one .op per sample",)) from None
        iterations = _iterations(ngspice)
    finally:
        _clear(ngspice)
    vectors = [np.concatenate(column) for column in zip(*per_sample, strict=True)]
    return {"vectors": vectors, "iterations": iterations, "seconds": time.perf_counter() - start, "rungs": []}


def run_tran(deck: str, names: tuple[str, ...], label: str) -> dict:
    """Run a ``.tran`` deck; return ``{"time": [T] s, name: [T] per name in names, "usage": ngspice's
    iteration and time-point counts}``. Raises :class:`SolverError` quoting ngspice on failure."""
    ngspice = _ngspice()
    try:
        _load(ngspice, deck, label)
        _command(ngspice, "run")
        messages = _messages(ngspice)
        vectors = ngspice.plot(None, ngspice.last_plot)
        wanted = ("time", *names)
        missing = [n for n in wanted if n not in vectors]
        fatal = fatal_messages(messages)
        if missing or fatal:
            raise SolverError(
                f"ngspice .tran failed on {label}: missing {missing[:3]}; ngspice said:\n  "
                + ("\n  ".join(fatal or messages) or "(no message)")
            )
        usage = ngspice.ressource_usage("totiter", "traniter", "tranpoints", "accept", "rejected")
        counts = {}
        for key, value in usage.items():
            try:
                counts[key] = int(float(value))
            except (TypeError, ValueError):
                pass
        return {n: np.array(vectors[n]._data.real, dtype=np.float64) for n in wanted} | {"usage": counts}
    finally:
        _clear(ngspice)
