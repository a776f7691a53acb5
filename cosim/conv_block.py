"""The conv analog block (:mod:`analog.conv_circuit`) as a torch module whose backward pass is EP.

Like :class:`~cosim.block.AnalogBlock`: forward solves the free phase and returns the output
nodes' voltages (as maps ``[B, C_L, H, W]``, so that digital pooling or a flatten can follow);
backward runs the nudged phases with the upstream gradient and returns the estimates of
:mod:`cosim.conv_gradients` for the source voltages (autograd carries them on into the block
before) and the conductances. The parameters are the programmed conductances (kernels
``[C_{l+1}, 2 C_l, k, k]``, bias devices ``[2, C_{l+1}]``), ideal devices.
"""

from __future__ import annotations

import torch
from torch import nn

from analog.conv_circuit import ConvCircuit, ConvCircuitSpec
from analog.ngspice.pool import NgspicePool
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError
from analog.solvers.conv_layerwise import ConvLayerwiseSolver
from analog.solvers.conv_ngspice import ConvNgspiceSolver
from cosim.block import check_kcl, check_upstream_gradient, exact_reading_method
from cosim.conv_gradients import conv_gradients
from cosim.gradients import EquilibriumPropagation, GradientMethod

__all__ = ["ConvAnalogBlock", "conv_solver_for"]


def conv_solver_for(solver: EquilibriumSolver, current: EquilibriumSolver | None, name: str) -> EquilibriumSolver:
    """The solver of conv block ``name`` (now solved by ``current``) in a model given ``solver``:
    with ngspice, a :class:`ConvNgspiceSolver` in ``solver``'s worker pool (``solver`` keeps owning
    it); otherwise ``current``, or a layer-wise solver where ``current`` is ngspice or none."""
    if solver.name == "ngspice":
        pool = getattr(solver, "pool", None)
        if not isinstance(pool, NgspicePool):
            raise ValueError(
                f"{name}: a conv analog block runs ngspice in an ngspice solver's worker pool; {solver!r} has none"
            )
        if isinstance(current, ConvNgspiceSolver) and current.pool is pool:
            return current
        return ConvNgspiceSolver(pool=pool)
    if current is None or current.name == "ngspice":
        return ConvLayerwiseSolver()
    return current


class _ConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block: ConvAnalogBlock, source_V: torch.Tensor, *conductances: torch.Tensor):
        circuit = block.circuit(conductances)
        source_V = source_V.detach()
        try:
            free = block.solver.solve(circuit, source_V)
        except SolverError as exc:
            raise SolverError(f"analog block {block.name}, free phase: {exc}") from None
        block.record("free", free)
        ctx.block, ctx.circuit, ctx.source_V, ctx.free = block, circuit, source_V, free
        return free.output.to(source_V.dtype).clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        block: ConvAnalogBlock = ctx.block
        check_upstream_gradient(grad_output, block.name, "conv analog")
        try:
            grads = conv_gradients(block.method, block.solver, ctx.circuit, ctx.source_V, ctx.free, grad_output)
        except SolverError as exc:
            raise SolverError(f"analog block {block.name}, nudged phases: {exc}") from None
        for phase, eq in grads.phases.items():
            block.record(phase, eq)
        ctx.free = None
        return (None, grads.source_V, *grads.weights, *grads.biases)


class ConvAnalogBlock(nn.Module):
    """A conv resistive network with trainable conductances (siemens).

    ``forward(x)``: input maps ``[B, C_0, H, W]`` (or flat ``[B, C_0 H W]``) -> output voltages
    ``[B, C_L, H, W]``. ``method``: :class:`~cosim.gradients.EquilibriumPropagation` (exact
    readings) or :class:`~cosim.gradients.ImplicitDifferentiation`; ``solver``: one that solves
    :class:`~analog.conv_circuit.ConvCircuit` (default the layer-wise
    :class:`~analog.solvers.conv_layerwise.ConvLayerwiseSolver`).
    """

    def __init__(
        self,
        spec: ConvCircuitSpec,
        solver: EquilibriumSolver | None = None,
        method: GradientMethod | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        name: str = "analog-conv",
    ):
        super().__init__()
        self.spec = spec
        self.name = name
        self.solver = solver if solver is not None else ConvLayerwiseSolver()
        self.method = method if method is not None else EquilibriumPropagation()
        kernels, biases = spec.random_conductances(torch.Generator().manual_seed(seed), dtype)
        self.weights = nn.ParameterList([nn.Parameter(t) for t in kernels])
        self.biases = nn.ParameterList([nn.Parameter(t) for t in biases])
        self.stats: dict[str, dict[str, float]] = {}
        """Last solve of each phase: ``iterations`` and ``residual_A`` (largest over the batch)."""

    @property
    def method(self) -> GradientMethod:
        return self._method

    @method.setter
    def method(self, method: GradientMethod) -> None:
        self._method = exact_reading_method(method, self.name, "a conv analog block")

    def conductances(self) -> list[nn.Parameter]:
        return [*self.weights, *self.biases]

    def circuit(self, conductances=None) -> ConvCircuit:
        """The circuit of the current (detached) programmed conductances."""
        tensors = [t.detach() for t in (self.conductances() if conductances is None else conductances)]
        depth = self.spec.depth
        return ConvCircuit(self.spec, tuple(tensors[:depth]), tuple(tensors[depth:]))

    def record(self, phase: str, eq: Equilibrium) -> None:
        check_kcl(eq, self.spec, f"analog block {self.name}, {phase} phase")
        self.stats[phase] = {"iterations": float(eq.iterations), "residual_A": float(eq.residual_A.max())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.spec.grid(0)
        if tuple(x.shape[1:]) != grid and (x.ndim != 2 or x.shape[1] != self.spec.n_inputs):
            raise ValueError(
                f"{self.name}: takes input maps [batch, {', '.join(map(str, grid))}] (channels, H, W), got "
                f"{list(x.shape)}; match the block's channels[0] and side to the block before it"
            )
        source_V = self.spec.source_voltages(x.to(self.weights[0].dtype))
        out = _ConvFunction.apply(self, source_V, *self.conductances())
        return out.view(x.shape[0], *self.spec.grid(self.spec.depth))

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip the optimizer's requested conductances into ``[g_min, g_max]`` (ideal devices)."""
        lo, hi = self.spec.conductance.g_min_S, self.spec.conductance.g_max_S
        for p in self.conductances():
            p.clamp_(lo, hi)

    def extra_repr(self) -> str:
        channels = "-".join(map(str, self.spec.channels))
        k, (h, w) = self.spec.kernel_size, self.spec.side
        kind = f"conv {k}x{k} channels {channels} on {h}x{w}"
        return f"{self.name}: {kind}, solver={self.solver.name}, method={self.method.name}"
