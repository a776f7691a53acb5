"""Conv analog blocks: the layer-wise conv solver against dense references (the unrolled crossbars
as matrices, the dense solvers), against ngspice, and its refusals."""

from __future__ import annotations

import pytest
import torch

from analog.circuit import Circuit, CircuitSpec
from analog.conv_circuit import ConvCircuit, ConvCircuitSpec
from analog.solvers.conv_layerwise import ConvLayerwiseSolver
from analog.solvers.newton import FastSolver
from tests.conftest import ngspice_available


def _inputs(spec: ConvCircuitSpec, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return spec.source_voltages(2 * torch.rand(batch, *spec.grid(0), generator=gen) - 1)


def unrolled(circuit: ConvCircuit, l: int) -> torch.Tensor:
    """Crossbar ``l`` as a dense ``[2 C_l H W, C_{l+1} H W]`` conductance matrix (0: no device),
    written tap by tap, independently of the convolutions."""
    spec = circuit.spec
    h, w = spec.side
    p, hw = spec.padding, spec.positions
    g = circuit.kernels[l]
    c_out, rows, k, _ = g.shape
    out = torch.zeros(rows * hw, c_out * hw)
    for c in range(c_out):
        for r in range(rows):
            for i in range(k):
                for j in range(k):
                    for y in range(h):
                        for x in range(w):
                            yy, xx = y + i - p, x + j - p
                            if 0 <= yy < h and 0 <= xx < w:
                                out[r * hw + yy * w + xx, c * hw + y * w + x] = g[c, r, i, j]
    return out


def dense_residual(circuit: ConvCircuit, source_V, voltages, nudge_A=None) -> torch.Tensor:
    """KCL at every free node from the unrolled matrices: dual-rail rows ``[v; -v]``, the current
    drawn by the inverted rail returned negated into its node."""
    spec = circuit.spec
    hw = spec.positions
    bias_V = spec.bias_voltages()
    out = []
    for l in range(1, spec.depth + 1):
        v = voltages[l - 1]
        w_in = unrolled(circuit, l - 1)
        rows = source_V if l == 1 else torch.cat([voltages[l - 2], -voltages[l - 2]], dim=1)
        current = rows @ w_in - v * w_in.sum(0)
        b = circuit.biases[l - 1].repeat_interleave(hw, dim=1)
        current = current + bias_V @ b - v * b.sum(0)
        if l < spec.depth:
            w_out, n = unrolled(circuit, l), spec.layer_sizes[l]
            plus, minus = w_out[:n], w_out[n:]
            current = current - (v * plus.sum(1) - voltages[l] @ plus.T)  # into the + rail's devices
            current = current + (-v * minus.sum(1) - voltages[l] @ minus.T)  # the inverter returns it
        if l == spec.depth and nudge_A is not None:
            current = current + nudge_A
        i_up, _ = spec.diode.current(v - spec.diode_up_V)
        i_dn, _ = spec.diode.current(spec.diode_down_V - v)
        out.append(current - i_up + i_dn)
    return torch.cat(out, dim=1)


def test_single_crossbar_equals_the_dense_solver():
    spec = ConvCircuitSpec(channels=(2, 3), side=(5, 6), input_gain_V=6.0)
    circuit = ConvCircuit.random(spec, seed=3)
    source_V = _inputs(spec, 4, seed=4)
    nudge = 1e-6 * torch.randn(4, spec.n_outputs, generator=torch.Generator().manual_seed(5))
    conv = ConvLayerwiseSolver().solve(circuit, source_V, nudge)
    # The dense block with the unrolled crossbar (absent devices as 1e-30 S) is the same circuit.
    weights = unrolled(circuit, 0).clamp(min=1e-30)
    dense_spec = CircuitSpec(layer_sizes=(spec.n_inputs, spec.n_outputs), input_gain_V=6.0)
    biases = circuit.biases[0].repeat_interleave(spec.positions, dim=1)
    dense = FastSolver().solve(Circuit(dense_spec, (weights,), (biases,), check_range=False), source_V, nudge)
    torch.testing.assert_close(conv.output, dense.output, rtol=0, atol=1e-11)
    torch.testing.assert_close(conv.input_currents_A, dense.input_currents_A, rtol=0, atol=1e-16)
    torch.testing.assert_close(conv.bias_currents_A[0], dense.bias_currents_A[0], rtol=0, atol=1e-15)
    assert float(conv.output.abs().max()) > 0.5  # diodes conduct


@pytest.mark.parametrize("channels", [(1, 3, 2), (2, 2, 3, 2)])
def test_dual_rail_layers_satisfy_the_unrolled_kcl(channels):
    spec = ConvCircuitSpec(channels=channels, side=(4, 5), kernel_size=3, input_gain_V=8.0)
    circuit = ConvCircuit.random(spec, seed=7)
    source_V = _inputs(spec, 3, seed=8)
    nudge = 1e-6 * torch.randn(3, spec.n_outputs, generator=torch.Generator().manual_seed(9))
    eq = ConvLayerwiseSolver().solve(circuit, source_V, nudge)
    assert eq.residual_A.max() < 1e-14  # rounding of ~1 mA node currents
    residual = dense_residual(circuit, source_V, eq.voltages, nudge)
    assert residual.abs().max() < 1e-14, residual.abs().max()
    assert float(eq.all_voltages().abs().max()) > 0.5


def test_warm_start_reaches_the_same_equilibrium():
    spec = ConvCircuitSpec(channels=(3, 8, 4), side=(12, 12), input_gain_V=4.0)
    circuit = ConvCircuit.random(spec, seed=1)
    source_V = _inputs(spec, 4, seed=2)
    solver = ConvLayerwiseSolver()
    free = solver.solve(circuit, source_V)
    nudge = 1e-6 * torch.randn(4, spec.n_outputs, generator=torch.Generator().manual_seed(3))
    cold = solver.solve(circuit, source_V, nudge)
    warm = solver.solve(circuit, source_V, nudge, init=free)
    torch.testing.assert_close(cold.all_voltages(), warm.all_voltages(), rtol=0, atol=1e-11)
    assert warm.iterations <= cold.iterations


@pytest.mark.ngspice
def test_fast_equals_ngspice():
    if ngspice_available():
        pytest.skip(ngspice_available())
    from analog.solvers.conv_ngspice import ConvNgspiceSolver

    spec = ConvCircuitSpec(channels=(1, 3, 2), side=(8, 8), input_gain_V=10.0)
    circuit = ConvCircuit.random(spec, seed=1)
    source_V = _inputs(spec, 4, seed=0)
    nudge = 1e-5 * torch.randn(4, spec.n_outputs, generator=torch.Generator().manual_seed(2))
    fast = ConvLayerwiseSolver()
    with ConvNgspiceSolver() as ngspice:
        for n in (None, nudge):
            a, b = fast.solve(circuit, source_V, n), ngspice.solve(circuit, source_V, n)
            assert float((a.all_voltages() - b.all_voltages()).abs().max()) <= 1e-8
            torch.testing.assert_close(a.input_currents_A, b.input_currents_A, rtol=0, atol=1e-14)
            for ia, ib in zip(a.bias_currents_A, b.bias_currents_A, strict=True):
                torch.testing.assert_close(ia, ib, rtol=0, atol=1e-14)
            assert float(a.all_voltages().abs().max()) > 0.5  # the diodes conduct


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_size": 4}, "kernel_size: must be an odd integer"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"channels": (1,)}, "channels: need at least"),
        ({"channels": (1, 0)}, r"channels\[1\]"),
        ({"side": (8,)}, "side: must be two integers"),
        ({"bias_V": -1.0}, "bias_V: must be > 0"),
        ({"input_gain_V": 0.0}, "input_gain_V"),
    ],
)
def test_bad_spec_names_the_field(kwargs, message):
    args = {"channels": (1, 2), "side": (4, 4), **kwargs}
    with pytest.raises(ValueError, match=message):
        ConvCircuitSpec(**args)


