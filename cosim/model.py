"""The feedforward-tied energy-based model: an ordered chain of digital and analog blocks.

``loss.backward()`` is backprop inside the digital blocks and the chosen gradient method (EP or the
exact implicit reference) inside each analog block, chained end to end (Nest & Ernoult 2024).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from analog.solvers.base import EquilibriumSolver
from cosim.block import AnalogBlock
from cosim.gradients import GradientMethod

__all__ = ["FFEBM"]


class FFEBM(nn.Module):
    """``blocks`` are applied in order; analog ones are :class:`AnalogBlock`, the rest torch modules."""

    def __init__(self, blocks: Iterable[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if not any(isinstance(b, AnalogBlock) for b in self.blocks):
            raise ValueError("model.blocks: an ff-EBM needs at least one analog block")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def analog_blocks(self) -> list[AnalogBlock]:
        return [b for b in self.blocks if isinstance(b, AnalogBlock)]

    def set_gradient_method(self, method: GradientMethod) -> FFEBM:
        for block in self.analog_blocks():
            block.method = method
        return self

    def set_solver(self, solver: EquilibriumSolver) -> FFEBM:
        for block in self.analog_blocks():
            block.solver = solver
        return self

    def clip_(self) -> None:
        """Clip every analog conductance into its device range (after an optimizer step)."""
        for block in self.analog_blocks():
            block.clip_()

    def solver_stats(self) -> dict[str, float]:
        """Iterations and residual of the last solve of each phase, per analog block."""
        out = {}
        for block in self.analog_blocks():
            for phase, stats in block.stats.items():
                for key, value in stats.items():
                    out[f"{block.name}.{phase}.{key}"] = value
        return out
