"""Where long jobs run: a Dask cluster, a ``LocalCluster`` by default or an existing scheduler.

``cosim sweep`` runs its rows here, and the ngspice checks (``cosim eval --solver ngspice``,
``cosim gradcheck --solver ngspice``, the validation after ``cosim train``) their chunks of samples
(:mod:`cosim.ngspice_jobs`). A :class:`Cluster` names the place; :meth:`Cluster.client` opens it
and closes what it started on every exit, an error or Ctrl-C included.

Worker processes are started non-daemonic: ngspice runs in the spawn processes of an
:class:`~analog.ngspice.pool.NgspicePool`, and a daemonic process may not have children. They still
do not outlive the command: Dask's workers end with their nanny, the ngspice processes with their
worker (:mod:`analog.ngspice.pool`). Workers of an existing scheduler are the user's: started as
``dask worker --no-nanny ADDRESS`` (or with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``), see
:func:`check_worker`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from cosim.config import ConfigError

__all__ = ["IN_PROCESS", "Cluster", "DaemonicWorkerError", "check_scheduler", "check_worker"]


def check_scheduler(address: str, timeout_s: float = 3.0) -> str:
    """``address`` of a Dask scheduler (``tcp://HOST:PORT`` or ``HOST:PORT``), checked for its form
    and that something listens there, within ``timeout_s``; refused before anything is written."""
    text = address.strip()
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ConfigError(
            f"--scheduler: {address!r} is not a Dask scheduler address; give tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786)"
        )
    fix = "start the scheduler (`dask scheduler`) or give its address, or omit --scheduler for a local cluster"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass  # a closed port is refused here at once; Dask's connect would retry until its timeout
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--scheduler: nothing answers at {parts.hostname}:{port} ({reason}, waited up to {timeout_s:g} s); {fix}"
        ) from None
    address = f"{parts.scheme}://{parts.hostname}:{port}"
    # Something listens; only Dask's handshake tells a scheduler from a proxy or another service.
    from distributed.comm import connect

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout_s), timeout_s)
        await comm.close()

    try:
        asyncio.run(handshake())
    except Exception as exc:  # a foreign service fails Dask's handshake in any way (garbage lengths included)
        raise ConfigError(
            f"--scheduler: {parts.hostname}:{port} accepts connections but does not answer as a Dask scheduler "
            f"within {timeout_s:g} s ({type(exc).__name__}); {fix}"
        ) from None
    return address


class DaemonicWorkerError(RuntimeError):
    """A Dask worker that cannot start ngspice's worker processes."""


def check_worker() -> None:
    """Inside a task: raise :class:`DaemonicWorkerError` with the fix when this worker process is
    daemonic (a worker of an existing scheduler started with a nanny and Dask's defaults)."""
    if multiprocessing.current_process().daemon:
        raise DaemonicWorkerError(
            "this Dask worker is a daemonic process, which may not start ngspice's worker processes; start the "
            "workers as `dask worker --no-nanny ADDRESS` or with DASK_DISTRIBUTED__WORKER__DAEMON=False"
        )


@dataclass(frozen=True)
class Cluster:
    """Where a job runs: a ``LocalCluster`` of ``workers`` processes (one thread each), or the Dask
    scheduler at ``scheduler`` (``tcp://HOST:PORT``) with the workers it has."""

    workers: int = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"--workers: must be an integer >= 1, got {self.workers!r}")

    @property
    def spread(self) -> bool:
        """Whether a job goes to a cluster at all: one local worker runs it in this process instead
        (no cluster start-up, the same result)."""
        return self.scheduler is not None or self.workers > 1

    def checked(self) -> Cluster:
        """This cluster with its scheduler address checked (:func:`check_scheduler`): call it before
        a long computation, so that a wrong address fails at once."""
        if self.scheduler is None:
            return self
        return Cluster(self.workers, check_scheduler(self.scheduler))

    def describe(self) -> str:
        return f"Dask scheduler {self.scheduler}" if self.scheduler else f"{self.workers}-worker Dask LocalCluster"

    @contextmanager
    def spread_client(self) -> Iterator:
        """:meth:`client` when this cluster spreads (:attr:`spread`), else ``None``: run here."""
        if not self.spread:
            yield None
            return
        with self.client() as client:
            yield client

    @contextmanager
    def client(self) -> Iterator:
        """A :class:`distributed.Client` of this cluster; a ``LocalCluster`` it starts is closed
        on exit, on an error or Ctrl-C as well."""
        import dask
        from distributed import Client, LocalCluster

        if self.scheduler:
            with Client(self.scheduler) as client:
                yield client
            return
        # For the cluster's whole life: a nanny reads the setting again when it restarts a worker.
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None)
            try:
                with Client(cluster) as client:
                    yield client
            finally:
                cluster.close()


IN_PROCESS = Cluster()
"""No cluster: one worker, which is this process."""
