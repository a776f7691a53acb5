"""The pool of ngspice worker processes shared by the DC solver and the transient runner.

Workers are ``spawn`` processes (a forked copy of a parent that holds torch threads or an ngspice
instance is not safe) that run the task functions of :mod:`analog.ngspice.worker`. The pool

* recycles each worker after ``max_tasks_per_child`` jobs, which bounds PySpice's memory growth;
* waits at most a time limit per job (see :meth:`NgspicePool.limit_s`); a job past it, or a worker
  that died, gets every worker killed and replaced and the unfinished jobs submitted once more;
  a second failure raises :class:`~analog.solvers.base.SolverError` saying what to change;
* ties every worker's life to its parent: on Linux a worker asks the kernel for ``SIGKILL`` when
  its parent dies (``prctl(PR_SET_PDEATHSIG)``), elsewhere a thread in the worker watches its
  parent id, so a parent killed with ``kill -9`` leaves no ngspice running under init.

The kernel sends the parent-death signal when the *thread* that started the worker ends, not the
process. Workers therefore are only ever started from threads that live as long as the process
pool: every submission goes through one dispatcher thread owned by the pool, and the executor's
own manager thread starts the replacements of recycled workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from analog.ngspice.worker import INSTALL_HINT, ngspice_library
from analog.solvers.base import SolverError

__all__ = ["FIRST_JOB_S", "FLOOR_S", "MARGIN", "NgspicePool"]

FLOOR_S = 60.0
"""Shortest automatic time limit of a job, seconds (covers a replacement worker's start-up)."""
MARGIN = 20.0
"""Automatic limit: this many times the job's expected duration."""
FIRST_JOB_S = 900.0
"""Automatic limit before the pool has timed any job, seconds."""

_PR_SET_PDEATHSIG = 1
_PENDING = object()


def _die_with_parent(parent: int) -> None:
    """Worker initializer: make sure the worker does not outlive process ``parent``."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _key(fn: Callable | None) -> str:
    return "" if fn is None else f"{fn.__module__}.{fn.__qualname__}"


def _timed(fn: Callable, args: tuple) -> tuple[float, object]:
    """Worker side: ``fn(*args)`` and the seconds it took (excludes queueing and worker start-up)."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


class NgspicePool:
    """``workers`` ngspice worker processes, started on the first job and reused.

    ``max_tasks_per_child``: jobs a worker runs before it is replaced (bounds ngspice's memory).
    ``timeout_s``: time limit of every job, seconds, or ``None`` for the automatic limit of
    :meth:`limit_s`. ``owner``: the class users construct, named in error messages.
    Use as a context manager or call :meth:`close` to stop the workers.
    """

    def __init__(
        self,
        workers: int = 1,
        max_tasks_per_child: int = 200,
        timeout_s: float | None = None,
        owner: str = "NgspicePool",
    ) -> None:
        for field, value in (("workers", workers), ("max_tasks_per_child", max_tasks_per_child)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}: must be an integer >= 1, got {value!r}")
        self.workers = workers
        self.max_tasks_per_child = max_tasks_per_child
        self.timeout_s = timeout_s
        self.owner = owner
        self._seconds_per_work: dict[str, float] = {}
        self._pool: cf.ProcessPoolExecutor | None = None
        self._dispatcher: cf.ThreadPoolExecutor | None = None

    @property
    def timeout_s(self) -> float | None:
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float | None) -> None:
        valid = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf
        if value is not None and not valid:
            raise ValueError(f"timeout_s: must be a number of seconds > 0 or None (automatic), got {value!r}")
        self._timeout_s = value

    def limit_s(self, work: float, fn: Callable | None = None) -> float:
        """How long a job of ``work`` units running task function ``fn`` may take, seconds.

        ``timeout_s`` when given. Otherwise ``max(FLOOR_S, MARGIN * rate * work)`` (60 s, 20x), where
        ``rate`` is the slowest seconds per unit of work measured in the workers on this pool's
        finished jobs of the same ``fn``; before one has finished, :data:`FIRST_JOB_S` (900 s).
        The caller chooses the unit: the DC solver counts samples x netlist lines, so that a pool
        first timed on a tiny circuit does not cut off a large one (a rate measured on small decks
        overestimates that of large ones, fixed costs per job, which errs on the side of waiting).
        Rates are kept per task function because one ``.op`` per sample costs far more per sample
        than a ``.dc`` sweep that orders the matrix once.
        """
        if self._timeout_s is not None:
            return float(self._timeout_s)
        rate = self._seconds_per_work.get(_key(fn))
        if rate is None:
            return FIRST_JOB_S
        return max(FLOOR_S, MARGIN * rate * work)

    # -- processes -------------------------------------------------------------------------------

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            if ngspice_library() is None:
                raise SolverError(f"ngspice: no ngspice shared library found; {INSTALL_HINT}")
            if self._dispatcher is None:
                self._dispatcher = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ngspice-dispatch")
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=self.max_tasks_per_child,
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _submit(self, pool: cf.ProcessPoolExecutor, fn: Callable, *args) -> cf.Future:
        # Submitting may start a worker: from the dispatcher thread, so that the worker's parent
        # thread lives as long as the pool (see the module docstring).
        return self._dispatcher.submit(pool.submit, fn, *args).result()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (starting them if needed); for memory accounting."""
        pool = self._executor()
        futures = [self._submit(pool, os.getpid) for _ in range(self.workers)]
        pids = {f.result(timeout=self.limit_s(1.0, os.getpid)) for f in futures}
        return sorted(pids | {p.pid for p in (pool._processes or {}).values() if p.is_alive()})

    def _kill(self) -> None:
        """Kill every worker (a hung ngspice ignores polite shutdowns) and drop the executor."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list((pool._processes or {}).values()):
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker processes (a later job starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._dispatcher is not None:
            self._dispatcher.shutdown(wait=True)
            self._dispatcher = None

    def __enter__(self) -> NgspicePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        dispatcher = getattr(self, "_dispatcher", None)
        if dispatcher is not None:
            dispatcher.shutdown(wait=False)

    # -- jobs ------------------------------------------------------------------------------------

    def map(
        self,
        tasks: Sequence[tuple],
        work: Sequence[float] | None = None,
        keep: tuple[type[BaseException], ...] = (),
    ) -> list:
        """Run ``fn(*args)`` for every ``(fn, *args)`` task in the workers; results in task order.

        ``work``: each job's size in the caller's unit (see :meth:`limit_s`), 1 each by default.
        ``keep``: exception types that come back as the job's result instead of being raised (a
        deck that did not converge is an answer, not a failure of the pool). Any other exception
        of a job is raised. A worker that dies or a job past its limit gets the workers killed and
        replaced and the unfinished jobs submitted once more.
        """
        work = [1.0] * len(tasks) if work is None else [float(w) for w in work]
        if len(work) != len(tasks):
            raise ValueError(f"work: expected {len(tasks)} values (one per task), got {len(work)}")
        results: list = [_PENDING] * len(tasks)
        for attempt in (1, 2):
            pool = self._executor()
            pending = [k for k, r in enumerate(results) if r is _PENDING]
            limit = 0.0
            try:
                futures = {k: self._submit(pool, _timed, tasks[k][0], tasks[k][1:]) for k in pending}
                for k in pending:
                    fn = tasks[k][0]
                    limit = self.limit_s(work[k], fn)
                    try:
                        seconds, results[k] = futures[k].result(timeout=limit)
                    except keep as exc:
                        results[k] = exc
                        continue
                    rate = seconds / max(work[k], 1e-300)
                    self._seconds_per_work[_key(fn)] = max(rate, self._seconds_per_work.get(_key(fn), 0.0))
                return results
            except (cf.process.BrokenProcessPool, cf.TimeoutError) as err:
                self._kill()
                if attempt == 2:
                    raise SolverError(self._failure(err, limit)) from None
        raise AssertionError("unreachable")

    def _failure(self, err: BaseException, limit: float) -> str:
        if isinstance(err, cf.TimeoutError):
            how = (
                f"timeout_s = {self._timeout_s:g} s"
                if self._timeout_s is not None
                else f"automatic: max({FLOOR_S:g} s, {MARGIN:g} x the measured time of this job's size)"
                if limit != FIRST_JOB_S
                else f"automatic, before a job of this kind finished: {FIRST_JOB_S:g} s"
            )
            return (
                f"ngspice: a job ran past its time limit of {limit:.3g} s ({how}) twice; its workers were "
                "killed and replaced. If the job is slow rather than hung (a large netlist, a busy machine), "
                f"raise the limit: {self.owner}(timeout_s=SECONDS). If ngspice hangs on this netlist, export it "
                "(cosim netlist) and run it with `ngspice -b`"
            )
        return (
            f"ngspice: a worker process died twice ({err}) while running these jobs; ngspice may crash on "
            "this netlist: export it (cosim netlist) and run it with `ngspice -b`"
        )
