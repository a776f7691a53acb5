"""Kirchhoff's current law of a layered resistive network, in the rescaled voltages ``u = v / s``.

Free layers ``1..L`` are stored flat: ``u`` has shape ``[B, N]`` with ``N = sum n_l`` and layer
``l`` occupying ``u[:, offsets[l-1]:offsets[l]]``. In these coordinates (see
:mod:`analog.circuit`) the network is reciprocal, so KCL is the stationarity condition of the
rescaled co-content

    E(u) = 1/2 sum_edges g (u_i - u_j)^2 + sum_nodes Phi_l(u) - sum_out (I_nudge / s_L) u   (1)

whose Hessian ``H = Lap + diag(f')`` is symmetric positive definite (``Lap`` the weighted
Laplacian restricted to free nodes, ``f'`` the diode small-signal conductances). The residual
``r(u) = -dE/du`` is the net current *into* each node divided by ``s_l``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from analog.circuit import Circuit
from analog.solvers.base import SolverError
from analog.solvers.general import GeneralSystem

__all__ = ["LayeredSystem", "kcl_residual"]


class LayeredSystem:
    """Precomputed pieces of (1) for one circuit and one batch of sources and nudging currents.

    ``source_V``: ``[B, n_sources]`` volts; ``nudge_A``: ``[B, n_out]`` amperes injected into the
    output nodes (or ``None``).
    """

    def __init__(self, circuit: Circuit, source_V: torch.Tensor, nudge_A: torch.Tensor | None = None):
        spec = circuit.spec
        if spec.user_models is not None and (reason := spec.user_models.fast_refusal()):
            raise SolverError(reason)
        if not circuit.ideal_peripherals:
            which = spec.peripherals.set_fields() + ([] if circuit.amp_offset is None else ["amplifier offset draws"])
            raise SolverError(
                f"non-ideal peripherals ({', '.join(which)}): the layered solvers and the "
                "fast transient assume ideal drivers and amplifiers; use solver.name = 'fast' (DC) or 'ngspice'"
            )
        self.circuit = circuit
        self.spec = spec
        dtype, device = circuit.dtype, circuit.device
        self.dtype, self.device = dtype, device
        self.source_V = source_V.to(dtype=dtype, device=device)
        self.batch = source_V.shape[0]
        self.sizes = spec.layer_sizes[1:]
        self.depth = spec.depth
        offsets = [0]
        for n in self.sizes:
            offsets.append(offsets[-1] + n)
        self.offsets = offsets
        self.n_free = offsets[-1]
        self.layer_scales = spec.scales()
        shared = _circuit_constants(circuit)
        self.scale = shared.scale
        self.unit_scale = all(x == 1.0 for x in self.layer_scales)
        self.weights = shared.weights
        """Coupling of free layer ``l`` (sources for 0) to ``l + 1`` in (1): the conductances, or
        ``G_+ - G_-`` for dual-rail crossbars (:attr:`~analog.circuit.CircuitSpec.hidden_pairs`)."""
        self.offdiag: list[torch.Tensor] | None = None
        """Off-diagonal part of each free layer's own block of the Hessian (wired crossbars)."""
        self.wire_blocks: list[dict[str, torch.Tensor]] | None = None
        wires = circuit.crossbar_wires()
        if wires is None:
            diag, const = self._ideal_wires(shared)
        else:
            diag, const = self._reduced_wires(wires, shared.bias_V)
        if nudge_A is not None:
            const[-1] = const[-1] + nudge_A.to(dtype=dtype, device=device) / self.layer_scales[-1]
        self.diag = shared.diag if wires is None else torch.cat(diag)
        self.const = torch.cat(const, dim=1)

        self.diode = spec.diode
        self.rails = shared.rails
        self._rail_signs, self._rail_offsets = shared.rail_signs, shared.rail_offsets
        self.area, self.emission, self.breakdown = shared.area, shared.emission, shared.breakdown

    def _ideal_wires(self, shared: _CircuitConstants) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Diagonal conductance sums D and constant currents c of (1) per layer, u-space: the
        circuit's own parts (:class:`_CircuitConstants`) and the input product of this batch."""
        const = [row.expand(self.batch, -1) for row in shared.bias_rows]
        # The unavoidable input product: computed once per batch.
        const[0] = torch.addmm(shared.bias_rows[0], self.source_V, self.weights[0])
        return shared.diags, const

    def _reduced_wires(self, wires, bias_V: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Like :meth:`_ideal_wires` from the Kron-reduced crossbars (:mod:`analog.wires`): the
        couplings become ``-L_rc``, and each layer's own block ``L_cc`` of the crossbar before it
        plus ``L_rr`` of the crossbar after it is dense. Crossbar ``l`` sees all its terminals
        scaled by ``s_{l+1}``, so in u-space its reduced matrix enters unchanged. The input
        crossbar's rows are all held, so only its blocks that touch the columns are formed."""
        rows = self.spec.nodes_per_layer()
        self._wires = wires
        blocks = [x.blocks(rows[l], self.dtype, self.device, held_rows=l == 0) for l, x in enumerate(wires)]
        self.wire_blocks = blocks
        self.weights = tuple(-b["rc"] for b in blocks)
        diag, const, self.offdiag = [], [], []
        for l in range(1, self.depth + 1):
            s_l = self.layer_scales[l - 1]
            own = blocks[l - 1]["cc"]
            c = -(bias_V / s_l) @ blocks[l - 1]["bc"]
            if l < self.depth:
                own = own + blocks[l]["rr"]
                c = c - (blocks[l]["rb"] @ bias_V) / self.layer_scales[l]
            d = torch.diagonal(own).clone()
            diag.append(d)
            self.offdiag.append(own - torch.diag(d))
            const.append(c.expand(self.batch, -1).clone())
        const[0] = const[0] + self.source_V @ self.weights[0]
        return diag, const

    def first_outer_products(self, max_elements: int = 2_000_000) -> torch.Tensor | None:
        """``P[i] = W_1[i] (x) W_1[i]`` flattened, ``[n_1, n_2^2]`` (cached), so that
        ``W_1^T diag(a) W_1 = (a @ P).view(n_2, n_2)``; ``None`` if it would be too large."""
        if not hasattr(self, "_outer"):
            w = self.weights[1] if self.depth > 1 else None
            if w is None or w.shape[0] * w.shape[1] ** 2 > max_elements:
                self._outer = None
            else:
                self._outer = (w.unsqueeze(2) * w.unsqueeze(1)).reshape(w.shape[0], -1)
        return self._outer

    def layer(self, x: torch.Tensor, l: int) -> torch.Tensor:
        """View of free layer ``l`` (1-based) of a flat ``[B, N]`` tensor."""
        return x[:, self.offsets[l - 1] : self.offsets[l]]

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.layer(x, l) for l in range(1, self.depth + 1))

    def diodes(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u-space diode current leaving each node ``f(u)`` and its derivative, both ``[B, N]``."""
        return self._diodes(u, None if self.unit_scale else self.scale, self.area, self.emission, self.breakdown)

    def node_params(self, layers: Sequence[int]) -> tuple[torch.Tensor | float | None, ...]:
        """``(scale, area, emission, breakdown)`` of the nodes of free layers ``layers`` (1-based),
        concatenated in that order, for :meth:`diodes_of`; ``None`` where it is 1 for every such
        node (``breakdown``: the knee of :meth:`analog.diode.DiodeModel.breakdown_voltage`, ``None``
        without breakdown, a float without spreads)."""
        scale = None
        if any(self.layer_scales[l - 1] != 1.0 for l in layers):
            scale = torch.cat([self.layer(self.scale.unsqueeze(0), l)[0] for l in layers])

        def part(t):
            return None if t is None else torch.cat([t[..., self.offsets[l - 1] : self.offsets[l]] for l in layers], -1)

        breakdown = part(self.breakdown) if isinstance(self.breakdown, torch.Tensor) else self.breakdown
        return scale, part(self.area), part(self.emission), breakdown

    def diodes_of(self, u: torch.Tensor, params: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`diodes` of some nodes alone: ``u`` ``[B, n]`` holds the nodes that ``params``
        (from :meth:`node_params`) describes; the same values as those nodes' part of :meth:`diodes`."""
        return self._diodes(u, *params)

    def _diodes(self, u, scale, area, emission, breakdown) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.rails:
            z = torch.zeros_like(u)
            return z, z
        v = u if scale is None else u * scale
        # Junction voltage of the up diode is v - V_up, of the down diode V_dn - v: one broadcast
        # operation for both, exactly the same floating-point values as the two subtractions.
        vd = torch.addcmul(self._rail_offsets, self._rail_signs, v)
        i, g = self.diode.current(vd, area, emission, breakdown)
        if len(self.rails) == 2:
            f, g = i[0] - i[1], g[0] + g[1]
        else:
            f, g = self.rails[0][1] * i[0], g[0]
        return (f if scale is None else f / scale), g

    def diode_cocontent(self, u: torch.Tensor) -> torch.Tensor:
        """``sum_nodes Phi_l(u)`` of (1), ``[B]``."""
        if not self.rails:
            return torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        v = u * self.scale
        vd = torch.stack([sign * (v - rail) for rail, sign in self.rails])
        phi = self.diode.cocontent(vd, self.area, self.emission, self.breakdown)
        return (phi.sum(0) / self.scale**2).sum(1)

    def residual(self, u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """``r = -dE/du``: net current into each node over ``s_l``, ``[B, N]``."""
        r = torch.addcmul(self.const, self.diag, u, value=-1.0).sub_(f)
        if self.offdiag is not None:
            for l in range(1, self.depth + 1):
                self.layer(r, l).sub_(self.layer(u, l) @ self.offdiag[l - 1])
        for l in range(1, self.depth):
            w = self.weights[l]
            self.layer(r, l + 1).addmm_(self.layer(u, l), w)
            self.layer(r, l).addmm_(self.layer(u, l + 1), w.T)
        return r

    def cocontent(self, u: torch.Tensor, r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """E(u) of (1) up to a constant, from quantities the solver already has, ``[B]``.

        The quadratic part is ``1/2 u.(Lap u) - c.u`` and ``Lap u = c - r - f``.
        """
        return -0.5 * (u * (self.const + r + f)).sum(1) + self.diode_cocontent(u)

    def physical_residual(self, r: torch.Tensor) -> torch.Tensor:
        """Largest KCL error in amperes per sample (``s_l r``), ``[B]``."""
        return (r if self.unit_scale else r * self.scale).abs().amax(1)

    def to_voltages(self, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.split(u * self.scale)

    def from_voltages(self, voltages: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([v.to(self.dtype) for v in voltages], dim=1) / self.scale

    def source_currents(self, u: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Current delivered into the network by every input source ``[B, n_sources]`` and by
        every bias source ``[B, n_bias]`` per layer, amperes."""
        if self.wire_blocks is not None:
            return self._wired_source_currents(u)
        w0 = self.weights[0]
        u1 = self.layer(u, 1)
        inputs = self.source_V * w0.sum(1) - u1 @ w0.T
        bias_V = self.spec.bias_voltages(self.dtype, self.device)
        biases = []
        for l in range(1, self.depth + 1):
            b = self.circuit.biases[l - 1]
            v = self.layer(u, l) * self.layer_scales[l - 1]
            biases.append(bias_V * b.sum(1) - v @ b.T)
        return inputs, tuple(biases)

    def _wired_source_currents(self, u: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`source_currents` through the reduced crossbars: ``L_red`` times the physical
        terminal voltages (rows, bias rows, columns); the input crossbar's, whose row blocks are
        not formed, from one solve of its wires at these voltages."""
        bias_V = self.spec.bias_voltages(self.dtype, self.device)
        y = self.layer(u, 1) * self.layer_scales[0]
        terminals = torch.cat([self.source_V, bias_V.expand(self.batch, -1), y], dim=1)
        first = self._wires[0]
        current = first.terminal_currents(terminals)
        n_in = self.source_V.shape[1]
        inputs, biases = current[:, :n_in], [current[:, n_in : first.rows]]
        for l in range(1, self.depth):
            b, s = self.wire_blocks[l], self.layer_scales[l]  # crossbar l drives layer l + 1, scale s_{l+1}
            x, y = self.layer(u, l) * s, self.layer(u, l + 1) * s
            biases.append(x @ b["rb"] + bias_V @ b["bb"] + y @ b["bc"].T)
        return inputs, tuple(biases)


def kcl_residual(
    circuit: Circuit,
    source_V: torch.Tensor,
    voltages: tuple[torch.Tensor, ...],
    nudge_A: torch.Tensor | None = None,
) -> torch.Tensor:
    """Largest absolute KCL residual (A) over the free nodes of each sample, ``[B]``.

    ``voltages``: physical node voltages of free layers ``1..L``, each ``[B, n_l]``.
    """
    if not circuit.ideal_peripherals:
        general = GeneralSystem(circuit, source_V, nudge_A)
        return general.residual(torch.cat([t.to(general.dtype) for t in voltages], dim=1)).abs().amax(1)
    system = LayeredSystem(circuit, source_V, nudge_A)
    u = system.from_voltages(voltages)
    f, _ = system.diodes(u)
    return system.physical_residual(system.residual(u, f))


@dataclass(frozen=True)
class _CircuitConstants:
    """The parts of (1) that depend on the circuit alone, not on the batch: computed once per
    circuit (so once per weight update, shared by its free and nudged phases)."""

    scale: torch.Tensor
    weights: tuple[torch.Tensor, ...]
    bias_V: torch.Tensor
    diags: list[torch.Tensor]
    diag: torch.Tensor
    bias_rows: list[torch.Tensor]
    """Per layer, the bias sources' current into each node, u-space ``[n_l]``."""
    rails: list[tuple[float, float]]
    rail_signs: torch.Tensor
    rail_offsets: torch.Tensor
    area: torch.Tensor | None
    emission: torch.Tensor | None
    breakdown: float | torch.Tensor | None


def _circuit_constants(circuit: Circuit) -> _CircuitConstants:
    """:class:`_CircuitConstants` of ``circuit``, kept on it while its tensors are unchanged (their
    in-place version counters are part of the key); not kept for tensors that carry gradients."""
    tensors = [*circuit.weights, *circuit.biases, circuit.diode_area, circuit.diode_emission]
    tensors = [t for t in tensors if t is not None]
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    cached = circuit.__dict__.get("_layered_constants")
    if cached is not None and cached[0] == key:
        return cached[1]
    shared = _compute_constants(circuit)
    if not any(t.requires_grad for t in tensors):
        object.__setattr__(circuit, "_layered_constants", (key, shared))
    return shared


def _compute_constants(circuit: Circuit) -> _CircuitConstants:
    spec, dtype, device = circuit.spec, circuit.dtype, circuit.device
    sizes, scales = spec.layer_sizes[1:], spec.scales()
    scale = torch.cat([torch.full((n,), s, dtype=dtype, device=device) for n, s in zip(sizes, scales, strict=True)])
    bias_V = spec.bias_voltages(dtype, device)
    diags, bias_rows = [], []
    for l in range(1, spec.depth + 1):
        w_in, b_in = circuit.weights[l - 1], circuit.biases[l - 1]
        d = w_in.sum(0) + b_in.sum(0)
        if l < spec.depth:
            # A dual-rail node's own conductance counts the devices on both of its rails.
            d = d + spec.fold_rows(l, circuit.weights[l].sum(1), sign=1.0)
        diags.append(d)
        row = torch.zeros(sizes[l - 1], dtype=dtype, device=device)
        if b_in.numel():
            row = (bias_V / scales[l - 1]) @ b_in
        bias_rows.append(row)
    rails = [(spec.diode_up_V, 1.0, 0), (spec.diode_down_V, -1.0, 1)]
    present = [r for r in rails if r[0] is not None]
    signs = torch.tensor([sign for _, sign, _ in present], dtype=dtype, device=device).view(-1, 1, 1)
    offsets = torch.tensor([-sign * rail for rail, sign, _ in present], dtype=dtype, device=device).view(-1, 1, 1)
    # Per-diode Is factors and factors of N, [n_rails, 1, N] against the stacked junction voltages.
    rows = [row for _, _, row in present]
    area = emission = None
    if circuit.diode_area is not None and present:
        area = circuit.diode_area[rows].to(dtype=dtype, device=device).unsqueeze(1)
    if circuit.diode_emission is not None and present:
        emission = circuit.diode_emission[rows].to(dtype=dtype, device=device).unsqueeze(1)
    # The breakdown knee of every diode (it depends on Is).
    breakdown = spec.diode.breakdown_voltage(area, emission)
    if isinstance(breakdown, torch.Tensor):
        breakdown = breakdown.to(dtype=dtype, device=device)
    return _CircuitConstants(
        scale=scale,
        weights=tuple(spec.coupling(l, w) for l, w in enumerate(circuit.weights)),
        bias_V=bias_V,
        diags=diags,
        diag=torch.cat(diags),
        bias_rows=bias_rows,
        rails=[(rail, sign) for rail, sign, _ in present],
        rail_signs=signs,
        rail_offsets=offsets,
        area=area,
        emission=emission,
        breakdown=breakdown,
    )
