"""ngspice (through PySpice's shared-library interface) as an equilibrium solver: the ground truth.

ngspice runs only inside worker processes (``spawn`` context): PySpice keeps one ngspice
instance per process and its memory grows over thousands of runs, so workers are recycled after
``max_tasks_per_child`` analyses, and each run removes its circuit and destroys its plots.

A batch is split into chunks of at most ``max_batch`` samples; each chunk is one ``.dc`` sweep
(see :func:`analog.netlist.build_batch`), so ngspice orders its sparse matrix once per chunk.
``mode="per_op"`` runs one ``.op`` per sample instead (the slow reference the benchmarks compare
against).

PySpice 1.5 raises ``NgSpiceCommandError`` on any stderr line, including ngspice's harmless
gmin/source-stepping notes. The worker classifies those lines itself: it accepts a run whose
vectors are complete and whose messages are benign, and otherwise raises :class:`SolverError`
quoting ngspice and naming the samples.

A chunk that does not converge climbs a retry ladder (:data:`RETRY_LADDER`: more iterations with
gmin stepping, source stepping, relaxed tolerances, then one ``.op`` per sample, each with ngspice's
full homotopy) before the error names the first sample that failed. A worker that dies, or whose
chunk takes longer than ``timeout_s``, is killed and replaced and the batch retried once.

``Equilibrium.history`` records ``netlist_s`` (parent-side deck building, per chunk) and
``ngspice_s`` (worker-side load + run + read-back, per chunk), so benchmarks can separate them.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes.util
import logging
import multiprocessing
import os
import re
import time
from typing import Literal

import numpy as np
import torch

from analog.circuit import Circuit
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError, SolverStatus, check_batch

__all__ = ["RETRY_LADDER", "NgspiceSolver", "ngspice_library"]

_INSTALL_HINT = (
    "install ngspice with `apt-get install ngspice libngspice0 libngspice0-dev`; if the library is "
    "installed under another name, point PySpice at it, e.g. NGSPICE_LIBRARY_PATH=libngspice.so.0"
)

# ngspice messages that do not affect a run whose vectors are complete. Stepping messages are
# benign even when they report a failed stage ("Warning: Dynamic gmin stepping failed"): ngspice
# then tries the next homotopy, and if all fail the analysis aborts and its vectors are incomplete.
_STEPPING = re.compile(r"(gmin|source) stepping", re.IGNORECASE)
_BENIGN = re.compile(r"^(Note: |Warning: )", re.IGNORECASE)
_FATAL = re.compile(r"error|fail|abort|singular|iteration limit|too small|not converge", re.IGNORECASE)


RETRY_LADDER: tuple[tuple[str, str], ...] = (
    ("more iterations with gmin stepping", ".options itl1=2000 itl2=2000 gminsteps=100"),
    ("source stepping", ".options itl1=2000 itl2=2000 gminsteps=0 srcsteps=100"),
    ("relaxed tolerances", ".options itl1=2000 itl2=2000 reltol=1e-6 vntol=1e-9 abstol=1e-12"),
)
"""Rungs tried, in order, on a chunk that did not converge: ``(name, .options line)``. Each rung's
options are added after the deck's own (ngspice lets later ``.options`` override earlier ones)."""


def ngspice_library() -> str | None:
    """The ngspice shared library PySpice will load (``NGSPICE_LIBRARY_PATH`` or the system's), or
    ``None`` when none is installed."""
    return os.environ.get("NGSPICE_LIBRARY_PATH") or ctypes.util.find_library("ngspice")


# --------------------------------------------------------------------------------------------
# Worker side. Everything below runs in a worker process; results travel back as numpy arrays.

_worker_ngspice = None


def _ngspice():
    """This worker's ngspice instance, created on first use with PySpice's logging silenced."""
    global _worker_ngspice
    if _worker_ngspice is not None:
        return _worker_ngspice
    # PySpice logs every stderr line, and warns "Unsupported Ngspice version 39" (it works).
    logging.getLogger("PySpice").setLevel(logging.CRITICAL + 1)
    from PySpice.Spice.NgSpice.Shared import NgSpiceShared

    try:
        _worker_ngspice = NgSpiceShared.new_instance()
    except OSError as first:
        # PySpice asks for libngspice.so, which only the -dev package provides.
        if "NGSPICE_LIBRARY_PATH" in os.environ:
            raise SolverError(f"ngspice: cannot load {NgSpiceShared.LIBRARY_PATH}: {first}; {_INSTALL_HINT}") from first
        NgSpiceShared.LIBRARY_PATH = "libngspice.so.0"
        try:
            _worker_ngspice = NgSpiceShared.new_instance()
        except OSError as second:
            raise SolverError(f"ngspice: cannot load the ngspice library ({second}); {_INSTALL_HINT}") from None
    return _worker_ngspice


