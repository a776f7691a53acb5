"""Gradient methods for an analog block: Equilibrium Propagation from circuit quantities, and the
exact reference by implicit differentiation.

Notation (see :mod:`analog.circuit`): ``s_l`` is the amplifier scale of free layer ``l``, ``L`` the
output layer, ``E`` the rescaled co-content. Nudging injects the physical current

    I_b = -beta * I_fs * grad_b / gamma_b,      gamma_b = max_k |grad_b,k|,                 (N)

into the output nodes of sample ``b`` (``grad_b = dL/dv_out`` from the blocks after this one,
``I_fs = g_max * nudge_scale_V`` the full-scale current; the scale is 1 V unless the block sets
it). ``beta`` is thus dimensionless: the largest nudging current as a fraction of ``I_fs``,
whatever the loss scale or batch size. In u-space this is a
linear cost with strength ``beta_u,b = beta * I_fs / (gamma_b * s_L^2)``, and the EP theorem
(Scellier & Bengio 2017, Thm. 1) gives, with ``dE/dg = 1/2 (dV / s_{l+1})^2`` for a conductance
between layers ``l`` and ``l+1`` across which the voltage drop is ``dV`` and ``dE/dV_k = I_k`` for
an input source delivering current ``I_k``:

    dL/dg   ~ sum_b kappa_b (s_L / s_{l+1})^2 (dV_b(a)^2 - dV_b(b)^2) / 2                   (EP-g)
    dL/dV_k ~ kappa_b s_L^2 (I_k(a) - I_k(b))                                               (EP-x)

with phases ``(a, b) = (+beta, -beta)`` and ``kappa_b = gamma_b / (2 beta I_fs)`` (centered), or
``(+beta, free)`` / ``(free, -beta)`` and ``kappa_b = gamma_b / (beta I_fs)`` (one-sided). The
centered estimate has an ``O(beta^2)`` bias, the one-sided ones ``O(beta)``.

The exact reference solves the adjoint system ``H lam = dL/du`` at the free equilibrium (``H`` the
symmetric KCL Jacobian) and uses ``dL/dtheta = -lam . d^2E/du dtheta``:

    dL/dg_ij = -sum_b (lam_i - lam_j)(u_i - u_j),      dL/dV_k = sum_j g_kj lam_j.          (IMP)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

import torch

from analog.circuit import Circuit
from analog.readout import Measurement, Reading
from analog.solvers.base import Equilibrium, EquilibriumSolver
from analog.solvers.general import implicit_gradients, row_voltages
from analog.solvers.newton import adjoint

__all__ = [
    "METHODS",
    "BlockGradients",
    "EquilibriumPropagation",
    "GradientMethod",
    "ImplicitDifferentiation",
    "gradient_method",
    "nudge_response",
    "recommend_beta",
]


@dataclass
class BlockGradients:
    """Gradients of the loss w.r.t. one block's source voltages and conductances."""

    source_V: torch.Tensor
    """``dL/dV`` for every input source, ``[B, n_sources]``."""
    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    phases: dict[str, Equilibrium] = field(default_factory=dict)
    """The nudged equilibria the estimate was measured from (empty for the exact method)."""


def pair_products(p, q, r, t) -> torch.Tensor:
    """``sum_b (p_bi - q_bj)(r_bi - t_bj)`` as an ``[n_i, n_j]`` matrix, without ever forming a
    ``[B, n_i, n_j]`` tensor. ``p`` may be ``None`` for zero (fixed sources)."""
    out = (q * t).sum(0).unsqueeze(0) - r.T @ q
    if p is not None:
        out = out + (p * r).sum(0).unsqueeze(1) - p.T @ t
    return out


def _upstream(circuit: Circuit, l: int, voltages, source_V) -> torch.Tensor:
    """Voltage on the rows of crossbar ``l`` feeding layer ``l+1`` (after its amplifier, both
    rails of a dual-rail layer)."""
    if l == 0:
        return source_V
    return circuit.spec.row_drive(l, voltages[l - 1])


class GradientMethod(ABC):
    """Turns an upstream gradient ``dL/dv_out`` into gradients for a block's inputs and devices."""

    name: str

    @abstractmethod
    def __call__(
        self,
        solver: EquilibriumSolver,
        circuit: Circuit,
        source_V: torch.Tensor,
        free: Equilibrium,
        grad_output: torch.Tensor,
    ) -> BlockGradients: ...


