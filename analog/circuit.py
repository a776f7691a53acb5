"""The deep resistive network (DRN): one analog block described once, for every solver.

Layers are numbered ``0..L``. Layer 0 holds the input voltage sources; layers ``1..L`` hold free
nodes (the last one is the block's output). Between layer ``l`` and ``l+1`` every node pair is
joined by a conductance ``weights[l][i, j]`` (a crossbar), and a pair of bias sources at
``+bias_V`` and ``-bias_V`` is joined to every node of layer ``l+1`` by ``biases[l][p, j]``. Each
free node has a diode to the ``diode_up_V`` rail (anode at the node) and a diode from the
``diode_down_V`` rail (cathode at the node), which bound its voltage.

An optional bidirectional amplifier sits between free layers ``l`` and ``l+1`` (``l >= 1``): a
VCVS drives the crossbar with ``A v`` and a CCCS draws ``I / A`` from the node, ``I`` being the
current the VCVS delivers (Kendall et al. 2020, Sec. 3.3). In the rescaled voltages
``u_l = v_l / s_l`` with ``s_l`` the product of the gains before layer ``l`` the circuit is again a
reciprocal resistive network in which the diode curves of layer ``l`` become ``I(s_l u) / s_l``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from analog.circuit_checks import check_conductances, check_hidden_pairs, check_peripherals
from analog.devices import ConductanceRange
from analog.diode import DiodeModel
from analog.models import UserModels
from analog.peripherals import Peripherals
from analog.wires import CrossbarWires, check_wire_ohm

__all__ = ["MAX_LAYER_SIZE", "MAX_VOLTAGE_V", "Circuit", "CircuitSpec", "node_name"]


MAX_LAYER_SIZE = 100_000
"""Largest layer a block may have (nodes or input values)."""
MAX_VOLTAGE_V = 100.0
"""Largest source, bias or rail voltage magnitude, volts: beyond it no crossbar device survives."""


def node_name(layer: int, index: int) -> str:
    """SPICE name of node ``index`` of ``layer`` (``L1_N3``)."""
    return f"L{layer}_N{index}"


def _finite(value: float | None) -> bool:
    return value is None or (isinstance(value, int | float) and math.isfinite(value))


@dataclass(frozen=True)
class CircuitSpec:
    """Topology and fixed electrical parameters of one analog block (no trainable values)."""

    layer_sizes: tuple[int, ...]
    """Input values, hidden layer sizes, outputs: ``(n_in, h1, ..., n_out)``, at least two entries."""
    input_pairs: bool = True
    """Drive each input value as a ``(+gain x, -gain x)`` pair of sources, so that positive
    conductances realise signed weights."""
    input_gain_V: float = 1.0
    """Source volts per unit input value (> 0)."""
    hidden_pairs: bool = False
    """Dual-rail hidden layers: every free node that drives a crossbar (layers ``1..L-1``) drives
    it twice, directly (or through its amplifier) and through an inverting bidirectional amplifier
    (VCVS gain ``-A``, CCCS ``-1/A``), so that, as at the input pairs, positive conductances realise
    signed weights in every crossbar. Crossbar ``l >= 1`` then has ``2 n_l`` rows: the ``+`` rails,
    then the ``-`` rails."""
    bias_V: float | None = 1.0
    """Voltage of the ``+/-`` bias source pair feeding every layer, volts; ``None``: no bias."""
    diode_up_V: float | None = 0.0
    """Rail of the diode from each free node (anode) to the rail, volts; ``None``: no such diode.
    It may sit below ``diode_down_V`` (rails moved towards the signal so that sub-volt nodes still
    reach a knee): the two diodes of a node then carry a standing current from the down rail to
    the up rail, which the solvers and the power model include."""
    diode_down_V: float | None = 0.0
    """Rail of the diode from the rail (anode) to each free node, volts; ``None``: no such diode."""
    diode: DiodeModel = field(default_factory=DiodeModel)
    """Shockley model shared by every diode."""
    amplifier_gains: tuple[float | None, ...] | None = None
    """Gain of the bidirectional amplifier after free layer ``l`` for ``l = 1..L-1`` (length
    ``L - 1``; ``None`` entries or ``None`` overall: no amplifier)."""
    conductance: ConductanceRange = field(default_factory=ConductanceRange)
    """Programmable range of every conductance, siemens."""
    conductance_tc1: float = 0.0
    """First-order temperature coefficient of every crossbar and bias device, 1/K: a device of
    nominal resistance ``R`` (at the diodes' ``tnom_C``) has ``R (1 + TC1 dT + TC2 dT^2)`` at the
    device temperature, ``dT = T - TNOM`` (ngspice's resistor ``tc1``/``tc2``)."""
    conductance_tc2: float = 0.0
    """Second-order temperature coefficient of the devices, 1/K^2."""
    nudge_scale_V: float = 1.0
    """Voltage scale of the nudging currents: their full scale is ``g_max * nudge_scale_V``
    (:meth:`full_scale_current_A`; ``train.beta`` is a fraction of it). Set it to the design's
    node swing (e.g. the input swing of a sub-volt design) so that ``beta`` means the same
    relative nudge at any operating voltage."""
    wire_ohm: float | None = None
    """Resistance of every crossbar wire segment, rows and columns alike, ohms (``None``: ideal
    wires). The segments and where the drivers and readouts attach are in :mod:`analog.wires`."""
    user_models: UserModels | None = None
    """Device models from a user's model library (ngspice; the fast solver refuses what it cannot
    represent, see :meth:`analog.models.UserModels.fast_refusal`)."""
    peripherals: Peripherals = field(default_factory=Peripherals)
    """Drivers, amplifiers and nudging sources and their non-idealities (:mod:`analog.peripherals`)."""

    def __post_init__(self) -> None:
        sizes = tuple(self.layer_sizes)
        object.__setattr__(self, "layer_sizes", sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes: need at least (n_in, n_out), got {sizes!r}; e.g. layer_sizes = [64, 32, 10]"
            )
        for i, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LAYER_SIZE:
                raise ValueError(f"layer_sizes[{i}]: must be an integer in [1, {MAX_LAYER_SIZE}], got {n!r}")
        if not (_finite(self.input_gain_V) and 0 < self.input_gain_V <= MAX_VOLTAGE_V):
            raise ValueError(f"input_gain_V: must be a voltage in (0, {MAX_VOLTAGE_V:g}] V, got {self.input_gain_V!r}")
        for name in ("bias_V", "diode_up_V", "diode_down_V"):
            value = getattr(self, name)
            if not (_finite(value) and (value is None or abs(value) <= MAX_VOLTAGE_V)):
                raise ValueError(
                    f"{name}: must be a voltage in [-{MAX_VOLTAGE_V:g}, {MAX_VOLTAGE_V:g}] V or None, got {value!r}"
                )
        if self.bias_V is not None and self.bias_V <= 0:
            raise ValueError(f"bias_V: must be > 0 V (the pair is +/-bias_V) or None, got {self.bias_V!r}")
        for name, bound, unit in (("conductance_tc1", 0.1, "1/K"), ("conductance_tc2", 0.01, "1/K^2")):
            value = getattr(self, name)
            if isinstance(value, bool) or not (_finite(value) and abs(value) <= bound):
                raise ValueError(f"{name}: must be in [-{bound:g}, {bound:g}] {unit}, got {value!r}")
        if self.conductance_factor() <= 0:
            raise ValueError(
                f"conductance_tc1: with conductance_tc2 it makes the devices' resistance non-positive at "
                f"{self.diode.temperature_C:g} C (1 + TC1 dT + TC2 dT^2 <= 0); check the coefficients"
            )
        if not (_finite(self.nudge_scale_V) and 1e-3 <= self.nudge_scale_V <= MAX_VOLTAGE_V):
            raise ValueError(
                f"nudge_scale_V: must be a voltage in [0.001, {MAX_VOLTAGE_V:g}] V, got {self.nudge_scale_V!r}"
            )
        check_wire_ohm(self.wire_ohm)
        if self.user_models is not None and not isinstance(self.user_models, UserModels):
            raise ValueError(f"user_models: expected analog.models.UserModels, got {type(self.user_models).__name__}")
        check_peripherals(self)
        check_hidden_pairs(self)
        if self.amplifier_gains is not None:
            gains = tuple(self.amplifier_gains)
            object.__setattr__(self, "amplifier_gains", gains)
            if len(gains) != self.depth - 1:
                n = self.depth - 1
                raise ValueError(
                    f"amplifier_gains needs {n} {'entry' if n == 1 else 'entries'} (one per pair of free layers), "
                    f"got {len(gains)}"
                )
            for i, a in enumerate(gains):
                if a is not None and not (_finite(a) and 0 < a <= 1e3):
                    raise ValueError(f"amplifier_gains[{i}]: must be in (0, 1000] or None, got {a!r}")

    def conductance_factor(self) -> float:
        """``G(T) / G(TNOM) = 1 / (1 + TC1 dT + TC2 dT^2)`` of every device at the device temperature."""
        dt = self.diode.temperature_C - self.diode.tnom_C
        return 1.0 / (1.0 + self.conductance_tc1 * dt + self.conductance_tc2 * dt * dt) if dt else 1.0

    @property
    def has_temperature_coefficients(self) -> bool:
        return bool(self.conductance_tc1 or self.conductance_tc2)

    def amplified_nodes(self) -> int:
        """Number of nodes that drive a crossbar through an amplifier (one amplifier each)."""
        return sum(self.layer_sizes[l] for l in range(1, self.depth) if self.has_amplifier(l))

    def full_scale_current_A(self) -> float:
        """The nudging sources' full-scale current ``g_max * nudge_scale_V``, amperes."""
        return self.conductance.g_max_S * self.nudge_scale_V

    @property
    def depth(self) -> int:
        """Number of free layers ``L`` (hidden layers plus the output layer)."""
        return len(self.layer_sizes) - 1

    @property
    def n_inputs(self) -> int:
        """Input values (before pairing)."""
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def n_sources(self) -> int:
        """Input voltage sources: ``2 n_in`` with pairs, else ``n_in``."""
        return self.n_inputs * (2 if self.input_pairs else 1)

    @property
    def n_bias(self) -> int:
        """Bias sources per layer: 2 (``+/-bias_V``) or 0."""
        return 0 if self.bias_V is None else 2

    def nodes_per_layer(self) -> tuple[int, ...]:
        """Node count of layers ``0..L`` (layer 0 counts sources)."""
        return (self.n_sources, *self.layer_sizes[1:])

    def weight_shapes(self) -> list[tuple[int, int]]:
        n = self.nodes_per_layer()
        return [(n[l] * (2 if self.paired(l) else 1), n[l + 1]) for l in range(self.depth)]

    def paired(self, layer: int) -> bool:
        """Whether crossbar ``layer`` (``>= 1``) is driven dual-rail (:attr:`hidden_pairs`)."""
        return self.hidden_pairs and layer >= 1

    def row_drive(self, layer: int, v: torch.Tensor) -> torch.Tensor:
        """Physical voltages on the rows of crossbar ``layer >= 1`` for free layer ``layer``'s node
        voltages ``v`` ``[B, n_l]``: ``A v`` behind an amplifier (else ``v``), and with
        :attr:`hidden_pairs` ``[A v, -A v]``, ``[B, 2 n_l]``."""
        x = v * self.gains()[layer - 1] if self.has_amplifier(layer) else v
        return torch.cat([x, -x], dim=1) if self.paired(layer) else x

    def pair_rows(self, layer: int, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``[B, n_l]`` per node as it appears on crossbar ``layer``'s rows: ``[t, -t]`` when
        the crossbar is dual-rail, else ``t`` (linear; no gain)."""
        return torch.cat([t, -t], dim=-1) if self.paired(layer) else t

    def fold_rows(self, layer: int, t: torch.Tensor, sign: float = -1.0) -> torch.Tensor:
        """Per-row quantities ``t`` ``[..., rows]`` of crossbar ``layer`` gathered onto the nodes
        that drive them: ``t_+ + sign t_-`` for a dual-rail crossbar (``sign = -1``: currents,
        which the inverting stage returns negated, and signed couplings; ``+1``: conductance
        sums), else ``t``."""
        if not self.paired(layer):
            return t
        n = t.shape[-1] // 2
        return t[..., :n] + sign * t[..., n:]

    def coupling(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        """Signed coupling between free layers ``layer`` and ``layer + 1`` of crossbar ``g``
        ``[rows, n_{l+1}]``: ``G_+ - G_-`` for a dual-rail crossbar, else ``g``."""
        return self.fold_rows(layer, g.T).T if self.paired(layer) else g

    def inverting_amplifiers(self) -> int:
        """Number of inverting stages of the dual-rail layers (one per node of layers ``1..L-1``)."""
        return sum(self.layer_sizes[1:-1]) if self.hidden_pairs else 0

    def bias_shapes(self) -> list[tuple[int, int]]:
        return [(self.n_bias, n) for n in self.layer_sizes[1:]]

    def n_devices(self) -> int:
        """Crossbar and bias devices (the deck's resistors)."""
        return sum(a * b for a, b in (*self.weight_shapes(), *self.bias_shapes()))

    def gains(self) -> tuple[float, ...]:
        """Amplifier gain after free layers ``1..L-1`` (1.0 where there is none)."""
        if self.amplifier_gains is None:
            return (1.0,) * (self.depth - 1)
        return tuple(1.0 if a is None else float(a) for a in self.amplifier_gains)

    def has_amplifier(self, layer: int) -> bool:
        """Whether an amplifier drives the crossbar from free layer ``layer`` to ``layer + 1``."""
        return self.amplifier_gains is not None and 1 <= layer and self.amplifier_gains[layer - 1] is not None

    def scales(self) -> tuple[float, ...]:
        """``s_l`` for free layers ``1..L``: physical volts per rescaled volt (``s_1 = 1``)."""
        s = [1.0]
        for a in self.gains():
            s.append(s[-1] * a)
        return tuple(s)

    def source_voltages(self, x: torch.Tensor) -> torch.Tensor:
        """Input values ``x`` ``[B, n_in]`` -> source voltages ``[B, n_sources]`` (V)."""
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"inputs: expected shape [batch, {self.n_inputs}], got {list(x.shape)}")
        v = self.input_gain_V * x
        return torch.cat([v, -v], dim=1) if self.input_pairs else v

    def bias_voltages(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        if self.bias_V is None:
            return torch.zeros(0, dtype=dtype, device=device)
        return torch.tensor([self.bias_V, -self.bias_V], dtype=dtype, device=device)

    def random_conductances(
        self, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Conductances drawn uniformly in ``[g_min, g_max]`` (weights, biases)."""
        lo, hi = self.conductance.g_min_S, self.conductance.g_max_S

        def draw(shape):
            return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=dtype)

        return [draw(s) for s in self.weight_shapes()], [draw(s) for s in self.bias_shapes()]


@dataclass(frozen=True, eq=False)
class Circuit:
    """A :class:`CircuitSpec` with its conductance values (siemens)."""

    spec: CircuitSpec
    weights: tuple[torch.Tensor, ...]
    """``weights[l]``: conductances between layer ``l`` and ``l+1``, shape ``[nodes_l, nodes_{l+1}]``,
    as the devices present them at the device temperature (with TC1/TC2 the block scales its
    programmed values by :meth:`CircuitSpec.conductance_factor`; the netlist writes the nominal
    resistance with ``tc1``/``tc2`` so that ngspice applies the same factor)."""
    biases: tuple[torch.Tensor, ...]
    """``biases[l]``: conductances from the bias pair to layer ``l+1``, shape ``[n_bias, n_{l+1}]``."""
    check_range: bool = True
    """Refuse conductances outside ``[g_min, g_max]`` (device models that drift may turn this off)."""
    diode_area: torch.Tensor | None = None
    """Per-diode area factor multiplying ``Is`` (device spread), ``[2, sum n_l]``: row 0 the up
    diodes, row 1 the down diodes, free layers concatenated; ``None`` for 1."""
    diode_emission: torch.Tensor | None = None
    """Per-diode factor multiplying the emission coefficient ``N`` (device spread), laid out as
    ``diode_area``; ``N`` times it must stay in [0.5, 10]. ``None`` for 1."""
    amp_offset: torch.Tensor | None = None
    """Each amplifier's own input offset, volts (mismatch, on top of ``peripherals.amp_offset_V``):
    one per amplified node, the amplified layers' nodes concatenated in layer order; ``None``: none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(self.weights))
        object.__setattr__(self, "biases", tuple(self.biases))
        spec = self.spec
        self._check_group("weights", self.weights, spec.weight_shapes())
        self._check_group("biases", self.biases, spec.bias_shapes())
        n_free = sum(spec.layer_sizes[1:])
        for name in ("diode_area", "diode_emission"):
            factors = getattr(self, name)
            if factors is None:
                continue
            if not isinstance(factors, torch.Tensor) or tuple(factors.shape) != (2, n_free):
                raise ValueError(f"{name}: expected shape [2, {n_free}], got {getattr(factors, 'shape', factors)}")
            if not torch.isfinite(factors).all() or (factors <= 0).any():
                raise ValueError(f"{name}: factors must be finite and > 0")
        if self.diode_emission is not None:
            n = spec.diode.n * self.diode_emission
            if (n < 0.5).any() or (n > 10).any():
                raise ValueError(
                    f"diode_emission: N times the factor must stay in [0.5, 10], found "
                    f"[{float(n.min()):.3g}, {float(n.max()):.3g}]"
                )
        if self.amp_offset is not None:
            n_amp = spec.amplified_nodes()
            if not isinstance(self.amp_offset, torch.Tensor) or tuple(self.amp_offset.shape) != (n_amp,):
                raise ValueError(
                    f"amp_offset: expected shape [{n_amp}] (one per amplified node), got "
                    f"{getattr(self.amp_offset, 'shape', self.amp_offset)}"
                )
            if not torch.isfinite(self.amp_offset).all() or float(self.amp_offset.abs().max()) > 1.0:
                raise ValueError("amp_offset: offsets must be finite and within +/-1 V")
            if spec.wire_ohm is not None:
                raise ValueError("amp_offset: amplifier offsets with resistive wires (wire_ohm) are not supported")
            if spec.hidden_pairs:
                raise ValueError("amp_offset: amplifier offsets with dual-rail layers (hidden_pairs) are not supported")
        dtypes = {t.dtype for t in (*self.weights, *self.biases)}
        if len(dtypes) > 1:
            raise ValueError(f"weights/biases: all conductances must share one dtype, got {dtypes}")

    def _check_group(self, name: str, tensors: Sequence[torch.Tensor], shapes) -> None:
        check_conductances(name, tensors, shapes, self.spec.conductance, self.check_range)

    @classmethod
    def random(cls, spec: CircuitSpec, seed: int = 0, dtype: torch.dtype = torch.float64) -> Circuit:
        """Conductances drawn uniformly in the device range with a seeded generator."""
        gen = torch.Generator().manual_seed(seed)
        w, b = spec.random_conductances(gen, dtype)
        return cls(spec, tuple(w), tuple(b))

    def wire_row_order(self, layer: int) -> list[int]:
        """Physical layout of crossbar ``layer``'s rows (weight rows, then bias rows): the row at each
        position. The input pairs of crossbar 0 are interleaved (``+x0, -x0, +x1, -x1, ...``); other
        rows keep their order. Only matters with resistive wires (:mod:`analog.wires`)."""
        n_weight = self.weights[layer].shape[0]
        order = list(range(n_weight))
        if layer == 0 and self.spec.input_pairs:
            half = n_weight // 2
            order = [r for k in range(half) for r in (k, half + k)]
        return order + list(range(n_weight, n_weight + self.biases[layer].shape[0]))

    def crossbar_wires(self) -> tuple[CrossbarWires, ...] | None:
        """The crossbars ``0..L-1`` with their wires eliminated down to the terminals (rows: weight
        rows then bias rows, laid out as :meth:`wire_row_order`), computed once per circuit (so
        once per weight update); ``None`` when the wires are ideal."""
        if self.spec.wire_ohm is None:
            return None
        if not hasattr(self, "_wires"):
            wires = tuple(
                CrossbarWires(torch.cat([w.detach(), b.detach()]), self.spec.wire_ohm, self.wire_row_order(l))
                for l, (w, b) in enumerate(zip(self.weights, self.biases, strict=True))
            )
            object.__setattr__(self, "_wires", wires)
        return self._wires

    @property
    def ideal_peripherals(self) -> bool:
        """Whether the drivers, amplifiers and nudging sources are ideal (no offsets drawn either):
        the layered solvers' circuit; otherwise :mod:`analog.solvers.general`'s."""
        return self.spec.peripherals.ideal and self.amp_offset is None

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def to(self, dtype: torch.dtype | None = None, device=None) -> Circuit:
        def move(t):
            return t.to(dtype=dtype or t.dtype, device=device or t.device)

        return Circuit(
            self.spec,
            tuple(move(w) for w in self.weights),
            tuple(move(b) for b in self.biases),
            self.check_range,
            None if self.diode_area is None else move(self.diode_area),
            None if self.diode_emission is None else move(self.diode_emission),
            None if self.amp_offset is None else move(self.amp_offset),
        )

    def detach(self) -> Circuit:
        return Circuit(
            self.spec,
            tuple(w.detach() for w in self.weights),
            tuple(b.detach() for b in self.biases),
            self.check_range,
            self.diode_area,
            self.diode_emission,
            self.amp_offset,
        )
