"""Hopfield blocks with the paper's VGG structure: max-pooling inside a convolutional coupling, a
dense tail after the feature maps, a one-to-one input coupling, and the ``goe`` initialisation.
The pooled couplings are piecewise linear, so the checks of test_hopfield.py hold between kinks:
``drive`` is the gradient of ``Phi``, the implicit gradient equals finite differences and backprop
through the unrolled iteration, and centered EP with the clamp equals it at small beta."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cosim import FFEBM, HopfieldBlock, HopfieldSpec, gradient_method
from cosim.gradcheck import gradcheck, model_gradients

CONVERGED = {"t1": 3000, "t2": 3000, "tol": 1e-14}

POOLED = {"channels": (2, 3, 4), "kernel_size": 3, "padding": 1, "pools": (2, 2), "dense": (5,), "input_side": 8}
"""8x8 maps -> 3x4x4 -> 4x2x2 -> 5: two pooled convolutions, then a dense layer (flattened)."""
IDENTITY = {"channels": (2, 2, 3), "kernel_size": 3, "padding": 1, "pools": (1, 2), "input_weights": False}
"""The input drives 2x4x4 one to one, then a pooled convolution: the paper's block after its
digital conv, pool and batch norm."""


def block(seed=0, **options) -> HopfieldBlock:
    spec = HopfieldSpec(**{"init_scale": 1.0, **options})
    return HopfieldBlock(spec, seed=seed)


def inputs(shape, n=6, seed=1):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(("options", "shape"), [(POOLED, (2, 8, 8)), (IDENTITY, (2, 4, 4))])
def test_drive_is_the_gradient_of_phi(options, shape):
    """``down`` (un-pooling, transposed convolution, un-flattening) is the exact adjoint of ``up``
    at the current state: ``drive`` = ``dPhi/ds_l`` by autograd, for every layer."""
    b = block(**options)
    x = inputs(shape)
    gen = torch.Generator().manual_seed(2)
    states = [torch.rand(s.shape, generator=gen, dtype=torch.float64) for s in b.zero_states(x)]
    c = b.couplings()
    for l in range(len(states)):
        leaves = [s.clone().requires_grad_(True) for s in states]
        (grad,) = torch.autograd.grad(c.phi(x, leaves).sum(), [leaves[l]])
        torch.testing.assert_close(c.drive(l, states, x), grad, rtol=1e-12, atol=1e-12)


def test_state_shapes_of_the_papers_one_block_vgg():
    """The splitting experiment's 1-block network after its digital conv / pool / norm
    (``splitting_small_1block.yaml``): five maps, then the dense layer of 256."""
    spec = HopfieldSpec(
        channels=(128, 128, 256, 256, 512, 512),
        kernel_size=3,
        padding=1,
        pools=(1, 2, 2, 2, 1),
        dense=(256,),
        input_side=16,
        input_weights=False,
    )
    maps = ((128, 16, 16), (256, 8, 8), (256, 4, 4), (512, 2, 2), (512, 2, 2))
    assert spec.state_shapes((128, 16, 16)) == (*maps, (256,))
    assert spec.weighted() == (1, 2, 3, 4, 5)
    assert spec.weight_shape(5) == (256, 2048)
    assert spec.depth == 6


def model(options, head_in, seed=0, **extra) -> FFEBM:
    torch.manual_seed(seed)
    b = block(seed, **{**options, **CONVERGED, **extra})
    return FFEBM([nn.Conv2d(1, 2, 3, padding=1), nn.Sigmoid(), b, nn.Flatten(), nn.Linear(head_in, 5)]).double()


CASES = {"pooled": (POOLED, (1, 8, 8), 5), "identity": (IDENTITY, (1, 4, 4), 12)}


@pytest.mark.parametrize("case", CASES)
def test_implicit_gradient_matches_finite_differences(case):
    options, shape, head_in = CASES[case]
    m = model(options, head_in, activation="sigmoid")
    m.set_gradient_method(gradient_method("implicit"))
    x, y = inputs(shape), torch.tensor([0, 1, 2, 3, 4, 0])
    loss_fn = lambda out: F.cross_entropy(out, y)  # noqa: E731
    grads = model_gradients(m, loss_fn, x)
    b = m.blocks[2]
    h = 1e-6
    last = len(b.synapse_biases) - 1
    checks = [("blocks.2.synapses.0", b.synapses[0]), (f"blocks.2.synapse_biases.{last}", b.synapse_biases[last])]
    checks.append(("blocks.0.weight", m.blocks[0].weight))  # through dL/dx of the block
    for name, p in checks:
        for idx in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            with torch.no_grad():
                p[idx] += h
                up = loss_fn(m(x)).item()
                p[idx] -= 2 * h
                down = loss_fn(m(x)).item()
                p[idx] += h
            assert grads[name][idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9), (name, idx)


def test_implicit_gradient_equals_backprop_through_the_unrolled_pooled_iteration():
    b = HopfieldBlock(HopfieldSpec(**{**POOLED, "init_scale": 1.0, **CONVERGED}), gradient_method("implicit"), seed=3)
    x = inputs((2, 8, 8), n=4)
    target = torch.rand(4, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = torch.autograd.grad(((b(x) - target) ** 2).sum(), list(b.parameters()))
    c = b.couplings(list(b.parameters()))
    states = list(b.zero_states(x))
    for _ in range(300):
        for group in ((0, 2), (1,)):
            for l in group:
                u = c.drive(l, states, x)
                states[l] = u.clamp(0, 1)
    unrolled = torch.autograd.grad(((states[-1] - target) ** 2).sum(), list(b.parameters()))
    for a, u in zip(exact, unrolled, strict=True):
        torch.testing.assert_close(a, u, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("case", CASES)
def test_centered_ep_with_the_clamp_equals_the_exact_gradient(case):
    options, shape, head_in = CASES[case]
    x, y = inputs(shape, n=8), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    result = gradcheck(model(options, head_in), lambda out: F.cross_entropy(out, y), x, [1e-5, 1e-6])
    row = next(r for r in result.table() if r["method"] == "ep-centered" and r["beta"] == 1e-5)
    assert row["cosine"] >= 0.999999 and row["rel_error"] < 1e-5, row


def test_goe_initialisation_draws_symmetric_kernels_of_the_papers_variance():
    spec = HopfieldSpec(channels=(64, 64, 64), kernel_size=3, padding=1, dense=(8,), input_side=4, init="goe")
    b = HopfieldBlock(spec, seed=1)
    kernel = b.synapses[0].detach()
    torch.testing.assert_close(kernel, kernel.transpose(-1, -2), rtol=0, atol=0)
    off = kernel[..., 0, 1]
    diag = kernel.diagonal(dim1=-2, dim2=-1)
    v = spec.init_variance
    assert off.var().item() == pytest.approx(v / 3, rel=0.05)
    assert diag.var().item() == pytest.approx(8 * v / 3, rel=0.05)
    assert float(b.synapse_biases[0].detach().abs().max()) == 0.0
    dense = b.synapses[2].detach()  # torch's nn.Linear default: uniform +-1/sqrt(fan_in)
    assert float(dense.abs().max()) <= 1 / (64 * 16) ** 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pools": (2,)}, "pools: one max-pooling side"),
        ({"dense": (4,)}, "input_side: a convolutional block with dense layers"),
        ({"input_weights": False}, "input_weights: false drives the first layer one to one"),
        ({"pools": (2, 1), "input_weights": False, "channels": (3, 3, 4)}, "pools: the first entry must be 1"),
        ({"pools": (8, 8), "input_side": 8}, "too small"),
        ({"init": "normal"}, "init: must be one of"),
    ],
)
def test_bad_vgg_options_name_the_field(options, message):
    base = {"channels": (3, 4, 4), "kernel_size": 3, "padding": 1}
    with pytest.raises(ValueError, match=message):
        HopfieldSpec(**{**base, **options})


def test_a_wrong_input_side_is_refused_naming_it():
    b = block(**POOLED)
    with pytest.raises(ValueError, match=r"expects 8x8 input maps \(input_side\)"):
        b(inputs((2, 6, 6)))