def _messages(ngspice) -> list[str]:
    return [line.strip() for line in ngspice.stderr.splitlines() if line.strip()]


def _fatal(lines: list[str]) -> list[str]:
    """The messages that make a run unusable (anything but stepping notes and plain notes/warnings)."""
    return [line for line in lines if not (_STEPPING.search(line) or (_BENIGN.match(line) and not _FATAL.search(line)))]


def _worker_pid() -> int:
    return os.getpid()


def _command(ngspice, command: str) -> list[str]:
    """Run ``command`` and return its stderr lines, which we judge rather than PySpice."""
    from PySpice.Spice.NgSpice.Shared import NgSpiceCommandError

    try:
        ngspice.exec_command(command)
    except NgSpiceCommandError:
        pass
    return _messages(ngspice)


class _NotConverged(SolverError):
    """A run whose vectors are incomplete or whose messages are fatal. ``done``: samples of the
    chunk solved before the first failure; ``tried``: retry rungs that failed too."""

    def __init__(self, message: str, done: int = 0, tried: tuple[str, ...] = ()):
        super().__init__(message, done, tried)
        self.message, self.done, self.tried = message, done, tried

    def __str__(self) -> str:
        return self.message


def _collect(ngspice, names: tuple[str, ...], expected: int, label: str) -> list[np.ndarray]:
    """The vectors ``names`` of the last analysis (``expected`` points each), after checking the
    messages it printed; raises :class:`_NotConverged` naming ``label`` and quoting ngspice."""
    messages = _messages(ngspice)
    plot = ngspice.last_plot
    vectors = ngspice.plot(None, plot) if plot != "const" else {}
    missing = [n for n in names if n not in vectors or len(vectors[n]._data) != expected]
    fatal = _fatal(messages)
    if missing or fatal:
        quoted = "\n  ".join(fatal or messages) or "(no message)"
        incomplete = f"{len(missing)} vectors incomplete (e.g. {missing[0]}); " if missing else ""
        done = min((len(vectors[n]._data) if n in vectors else 0) for n in names) if missing else 0
        raise _NotConverged(
            f"ngspice failed on {label}: {incomplete}ngspice said:\n  {quoted}\n"
            "hint: check that the conductances and inputs are in range, or export the netlist "
            "(cosim netlist) and run it with `ngspice -b` to inspect it",
            min(done, expected - 1),
        )
    # Vector.data is not public in PySpice 1.5; its to_waveform() would wrap every value in a unit.
    return [np.array(vectors[n]._data.real, dtype=np.float64) for n in names]


def _load(ngspice, deck: str, label: str) -> None:
    from PySpice.Spice.NgSpice.Shared import NgSpiceCircuitError

    try:
        ngspice.load_circuit(deck)
    except NgSpiceCircuitError:
        raise SolverError(
            f"ngspice: the netlist of {label} does not parse:\n{ngspice.stdout}\n{ngspice.stderr}"
        ) from None


def _iterations(ngspice) -> int:
    return int(ngspice.ressource_usage("totiter")["Total iterations"])


def _clear(ngspice) -> None:
    _command(ngspice, "remcirc")
    _command(ngspice, "destroy all")


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