@dataclass(frozen=True)
class EquilibriumPropagation(GradientMethod):
    """EP estimates (EP-g), (EP-x) from voltages across devices and currents through sources."""

    beta: float = 0.05
    """Largest nudging current as a fraction of the full-scale current ``g_max * nudge_scale_V`` (N)."""
    variant: str = "centered"
    """``centered`` (+/-beta), ``positive`` (+beta vs free) or ``negative`` (free vs -beta)."""
    measurement: Measurement = field(default_factory=Measurement)
    """The ADCs that read the node voltages and source currents EP is computed from."""

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, int | float) and 0 <= self.beta <= 1):
            raise ValueError(f"beta: must be in [0, 1] (fraction of full-scale current), got {self.beta!r}")
        if self.variant not in ("centered", "positive", "negative"):
            raise ValueError(f"variant: must be 'centered', 'positive' or 'negative', got {self.variant!r}")
        if not isinstance(self.measurement, Measurement):
            raise ValueError(f"measurement: expected analog.readout.Measurement, got {type(self.measurement).__name__}")

    @property
    def name(self) -> str:
        return f"ep-{self.variant}"

    def nudge(self, circuit: Circuit, grad_output: torch.Tensor, sign: float):
        """Nudging currents (N) ``[B, n_out]`` and the per-sample scale ``gamma_b`` ``[B]``."""
        full_scale_A = circuit.spec.full_scale_current_A()
        gamma = grad_output.abs().amax(1)
        unit = grad_output / torch.where(gamma > 0, gamma, torch.ones_like(gamma)).unsqueeze(1)
        return -sign * self.beta * full_scale_A * unit, gamma

    def solve_phases(self, solver, circuit, source_V, free, grad_output):
        """The nudged phases ``{name: Equilibrium}`` and ``gamma_b`` ``[B]`` of (N).

        Each starts from the free equilibrium; in centered EP the -beta phase starts from the +beta
        one reflected through it, ``2 v_free - v_+``, which is exact to first order in beta (the
        second-order term is what remains): measured, 2 instead of 5 sweeps on 784-100-10 and 11
        instead of 16 on 784-64-64-64-10 (the same equilibrium, to the solver's tolerance)."""
        phases: dict[str, Equilibrium] = {}
        gamma = None
        for name, sign in (("positive", 1.0), ("negative", -1.0)):
            if self.variant in ("centered", name):
                nudge, gamma = self.nudge(circuit, grad_output, sign)
                init = free
                if "positive" in phases:
                    positive = phases["positive"].voltages
                    reflected = tuple(2 * f - p for f, p in zip(free.voltages, positive, strict=True))
                    init = replace(free, voltages=reflected, source_currents=None)
                phases[name] = solver.solve(circuit, source_V, nudge_A=nudge, init=init)
        return phases, gamma

    def __call__(self, solver, circuit, source_V, free, grad_output) -> BlockGradients:
        if self.beta == 0:
            raise ValueError("beta: EP needs beta > 0 to measure a gradient (beta = 0 is the free phase)")
        phases, gamma = self.solve_phases(solver, circuit, source_V, free, grad_output)
        # Phase b is the one held (the -beta phase, or the free phase for +beta vs free); a - b is
        # what the differential readout measures.
        reading = self.measurement.read_pair(phases.get("positive", free), phases.get("negative", free))
        full_scale_A = circuit.spec.full_scale_current_A()
        kappa = gamma / (self.beta * full_scale_A * (2.0 if self.variant == "centered" else 1.0))
        return ep_estimates(circuit, source_V, reading, kappa, phases)


def nudge_response(
    method: EquilibriumPropagation, solver: EquilibriumSolver, circuit: Circuit, source_V, grad_output
) -> tuple[tuple[float, ...], float]:
    """The largest change ``|v(a) - v(b)|`` over the nodes of each free layer and every sample
    (volts, one value per layer) and ``|I(a) - I(b)|`` over every input source (amperes) that
    ``method``'s nudge causes, read exactly: what the differential readout must span
    (:meth:`analog.readout.Measurement.sized_for` turns it into gains)."""
    free = solver.solve(circuit, source_V)
    phases, _ = method.solve_phases(solver, circuit, source_V, free, grad_output)
    a, b = phases.get("positive", free), phases.get("negative", free)
    dv = tuple(float((va - vb).abs().max()) for va, vb in zip(a.voltages, b.voltages, strict=True))
    return dv, float((a.input_currents_A - b.input_currents_A).abs().max())


