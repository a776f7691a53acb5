"""ngspice (through PySpice's shared-library interface) as an equilibrium solver: the ground truth.

ngspice runs only inside the worker processes of an :class:`~analog.ngspice.pool.NgspicePool`
(recycled after ``max_tasks_per_child`` jobs, a time limit per job, killed and replaced when they
hang or die, never outliving this process); :mod:`analog.ngspice.worker` runs the decks there.

A batch is split into chunks of at most ``max_batch`` samples; each chunk is one ``.dc`` sweep
(see :func:`analog.netlist.build_batch`), so ngspice orders its sparse matrix once per chunk.
``mode="per_op"`` runs one ``.op`` per sample instead (the slow reference the benchmarks compare
against).

A chunk that does not converge climbs a retry ladder (:data:`~analog.ngspice.worker.RETRY_LADDER`:
more iterations with gmin stepping, source stepping, relaxed tolerances, then one ``.op`` per
sample, each with ngspice's full homotopy) before the error names the first sample that failed. A
netlist that ngspice cannot parse is reported at once, quoting ngspice
(:class:`~analog.ngspice.worker.NetlistError`).

``Equilibrium.history`` records ``netlist_s`` (parent-side deck building, per chunk) and
``ngspice_s`` (worker-side load + run + read-back, per chunk), so benchmarks can separate them.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch

from analog.circuit import Circuit
from analog.ngspice.pool import NgspicePool
from analog.ngspice.worker import RETRY_LADDER, NotConverged, run_ops, run_sweep
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError, SolverStatus, check_batch

__all__ = ["NgspiceSolver"]


class NgspiceSolver(EquilibriumSolver):
    """ngspice in ``workers`` processes, ``max_batch`` samples per ``.dc`` analysis.

    ``mode``: ``"batch"`` (one ``.dc`` sweep per chunk) or ``"per_op"`` (one ``.op`` per sample).
    ``max_tasks_per_child``: chunks a worker runs before it is replaced (bounds ngspice's memory).
    ``timeout_s``: longest wait for one chunk before its worker is declared hung and replaced,
    seconds; ``None`` (default): ``max(60 s, 20 x the time per sample and netlist line measured on
    this solver's earlier chunks of the same kind (sweep or per-op) x the chunk's samples x its
    netlist lines)``, 900 s until a first chunk of that kind has finished (see
    :meth:`analog.ngspice.pool.NgspicePool.limit_s`). A chunk past its limit twice raises
    :class:`SolverError` naming the limit and the fix. Use as a context manager or call
    :meth:`close` to stop the workers; they start on the first solve and are reused.
    """

    name = "ngspice"

    def __init__(
        self,
        workers: int = 1,
        max_batch: int = 256,
        mode: Literal["batch", "per_op"] = "batch",
        max_tasks_per_child: int = 200,
        timeout_s: float | None = None,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: must be an integer >= 1, got {max_batch!r}")
        if mode not in ("batch", "per_op"):
            raise ValueError(f"mode: must be 'batch' or 'per_op', got {mode!r}")
        self.pool = NgspicePool(workers, max_tasks_per_child, timeout_s, owner="NgspiceSolver")
        """The worker processes (see :class:`~analog.ngspice.pool.NgspicePool`)."""
        self.max_batch = max_batch
        self.mode = mode

    @property
    def workers(self) -> int:
        return self.pool.workers

    @property
    def max_tasks_per_child(self) -> int:
        return self.pool.max_tasks_per_child

    @property
    def timeout_s(self) -> float | None:
        return self.pool.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float | None) -> None:
        self.pool.timeout_s = value

    def close(self) -> None:
        """Stop the worker processes (a later solve starts new ones)."""
        self.pool.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (starting them if needed); for memory accounting."""
        return self.pool.worker_pids()

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

        def run(tasks: list[tuple]) -> list:
            # The unit of work behind the automatic time limit: samples x netlist lines.
            work = [(stop - start) * task[1].count("\n") for (start, stop), task in tasks]
            return self.pool.map([task for _, task in tasks], work, keep=(NotConverged,))

        results = run([((start, stop), task(start, stop, batched)) for start, stop in chunks])
        failed = [k for k, r in enumerate(results) if isinstance(r, NotConverged)]
        if failed and batched:  # last rung: one .op per sample, each with ngspice's full homotopy
            retried = run([(chunks[k], task(*chunks[k], False)) for k in failed])
            for k, r in zip(failed, retried, strict=True):
                if not isinstance(r, NotConverged):
                    r["rungs"] = [*results[k].tried, *r["rungs"]]
                results[k] = r
        for (start, _), r in zip(chunks, results, strict=True):
            if isinstance(r, NotConverged):
                ladder = ", ".join(("default", *(name for name, _ in RETRY_LADDER)))
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
        return (run_sweep, deck, names, stop - start, f"samples {start}..{stop - 1}")
    deck = netlist_text(build_operating_point(circuit, source_V[start], None if nudge is None else nudge[0]))
    sources = {f"vin{k}": source_V[start:stop, k].numpy() for k in range(source_V.shape[1])}
    if nudge is not None:
        sources.update({f"inudge{j}": nudge[:, j].numpy() for j in range(nudge.shape[1])})
    return (run_ops, deck, names, sources, start)
