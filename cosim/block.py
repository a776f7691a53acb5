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
from analog.devices import DeviceArray, DeviceConfig, IOConfig
from analog.readout import Measurement
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError, WrappedSolver
from analog.solvers.newton import FastSolver
from cosim.gradients import EquilibriumPropagation, GradientMethod, ImplicitDifferentiation

__all__ = [
    "KCL_FRACTION",
    "AnalogBlock",
    "check_kcl",
    "check_upstream_gradient",
    "exact_reading_method",
    "kcl_tolerance_A",
]

KCL_FRACTION = 1e-4
"""Largest KCL residual a solved equilibrium may keep, as a fraction of one device's full-scale
current ``g_max_S * input_gain_V``. Converged solves of both solvers stay below 1e-10 of it."""


def check_upstream_gradient(grad_output: torch.Tensor, block: str, kind: str) -> None:
    """Refuse a NaN/inf gradient arriving at the outputs of ``block`` (a ``kind`` block) from the
    blocks after it, before any nudged phase runs on it."""
    if not torch.isfinite(grad_output.sum()):
        raise FloatingPointError(f"{block}: the gradient arriving at the {kind} block's outputs contains NaN/inf")


def kcl_tolerance_A(spec: CircuitSpec) -> float:
    """The largest physical KCL residual (amperes) an equilibrium of ``spec`` may have."""
    return KCL_FRACTION * spec.conductance.g_max_S * spec.input_gain_V


def check_kcl(eq: Equilibrium, spec: CircuitSpec, where: str) -> None:
    """Refuse an equilibrium whose KCL residual is above :func:`kcl_tolerance_A`: whatever the
    solver's own stopping rule said, node currents that do not balance are no circuit's answer.
    A residual the solver could not compute (NaN, e.g. ngspice with a user neuron) is not judged."""
    residual = eq.residual_A.detach()
    worst = float(residual[torch.isfinite(residual)].max()) if bool(torch.isfinite(residual).any()) else 0.0
    tol = kcl_tolerance_A(spec)
    if worst > tol:
        raise SolverError(
            f"{where}: the {eq.solver} solver's equilibrium leaves a KCL residual of {worst:.3e} A, above "
            f"{tol:.1e} A ({KCL_FRACTION:g} of g_max_S x input_gain_V): the result is not a physical "
            "equilibrium; tighten solver.tol_V or raise solver.max_iterations, and check the inputs"
        )


def exact_reading_method(method: GradientMethod, where: str, what: str) -> GradientMethod:
    """``method`` for a block that reads its states exactly (``what``, e.g. "a Hopfield block"): EP
    without ADC settings, or implicit differentiation; anything else is refused naming ``where``."""
    if isinstance(method, EquilibriumPropagation):
        if method.measurement != Measurement():
            raise ValueError(
                f"{where}: {what} reads its states exactly; EP measurement (ADC) settings apply to dense analog "
                "blocks only"
            )
    elif not isinstance(method, ImplicitDifferentiation):
        raise ValueError(f"{where}: {what} supports EP and implicit differentiation, not {method!r}")
    return method


class _PhaseReads(WrappedSolver):
    """Every phase reads the devices anew (read noise per phase)."""

    def __init__(self, inner: EquilibriumSolver, read):
        super().__init__(inner)
        self.read = read

    def solve(self, circuit, source_V, nudge_A=None, init=None):
        return self.inner.solve(self.read(), source_V, nudge_A, init)


