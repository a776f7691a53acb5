"""EP and the exact implicit gradient of a conv analog block (:mod:`analog.conv_circuit`).

The nudge is (N) of :mod:`cosim.gradients` (the same :class:`~cosim.gradients.EquilibriumPropagation`
object and phases), over the block's output nodes flattened. Every layer is at scale 1, so (EP-g)
and (EP-x) read, for a device across which the drop is ``dV = z_row - v_col`` and an input source
delivering ``I_k``,

    dL/dG[c', r, dy, dx] ~ sum_b kappa_b sum_devices of the tap (dV_b(a)^2 - dV_b(b)^2) / 2,
    dL/dV_k              ~ kappa_b (I_k(a) - I_k(b)),

the sum over the devices of one tap (one per position where it exists) being the tie of the
kernel. With ``D = a - b`` and ``dV(a)^2 - dV(b)^2 = (D_z - D_v)(2 (z_b - v_b) + D_z - D_v)`` every
sum is a convolution weight gradient (:func:`analog.conv_circuit.pair_products`), batch included.

The exact reference solves the adjoint ``H lam = dL/dv`` at the free equilibrium, ``H = diag(D +
f'(v)) - A`` the symmetric KCL Jacobian of (K) (:meth:`ConvSystem.coupling` is ``A``), by conjugate
gradients preconditioned with its diagonal: matrix-free, two convolutions per iteration and layer.
``H`` is positive definite (weakly diagonally dominant: ``|K| <= G^+ + G^-``, and the sources and
biases add to ``D`` only). Then (IMP) of :mod:`cosim.gradients`:
``dL/dG = -sum_b sum_devices (lam_z - lam_v)(z - v)``, ``dL/dV_k = sum_j G_kj lam_j``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from analog.conv_circuit import ConvCircuit, bias_pair_products, dual_rail, pair_products
from analog.solvers.base import Equilibrium, EquilibriumSolver, SolverError
from analog.solvers.conv_layerwise import ConvSystem
from cosim.gradients import BlockGradients, EquilibriumPropagation, GradientMethod, ImplicitDifferentiation

__all__ = ["ADJOINT_MAX_ITERATIONS", "conv_adjoint", "conv_gradients"]

ADJOINT_MAX_ITERATIONS = 2000
"""Conjugate-gradient iterations of the adjoint before it is an error."""


def conv_gradients(
    method: GradientMethod,
    solver: EquilibriumSolver,
    circuit: ConvCircuit,
    source_V: torch.Tensor,
    free: Equilibrium,
    grad_output: torch.Tensor,
) -> BlockGradients:
    """``dL/dV`` of the sources ``[B, 2 C_0 H W]`` and ``dL/dG`` of the kernels and bias devices by
    ``method``; ``grad_output``: ``dL/dv_out`` flat ``[B, C_L H W]``."""
    if isinstance(method, ImplicitDifferentiation):
        return _implicit(circuit, source_V, free, grad_output)
    if not isinstance(method, EquilibriumPropagation):
        raise ValueError(f"conv analog block: supports EP and implicit differentiation, not {method!r}")
    if method.beta == 0:
        raise ValueError("beta: EP needs beta > 0 to measure a gradient (beta = 0 is the free phase)")
    phases, gamma = method.solve_phases(solver, circuit, source_V, free, grad_output)
    a, b = phases.get("positive", free), phases.get("negative", free)
    full_scale_A = circuit.spec.full_scale_current_A()
    kappa = gamma / (method.beta * full_scale_A * (2.0 if method.variant == "centered" else 1.0))
    k = kappa.view(-1, 1, 1, 1)
    spec = circuit.spec
    held = _shaped(circuit, b.voltages)
    delta = _shaped(circuit, tuple(va - vb for va, vb in zip(a.voltages, b.voltages, strict=True)))
    bias_V = spec.bias_voltages(source_V.dtype, source_V.device)
    weights, biases = [], []
    for l, shape in enumerate(spec.kernel_shapes()):
        dy, sy = k * delta[l], 2.0 * held[l] + delta[l]
        if l == 0:
            dx, sx = None, 2.0 * spec.source_rows(source_V)
        else:
            xd = dual_rail(delta[l - 1])
            dx, sx = k * xd, 2.0 * dual_rail(held[l - 1]) + xd
        weights.append(0.5 * pair_products(dx, dy, sx, sy, shape))
        biases.append(0.5 * bias_pair_products(dy, 2.0 * bias_V, sy))
    grad_source = kappa.unsqueeze(1) * (a.input_currents_A - b.input_currents_A)
    return BlockGradients(grad_source.to(source_V), tuple(weights), tuple(biases), phases)


def _shaped(circuit: ConvCircuit, voltages) -> tuple[torch.Tensor, ...]:
    """Flat free-layer voltages as ``[B, C_l, H, W]`` maps."""
    spec = circuit.spec
    return tuple(v.reshape(v.shape[0], *spec.grid(l)) for l, v in enumerate(voltages, start=1))


def _implicit(circuit, source_V, free, grad_output) -> BlockGradients:
    spec = circuit.spec
    system = ConvSystem(circuit, source_V)
    lam = _shaped(circuit, system.split(conv_adjoint(system, free, grad_output)))
    v = _shaped(circuit, free.voltages)
    bias_V = spec.bias_voltages(source_V.dtype, source_V.device)
    weights, biases = [], []
    for l, shape in enumerate(spec.kernel_shapes()):
        if l == 0:
            weights.append(-pair_products(None, lam[0], spec.source_rows(source_V), v[0], shape))
        else:
            weights.append(-pair_products(dual_rail(lam[l - 1]), lam[l], dual_rail(v[l - 1]), v[l], shape))
        biases.append(-bias_pair_products(lam[l], bias_V, v[l]))
    grad_source = F.conv_transpose2d(lam[0], circuit.kernels[0], padding=spec.padding).flatten(1)
    return BlockGradients(grad_source, tuple(weights), tuple(biases))


def conv_adjoint(system: ConvSystem, free: Equilibrium, grad_output: torch.Tensor) -> torch.Tensor:
    """``lam`` with ``H lam = g`` (``g``: ``grad_output`` at the output nodes, 0 elsewhere), flat
    ``[B, N]``, by Jacobi-preconditioned conjugate gradients to ``1e3 eps`` of ``|g|`` per sample."""
    u = torch.cat([t.to(system.dtype) for t in free.voltages], dim=1)
    _, g = system.diodes(u)
    diag = system.diag + g
    inv = 1.0 / diag
    rhs = torch.zeros_like(u)
    system.layer(rhs, system.depth).copy_(grad_output.to(rhs))

    def dot(p, q):
        return (p * q).sum(1, keepdim=True)

    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = inv * r
    p = z.clone()
    rz = dot(r, z)
    target = (rhs.norm(dim=1, keepdim=True) * 1e3 * torch.finfo(rhs.dtype).eps) ** 2
    for _ in range(ADJOINT_MAX_ITERATIONS):
        live = dot(r, r) > target
        if not bool(live.any()):
            return x
        hp = diag * p - system.coupling(p)
        php = dot(p, hp)
        alpha = torch.where(live, rz / torch.where(live, php, torch.ones_like(php)), torch.zeros_like(rz))
        x = x + alpha * p
        r = r - alpha * hp
        z = inv * r
        rz_new = dot(r, z)
        p = z + torch.where(live, rz_new / torch.where(live, rz, torch.ones_like(rz)), torch.zeros_like(rz)) * p
        rz = rz_new
    raise SolverError(
        f"conv analog block, adjoint: conjugate gradients did not converge in {ADJOINT_MAX_ITERATIONS} "
        "iterations; check the free equilibrium (its KCL residual) and the conductances"
    )