def recommend_beta(
    method: EquilibriumPropagation,
    solver: EquilibriumSolver,
    circuit: Circuit,
    source_V,
    grad_output,
    fraction: float = 0.5,
    beta_max: float = 0.5,
) -> float:
    """The ``beta`` whose nudge response (:func:`nudge_response`) fills ``fraction`` of the
    differential ADC's voltage range at ``method.measurement``'s gains (in the layer that comes
    closest to clipping).

    The response is linear in ``beta`` while the nudge is small, so ``beta`` is rescaled by
    ``target / response`` and measured again (twice, which absorbs the diodes' curvature); capped
    at ``beta_max``, since EP's bias grows as ``beta^2``. Raising ``diff_gain`` instead of ``beta``
    keeps that bias small: :meth:`analog.readout.Measurement.sized_for`."""
    m = method.measurement
    beta = method.beta
    for _ in range(3):
        response, _ = nudge_response(replace(method, beta=beta), solver, circuit, source_V, grad_output)
        swing = max(g * r for g, r in zip(m.layer_gains(len(response)), response, strict=True))
        if swing <= 0:
            raise ValueError("the nudge moves no node: is grad_output zero?")
        beta = min(beta_max, beta * fraction * m.diff_range_V / swing)
    return beta


def ep_estimates(
    circuit: Circuit,
    source_V: torch.Tensor,
    reading: Reading,
    kappa: torch.Tensor,
    phases: dict[str, Equilibrium],
) -> BlockGradients:
    """(EP-g) and (EP-x) from node-level readings; ``kappa`` ``[B]`` as in the module docstring.

    Only the held phase ``b`` (absolute) and the changes ``D = a - b`` (differential) enter, never
    a per-device reading: a device between terminals ``x`` and ``y`` has
    ``dV(a)^2 - dV(b)^2 = (D_x - D_y)(2 (x_b - y_b) + D_x - D_y)``, which :func:`pair_products`
    sums over the batch as matrix products. With resistive wires the drops are the wire network's
    linear map of the terminal readings (:func:`device_drops`), applied to ``b`` and to ``D``."""
    spec = circuit.spec
    s = spec.scales()
    s_out2 = s[-1] ** 2
    k = kappa.unsqueeze(1)
    held, delta = reading.held.voltages, reading.delta_V
    weights, biases = [], []
    bias_V = spec.bias_voltages(source_V.dtype, source_V.device)
    grad_source = s_out2 * k * reading.delta_input_A
    if circuit.crossbar_wires() is not None:
        for l in range(spec.depth):
            drop_b = device_drops(circuit, l, source_V, held)
            d_drop = device_drops(circuit, l, None, delta, bias_on=False)  # sources do not move
            grad = (0.5 * s_out2 / s[l] ** 2) * torch.einsum("b,bij->ij", kappa, d_drop * (2.0 * drop_b + d_drop))
            weights.append(grad[: grad.shape[0] - spec.n_bias])
            biases.append(grad[grad.shape[0] - spec.n_bias :])
        return BlockGradients(grad_source, tuple(weights), tuple(biases), phases)
    peripherals = not circuit.ideal_peripherals
    if peripherals:
        moved = tuple(h + d for h, d in zip(held, delta, strict=True))
    for l in range(spec.depth):
        factor = 0.5 * s_out2 / s[l] ** 2  # s[l] is s_{l+1} (free layers are 1-based)
        dy, sy = k * delta[l], 2.0 * held[l] + delta[l]
        if peripherals:
            # The devices see the row nodes behind the drivers' / amplifiers' non-idealities.
            x_b = row_voltages(circuit, l, source_V, held)
            xd = row_voltages(circuit, l, source_V, moved) - x_b
            dx, sx = k * xd, 2.0 * x_b + xd
        elif l == 0:
            dx, sx = None, 2.0 * source_V
        else:
            xd = _upstream(circuit, l, delta, None)
            dx, sx = k * xd, 2.0 * _upstream(circuit, l, held, None) + xd
        weights.append(factor * pair_products(dx, dy, sx, sy))
        if spec.n_bias:
            sb = 2.0 * bias_V.expand(source_V.shape[0], -1)
            biases.append(factor * pair_products(None, dy, sb, sy))
        else:
            biases.append(torch.zeros(0, spec.layer_sizes[l + 1], dtype=source_V.dtype))
    return BlockGradients(grad_source, tuple(weights), tuple(biases), phases)


