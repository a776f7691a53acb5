"""ngspice ``.tran`` as the reference for the settling integrator of :mod:`analog.settling`.

One deck per sample (:func:`analog.netlist.build_transient`), run in the workers of an
:class:`~analog.ngspice.pool.NgspicePool` by :func:`analog.ngspice.worker.run_tran`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analog.circuit import Circuit, node_name
from analog.ngspice.pool import NgspicePool
from analog.ngspice.worker import run_tran
from analog.settling import Capacitances

__all__ = ["NgspiceTransient", "NgspiceWaveform"]


@dataclass
class NgspiceWaveform:
    """One sample's ``.tran`` result on ngspice's own time grid."""

    times_s: torch.Tensor
    """``[T]`` ngspice's accepted time points, seconds."""
    voltages: torch.Tensor
    """Free-node voltages ``[T, N]`` (flat over layers 1..L), volts."""
    input_currents_A: torch.Tensor
    """Current each input source delivers, ``[T, n_sources]``."""
    bias_currents_A: tuple[torch.Tensor, ...]
    """Current each bias source delivers into layer ``l+1``, ``[T, n_bias]`` per layer."""
    usage: dict
    """ngspice's counters (``"Transient iterations"``, ``"Transient timepoints"``, ...)."""


def _stack(vectors: dict, group: tuple[str, ...]) -> torch.Tensor:
    """Vectors ``group`` of a run as columns, ``[T, len(group)]``."""
    if not group:
        return torch.zeros(len(vectors["time"]), 0, dtype=torch.float64)
    return torch.from_numpy(np.stack([vectors[n] for n in group], axis=1))


class NgspiceTransient:
    """Runs ``.tran`` decks in ``workers`` ngspice worker processes. A context manager.

    ``max_tasks_per_child``: decks a worker runs before it is replaced (PySpice's ngspice instance
    grows). ``timeout_s``: time limit of one sample's run, seconds, or ``None`` for the automatic
    limit of :meth:`NgspicePool.limit_s` (here: max(60 s, 20x the slowest measured seconds per
    netlist line x the deck's lines); 900 s before any run has finished).
    """

    def __init__(self, workers: int = 1, max_tasks_per_child: int = 50, timeout_s: float | None = None):
        self.pool = NgspicePool(workers, max_tasks_per_child, timeout_s, owner="NgspiceTransient")
        """The worker processes."""

    def __enter__(self) -> NgspiceTransient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (a later run starts new ones)."""
        self.pool.close()

    def run(
        self,
        circuit: Circuit,
        capacitances: Capacitances,
        source_V: torch.Tensor,
        start: torch.Tensor,
        t_stop_s: float,
        nudge_A: torch.Tensor | None = None,
        max_step_s: float | None = None,
    ) -> list[NgspiceWaveform]:
        """Transient of every sample of a batch from ``t = 0`` to ``t_stop_s`` seconds.

        ``source_V`` ``[B, n_sources]`` V, ``start`` ``[B, N]`` V (flat free-node voltages at
        ``t = 0``), ``nudge_A`` ``[B, n_out]`` A or ``None``; ``max_step_s``: see
        :func:`~analog.netlist.build_transient`. Returns one waveform per sample.
        """
        return self.run_many(circuit, capacitances, [(source_V, start, t_stop_s, nudge_A)], max_step_s)[0]

    def run_many(
        self,
        circuit: Circuit,
        capacitances: Capacitances,
        runs: list[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]],
        max_step_s: float | None = None,
    ) -> list[list[NgspiceWaveform]]:
        """:meth:`run` of several batches at once, ``runs`` of ``(source_V, start, t_stop_s,
        nudge_A)`` (e.g. the phases of a training step): every sample's deck of every run goes to
        the workers together, so that they run side by side. One list of waveforms per run."""
        from analog.netlist import build_transient, netlist_text

        spec = circuit.spec
        nodes = tuple(node_name(l, j).lower() for l in range(1, spec.depth + 1) for j in range(spec.layer_sizes[l]))
        inputs = tuple(f"vin{k}#branch" for k in range(spec.n_sources))
        biases = tuple(tuple(f"vb{l}{s}#branch" for s in ("p", "n")[: spec.n_bias]) for l in range(spec.depth))
        names = (*nodes, *inputs, *(n for layer in biases for n in layer))
        node_F = capacitances.nodes_F(circuit.detach().to(torch.float64))
        tasks, counts = [], []
        for r, (source_V, start, t_stop_s, nudge_A) in enumerate(runs):
            for b in range(source_V.shape[0]):
                nudge = None if nudge_A is None else nudge_A[b]
                deck = build_transient(circuit, node_F, source_V[b], start[b], t_stop_s, nudge, max_step_s)
                where = f"sample {b}" if len(runs) == 1 else f"run {r}, sample {b}"
                tasks.append((run_tran, netlist_text(deck), names, where))
            counts.append(source_V.shape[0])
        results = self.pool.map(tasks, work=[task[1].count("\n") for task in tasks])
        waves = [
            NgspiceWaveform(
                times_s=torch.from_numpy(r["time"]),
                voltages=_stack(r, nodes),
                # ngspice's branch current flows into the source's + terminal.
                input_currents_A=-_stack(r, inputs),
                bias_currents_A=tuple(-_stack(r, layer) for layer in biases),
                usage=r["usage"],
            )
            for r in results
        ]
        out, at = [], 0
        for n in counts:
            out.append(waves[at : at + n])
            at += n
        return out
