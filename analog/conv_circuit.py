"""A convolutional deep resistive network: crossbars whose devices are tied like a convolution kernel.

Layers ``0..L`` are grids of nodes ``C_l x H x W`` (stride 1, 'same' zero padding, odd kernel side
``k``, ``p = k // 2``). Crossbar ``l`` joins node ``(c', y, x)`` of layer ``l+1`` to row terminal
``(r, y + dy, x + dx)`` of layer ``l`` (``|dy|, |dx| <= p``) by a conductance ``G_l[c', r, dy, dx]``:
the devices of one kernel tap are physically replicated at every position and programmed to one
value; at the border the taps that would reach a padded position have no device.

Signed weights from positive conductances:

* layer 0 is driven as ``+/-`` source pairs, ``2 C_0`` row channels ``cat([g x, -g x])``;
* every hidden layer is dual-rail: each node drives the next crossbar directly (rows ``0..C_l-1``)
  and through an inverting bidirectional amplifier (rows ``C_l..2C_l-1``: a VCVS of gain -1 and a
  CCCS that draws ``I / A = -I`` from the node, ``I`` the current the VCVS delivers), so the
  crossbar sees ``cat([v, -v])``, as :class:`~analog.circuit.CircuitSpec`'s ``hidden_pairs``
  (rows ``[+rail; -rail]``).

With gain -1 the amplifier keeps the circuit reciprocal in the node voltages themselves (no
rescaling), and the co-content is

    E(v) = 1/2 sum_devices G (z_r - v_c')^2 + 1/2 sum_bias B (V_s - v)^2 + sum_nodes Phi(v),   (C)

``z`` the rows (``+v`` or ``-v``). Its stationarity (KCL) at a free node of layer ``l`` reads

    D_l v_l + f(v_l) = c_l + conv(v_{l-1}, K_{l-1}) + conv^T(v_{l+1}, K_l),                    (K)

with the signed kernel ``K_l = G_l[:, :C_l] - G_l[:, C_l:]`` and the node's total conductance
``D_l`` (both rails' devices, the devices to the layer before and the bias devices), which depends
on the position at the border: it is a convolution (and transposed convolution) of ones with the
unsigned kernels, never a dense matrix. ``c_l = bias_V (B_l^+ - B_l^-)`` per channel, and in layer 1
also the sources' current ``conv(V_src, G_0)`` over all ``2 C_0`` rows (with exact pairs it is
``conv(g x, K_0)``; each source is kept its own, since EP measures each source's current).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

from analog.circuit import MAX_LAYER_SIZE, MAX_VOLTAGE_V
from analog.circuit_checks import check_conductances
from analog.devices import ConductanceRange
from analog.diode import DiodeModel

__all__ = [
    "MAX_CHANNELS",
    "MAX_KERNEL",
    "ConvCircuit",
    "ConvCircuitSpec",
    "bias_pair_products",
    "dual_rail",
    "pair_products",
]

MAX_CHANNELS = 4096
"""Most channels a layer of a conv block may have."""
MAX_KERNEL = 31
"""Largest kernel side."""


def _voltage(name: str, value, allow_none: bool = True) -> None:
    ok = value is None and allow_none
    if not ok and isinstance(value, int | float) and not isinstance(value, bool):
        ok = math.isfinite(value) and abs(value) <= MAX_VOLTAGE_V
    if not ok:
        raise ValueError(f"{name}: must be a voltage in [-{MAX_VOLTAGE_V:g}, {MAX_VOLTAGE_V:g}] V, got {value!r}")


@dataclass(frozen=True)
class ConvCircuitSpec:
    """Topology and fixed electrical parameters of one convolutional analog block (module docstring)."""

    channels: tuple[int, ...]
    """``(C_0, C_1, ..., C_L)``: input channels, then the channels of every free layer."""
    side: tuple[int, int]
    """``(H, W)``: the grid of every layer, nodes."""
    kernel_size: int = 3
    """Side ``k`` of every kernel (odd: 'same' padding ``k // 2``)."""
    input_gain_V: float = 1.0
    """Source volts per unit input value (> 0)."""
    bias_V: float | None = 1.0
    """Voltage of the ``+/-`` bias source pair feeding every layer, volts; ``None``: no bias."""
    diode_up_V: float | None = 0.0
    """Rail of the diode from each free node (anode) to the rail, volts; ``None``: no such diode."""
    diode_down_V: float | None = 0.0
    """Rail of the diode from the rail (anode) to each free node, volts; ``None``: no such diode."""
    diode: DiodeModel = field(default_factory=DiodeModel)
    """Shockley model of every diode (no series resistance or breakdown in conv blocks)."""
    conductance: ConductanceRange = field(default_factory=ConductanceRange)
    """Programmable range of every device, siemens."""
    nudge_scale_V: float = 1.0
    """The nudge's full-scale current is ``g_max * nudge_scale_V`` (as :class:`~analog.circuit.CircuitSpec`)."""
    user_models: ClassVar[None] = None
    """Conv blocks use the built-in diode card (no user model library)."""

    def __post_init__(self) -> None:
        channels, side = tuple(self.channels), tuple(self.side)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "side", side)
        if len(channels) < 2:
            raise ValueError(f"channels: need at least (c_in, c_out), got {channels!r}; e.g. channels = [1, 4, 2]")
        for i, c in enumerate(channels):
            if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CHANNELS:
                raise ValueError(f"channels[{i}]: must be an integer in [1, {MAX_CHANNELS}], got {c!r}")
        if len(side) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in side):
            raise ValueError(f"side: must be two integers >= 1, [H, W], got {list(side)!r}")
        for i, c in enumerate(channels):
            if c * side[0] * side[1] > MAX_LAYER_SIZE:
                raise ValueError(
                    f"channels[{i}]: {c} x {side[0]} x {side[1]} nodes exceed {MAX_LAYER_SIZE} per layer; "
                    "use fewer channels or a smaller side"
                )
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_KERNEL or k % 2 == 0:
            hint = f" (use {k + 1} or {k - 1})" if isinstance(k, int) and k % 2 == 0 and k > 0 else ""
            raise ValueError(
                f"kernel_size: must be an odd integer in [1, {MAX_KERNEL}] ('same' padding k // 2 keeps the "
                f"grid), got {k!r}{hint}"
            )
        if not (isinstance(self.input_gain_V, int | float) and 0 < self.input_gain_V <= MAX_VOLTAGE_V):
            raise ValueError(f"input_gain_V: must be a voltage in (0, {MAX_VOLTAGE_V:g}] V, got {self.input_gain_V!r}")
        for name in ("bias_V", "diode_up_V", "diode_down_V"):
            _voltage(name, getattr(self, name))
        if self.bias_V is not None and self.bias_V <= 0:
            raise ValueError(f"bias_V: must be > 0 V (the pair is +/-bias_V) or None, got {self.bias_V!r}")
        if not (isinstance(self.nudge_scale_V, int | float) and 1e-3 <= self.nudge_scale_V <= MAX_VOLTAGE_V):
            raise ValueError(f"nudge_scale_V: must be in [0.001, {MAX_VOLTAGE_V:g}] V, got {self.nudge_scale_V!r}")
        if self.diode.rs_ohm or self.diode.bv_V is not None:
            key = "diode_bv_V" if self.diode.bv_V is not None else "diode rs_ohm"
            raise ValueError(f"{key}: conv analog blocks model nominal diodes only (no breakdown or RS); drop it")

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Number of free layers ``L``."""
        return len(self.channels) - 1

    @property
    def padding(self) -> int:
        return self.kernel_size // 2

    @property
    def positions(self) -> int:
        return self.side[0] * self.side[1]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Nodes (layer 0: input values) of layers ``0..L``, ``C_l H W``."""
        return tuple(c * self.positions for c in self.channels)

    @property
    def n_inputs(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_sources(self) -> int:
        """Input voltage sources: a ``+/-`` pair per input value."""
        return 2 * self.n_inputs

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def n_bias(self) -> int:
        return 0 if self.bias_V is None else 2

    def grid(self, l: int) -> tuple[int, int, int]:
        """``(C_l, H, W)`` of free layer ``l`` (``l = 0``: the input values)."""
        return (self.channels[l], *self.side)

    def kernel_shapes(self) -> list[tuple[int, int, int, int]]:
        """``[C_{l+1}, 2 C_l, k, k]`` per crossbar: rows ``[+rail; -rail]``."""
        k = self.kernel_size
        return [(self.channels[l + 1], 2 * self.channels[l], k, k) for l in range(self.depth)]

    def bias_shapes(self) -> list[tuple[int, int]]:
        """``[n_bias, C_{l+1}]`` per layer: one device per bias source and channel, at every position."""
        return [(self.n_bias, c) for c in self.channels[1:]]

    def scales(self) -> tuple[float, ...]:
        """Every layer is at scale 1 (the inverting amplifiers have gain magnitude 1)."""
        return (1.0,) * self.depth

    def full_scale_current_A(self) -> float:
        return self.conductance.g_max_S * self.nudge_scale_V

    # -- sources -------------------------------------------------------------------------------

    def source_voltages(self, x: torch.Tensor) -> torch.Tensor:
        """Input maps ``x`` ``[B, C_0, H, W]`` (or flat ``[B, C_0 H W]``) -> source voltages
        ``[B, 2 C_0 H W]``: the ``+`` sources of every input, then the ``-`` ones."""
        if x.ndim == 4 and tuple(x.shape[1:]) == self.grid(0):
            x = x.flatten(1)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(
                f"inputs: expected shape [batch, {', '.join(map(str, self.grid(0)))}] (channels, H, W), "
                f"got {list(x.shape)}"
            )
        v = self.input_gain_V * x
        return torch.cat([v, -v], dim=1)

    def source_rows(self, source_V: torch.Tensor) -> torch.Tensor:
        """Source voltages ``[B, 2 C_0 H W]`` as crossbar 0's row maps ``[B, 2 C_0, H, W]``."""
        return source_V.view(source_V.shape[0], 2 * self.channels[0], *self.side)

    def bias_voltages(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """``[+bias_V, -bias_V]`` (empty without bias), volts."""
        signs = torch.tensor([1.0, -1.0][: self.n_bias], dtype=dtype, device=device)
        return signs * (self.bias_V or 0.0)

    def random_conductances(self, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64):
        """Kernels and bias conductances uniform in ``[g_min, g_max]``: ``(kernels, biases)``."""
        lo, hi = self.conductance.g_min_S, self.conductance.g_max_S
        shapes = (self.kernel_shapes(), self.bias_shapes())
        return tuple(
            [torch.empty(s, dtype=dtype).uniform_(lo, hi, generator=generator) for s in group] for group in shapes
        )


@dataclass(frozen=True, eq=False)
class ConvCircuit:
    """A :class:`ConvCircuitSpec` with its conductances (siemens)."""

    spec: ConvCircuitSpec
    kernels: tuple[torch.Tensor, ...]
    """``kernels[l]``: ``[C_{l+1}, 2 C_l, k, k]`` (see :meth:`ConvCircuitSpec.kernel_shapes`)."""
    biases: tuple[torch.Tensor, ...]
    """``biases[l]``: ``[n_bias, C_{l+1}]``."""
    check_range: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(self.kernels))
        object.__setattr__(self, "biases", tuple(self.biases))
        check_conductances("kernels", self.kernels, self.spec.kernel_shapes(), self.spec.conductance, self.check_range)
        check_conductances("biases", self.biases, self.spec.bias_shapes(), self.spec.conductance, self.check_range)

    @classmethod
    def random(cls, spec: ConvCircuitSpec, seed: int = 0, dtype: torch.dtype = torch.float64) -> ConvCircuit:
        kernels, biases = spec.random_conductances(torch.Generator().manual_seed(seed), dtype)
        return cls(spec, tuple(kernels), tuple(biases))

    @property
    def dtype(self) -> torch.dtype:
        return self.kernels[0].dtype

    @property
    def device(self) -> torch.device:
        return self.kernels[0].device

    def detach(self) -> ConvCircuit:
        return ConvCircuit(
            self.spec, tuple(t.detach() for t in self.kernels), tuple(t.detach() for t in self.biases), self.check_range
        )

    def to(self, dtype: torch.dtype | None = None, device=None) -> ConvCircuit:
        def move(t):
            return t.to(dtype=dtype or t.dtype, device=device or t.device)

        return ConvCircuit(
            self.spec, tuple(move(t) for t in self.kernels), tuple(move(t) for t in self.biases), self.check_range
        )

    def signed(self, l: int) -> torch.Tensor:
        """``K_l = G_l[:, :C_l] - G_l[:, C_l:]`` of (K), ``[C_{l+1}, C_l, k, k]``."""
        c = self.spec.channels[l]
        return self.kernels[l][:, :c] - self.kernels[l][:, c:]

    def forward(self, l: int, v: torch.Tensor) -> torch.Tensor:
        """Current crossbar ``l >= 1`` brings from the dual-rail layer ``l`` (``[B, C_l, H, W]``)
        into layer ``l+1`` held at zero volts: ``conv(v, K_l)``."""
        return F.conv2d(v, self.signed(l), padding=self.spec.padding)

    def backward(self, l: int, w: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`forward`: ``conv^T(w, K_l)``, ``[B, C_l, H, W]``."""
        return F.conv_transpose2d(w, self.signed(l), padding=self.spec.padding)

    def row_totals(self, l: int) -> torch.Tensor:
        """Total conductance at every row terminal of crossbar ``l``, ``[2 C_l, H, W]``."""
        ones = torch.ones(1, *self.spec.grid(l + 1), dtype=self.dtype, device=self.device)
        return F.conv_transpose2d(ones, self.kernels[l], padding=self.spec.padding)[0]

    def column_totals(self, l: int) -> torch.Tensor:
        """Total conductance at every node of layer ``l+1`` to crossbar ``l``'s rows, ``[C_{l+1}, H, W]``."""
        c, h, w = self.spec.grid(l)
        ones = torch.ones(1, 2 * c, h, w, dtype=self.dtype, device=self.device)
        return F.conv2d(ones, self.kernels[l], padding=self.spec.padding)[0]

    def diagonal(self) -> list[torch.Tensor]:
        """``D_l`` of (K) per free layer, ``[C_l, H, W]``."""
        spec, out = self.spec, []
        for l in range(1, spec.depth + 1):
            d = self.column_totals(l - 1) + self.biases[l - 1].sum(0).view(-1, 1, 1)
            if l < spec.depth:
                rows = self.row_totals(l)
                d = d + rows[: spec.channels[l]] + rows[spec.channels[l] :]
            out.append(d)
        return out

    def bias_drive(self, l: int) -> torch.Tensor:
        """``c_l`` of (K) for free layer ``l`` (1-based), ``[C_l, 1, 1]``."""
        b = self.biases[l - 1]
        if not b.numel():
            return torch.zeros(self.spec.channels[l], 1, 1, dtype=self.dtype, device=self.device)
        return (self.spec.bias_voltages(self.dtype, self.device) @ b).view(-1, 1, 1)


def dual_rail(v: torch.Tensor) -> torch.Tensor:
    """Row voltages a dual-rail layer ``v`` ``[B, C, H, W]`` drives: ``cat([v, -v])`` on channels."""
    return torch.cat([v, -v], dim=1)


def pair_products(p, q, r, t, shape) -> torch.Tensor:
    """``sum_b sum_devices (p_row - q_col)(r_row - t_col)`` for every kernel tap, ``shape``
    ``[C', R, k, k]``: the convolutional counterpart of :func:`cosim.gradients.pair_products`.

    ``p``, ``r``: row terminals ``[B, R, H, W]``; ``q``, ``t``: columns ``[B, C', H, W]``; ``p`` may
    be ``None`` for zero (fixed sources). Tap ``(dy, dx)`` joins row position ``(y + dy, x + dx)`` to
    column position ``(y, x)`` where both exist, so every sum is a convolution weight gradient
    (``conv2d_weight``); no ``[B, R, C', ...]`` tensor is formed."""
    pad = (shape[2] // 2, shape[3] // 2)
    ones_rows = torch.ones(1, *r.shape[1:], dtype=r.dtype, device=r.device)
    ones_cols = torch.ones(1, *t.shape[1:], dtype=t.dtype, device=t.device)
    out = conv2d_weight(ones_rows, shape, (q * t).sum(0, keepdim=True), padding=pad)
    if p is None:
        return out - conv2d_weight(r, shape, q, padding=pad)
    out = out + conv2d_weight((p * r).sum(0, keepdim=True), shape, ones_cols, padding=pad)
    # sum_b r q + sum_b p t is one correlation over the two batches stacked: one pass, not two.
    return out - conv2d_weight(torch.cat([r, p]), shape, torch.cat([q, t]), padding=pad)


def bias_pair_products(q: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sum_b sum_positions (0 - q)(r_s - t)`` for each bias source ``s`` (values ``r`` ``[n_bias]``)
    and channel: ``[n_bias, C]``, with ``q``, ``t`` ``[B, C, H, W]`` (the bias sources do not move)."""
    return (q * t).sum((0, 2, 3)).unsqueeze(0) - r.unsqueeze(1) * q.sum((0, 2, 3)).unsqueeze(0)
