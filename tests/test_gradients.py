"""EP gradients measured from circuit quantities vs the exact implicit gradient, and the hybrid
gradient of an ff-EBM vs the end-to-end exact gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analog import CircuitSpec
from analog.solvers import FastSolver
from cosim import FFEBM, AnalogBlock, EquilibriumPropagation, gradient_method
from cosim.gradcheck import gradcheck, model_gradients
from tests.conftest import log_uniform_circuit, make_solver, random_inputs

DEFAULT_BETAS = [0.2, 0.1, 0.05, 0.025, 0.0125]


def single_block(sizes=(64, 32, 10), gain=10.0, gains=None, solver=None, seed=2, hidden_pairs=False) -> FFEBM:
    spec = CircuitSpec(sizes, input_gain_V=gain, amplifier_gains=gains, hidden_pairs=hidden_pairs)
    block = AnalogBlock(spec, solver=solver or FastSolver())
    circuit = log_uniform_circuit(spec, seed)
    with torch.no_grad():
        for p, value in zip(block.conductances(), [*circuit.weights, *circuit.biases], strict=True):
            p.copy_(value)
    return FFEBM([block, ScaleOut(20.0)])


class ScaleOut(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


def ce_loss(y):
    return lambda out: F.cross_entropy(out, y)


def batch(n_in, n=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, n_in, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_single_block_centered_ep_matches_exact_with_beta_squared_slope():
    model = single_block()
    x, y = batch(64)
    result = gradcheck(model, ce_loss(y), x, DEFAULT_BETAS)
    smallest = [r for r in result.table() if r["method"] == "ep-centered" and r["beta"] == DEFAULT_BETAS[-1]]
    assert smallest[0]["cosine"] >= 0.99999
    assert 1.8 <= result.slope_centered <= 2.2
    assert 0.8 <= result.slope_one_sided <= 1.2
    params = {r["param"] for r in result.rows}
    assert {"blocks.0.weights.0", "blocks.0.weights.1", "blocks.0.biases.0", "all"} <= params


@pytest.mark.parametrize("hidden_pairs", [False, True], ids=["single-rail", "dual-rail"])
def test_amplified_block_ep_matches_exact(hidden_pairs):
    """The per-layer factors (s_L / s_{l+1})^2 of the amplifier derivation, with each rail's own
    drop on a dual-rail block (tests/test_dual_rail.py)."""
    model = single_block(sizes=(16, 12, 8, 10), gains=(3.0, 2.0), gain=6.0, hidden_pairs=hidden_pairs)
    x, y = batch(16)
    result = gradcheck(model, ce_loss(y), x, [0.02, 0.01, 0.005], methods=["ep-centered"])
    for row in result.rows:
        if row["beta"] == 0.005:
            assert row["cosine"] >= 0.99999, row
    assert 1.8 <= result.slope_centered <= 2.2


@pytest.mark.parametrize(
    ("sizes", "gains", "hidden_pairs", "entries"),
    [
        ((12, 8, 10), None, False, [(0, 0), (3, 5), (7, 2)]),
        # Dual rail: rows 0..7 of crossbar 1 are layer 1's + rails, rows 8..15 its - rails.
        ((12, 8, 6, 10), (2.0, None), True, [(5, 1), (2, 3), (11, 5)]),
    ],
    ids=["single-rail", "dual-rail"],
)
def test_implicit_gradient_matches_finite_differences(sizes, gains, hidden_pairs, entries):
    model = single_block(sizes=sizes, gain=10.0, gains=gains, hidden_pairs=hidden_pairs)
    model.set_gradient_method(gradient_method("implicit"))
    x, y = batch(12, n=8)
    loss_fn = ce_loss(y)
    grads = model_gradients(model, loss_fn, x)
    block = model.blocks[0]
    for param_name, p in [(f"blocks.0.weights.{k}", w) for k, w in enumerate(block.weights)]:
        for idx in entries:
            idx = (idx[0] % p.shape[0], idx[1] % p.shape[1])
            h = 1e-6 * p[idx].item()
            with torch.no_grad():
                p[idx] += h
                plus = loss_fn(model(x)).item()
                p[idx] -= 2 * h
                minus = loss_fn(model(x)).item()
                p[idx] += h
            fd = (plus - minus) / (2 * h)
            exact = grads[param_name][idx].item()
            assert abs(fd - exact) <= 1e-6 * abs(exact) + 1e-9 * grads[param_name].abs().max().item(), (
                param_name,
                idx,
                fd,
                exact,
            )


@pytest.mark.parametrize("sizes", [(12, 8, 10), (12, 8, 6, 10)], ids=["single-rail", "dual-rail"])
def test_input_gradient_matches_implicit(sizes):
    """dL/dx through the source currents (EP) equals the exact input gradient."""
    model = single_block(sizes=sizes, hidden_pairs=len(sizes) > 3)
    x, y = batch(12, n=8)
    grads = {}
    for method in ("implicit", "ep-centered"):
        model.set_gradient_method(gradient_method(method, 0.01))
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(model(xr), y).backward()
        grads[method] = xr.grad
    cos = F.cosine_similarity(grads["implicit"].flatten(), grads["ep-centered"].flatten(), dim=0)
    assert cos.item() >= 0.99999


def test_ffebm_hybrid_gradient_matches_end_to_end_exact():
    torch.manual_seed(0)
    spec1 = CircuitSpec((4 * 8 * 8, 24, 16), input_gain_V=2.0)
    spec2 = CircuitSpec((20, 16, 10), input_gain_V=4.0)
    model = FFEBM(
        [
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 4, 3, padding=1),
            nn.Flatten(),
            AnalogBlock(spec1, seed=1, name="analog0"),
            nn.Linear(16, 20),
            AnalogBlock(spec2, seed=2, name="analog1"),
            ScaleOut(10.0),
        ]
    ).double()
    x, y = batch(64, n=16)
    result = gradcheck(model, ce_loss(y), x, [0.05, 0.01], methods=["ep-centered"])
    digital = {r["param"] for r in result.rows if ".weight" in r["param"] or r["param"].endswith(".bias")}
    assert {"blocks.1.weight", "blocks.4.weight"} <= digital
    for row in result.rows:
        assert row["cosine"] >= 0.9999, row


def test_beta_zero_nudged_phase_equals_free_phase():
    spec = CircuitSpec((8, 6, 4), input_gain_V=10.0)
    circuit = log_uniform_circuit(spec, 0)
    source_V = spec.source_voltages(random_inputs(spec, 8, 0))
    solver = FastSolver()
    free = solver.solve(circuit, source_V)
    nudge, _ = EquilibriumPropagation(beta=0.0).nudge(circuit, torch.randn(8, 4), 1.0)
    assert torch.equal(nudge, torch.zeros(8, 4))
    nudged = solver.solve(circuit, source_V, nudge_A=nudge, init=free)
    assert (nudged.all_voltages() - free.all_voltages()).abs().max().item() <= 1e-14
    assert nudged.iterations <= 1
    cold = solver.solve(circuit, source_V, nudge_A=nudge)
    assert (cold.all_voltages() - free.all_voltages()).abs().max().item() <= 1e-14


def test_unknown_gradient_method_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown method 'ep-central'.*ep-centered"):
        gradient_method("ep-central")
    with pytest.raises(ValueError, match="beta"):
        gradient_method("ep-centered", beta=-0.1)


@pytest.mark.ngspice
def test_ep_with_nudged_phases_in_ngspice():
    solver = make_solver("ngspice")
    try:
        model = single_block(sizes=(64, 32, 10), solver=solver)
        x, y = batch(64, n=16)
        result = gradcheck(model, ce_loss(y), x, [0.05], methods=["ep-centered"])
        for row in result.rows:
            assert row["cosine"] >= 0.999, row
    finally:
        solver.close()
