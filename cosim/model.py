"""The feedforward-tied energy-based model: an ordered chain of digital and energy blocks (analog
circuits, :class:`~cosim.block.AnalogBlock`, or their idealisation, :class:`~cosim.hopfield.HopfieldBlock`).

``loss.backward()`` is backprop inside the digital blocks and the chosen gradient method (EP or the
exact implicit reference) inside each analog block, chained end to end (Nest & Ernoult 2024).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from analog.solvers.base import EquilibriumSolver
from cosim.block import AnalogBlock
from cosim.conv_block import ConvAnalogBlock, conv_solver_for
from cosim.gradients import GradientMethod
from cosim.hopfield import HopfieldBlock

__all__ = ["FFEBM"]


class FFEBM(nn.Module):
    """``blocks`` are applied in order; energy blocks are :class:`AnalogBlock` or
    :class:`HopfieldBlock`, the rest torch modules."""

    def __init__(self, blocks: Iterable[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if not self.energy_blocks():
            raise ValueError("model.blocks: an ff-EBM needs at least one energy block (analog or hopfield)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def analog_blocks(self) -> list[AnalogBlock]:
        return [b for b in self.blocks if isinstance(b, AnalogBlock)]

    def conv_blocks(self) -> list[ConvAnalogBlock]:
        """The convolutional analog blocks (their own solvers; not among :meth:`analog_blocks`)."""
        return [b for b in self.blocks if isinstance(b, ConvAnalogBlock)]

    def energy_blocks(self) -> list[AnalogBlock | ConvAnalogBlock | HopfieldBlock]:
        """The blocks trained by a gradient method: analog (dense and conv) and Hopfield ones."""
        return [b for b in self.blocks if isinstance(b, AnalogBlock | ConvAnalogBlock | HopfieldBlock)]

    def set_gradient_method(self, method: GradientMethod) -> FFEBM:
        for block in self.energy_blocks():
            block.method = method
        return self

    def set_solver(self, solver: EquilibriumSolver) -> FFEBM:
        """Give every dense analog block ``solver``. Conv blocks keep their layer-wise solver, except
        with ngspice: then they run their own decks (:class:`~analog.solvers.conv_ngspice.ConvNgspiceSolver`)
        in ``solver``'s worker pool, which ``solver`` keeps owning (closing it ends theirs), and a
        later non-ngspice ``solver`` gives them a layer-wise solver again. An ngspice solver without
        a worker pool is refused for conv blocks rather than ignored."""
        for block in self.conv_blocks():
            block.solver = conv_solver_for(solver, block.solver, block.name)
        for block in self.analog_blocks():
            block.solver = solver
        return self

    def clip_(self) -> None:
        """Clip every analog conductance into its device range (after an optimizer step)."""
        for block in [*self.analog_blocks(), *self.conv_blocks()]:
            block.clip_()

    def solver_stats(self) -> dict[str, float]:
        """Iterations and residual (analog) or last change (Hopfield) of the last solve of each
        phase, per energy block."""
        out = {}
        for block in self.energy_blocks():
            for phase, stats in block.stats.items():
                for key, value in stats.items():
                    out[f"{block.name}.{phase}.{key}"] = value
        return out