def _run_sweep(deck: str, names: tuple[str, ...], points: int, label: str) -> dict:
    """Run one ``.dc`` deck of ``points`` samples, climbing :data:`RETRY_LADDER` if it does not
    converge (raises :class:`_NotConverged` when every rung fails).

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
        except _NotConverged as exc:
            failed.append(rung)
            first = first or exc
            continue
        seconds = time.perf_counter() - start
        return {"vectors": vectors, "iterations": iterations, "seconds": seconds, "rungs": failed}
    raise _NotConverged(first.message, first.done, tuple(failed))


def _run_ops(deck: str, names: tuple[str, ...], sources: dict[str, np.ndarray], first: int) -> dict:
    """Run the ``.op`` deck of sample ``first``, then, for each next sample, set every source in
    ``sources`` (element name -> ``[n]`` values, sample ``first`` first) with ``alter`` and run
    ``op`` again: one analysis, hence one matrix ordering, per sample."""
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
            except _NotConverged as exc:
                raise _NotConverged(exc.message, b, ("one .op per sample",)) from None
        iterations = _iterations(ngspice)
    finally:
        _clear(ngspice)
    vectors = [np.concatenate(column) for column in zip(*per_sample, strict=True)]
    return {"vectors": vectors, "iterations": iterations, "seconds": time.perf_counter() - start, "rungs": []}


# --------------------------------------------------------------------------------------------
# Parent side.


class NgspiceSolver(EquilibriumSolver):
    """ngspice in ``workers`` processes, ``max_batch`` samples per ``.dc`` analysis.

    ``mode``: ``"batch"`` (one ``.dc`` sweep per chunk) or ``"per_op"`` (one ``.op`` per sample).
    ``max_tasks_per_child``: chunks a worker runs before it is replaced (bounds ngspice's memory).
    ``timeout_s``: longest wait for one chunk before its worker is declared hung (``None``: no limit).
    Use as a context manager or call :meth:`close` to stop the workers; the pool is created on the
    first solve and reused.
    """

    name = "ngspice"

    def __init__(
        self,
        workers: int = 1,
        max_batch: int = 256,
        mode: Literal["batch", "per_op"] = "batch",
        max_tasks_per_child: int = 200,
        timeout_s: float | None = 900.0,
    ) -> None:
        for field, value in (
            ("workers", workers),
            ("max_batch", max_batch),
            ("max_tasks_per_child", max_tasks_per_child),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}: must be an integer >= 1, got {value!r}")
        if mode not in ("batch", "per_op"):
            raise ValueError(f"mode: must be 'batch' or 'per_op', got {mode!r}")
        if timeout_s is not None and not (isinstance(timeout_s, int | float) and 0 < timeout_s < float("inf")):
            raise ValueError(f"timeout_s: must be a number of seconds > 0 or None, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self.workers = workers
        self.max_batch = max_batch
        self.mode = mode
        self.max_tasks_per_child = max_tasks_per_child
        self._pool: cf.ProcessPoolExecutor | None = None

    # -- pool ---------------------------------------------------------------------------------

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            if ngspice_library() is None:
                raise SolverError(f"ngspice: no ngspice shared library found; {_INSTALL_HINT}")
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=self.max_tasks_per_child,
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (a later solve starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> NgspiceSolver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (starting the pool if needed); for memory accounting."""
        pool = self._executor()
        pids = {f.result() for f in [pool.submit(_worker_pid) for _ in range(self.workers)]}
        return sorted(pids | {p.pid for p in (pool._processes or {}).values() if p.is_alive()})

    def _discard_pool(self) -> None:
        """Kill this solver's worker processes (a hung ngspice ignores polite shutdowns)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list((pool._processes or {}).values()):
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def _map(self, tasks: list[tuple]) -> list[dict | _NotConverged]:
        """Run ``fn(*args)`` for every ``(fn, *args)`` task in the workers; a chunk that did not
        converge comes back as its :class:`_NotConverged`. A worker that dies or exceeds
        ``timeout_s`` on a chunk is killed, the pool replaced and the batch retried once."""
        for attempt in (1, 2):
            pool = self._executor()
            results: list[dict | _NotConverged] = []
            try:
                futures = [pool.submit(*task) for task in tasks]
                for future in futures:
                    try:
                        results.append(future.result(timeout=self.timeout_s))
                    except _NotConverged as exc:
                        results.append(exc)
                return results
            except (cf.process.BrokenProcessPool, cf.TimeoutError) as err:
                self._discard_pool()
                if attempt == 2:
                    what = (
                        f"a chunk took longer than timeout_s = {self.timeout_s} s twice (ngspice hung?)"
                        if isinstance(err, cf.TimeoutError)
                        else f"a worker process died twice ({err})"
                    )
                    raise SolverError(
                        f"ngspice: {what} while solving this batch; ngspice may crash or stall on this "
                        "netlist: export it (cosim netlist) and run it with `ngspice -b`"
                    ) from None
        raise AssertionError("unreachable")

    # -- solving ------------------------------------------------------------------------------

    def solve(
        self,
        circuit: Circuit,
        source_V: torch.Tensor,
        nudge_A: torch.Tensor | None = None,
        init: Equilibrium | None = None,
    ) -> Equilibrium:
        """Solve the batch with ngspice (see :class:`~analog.solvers.base.EquilibriumSolver`).

        ``init`` is ignored: each sweep point starts from the previous sample's solution.
        """
        del init
        return self._solve(circuit, source_V, nudge_A, self.mode)

    def solve_per_op(
        self, circuit: Circuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None
    ) -> Equilibrium:
        """Like :meth:`solve` with one ``.op`` analysis (one matrix ordering) per sample."""
        return self._solve(circuit, source_V, nudge_A, "per_op")

    def _solve(self, circuit, source_V, nudge_A, mode) -> Equilibrium:
        from analog.netlist import probes

        source_V, nudge_A = check_batch(circuit, source_V, nudge_A)
        source_V = source_V.detach().to(torch.float64)
        nudge_A = None if nudge_A is None else nudge_A.detach().to(torch.float64)
        batch = source_V.shape[0]
        batched = mode == "batch"
        wanted = probes(circuit, batched)
        names = wanted.all()
        chunks = [(start, min(start + self.max_batch, batch)) for start in range(0, batch, self.max_batch)]

        netlist_s: list[float] = []

        def task(start: int, stop: int, sweep: bool) -> tuple:
            began = time.perf_counter()
            built = _chunk_task(circuit, source_V, nudge_A, names, start, stop, sweep)
            netlist_s.append(time.perf_counter() - began)
            return built

        results = self._map([task(start, stop, batched) for start, stop in chunks])
        failed = [k for k, r in enumerate(results) if isinstance(r, _NotConverged)]
        if failed and batched:  # last rung: one .op per sample, each with ngspice's full homotopy
            retried = self._map([task(*chunks[k], False) for k in failed])
            for k, r in zip(failed, retried, strict=True):
                if not isinstance(r, _NotConverged):
                    r["rungs"] = [*results[k].tried, *r["rungs"]]
                results[k] = r
        for (start, _), r in zip(chunks, results, strict=True):
            if isinstance(r, _NotConverged):
                ladder = ", ".join(("default", *(name for name, _ in RETRY_LADDER))[: 1 + len(RETRY_LADDER)])
                raise SolverError(
                    f"ngspice did not converge on sample {start + r.done} of the batch (tried: {ladder}"
                    f"{', one .op per sample' if batched else ''}):\n{r.message}"
                )
        vectors = {n: np.concatenate([r["vectors"][i] for r in results]) for i, n in enumerate(names)}

        def stack(group: tuple[str, ...]) -> torch.Tensor:
            if not group:
                return torch.zeros((batch, 0), dtype=torch.float64)
            return torch.from_numpy(np.stack([vectors[n] for n in group], axis=1))

        voltages = tuple(stack(layer) for layer in wanted.voltages)
        # ngspice's branch current flows into the source's + terminal: delivered = -branch.
        input_currents = -stack(wanted.input_currents)
        bias_currents = tuple(-stack(layer) for layer in wanted.bias_currents)
        if not all(torch.isfinite(v).all() for v in voltages):
            raise SolverError(f"ngspice returned NaN/inf node voltages; {SolverStatus.NONFINITE.hint}")

        from analog.solvers.physics import kcl_residual

        if _fast_refusal(circuit) is None:
            residual = kcl_residual(circuit.detach().to(torch.float64), source_V, voltages, nudge_A)
        else:  # user device models: KCL is ngspice's own business (its tolerances)
            residual = torch.full((batch,), float("nan"), dtype=torch.float64)
        return Equilibrium(
            voltages=voltages,
            iterations=sum(r["iterations"] for r in results),
            residual_A=residual,
            status=SolverStatus.CONVERGED,
            solver=self.name,
            source_currents=(input_currents, bias_currents),
            history={
                "netlist_s": netlist_s,
                "ngspice_s": [r["seconds"] for r in results],
                "retries": [list(r["rungs"]) for r in results],
            },
        )


def _fast_refusal(circuit: Circuit) -> str | None:
    models = getattr(circuit.spec, "user_models", None)
    return None if models is None else models.fast_refusal()


def _chunk_task(circuit, source_V, nudge_A, names, start: int, stop: int, sweep: bool) -> tuple:
    """The worker task solving samples ``start..stop-1``: a ``.dc`` sweep or one ``.op`` per sample."""
    from analog.netlist import build_batch, build_operating_point, netlist_text

    nudge = None if nudge_A is None else nudge_A[start:stop]
    if sweep:
        deck = netlist_text(build_batch(circuit, source_V[start:stop], nudge))
        return (_run_sweep, deck, names, stop - start, f"samples {start}..{stop - 1}")
    deck = netlist_text(build_operating_point(circuit, source_V[start], None if nudge is None else nudge[0]))
    sources = {f"vin{k}": source_V[start:stop, k].numpy() for k in range(source_V.shape[1])}
    if nudge is not None:
        sources.update({f"inudge{j}": nudge[:, j].numpy() for j in range(nudge.shape[1])})
    return (_run_ops, deck, names, sources, start)
