"""ngspice as the ground truth of a conv block: the unrolled deck of :mod:`analog.conv_netlist`, one
``.dc`` sweep per chunk of the batch, in the worker pool every ngspice run goes through
(:class:`~analog.ngspice.pool.NgspicePool`, :func:`~analog.ngspice.worker.run_sweep` with its retry
ladder)."""

from __future__ import annotations

import numpy as np
import torch

from analog.conv_circuit import ConvCircuit
from analog.ngspice.pool import NgspicePool
from analog.ngspice.worker import NotConverged, run_sweep
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError, SolverStatus, check_batch
from analog.solvers.conv_layerwise import conv_kcl_residual

__all__ = ["ConvNgspiceSolver"]


class ConvNgspiceSolver(EquilibriumSolver):
    """ngspice in ``workers`` processes, ``max_batch`` samples per ``.dc`` analysis, for
    :class:`~analog.conv_circuit.ConvCircuit` (``init`` is ignored, as for the dense blocks).
    ``pool``: run in another solver's worker pool (e.g. the dense
    :class:`~analog.solvers.NgspiceSolver`'s of the same model), which that solver keeps owning:
    :meth:`close` then leaves it open."""

    name = "ngspice"

    def __init__(
        self, workers: int = 1, max_batch: int = 64, timeout_s: float | None = None, pool: NgspicePool | None = None
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: must be an integer >= 1, got {max_batch!r}")
        self.owns_pool = pool is None
        self.pool = NgspicePool(workers, 200, timeout_s, owner="ConvNgspiceSolver") if pool is None else pool
        self.max_batch = max_batch

    def close(self) -> None:
        if self.owns_pool:
            self.pool.close()

    def solve(self, circuit: ConvCircuit, source_V, nudge_A=None, init=None) -> Equilibrium:
        from analog.conv_netlist import conv_netlist_text, conv_probes

        del init
        if not isinstance(circuit, ConvCircuit):
            raise TypeError(f"{type(self).__name__}: solves conv circuits, got {circuit!r}")
        source_V, nudge_A = check_batch(circuit, source_V, nudge_A)
        source_V = source_V.detach().to(torch.float64)
        nudge_A = None if nudge_A is None else nudge_A.detach().to(torch.float64)
        batch = source_V.shape[0]
        circuit = circuit.detach()
        wanted = conv_probes(circuit)
        names = wanted.all()
        chunks = [(a, min(a + self.max_batch, batch)) for a in range(0, batch, self.max_batch)]
        tasks, work = [], []
        for a, b in chunks:
            deck = conv_netlist_text(circuit, source_V[a:b], None if nudge_A is None else nudge_A[a:b])
            tasks.append((run_sweep, deck, names, b - a, f"samples {a}..{b - 1}"))
            work.append((b - a) * deck.count("\n"))
        results = self.pool.map(tasks, work, keep=(NotConverged,))
        for (a, _), r in zip(chunks, results, strict=True):
            if isinstance(r, NotConverged):
                raise SolverError(
                    f"ngspice did not converge on sample {a + r.done} of the conv block's batch:\n{r.message}"
                )
        vectors = {n: np.concatenate([r["vectors"][i] for r in results]) for i, n in enumerate(names)}

        def stack(group) -> torch.Tensor:
            if not group:
                return torch.zeros((batch, 0), dtype=torch.float64)
            return torch.from_numpy(np.stack([vectors[n] for n in group], axis=1))

        voltages = tuple(stack(layer) for layer in wanted.voltages)
        if not all(torch.isfinite(v).all() for v in voltages):
            raise SolverError(f"ngspice returned NaN/inf node voltages; {SolverStatus.NONFINITE.hint}")
        # ngspice's branch current flows into the source's + terminal: delivered = -branch.
        currents = (-stack(wanted.input_currents), tuple(-stack(layer) for layer in wanted.bias_currents))
        return Equilibrium(
            voltages=voltages,
            iterations=sum(r["iterations"] for r in results),
            residual_A=conv_kcl_residual(circuit.to(torch.float64), source_V, voltages, nudge_A),
            status=SolverStatus.CONVERGED,
            solver=self.name,
            source_currents=currents,
            history={"ngspice_s": [r["seconds"] for r in results]},
        )