class _AnalogFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block: AnalogBlock, source_V: torch.Tensor, *conductances: torch.Tensor):
        circuit = block.circuit(conductances)
        source_V = source_V.detach()
        try:
            free = block.solver.solve(circuit, source_V)
        except SolverError as exc:  # name the block: a model may hold several
            raise SolverError(f"analog block {block.name}, free phase: {exc}") from None
        block.record("free", free)
        ctx.block, ctx.circuit, ctx.source_V, ctx.free = block, circuit, source_V, free
        return free.output.to(source_V.dtype).clone()  # ngspice answers in float64

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        block: AnalogBlock = ctx.block
        check_upstream_gradient(grad_output, block.name, "analog")
        solver = block.solver
        if block.io.read_noise_sigma:
            targets = [p.detach() for p in block.conductances()]
            solver = _PhaseReads(solver, lambda: block.circuit(targets))
        try:
            grads = block.method(solver, ctx.circuit, ctx.source_V, ctx.free, grad_output.detach())
        except SolverError as exc:
            raise SolverError(f"analog block {block.name}, nudged phases: {exc}") from None
        for phase, eq in grads.phases.items():
            block.record(phase, eq)
        if grads.phases:
            # What the readout must resolve: the largest change the nudge causes per free layer.
            a = grads.phases.get("positive", ctx.free)
            b = grads.phases.get("negative", ctx.free)
            pairs = enumerate(zip(a.voltages, b.voltages, strict=True))
            block.stats["nudge"] = {f"L{l + 1}_dv_V": float((va - vb).abs().max()) for l, (va, vb) in pairs}
        ctx.free = None
        return (None, grads.source_V, *grads.weights, *grads.biases)