def device_drops(
    circuit: Circuit, l: int, source_V: torch.Tensor | None, voltages, scale: float | None = None, bias_on: bool = True
) -> torch.Tensor:
    """Voltage across every device of crossbar ``l`` (weight rows, then bias rows), ``[B, R, C]``,
    for free-layer voltages ``voltages`` of a circuit with resistive wires (:mod:`analog.wires`).

    ``scale``: divide every terminal voltage by it (u-space drops use ``s_{l+1}``); ``source_V``
    may be ``None`` and ``bias_on`` ``False`` for zero sources (the adjoint has none)."""
    spec = circuit.spec
    y = voltages[l]
    batch = y.shape[0]
    if l == 0:
        x = torch.zeros(batch, spec.n_sources, dtype=y.dtype, device=y.device) if source_V is None else source_V
    else:
        x = _upstream(circuit, l, voltages, None)
    bias = spec.bias_voltages(y.dtype, y.device).expand(batch, -1)
    if not bias_on:
        bias = torch.zeros_like(bias)
    terminals = torch.cat([x, bias, y], dim=1)
    if scale is not None:
        terminals = terminals / scale
    return circuit.crossbar_wires()[l].device_voltages(terminals)


@dataclass(frozen=True)
class ImplicitDifferentiation(GradientMethod):
    """Exact gradient (IMP) by the adjoint of the fast solver's KCL Jacobian at the free phase."""

    name: str = "implicit"

    def __call__(self, solver, circuit, source_V, free, grad_output) -> BlockGradients:
        if not solver.smooth_diodes:
            raise ValueError(
                "implicit differentiation linearises the Shockley diodes; the ideal-diode solver has no "
                "such Jacobian: use the 'fast' or 'ngspice' solver for the exact reference"
            )
        spec = circuit.spec
        if not circuit.ideal_peripherals:
            # Non-ideal peripherals: the adjoint of the general (possibly non-symmetric) Jacobian.
            grad_source, weights, biases = implicit_gradients(circuit, source_V, free, grad_output)
            return BlockGradients(grad_source, weights, biases)
        s = spec.scales()
        n_free = sum(spec.layer_sizes[1:])
        rhs = torch.zeros(source_V.shape[0], n_free, dtype=source_V.dtype, device=source_V.device)
        rhs[:, n_free - spec.n_outputs :] = s[-1] * grad_output
        lam_flat, system = adjoint(circuit, source_V, free, rhs)
        lam = system.split(lam_flat)
        u = system.split(system.from_voltages(free.voltages))
        bias_V = spec.bias_voltages(source_V.dtype, source_V.device)
        weights, biases = [], []
        grad_source = lam[0] @ system.weights[0].T
        if circuit.crossbar_wires() is not None:
            return self._wired(circuit, source_V, free, lam, grad_source)
        for l in range(spec.depth):
            if l == 0:
                w = pair_products(None, lam[0], source_V, u[0])
            else:
                w = pair_products(spec.pair_rows(l, lam[l - 1]), lam[l], spec.pair_rows(l, u[l - 1]), u[l])
            weights.append(-w)
            if spec.n_bias:
                ub = (bias_V / s[l]).expand(source_V.shape[0], -1)
                biases.append(-pair_products(None, lam[l], ub, u[l]))
            else:
                biases.append(torch.zeros(0, spec.layer_sizes[l + 1], dtype=source_V.dtype))
        return BlockGradients(grad_source, tuple(weights), tuple(biases))

    @staticmethod
    def _wired(circuit, source_V, free, lam, grad_source) -> BlockGradients:
        """(IMP) with resistive wires: ``-sum_b dlam . du`` across each device, both drops from
        the wire node voltages (the adjoint's terminals hold no sources and no bias)."""
        spec = circuit.spec
        s = spec.scales()
        # lam is in u-space; put it in volts-like units per layer so device_drops can rescale it.
        lam_v = tuple(t * s_l for t, s_l in zip(lam, s, strict=True))
        weights, biases = [], []
        for l in range(spec.depth):
            du = device_drops(circuit, l, source_V, free.voltages, scale=s[l])
            dlam = device_drops(circuit, l, None, lam_v, scale=s[l], bias_on=False)
            grad = -torch.einsum("bij,bij->ij", dlam, du)
            weights.append(grad[: grad.shape[0] - spec.n_bias])
            biases.append(grad[grad.shape[0] - spec.n_bias :])
        return BlockGradients(grad_source, tuple(weights), tuple(biases))


METHODS = ("ep-centered", "ep-positive", "ep-negative", "implicit")


def gradient_method(name: str, beta: float = EquilibriumPropagation.beta) -> GradientMethod:
    """Gradient method by name: one of :data:`METHODS`."""
    if name == "implicit":
        return ImplicitDifferentiation()
    if name.startswith("ep-") and name[3:] in ("centered", "positive", "negative"):
        return EquilibriumPropagation(beta=beta, variant=name[3:])
    raise ValueError(f"gradient method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