def test_bad_conductances_and_inputs_are_refused():
    spec = ConvCircuitSpec(channels=(1, 2), side=(4, 4))
    circuit = ConvCircuit.random(spec)
    with pytest.raises(ValueError, match=r"kernels\[0\]: expected shape \[2, 2, 3, 3\]"):
        ConvCircuit(spec, (torch.full((2, 1, 3, 3), 1e-5),), circuit.biases)
    with pytest.raises(ValueError, match="out of"):
        ConvCircuit(spec, (torch.full((2, 2, 3, 3), 1.0),), circuit.biases)
    with pytest.raises(ValueError, match=r"inputs: expected shape \[batch, 1, 4, 4\]"):
        spec.source_voltages(torch.zeros(2, 1, 5, 5))
    with pytest.raises(ValueError, match="source voltages"):
        ConvLayerwiseSolver().solve(circuit, torch.zeros(2, 7))
    with pytest.raises(ValueError, match="fuse"):
        ConvLayerwiseSolver(fuse=True)


def test_deck_holds_one_device_per_tap_and_position():
    from analog.conv_netlist import conv_netlist_text

    spec = ConvCircuitSpec(channels=(1, 2, 1), side=(3, 3))
    circuit = ConvCircuit.random(spec, seed=2)
    text = conv_netlist_text(circuit, _inputs(spec, 2, seed=3))
    lines = [line.split() for line in text.splitlines() if line and not line.startswith((".", "*"))]
    by_kind: dict[str, list[list[str]]] = {}
    for words in lines:
        by_kind.setdefault(words[0][:3].upper() if words[0][0] in "Rr" else words[0][0].upper(), []).append(words)
    # Per axis the 3 taps of a row of 3 nodes reach 2 + 3 + 2 = 7 neighbours that exist: 7^2 (tap,
    # position) pairs per channel pair, no device towards the padding.
    pairs = sum(min(y + 1, 2) - max(y - 1, 0) + 1 for y in range(3)) ** 2
    assert pairs == 49
    assert len(by_kind["RW0"]) == 2 * 2 * pairs and len(by_kind["RW1"]) == 1 * 4 * pairs
    assert len(by_kind["RB0"]) == 2 * 18 and len(by_kind["RB1"]) == 2 * 9
    assert len(by_kind["E"]) == len(by_kind["F"]) == 18 and len(by_kind["D"]) == 2 * 27
    # Tap (dy, dx) = (-1, -1) of output channel 0 from the - rail of hidden channel 1, at node (1, 1):
    # from L1_X{1 * 9 + 0} to L2_N{4}, at the kernel's conductance.
    a, b, ohms = next(w for w in by_kind["RW1"] if w[0] == "RW1_0_3_0_0_1_1")[1:4]
    assert (a, b) == ("L1_X9", "L2_N4")
    assert float(ohms) == pytest.approx(1.0 / float(circuit.kernels[1][0, 3, 0, 0]), rel=1e-15)
    einv = next(w for w in by_kind["E"] if w[0] == "EINV_L1_N9")
    finv = next(w for w in by_kind["F"] if w[0] == "FINV_L1_N9")
    assert einv[1:4] == ["L1_A9", "0", "L1_N9"] and float(einv[-1]) == -1.0
    assert finv[1:4] == ["L1_N9", "0", "VSENSE_L1_N9"] and float(finv[-1]) == -1.0
