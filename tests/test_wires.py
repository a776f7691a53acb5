"""Resistive crossbar wires (analog.wires): analytic reductions, IR drop, fast vs ngspice, gradients."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from analog import Circuit, CircuitSpec
from analog.solvers import FastSolver, SolverError, get_solver
from analog.wires import CrossbarWires
from cosim.gradients import gradient_method
from tests.conftest import log_uniform_circuit, make_solver, random_inputs


def test_single_device_is_in_series_with_its_two_segments():
    g, r = 1e-4, 250.0
    wires = CrossbarWires(torch.tensor([[g]]), r)
    expected = 1.0 / (1.0 / g + 2 * r)
    assert wires.reduced.ravel() == pytest.approx([expected, -expected, -expected, expected], rel=1e-12)


def test_one_row_two_columns_matches_the_hand_reduction():
    # Row driver -r- A -r- B along the row; A -g1- A' -r- col0, B -g2- B' -r- col1.
    g1, g2, r = 2e-4, 5e-5, 1e3
    b1, b2 = 1 / (1 / g1 + r), 1 / (1 / g2 + r)  # device plus its column's segment
    # Drive the row at 1 V with both columns grounded: the current entering the row.
    beyond_a = 1 / (1 / (b2) + r)  # from A: the segment to B, then B's branch
    row_current = 1 / (r + 1 / (b1 + beyond_a))
    wires = CrossbarWires(torch.tensor([[g1, g2]]), r)
    assert wires.reduced[0, 0] == pytest.approx(row_current, rel=1e-12)
    # Every row of a Laplacian sums to zero (charge conservation), and it is symmetric.
    assert abs(wires.reduced.sum(1)).max() < 1e-15 * 1e3
    assert (wires.reduced == wires.reduced.T).all()


def test_ir_drop_lowers_the_effective_coupling_and_vanishes_with_the_wires():
    spec = CircuitSpec((6, 4, 3))
    circuit = log_uniform_circuit(spec, 3)
    g = torch.cat([circuit.weights[0], circuit.biases[0]])
    totals = []
    for ohm in (1e-6, 1.0, 10.0, 100.0, 1000.0):
        m = torch.from_numpy(CrossbarWires(g, ohm).reduced)
        coupling = -m[: g.shape[0], g.shape[0] :]
        totals.append(float(coupling.sum()))
        if ohm == 1e-6:
            assert torch.allclose(coupling, g, rtol=1e-6)
        assert bool((coupling <= g * (1 + 1e-9)).all())  # wires only add resistance
    assert all(a > b for a, b in itertools.pairwise(totals))


def test_interleaved_input_pairs_cancel_where_split_halves_do_not():
    """A signed weight of zero (equal conductances to +V and -V) drives no current into its column
    with ideal wires. With resistive wires the half laid out nearer the readout wins; interleaving
    the pairs (the layout of Circuit.wire_row_order) keeps the imbalance to one segment per pair."""
    n, cols, g, ohm = 16, 8, 1e-4, 10.0
    conductances = torch.full((2 * n, cols), g)
    terminals = torch.cat([torch.ones(n), -torch.ones(n), torch.zeros(cols)]).double()
    split = CrossbarWires(conductances, ohm)
    interleaved = CrossbarWires(conductances, ohm, [r for k in range(n) for r in (k, n + k)])
    into_columns = {
        name: torch.from_numpy(w.reduced[2 * n :]) @ terminals for name, w in (("split", split), ("inter", interleaved))
    }
    one_device = g * 1.0  # the current one device carries at 1 V
    assert into_columns["split"].abs().min() > 0.3 * one_device
    assert into_columns["inter"].abs().max() < 0.1 * into_columns["split"].abs().min()
    spec = CircuitSpec((3, 2), wire_ohm=ohm)
    assert Circuit.random(spec).wire_row_order(0) == [0, 3, 1, 4, 2, 5, 6, 7]  # + bias pair last
    with pytest.raises(ValueError, match="row_order"):
        CrossbarWires(conductances, ohm, [*range(2 * n - 1), 0])


def _sparse_reduction(g: torch.Tensor, wire_ohm: float, order: list[int]) -> tuple[np.ndarray, object]:
    """The reference: the same wire network as one sparse Laplacian of all ``2 R C`` wire nodes,
    LU-factored, with one solve per terminal (``L_red = g_w I - g_w^2 P^T L_ii^-1 P``); returns
    ``L_red`` (logical order) and a function of terminal voltages giving the device voltages."""
    g = g.numpy()[order]
    rows, cols = g.shape
    n, gw = rows * cols, 1.0 / wire_ohm
    row_node = np.arange(n).reshape(rows, cols)
    col_node = n + row_node
    a = np.concatenate([row_node.ravel(), row_node[:, :-1].ravel(), col_node[:-1, :].ravel()])
    b = np.concatenate([col_node.ravel(), row_node[:, 1:].ravel(), col_node[1:, :].ravel()])
    w = np.concatenate([g.ravel(), np.full(rows * (cols - 1), gw), np.full((rows - 1) * cols, gw)])
    diag = np.bincount(a, w, 2 * n) + np.bincount(b, w, 2 * n)
    attach = np.concatenate([row_node[:, 0], col_node[-1, :]])
    diag[attach] += gw
    index = np.arange(2 * n)
    lap = sp.coo_matrix(
        (np.concatenate([diag, -w, -w]), (np.concatenate([index, a, b]), np.concatenate([index, b, a]))),
        shape=(2 * n, 2 * n),
    ).tocsc()
    lu = spla.splu(lap)
    rhs = np.zeros((2 * n, rows + cols))
    rhs[attach, np.arange(rows + cols)] = 1.0
    physical = gw * np.eye(rows + cols) - gw * gw * lu.solve(rhs)[attach]
    full = np.concatenate([order, rows + np.arange(cols)])
    reduced = np.empty_like(physical)
    reduced[np.ix_(full, full)] = physical

    def device_voltages(terminal_V: torch.Tensor) -> np.ndarray:
        inject = np.zeros((2 * n, terminal_V.shape[0]))
        inject[attach] = gw * terminal_V.numpy()[:, full].T
        nodes = lu.solve(inject)
        drop = (nodes[row_node.ravel()] - nodes[col_node.ravel()]).T.reshape(-1, rows, cols)
        out = np.empty_like(drop)
        out[:, order] = drop
        return out

    return reduced, device_voltages


@pytest.mark.parametrize(
    ("rows", "cols", "ohm"), [(1, 1, 250.0), (9, 1, 10.0), (1, 7, 10.0), (13, 6, 10.0), (7, 11, 2.0)]
)
def test_grid_elimination_matches_a_sparse_reduction_of_the_whole_wire_network(rows, cols, ohm):
    gen = torch.Generator().manual_seed(rows * cols)
    g = 10 ** (-6 + 2 * torch.rand(rows, cols, generator=gen, dtype=torch.float64))
    order = torch.randperm(rows, generator=gen).tolist()
    wires = CrossbarWires(g, ohm, order)
    reference, reference_drops = _sparse_reduction(g, ohm, order)
    scale = np.abs(reference).max()
    # The reference forms L_red as g_w I - g_w^2 (...), which rounds at eps g_w: at 2 ohm and
    # 1e-4 S that is about 1e-12 of the largest entry.
    tol = max(1e-12 * scale, 16 * np.finfo(np.float64).eps / ohm)
    assert np.abs(wires.reduced - reference).max() <= tol
    held = wires.blocks(rows - 1, torch.float64, "cpu", held_rows=True)
    assert set(held) == {"rc", "bc", "cc"}
    columns = torch.from_numpy(reference[:, rows:])
    assert float((torch.cat([held["rc"], held["bc"], held["cc"]]) - columns).abs().max()) <= tol
    terminal_V = 3 * torch.randn(5, rows + cols, generator=gen, dtype=torch.float64)
    drops = wires.device_voltages(terminal_V)
    assert float((drops - torch.from_numpy(reference_drops(terminal_V))).abs().max()) <= 1e-12 * 3
    current = terminal_V @ torch.from_numpy(reference)
    assert float((wires.terminal_currents(terminal_V) - current).abs().max()) <= 3 * tol


def test_source_currents_and_device_voltages_of_a_wired_block_match_the_sparse_reduction():
    """Through the solver: the input crossbar's row currents come from one solve of its wires (its
    row blocks are never formed), the others' from their reduced blocks; EP's device voltages."""
    from cosim.gradients import device_drops

    circuit = _wired((7, 5, 3), 10.0, seed=4)
    spec = circuit.spec
    source_V = spec.source_voltages(2 * random_inputs(spec, 6, 4) - 1)
    state = FastSolver().solve(circuit, source_V)
    bias = spec.bias_voltages(torch.float64).expand(6, -1)
    layers = [source_V, *state.voltages]
    for l in range(spec.depth):
        g = torch.cat([circuit.weights[l], circuit.biases[l]])
        reduced, reference_drops = _sparse_reduction(g, spec.wire_ohm, circuit.wire_row_order(l))
        terminals = torch.cat([layers[l], bias, layers[l + 1]], dim=1)
        current = terminals @ torch.from_numpy(reduced)
        rows = layers[l].shape[1]
        if l == 0:
            assert float((state.input_currents_A - current[:, :rows]).abs().max()) <= 1e-15
        expected = current[:, rows : rows + spec.n_bias]
        assert float((state.bias_currents_A[l] - expected).abs().max()) <= 1e-15
        drops = device_drops(circuit, l, source_V, state.voltages)
        assert float((drops - torch.from_numpy(reference_drops(terminals))).abs().max()) <= 1e-12


def _wired(sizes, wire_ohm, seed, gains=None):
    spec = CircuitSpec(
        sizes, diode_up_V=0.3, diode_down_V=-0.3, input_gain_V=3.0, wire_ohm=wire_ohm, amplifier_gains=gains
    )
    return log_uniform_circuit(spec, seed)


@pytest.mark.ngspice
@pytest.mark.parametrize(
    ("sizes", "wire_ohm", "gains"),
    [((12, 8, 5), 5.0, None), ((10, 8, 6, 4), 50.0, (3.0, None)), ((16, 10, 4), 500.0, None)],
)
def test_fast_matches_ngspice_with_wire_segments(sizes, wire_ohm, gains):
    ngspice = make_solver("ngspice")
    circuit = _wired(sizes, wire_ohm, seed=len(sizes))
    spec = circuit.spec
    source_V = spec.source_voltages(2 * random_inputs(spec, 16, 4) - 1)
    nudge = 1e-5 * torch.randn(16, spec.n_outputs, generator=torch.Generator().manual_seed(5))
    fast = FastSolver().solve(circuit, source_V, nudge)
    spice = ngspice.solve(circuit, source_V, nudge)
    unwired_circuit = Circuit(replace(spec, wire_ohm=None), circuit.weights, circuit.biases)
    ideal = FastSolver().solve(unwired_circuit, source_V, nudge)
    knee = sum(int((v.abs() > 0.3).sum()) for v in fast.voltages) / sum(v.numel() for v in fast.voltages)
    assert knee > 0.1, "too few diodes conduct for a meaningful check"
    for ours, theirs, unwired in zip(fast.voltages, spice.voltages, ideal.voltages, strict=True):
        assert float((ours - theirs).abs().max()) <= 1e-8
        # The wires matter far beyond the tolerance, so the agreement is not the unwired one's.
        assert float((ours - unwired).abs().max()) > 1e-5
    assert float((fast.input_currents_A - spice.input_currents_A).abs().max()) <= 1e-12
    for ours, theirs in zip(fast.bias_currents_A, spice.bias_currents_A, strict=True):
        assert float((ours - theirs).abs().max()) <= 1e-12
    assert float(fast.residual_A.max()) < 1e-12


def test_implicit_gradient_with_wires_matches_finite_differences():
    circuit = _wired((8, 6, 5, 3), 20.0, seed=1, gains=(3.0, None))
    spec = circuit.spec
    source_V = spec.source_voltages(2 * random_inputs(spec, 8, 1) - 1)
    upstream = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    solver = FastSolver()
    exact = gradient_method("implicit")(solver, circuit, source_V, solver.solve(circuit, source_V), upstream)

    def loss(c, v):
        return float((solver.solve(c, v).voltages[-1] * upstream).sum())

    h = 1e-9
    for group, l, index in (("weights", 0, (3, 2)), ("weights", 1, (2, 3)), ("biases", 2, (1, 0))):
        plus = [list(circuit.weights), list(circuit.biases)]
        minus = [list(circuit.weights), list(circuit.biases)]
        k = 0 if group == "weights" else 1
        plus[k][l] = plus[k][l].clone()
        minus[k][l] = minus[k][l].clone()
        plus[k][l][index] += h
        minus[k][l][index] -= h
        fd = (loss(Circuit(spec, *plus), source_V) - loss(Circuit(spec, *minus), source_V)) / (2 * h)
        assert getattr(exact, group)[l][index].item() == pytest.approx(fd, rel=1e-5)
    up, down = source_V.clone(), source_V.clone()
    up[2, 5] += 1e-6
    down[2, 5] -= 1e-6
    fd = (loss(circuit, up) - loss(circuit, down)) / 2e-6
    assert exact.source_V[2, 5].item() == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("solver_name", ["fast", pytest.param("ngspice", marks=pytest.mark.ngspice)])
def test_ep_with_wires_measures_the_exact_gradient(solver_name):
    solver = make_solver(solver_name)
    circuit = _wired((10, 6, 4), 30.0, seed=2)
    spec = circuit.spec
    source_V = spec.source_voltages(2 * random_inputs(spec, 8, 2) - 1)
    upstream = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    free = solver.solve(circuit, source_V)
    exact = gradient_method("implicit")(FastSolver(), circuit, source_V, free, upstream)
    ep = gradient_method("ep-centered", beta=0.01)(solver, circuit, source_V, free, upstream)
    for a, b in zip(
        (*exact.weights, *exact.biases, exact.source_V), (*ep.weights, *ep.biases, ep.source_V), strict=True
    ):
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert float(cosine) >= 0.9999


def test_ideal_diode_solver_refuses_wires_by_name():
    circuit = _wired((6, 4, 3), 10.0, seed=0)
    source_V = circuit.spec.source_voltages(random_inputs(circuit.spec, 2, 0))
    with pytest.raises(SolverError, match="wire_ohm"):
        get_solver("fast-ideal").solve(circuit, source_V)


def test_power_balance_counts_the_wires():
    from analog.energy import static_power

    circuit = _wired((10, 6, 5, 4), 200.0, seed=3, gains=(2.0, None))
    spec = circuit.spec
    source_V = spec.source_voltages(2 * random_inputs(spec, 4, 3) - 1)
    nudge = 1e-5 * torch.randn(4, spec.n_outputs, generator=torch.Generator().manual_seed(2))
    eq = FastSolver().solve(circuit, source_V, nudge)
    power = static_power(circuit, source_V, eq.voltages, nudge)
    assert float(power.wires_W.min()) > 0
    assert float(power.charging_W.abs().max()) <= 1e-12 * float(power.delivered_W.abs().max())
    balance = (power.dissipated_W - power.delivered_W).abs() / power.delivered_W.abs()
    assert float(balance.max()) <= 1e-9
    measured = static_power(circuit, source_V, eq.voltages, nudge, eq.input_currents_A, eq.bias_currents_A)
    assert torch.allclose(measured.delivered_W, power.delivered_W, rtol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "5"])
def test_bad_wire_resistance_is_refused(bad):
    with pytest.raises(ValueError, match="wire_ohm"):
        CircuitSpec((4, 3, 2), wire_ohm=bad)


@pytest.mark.ngspice
def test_transient_with_wires_matches_ngspice_tran():
    # Wire nodes carry no capacitance in either simulator: they follow the free nodes instantly.
    from analog.ngspice import NgspiceTransient
    from analog.settling import Capacitances, TransientOptions, simulate_phase

    make_solver("ngspice")  # skips when ngspice is missing
    spec = CircuitSpec((3, 4, 2), diode_up_V=0.3, diode_down_V=-0.3, wire_ohm=300.0)
    circuit = log_uniform_circuit(spec, 5)
    source_V = spec.source_voltages(4 * random_inputs(spec, 2, 5) - 2)
    caps = Capacitances()
    free = FastSolver().solve(circuit, source_V).all_voltages()
    start = torch.zeros_like(free)
    ours = simulate_phase(circuit, caps, source_V, start, free, None, TransientOptions())
    t_stop = 1.5 * float(ours.settle_time_s.max())
    with NgspiceTransient() as ngspice:
        for b, wave in enumerate(ngspice.run(circuit, caps, source_V, start, t_stop, None)):
            options = TransientOptions(rtol=1e-8, atol_V=1e-12)
            again = simulate_phase(
                circuit,
                caps,
                source_V[b : b + 1],
                start[b : b + 1],
                free[b : b + 1],
                None,
                options,
                t_eval=wave.times_s,
            )
            on_grid = torch.isin(again.times_s, wave.times_s)
            assert float((again.voltages[on_grid, 0] - wave.voltages).abs().max()) < 1e-6
