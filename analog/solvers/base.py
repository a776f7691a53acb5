"""The equilibrium-solver interface shared by every backend.

A solver takes a :class:`~analog.circuit.Circuit`, a batch of input source voltages and, for the
nudged phases of Equilibrium Propagation, currents injected at the output nodes; it returns an
:class:`Equilibrium` that carries the node voltages, the current delivered by every source, the
iteration count, the KCL residual and a status. A solver never returns a non-converged result
silently: it raises :class:`SolverError` (or returns a status the caller asked to tolerate).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import torch

from analog.circuit import Circuit

__all__ = [
    "Equilibrium",
    "EquilibriumSolver",
    "SolverError",
    "SolverStatus",
    "WrappedSolver",
    "check_batch",
    "check_tol_V",
    "tolerance_V",
]


class SolverStatus(enum.Enum):
    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    NONFINITE = "nonfinite"

    @property
    def hint(self) -> str:
        return {
            SolverStatus.CONVERGED: "",
            SolverStatus.MAX_ITERATIONS: (
                "raise max_iterations, loosen tol_V, or check that the conductances and inputs are in range"
            ),
            SolverStatus.NONFINITE: (
                "a node voltage became NaN/inf: check the inputs and conductances for NaN/inf values"
            ),
        }[self]


class SolverError(RuntimeError):
    """An equilibrium could not be found; the message names the samples and gives a hint."""


@dataclass
class Equilibrium:
    """The solution of Kirchhoff's current law for a batch of samples.

    Voltages are physical node voltages (volts); currents are in amperes. Shapes use ``B`` for the
    batch and ``n_l`` for the size of free layer ``l``. Source currents may be computed lazily
    (the fast solver derives them from the node voltages only when asked, since the input-source
    currents cost a product as large as the input layer's).
    """

    voltages: tuple[torch.Tensor, ...]
    """Free-layer node voltages, layers ``1..L``, each ``[B, n_l]``."""
    iterations: int
    """Solver iterations (Newton steps for the fast solver; ngspice's total for the batch)."""
    residual_A: torch.Tensor
    """Largest absolute KCL residual over the free nodes of each sample, ``[B]``."""
    status: SolverStatus
    solver: str
    source_currents: (
        tuple[torch.Tensor, tuple[torch.Tensor, ...]] | Callable[[], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]
    ) = field(repr=False, default=None)
    """``(input, bias)`` currents delivered by the sources, or a function computing them."""
    history: dict[str, list] = field(default_factory=dict)
    """Per-iteration diagnostics (e.g. ``residual_A``, ``cocontent``) when requested."""

    def _currents(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if callable(self.source_currents):
            self.source_currents = self.source_currents()
        if self.source_currents is None:
            raise ValueError(f"{self.solver} equilibrium: source currents were not recorded")
        return self.source_currents

    @property
    def input_currents_A(self) -> torch.Tensor:
        """Current each input source delivers into the network, ``[B, n_sources]``."""
        return self._currents()[0]

    @property
    def bias_currents_A(self) -> tuple[torch.Tensor, ...]:
        """Current each bias source delivers into layer ``l+1``, ``[B, n_bias]`` per layer."""
        return self._currents()[1]

    @property
    def output(self) -> torch.Tensor:
        """Output-layer voltages ``[B, n_out]``."""
        return self.voltages[-1]

    @property
    def batch_size(self) -> int:
        return self.voltages[0].shape[0]

    def all_voltages(self) -> torch.Tensor:
        """Free-node voltages of every layer concatenated, ``[B, sum n_l]``."""
        return torch.cat(self.voltages, dim=1)


def check_tol_V(tol_V: float | None) -> None:
    """Refuse a solver tolerance outside (0, 1) V (``None``: the solver's default)."""
    if tol_V is not None and not (0 < tol_V < 1):
        raise ValueError(f"tol_V: must be in (0, 1) V, got {tol_V!r}")


def tolerance_V(tol_V: float | None, dtype: torch.dtype, float32_V: float = 1e-5) -> float:
    """``tol_V``, or the default for ``dtype``: 1e-12 V in float64 (rounding of node voltages near
    a volt), ``float32_V`` in float32."""
    if tol_V is not None:
        return tol_V
    return 1e-12 if dtype == torch.float64 else float32_V


def check_batch(
    circuit: Circuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None, finite: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate a batch of source voltages ``[B, n_sources]`` and nudging currents ``[B, n_out]``.

    ``finite=False`` skips the pass over the source voltages that looks for NaN/inf, for a caller
    that finds them from its own product with the sources (any NaN/inf source makes every column
    of that product NaN/inf) and then calls this again to name them."""
    spec = circuit.spec
    if source_V.ndim != 2 or source_V.shape[1] != spec.n_sources:
        raise ValueError(f"source voltages: expected shape [batch, {spec.n_sources}], got {list(source_V.shape)}")
    if source_V.shape[0] == 0:
        raise ValueError("source voltages: the batch is empty")
    # A sum is NaN/inf when any term is: one reduction instead of an elementwise test.
    if finite and not torch.isfinite(source_V.sum()):
        bad = (~torch.isfinite(source_V)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"source voltages: NaN/inf in samples {bad[:10]}; clean the input data")
    if nudge_A is not None:
        if nudge_A.shape != (source_V.shape[0], spec.n_outputs):
            raise ValueError(
                f"nudging currents: expected shape [{source_V.shape[0]}, {spec.n_outputs}], got {list(nudge_A.shape)}"
            )
        if not torch.isfinite(nudge_A.sum()):
            raise ValueError("nudging currents: contain NaN/inf (is the upstream gradient finite?)")
    return source_V, nudge_A


class EquilibriumSolver(ABC):
    """One backend that finds the DC equilibrium of a circuit for a batch of samples.

    Every solver can be closed, and used as a context manager that closes it: backends holding
    processes or files (ngspice's workers) release them in :meth:`close`; the others have nothing
    to release.
    """

    name: str = "abstract"
    smooth_diodes: bool = True
    """The equilibrium solves the Shockley diode equations, so the KCL Jacobian exists that
    implicit differentiation needs (``False`` for the ideal-diode limit)."""

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default: most solvers hold nothing
        """Release what the solver holds (worker processes); a later solve may start them again."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def solve(
        self,
        circuit: Circuit,
        source_V: torch.Tensor,
        nudge_A: torch.Tensor | None = None,
        init: Equilibrium | None = None,
    ) -> Equilibrium:
        """Solve the batch.

        ``source_V``: input source voltages ``[B, n_sources]`` (V). ``nudge_A``: current injected
        into each output node ``[B, n_out]`` (A), ``None`` for the free phase. ``init``: a previous
        equilibrium of the same batch to start from (ignored by solvers that cannot warm start).
        """


class WrappedSolver(EquilibriumSolver):
    """A solver that passes every solve to ``inner``; subclasses override :meth:`solve` to change
    what the inner solver is asked or to record it. The wrapper does not own ``inner``: closing the
    wrapper leaves ``inner`` open for its owner."""

    def __init__(self, inner: EquilibriumSolver):
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def smooth_diodes(self) -> bool:
        return self.inner.smooth_diodes

    def solve(self, circuit, source_V, nudge_A=None, init=None) -> Equilibrium:
        return self.inner.solve(circuit, source_V, nudge_A, init)
