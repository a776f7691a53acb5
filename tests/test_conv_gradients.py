"""Conv analog blocks: the batch sums of the EP and implicit estimates (against brute force), the
implicit gradient (against finite differences), EP (against the implicit gradient), the block in
autograd."""

from __future__ import annotations

import math

import pytest
import torch

from analog.conv_circuit import ConvCircuit, ConvCircuitSpec, pair_products
from analog.solvers.conv_layerwise import ConvLayerwiseSolver
from cosim.conv_block import ConvAnalogBlock
from cosim.conv_gradients import conv_gradients
from cosim.gradients import EquilibriumPropagation, ImplicitDifferentiation

SPEC = ConvCircuitSpec(channels=(1, 3, 2), side=(5, 4), input_gain_V=8.0)
SOLVER = ConvLayerwiseSolver()


def _case(batch: int = 3):
    circuit = ConvCircuit.random(SPEC, seed=1)
    gen = torch.Generator().manual_seed(0)
    source_V = SPEC.source_voltages(2 * torch.rand(batch, *SPEC.grid(0), generator=gen) - 1)
    target = 0.2 * torch.randn(batch, SPEC.n_outputs, generator=gen)
    return circuit, source_V, target


def _loss(circuit, source_V, target) -> tuple[float, object]:
    eq = SOLVER.solve(circuit, source_V)
    return float(0.5 * ((eq.output - target) ** 2).sum()), eq


def _with(circuit: ConvCircuit, group: str, l: int, index, delta: float) -> ConvCircuit:
    tensors = {"kernels": list(circuit.kernels), "biases": list(circuit.biases)}
    t = tensors[group][l].clone()
    t[index] += delta
    tensors[group][l] = t
    return ConvCircuit(circuit.spec, tuple(tensors["kernels"]), tuple(tensors["biases"]), check_range=False)


def _gradients(method, circuit, source_V, target):
    _, free = _loss(circuit, source_V, target)
    return conv_gradients(method, SOLVER, circuit, source_V, free, free.output - target)


def test_pair_products_sum_over_the_devices_that_exist():
    gen = torch.Generator().manual_seed(3)
    shape = (2, 3, 3, 3)
    p, r = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 3, 4, 5, generator=gen)
    q, t = torch.randn(2, 2, 4, 5, generator=gen), torch.randn(2, 2, 4, 5, generator=gen)
    out = pair_products(p, q, r, t, shape)
    expected = torch.zeros(shape)
    for c in range(2):
        for row in range(3):
            for i in range(3):
                for j in range(3):
                    for y in range(4):
                        for x in range(5):
                            yy, xx = y + i - 1, x + j - 1
                            if 0 <= yy < 4 and 0 <= xx < 5:
                                a = p[:, row, yy, xx] - q[:, c, y, x]
                                expected[c, row, i, j] += (a * (r[:, row, yy, xx] - t[:, c, y, x])).sum()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_implicit_gradient_equals_finite_differences():
    circuit, source_V, target = _case()
    exact = _gradients(ImplicitDifferentiation(), circuit, source_V, target)
    h = 1e-9
    for group, l, index, grad in [
        ("kernels", 0, (0, 0, 1, 1), exact.weights[0]),
        ("kernels", 0, (2, 1, 0, 2), exact.weights[0]),
        ("kernels", 1, (1, 4, 2, 0), exact.weights[1]),
        ("kernels", 1, (0, 2, 1, 1), exact.weights[1]),
        ("biases", 0, (1, 2), exact.biases[0]),
        ("biases", 1, (0, 1), exact.biases[1]),
    ]:
        plus, _ = _loss(_with(circuit, group, l, index, h), source_V, target)
        minus, _ = _loss(_with(circuit, group, l, index, -h), source_V, target)
        assert math.isclose((plus - minus) / (2 * h), float(grad[index]), rel_tol=1e-5), (group, l, index)
    for k in (3, SPEC.n_inputs + 7):  # a + source and a - source, each its own
        up, down = source_V.clone(), source_V.clone()
        up[1, k] += 1e-6
        down[1, k] -= 1e-6
        fd = (_loss(circuit, up, target)[0] - _loss(circuit, down, target)[0]) / 2e-6
        assert math.isclose(fd, float(exact.source_V[1, k]), rel_tol=1e-5)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(), b.flatten()
    return float(a @ b / (a.norm() * b.norm()))


def test_centered_ep_matches_the_exact_gradient_with_a_beta_squared_error():
    circuit, source_V, target = _case()
    exact = _gradients(ImplicitDifferentiation(), circuit, source_V, target)
    flat = torch.cat([exact.source_V.flatten(), *(g.flatten() for g in (*exact.weights, *exact.biases))])
    errors = []
    for beta in (0.4, 0.2, 0.1):
        ep = _gradients(EquilibriumPropagation(beta=beta), circuit, source_V, target)
        assert set(ep.phases) == {"positive", "negative"}
        want_all = (exact.source_V, *exact.weights, *exact.biases)
        for got, want in zip((ep.source_V, *ep.weights, *ep.biases), want_all, strict=True):
            assert _cosine(got, want) >= 0.9999
        est = torch.cat([ep.source_V.flatten(), *(g.flatten() for g in (*ep.weights, *ep.biases))])
        errors.append(float((est - flat).norm() / flat.norm()))
    slope = math.log(errors[0] / errors[2]) / math.log(4.0)
    assert 1.7 <= slope <= 2.3, errors


def test_one_sided_ep_has_a_first_order_error():
    circuit, source_V, target = _case()
    exact = _gradients(ImplicitDifferentiation(), circuit, source_V, target)
    errors = []
    for beta in (0.2, 0.1):
        ep = _gradients(EquilibriumPropagation(beta=beta, variant="positive"), circuit, source_V, target)
        errors.append(float((ep.weights[0] - exact.weights[0]).norm() / exact.weights[0].norm()))
    assert 1.6 <= errors[0] / errors[1] <= 2.4


def test_block_backward_gives_the_method_gradients():
    _, source_V, target = _case(batch=2)
    block = ConvAnalogBlock(SPEC, method=ImplicitDifferentiation(), seed=1)
    x = (source_V[:, : SPEC.n_inputs] / SPEC.input_gain_V).reshape(2, *SPEC.grid(0)).requires_grad_()
    out = block(x)
    assert out.shape == (2, *SPEC.grid(2))
    (0.5 * ((out.flatten(1) - target) ** 2).sum()).backward()
    exact = _gradients(ImplicitDifferentiation(), block.circuit(), source_V, target)
    torch.testing.assert_close(block.weights[1].grad, exact.weights[1], rtol=1e-10, atol=0)
    # The input gradient goes through both sources of each pair: g (dL/dV+ - dL/dV-).
    n = SPEC.n_inputs
    via_sources = SPEC.input_gain_V * (exact.source_V[:, :n] - exact.source_V[:, n:])
    torch.testing.assert_close(x.grad.flatten(1), via_sources, rtol=1e-10, atol=1e-18)
    assert set(block.stats) == {"free"}


def test_block_refuses_bad_inputs_and_methods():
    block = ConvAnalogBlock(SPEC)
    with pytest.raises(ValueError, match=r"takes input maps \[batch, 1, 5, 4\]"):
        block(torch.zeros(2, 1, 4, 5))
    from analog.readout import Measurement

    with pytest.raises(ValueError, match="measurement"):
        block.method = EquilibriumPropagation(measurement=Measurement(bits=8))
