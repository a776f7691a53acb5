"""The analog block as a torch module whose backward pass is Equilibrium Propagation.

Forward runs the free phase in a circuit solver and returns the output-node voltages. Backward
receives ``dL/dv_out`` from autograd (backprop through the digital blocks after this one), runs the
nudged phases and returns the gradient method's estimates for the source voltages and the
conductances; autograd carries the source-voltage gradient on into the digital block before.
"""

from __future__ import annotations

import torch
from torch import nn

from analog.circuit import Circuit, CircuitSpec
from analog.solvers.base import Equilibrium, EquilibriumSolver
from analog.solvers.newton import FastSolver
from cosim.gradients import EquilibriumPropagation, GradientMethod

__all__ = ["AnalogBlock"]


class _AnalogFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block: AnalogBlock, source_V: torch.Tensor, *conductances: torch.Tensor):
        circuit = block.circuit(conductances)
        source_V = source_V.detach()
        free = block.solver.solve(circuit, source_V)
        block.record("free", free)
        ctx.block, ctx.circuit, ctx.source_V, ctx.free = block, circuit, source_V, free
        return free.output.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        block: AnalogBlock = ctx.block
        if not torch.isfinite(grad_output.sum()):
            raise FloatingPointError(
                f"{block.name}: the gradient arriving at the analog block's outputs contains NaN/inf"
            )
        grads = block.method(block.solver, ctx.circuit, ctx.source_V, ctx.free, grad_output.detach())
        for phase, eq in grads.phases.items():
            block.record(phase, eq)
        ctx.free = None
        return (None, grads.source_V, *grads.weights, *grads.biases)


class AnalogBlock(nn.Module):
    """A resistive network whose conductances are trainable parameters (siemens).

    ``forward(x)``: input values ``[B, n_in]`` (mapped to source voltages by the spec) -> output
    voltages ``[B, n_out]``.
    """

    def __init__(
        self,
        spec: CircuitSpec,
        solver: EquilibriumSolver | None = None,
        method: GradientMethod | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        name: str = "analog",
    ):
        super().__init__()
        self.spec = spec
        self.solver = solver if solver is not None else FastSolver()
        self.method = method if method is not None else EquilibriumPropagation()
        self.name = name
        gen = torch.Generator().manual_seed(seed)
        w, b = spec.random_conductances(gen, dtype)
        self.weights = nn.ParameterList([nn.Parameter(t) for t in w])
        self.biases = nn.ParameterList([nn.Parameter(t) for t in b])
        self.stats: dict[str, dict[str, float]] = {}
        """Last solve of each phase: ``iterations`` and ``residual_A`` (largest over the batch)."""

    def conductances(self) -> list[nn.Parameter]:
        return [*self.weights, *self.biases]

    def circuit(self, conductances=None) -> Circuit:
        """The circuit of the current (detached) conductances."""
        if conductances is None:
            conductances = self.conductances()
        depth = self.spec.depth
        tensors = [t.detach() for t in conductances]
        return Circuit(self.spec, tuple(tensors[:depth]), tuple(tensors[depth:]))

    def record(self, phase: str, eq: Equilibrium) -> None:
        self.stats[phase] = {"iterations": float(eq.iterations), "residual_A": float(eq.residual_A.max())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).to(self.weights[0].dtype)
        source_V = self.spec.source_voltages(x)
        return _AnalogFunction.apply(self, source_V, *self.conductances())

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip every conductance into the device range ``[g_min, g_max]``."""
        lo, hi = self.spec.conductance.g_min_S, self.spec.conductance.g_max_S
        for p in self.conductances():
            p.clamp_(lo, hi)

    def with_solver(self, solver: EquilibriumSolver) -> AnalogBlock:
        self.solver = solver
        return self

    def extra_repr(self) -> str:
        sizes = "-".join(map(str, self.spec.layer_sizes))
        return f"{self.name}: {sizes}, solver={self.solver.name}, method={self.method.name}"
