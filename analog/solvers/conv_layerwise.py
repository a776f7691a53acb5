"""The exact layer-wise solver for convolutional blocks (:mod:`analog.conv_circuit`), matrix-free.

The nodes of one layer are not joined to each other, so the layer sweeps of
:mod:`analog.solvers.layerwise` apply unchanged: with its neighbours held, every node solves its own
scalar KCL (K) of :mod:`analog.conv_circuit` (``D v + f(v) = b``), by the same safeguarded Newton
from the same Lambert-W start (:func:`~analog.solvers.layer_nodes.cold_start`), with the same
stopping rule and over-relaxation. Only the couplings differ: a layer's drive ``b`` is
``c_l + conv(v_{l-1}, K_{l-1}) + conv^T(v_{l+1}, K_l)``, so a sweep costs two convolutions per layer,
and the input convolution (the sources are fixed) is computed once per batch. The diagonal ``D``
comes from convolutions of ones (:meth:`~analog.conv_circuit.ConvCircuit.diagonal`).

Voltages are flat per layer, ``[B, C_l H W]`` (channel-major, as ``Tensor.flatten(1)`` of
``[B, C_l, H, W]``), so that an :class:`~analog.solvers.base.Equilibrium` of a conv block has the
shapes of any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analog.conv_circuit import ConvCircuit
from analog.solvers.base import Equilibrium, check_batch, tolerance_V
from analog.solvers.layer_nodes import Layer, cold_start, layer_constants
from analog.solvers.layerwise import LayerwiseSolver, warm_omega
from analog.solvers.physics import LayeredSystem

__all__ = ["ConvLayerwiseSolver", "ConvSystem", "conv_kcl_residual"]


class ConvSystem(LayeredSystem):
    """(K) for one conv circuit and one batch: what :class:`LayeredSystem` holds for a dense block
    (flat free layers, ``diag``, ``const``, the diodes), with convolutions for its couplings. Unit
    layer scales (the inverting amplifiers have gain -1), nominal diodes.

    ``source_V``: ``[B, 2 C_0 H W]`` volts (:meth:`ConvCircuitSpec.source_voltages`); ``nudge_A``:
    ``[B, C_L H W]`` amperes injected into the output nodes, or ``None``.
    """

    def __init__(self, circuit: ConvCircuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None):
        # Not LayeredSystem.__init__: that one builds a dense block's matrices. The attributes set
        # here are those its diode and layout methods (inherited) read.
        spec = circuit.spec
        self.circuit, self.spec = circuit, spec
        self.dtype, self.device = circuit.dtype, circuit.device
        self.source_V = source_V.to(dtype=self.dtype, device=self.device)
        self.batch = source_V.shape[0]
        self.depth = spec.depth
        self.sizes = spec.layer_sizes[1:]
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.n_free = self.offsets[-1]
        self.layer_scales = spec.scales()
        self.scale = torch.ones(self.n_free, dtype=self.dtype, device=self.device)
        self.unit_scale = True
        self.weights = None
        self.offdiag = self.wire_blocks = None
        self.diag = torch.cat([d.flatten() for d in circuit.diagonal()])
        const = [circuit.bias_drive(l).expand(self.batch, *spec.grid(l)) for l in range(1, self.depth + 1)]
        # The input product, once per batch, over both sources of every pair (each is its own
        # source, so the gradient of each is its own too).
        rows = self.source_rows()
        const[0] = const[0] + torch.nn.functional.conv2d(rows, circuit.kernels[0], padding=spec.padding)
        self.const = torch.cat([c.flatten(1) for c in const], dim=1)
        if nudge_A is not None:
            self.layer(self.const, self.depth).add_(nudge_A.to(dtype=self.dtype, device=self.device))
        self.diode = spec.diode
        rails = ((spec.diode_up_V, 1.0), (spec.diode_down_V, -1.0))
        self.rails = [(rail, sign) for rail, sign in rails if rail is not None]
        signs = torch.tensor([sign for _, sign in self.rails], dtype=self.dtype, device=self.device)
        self._rail_signs = signs.view(-1, 1, 1)
        self._rail_offsets = torch.tensor([-s * r for r, s in self.rails], dtype=self.dtype, device=self.device)
        self._rail_offsets = self._rail_offsets.view(-1, 1, 1)
        self.area = self.emission = None
        self.breakdown = None

    def shaped(self, x: torch.Tensor, l: int) -> torch.Tensor:
        """Free layer ``l`` (1-based) of a flat ``[B, N]`` tensor as ``[B, C_l, H, W]``."""
        return self.layer(x, l).reshape(x.shape[0], *self.spec.grid(l))

    def below(self, l: int, part: torch.Tensor) -> torch.Tensor:
        """Current layer ``l - 1``'s nodes (flat ``part``) bring into layer ``l`` (>= 2), flat."""
        v = part.reshape(part.shape[0], *self.spec.grid(l - 1))
        return self.circuit.forward(l - 1, v).flatten(1)

    def above(self, l: int, part: torch.Tensor) -> torch.Tensor:
        """Current layer ``l + 1``'s nodes (flat ``part``) bring into layer ``l`` (< L), flat."""
        v = part.reshape(part.shape[0], *self.spec.grid(l + 1))
        return self.circuit.backward(l, v).flatten(1)

    def coupling(self, u: torch.Tensor) -> torch.Tensor:
        """``A u``: the off-diagonal part of (K) applied to flat ``u`` ``[B, N]`` (symmetric)."""
        parts = self.split(u)
        out = []
        for l in range(1, self.depth + 1):
            a = torch.zeros_like(parts[l - 1])
            if l > 1:
                a = a + self.below(l, parts[l - 2])
            if l < self.depth:
                a = a + self.above(l, parts[l])
            out.append(a)
        return torch.cat(out, dim=1)

    def residual(self, u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Net current into every free node, ``[B, N]`` (A)."""
        return torch.addcmul(self.const, self.diag, u, value=-1.0).sub_(f).add_(self.coupling(u))

    def source_currents(self, u: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Current every input source delivers ``[B, 2 C_0 H W]`` and every bias source into each
        layer ``[B, n_bias]``, amperes."""
        circuit, spec = self.circuit, self.spec
        src = self.source_rows()
        v1 = self.shaped(u, 1)
        into = torch.nn.functional.conv_transpose2d(v1, circuit.kernels[0], padding=spec.padding)
        inputs = (src * circuit.row_totals(0) - into).flatten(1)
        bias_V = spec.bias_voltages(self.dtype, self.device)
        biases = []
        for l in range(1, self.depth + 1):
            b = circuit.biases[l - 1]
            node_sum = self.shaped(u, l).sum((2, 3))
            biases.append(spec.positions * bias_V * b.sum(1) - node_sum @ b.T)
        return inputs, tuple(biases)

    def source_rows(self) -> torch.Tensor:
        """The input sources as crossbar 0's rows, ``[B, 2 C_0, H, W]`` volts."""
        return self.spec.source_rows(self.source_V)


@dataclass
class ConvLayer(Layer):
    """A free layer of a conv block: (2) of :mod:`analog.solvers.layerwise` with convolutions."""

    def drive(self, parts: list[torch.Tensor]) -> torch.Tensor:
        system, l, b = self.system, self.l, self.const
        if l > 1:
            b = b + system.below(l, parts[l - 2])
        if l < system.depth:
            b = b + system.above(l, parts[l])
        return b


@dataclass
class ConvLayerwiseSolver(LayerwiseSolver):
    """:class:`~analog.solvers.layerwise.LayerwiseSolver` for :class:`~analog.conv_circuit.ConvCircuit`
    (its eager sweeps; the fused kernels take matrices)."""

    name: str = "fast-conv"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fuse:
            raise ValueError("fuse: the compiled layer sweeps take dense matrices; conv blocks run the eager sweeps")

    def solve(
        self,
        circuit: ConvCircuit,
        source_V: torch.Tensor,
        nudge_A: torch.Tensor | None = None,
        init: Equilibrium | None = None,
    ) -> Equilibrium:
        if not isinstance(circuit, ConvCircuit):
            raise TypeError(f"{self.name}: solves conv circuits (analog.conv_circuit.ConvCircuit), got {circuit!r}")
        source_V, nudge_A = check_batch(circuit, source_V, nudge_A)
        system = ConvSystem(circuit, source_V, nudge_A)
        tol = tolerance_V(self.tol_V, system.dtype)
        if init is not None:
            if init.batch_size != system.batch:
                raise ValueError(f"init: warm start has batch {init.batch_size}, the sources have {system.batch}")
            parts = [v.to(system.dtype).clone() for v in init.voltages]
            return self._sweep(system, parts, tol, warm_omega(init) if self.overrelax else 1.0)
        # Cold: a forward pass, each layer at (5) of its drive from the layer before (nothing
        # from the layer after yet), then the sweeps.
        parts = []
        for layer in self._layers(system):
            b = layer.const if layer.l == 1 else layer.const + system.below(layer.l, parts[-1])
            parts.append(cold_start(system, layer, b))
        return self._sweep(system, parts, tol)

    def _layers(self, system) -> list:
        return layer_constants(system, ConvLayer)


def conv_kcl_residual(
    circuit: ConvCircuit, source_V: torch.Tensor, voltages: tuple[torch.Tensor, ...], nudge_A=None
) -> torch.Tensor:
    """Largest absolute KCL residual (A) over the free nodes of each sample, ``[B]``, for flat
    free-layer ``voltages`` (e.g. ngspice's)."""
    system = ConvSystem(circuit, source_V, nudge_A)
    u = torch.cat([v.to(system.dtype) for v in voltages], dim=1)
    f, _ = system.diodes(u)
    return system.residual(u, f).abs().amax(1)