class AnalogBlock(nn.Module):
    """A resistive network whose conductances are trainable parameters (siemens).

    ``forward(x)``: input values ``[B, n_in]`` (mapped to source voltages by the spec) -> output
    voltages ``[B, n_out]``.

    The parameters are the *programmed* conductances. The circuit sees what the devices present
    (:meth:`DeviceArray.read`: device-to-device spread, stuck devices, read noise), and
    :meth:`clip_` writes an optimizer's requested values into the devices (clipping, soft bounds,
    asymmetry, write noise, quantisation). EP measures ``dL/dg`` of the conductances the circuit
    sees and applies it to the programmed ones, as hardware would.
    """

    def __init__(
        self,
        spec: CircuitSpec,
        solver: EquilibriumSolver | None = None,
        method: GradientMethod | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        name: str = "analog",
        devices: DeviceConfig | None = None,
        io: IOConfig | None = None,
        device_seed: int | None = None,
    ):
        """``seed`` draws the initial conductances and, unless ``device_seed`` is given, then the
        devices from the same stream; ``device_seed`` draws the devices on their own."""
        super().__init__()
        self.spec = spec
        self.devices = devices if devices is not None else DeviceConfig()
        self.io = io if io is not None else IOConfig()
        self.solver = solver if solver is not None else FastSolver()
        self.method = method if method is not None else EquilibriumPropagation()
        self.name = name
        gen = torch.Generator().manual_seed(seed)
        w, b = spec.random_conductances(gen, dtype)
        if device_seed is not None:
            gen = torch.Generator().manual_seed(device_seed)
        self.arrays = nn.ModuleList(DeviceArray(self.devices, spec.conductance, t.shape, gen) for t in (*w, *b))
        # Diode-to-diode spread of Is, fixed per diode (ngspice's instance area factor), and of N,
        # kept within ngspice's range for N. Buffers, so that a checkpoint holds these very diodes.
        area = emission = None
        if self.devices.diode_is_sigma:
            z = torch.randn(2, sum(spec.layer_sizes[1:]), generator=gen, dtype=torch.float64)
            area = torch.exp(self.devices.diode_is_sigma * z)
        if self.devices.diode_n_sigma:
            z = torch.randn(2, sum(spec.layer_sizes[1:]), generator=gen, dtype=torch.float64)
            n = spec.diode.n
            emission = torch.exp(self.devices.diode_n_sigma * z).clamp(0.5 / n, 10.0 / n)
        offset = None
        if self.devices.amp_offset_sigma_V and spec.amplified_nodes():
            # Drawn after the older draws, so that blocks without it keep their devices.
            z = torch.randn(spec.amplified_nodes(), generator=gen, dtype=torch.float64)
            offset = (self.devices.amp_offset_sigma_V * z).clamp(-1.0, 1.0)
        self.register_buffer("amp_offset", offset)
        """Each amplifier's input offset, volts ``[n_amplified]``, ``None`` without mismatch."""
        self.register_buffer("diode_area", area)
        """Area factor of each diode ``[2, n_free]`` (rows: up, down), ``None`` without Is spread."""
        self.register_buffer("diode_emission", emission)
        """Factor on each diode's emission coefficient ``[2, n_free]``, ``None`` without N spread."""
        self.weights = nn.ParameterList([nn.Parameter(t) for t in w])
        self.biases = nn.ParameterList([nn.Parameter(t) for t in b])
        # What the devices hold now: the reference for the next write (saved in checkpoints).
        for i, p in enumerate(self.conductances()):
            self.register_buffer(f"written_{i}", p.detach().clone())
        self._program(initial=True)
        self.stats: dict[str, dict[str, float]] = {}
        """Last solve of each phase: ``iterations`` and ``residual_A`` (largest over the batch)."""

    def conductances(self) -> list[nn.Parameter]:
        return [*self.weights, *self.biases]

    def circuit(self, conductances=None) -> Circuit:
        """The circuit the devices present for the current (detached) programmed conductances."""
        if conductances is None:
            conductances = self.conductances()
        depth = self.spec.depth
        tensors = [t.detach() for t in conductances]
        # The devices' temperature coefficients (TC1/TC2) scale what every device presents.
        factor = self.spec.conductance_factor()
        if self.devices.ideal and self.io.ideal:
            if factor != 1.0:
                tensors = [t * factor for t in tensors]
            return Circuit(self.spec, tuple(tensors[:depth]), tuple(tensors[depth:]), factor == 1.0)
        offset = None if self.amp_offset is None else self.amp_offset.to(tensors[0])
        tensors = [array.read(t, self.io) for array, t in zip(self.arrays, tensors, strict=True)]
        if factor != 1.0:
            tensors = [t * factor for t in tensors]
        area = None if self.diode_area is None else self.diode_area.to(tensors[0])
        emission = None if self.diode_emission is None else self.diode_emission.to(tensors[0])
        return Circuit(self.spec, tuple(tensors[:depth]), tuple(tensors[depth:]), False, area, emission, offset)

    def record(self, phase: str, eq: Equilibrium) -> None:
        check_kcl(eq, self.spec, f"analog block {self.name}, {phase} phase")
        self.stats[phase] = {"iterations": float(eq.iterations), "residual_A": float(eq.residual_A.max())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).to(self.weights[0].dtype)
        source_V = self.spec.source_voltages(x)
        return _AnalogFunction.apply(self, source_V, *self.conductances())

    @torch.no_grad()
    def clip_(self) -> None:
        """Write the optimizer's requested conductances into the devices: clip to ``[g_min,
        g_max]`` and, for non-ideal devices, apply the update model (call after each step)."""
        self._program(initial=False)

    @torch.no_grad()
    def _program(self, initial: bool) -> None:
        lo, hi = self.spec.conductance.g_min_S, self.spec.conductance.g_max_S
        cost = {"pulses": 0.0, "energy_J": 0.0, "time_s": 0.0}
        counted = not initial and self.devices.counts_programming
        for i, (p, array) in enumerate(zip(self.conductances(), self.arrays, strict=True)):
            written = getattr(self, f"written_{i}")
            if counted:  # the crossbars are written one after another
                for key, value in array.programming(written, p).items():
                    cost[key] += value
            if self.devices.ideal:
                new = p.clamp(lo, hi)
            else:
                new = array.write(p if initial else written, p)
            p.copy_(new)
            written.copy_(new)
        if counted:
            self.stats["write"] = cost

    def extra_repr(self) -> str:
        sizes = "-".join(map(str, self.spec.layer_sizes))
        return f"{self.name}: {sizes}, solver={self.solver.name}, method={self.method.name}"
