"""Deep Hopfield Network (DHN) energy blocks: the ff-EBM paper's own, idealised energy-based blocks,
behind the interface of :class:`~cosim.block.AnalogBlock`, so that one network can hold the idealised
block and its circuit realisation side by side (Nest & Ernoult 2024, arXiv 2409.03306, Sec. 4, and
their code ``rain-neuromorphics/hybrid_bp_ep_official``, ``src/models/vgg.py``).

A block has state layers ``s_1 .. s_L``; its input ``x = s_0`` is the output of the block before it
(fixed during the block's relaxation). With ``f_l`` the coupling from layer ``l`` to ``l+1`` (dense:
``f_l(v) = W_l v + b_l``; convolutional: ``f_l(v) = pool_l(conv2d(v, K_l, padding) + b_l)``, stride 1,
``pool_l`` a ``p x p`` max-pooling or none; from the last feature map into a dense layer:
``W_l flatten(v) + b_l``; with ``input_weights = false``, ``f_0(x) = x``: the paper's ConvPool block,
whose first convolution, pool and batch norm are its feedforward part, the other convolutions,
pools and ``fc`` layers its EB block) the primitive function and the energy are

    Phi(s; x) = sum_{l=0}^{L-1} <s_{l+1}, f_l(s_l)>,
    E(s; x)   = sum_l G_l(s_l) - Phi(s; x),       G_l' = rho_l^{-1},                           (E)

and a state is a fixed point of ``s_l = rho_l(dPhi/ds_l)``. ``rho(u) = clamp(a u, 0, 1)`` with slope
``a = 1`` (``clamp``, the paper's ``activation: 1.0``) or ``1/2`` (``clamp-half``, Laborieux et al.
2021), for which ``G(s) = s^2 / (2a)`` on ``[0, 1]``; ``sigmoid(4u - 2)``, a smooth counterpart (not
in the paper; it lets tests see EP's textbook ``beta^2`` bias); or ``rho_L(u) = u`` for an unclamped
output layer (the official code's ``clamp_last = false``). As in the paper the states live in
``[0, 1]`` and ``rho`` is applied by the update, not inside the coupling: ``dPhi/ds_l =
f_{l-1}(s_{l-1}) + f_l^T(s_{l+1})``, with ``f^T`` the adjoint of the linear part (a transposed
matrix, a transposed convolution, after un-pooling to the positions the max-pooling selects at the
current ``s_l``, as the official code's ``grad_pre`` does). Without pooling, the fixed point minimises
(E) (over the box, for the clamps), and each layer update is the exact minimum over that layer given
its neighbours, so the paper's asynchronous scheme (all odd layers, then all even layers: one
iteration) lowers ``E`` at every step; a max-pooled coupling is convex, not linear, in its lower
layer, so there the update is the paper's fixed-point step, not a minimisation. Between the kinks of
the pooling (a change of the selected positions) ``Phi`` stays bilinear, and what follows holds with
the selection of the free fixed point. The free phase starts from zero states and runs ``t1``
iterations; each nudged phase starts from the free fixed point and runs ``t2`` (the paper's T1 and
T2); with ``tol`` a phase stops as soon as no state moved by more than ``tol`` in one iteration,
and one that has not by ``t1`` / ``t2`` iterations is an error.

Nudging. The ff-EBM paper nudges block ``k`` with the gradient arriving from the blocks after it,
``E + beta <delta, s_L>``, ``delta = dL/ds_L`` (the official code adds ``beta * error_current`` to
the output layer's drive, ``error_current = -dL/ds_L``). Here ``delta_b`` is divided by its largest
entry ``gamma_b`` per sample, exactly as the analog blocks' nudge (:mod:`cosim.gradients`, (N)), so
that the same ``train.beta`` is the largest nudging force as a fraction of a state's full range
``[0, 1]`` in both kinds of block, whatever the loss scale or batch size:

    E_b^{+-beta} = E_b +- beta <delta_b / gamma_b, s_L>.                                       (N-H)

The estimates (Scellier & Bengio 2017, Thm. 1; centered: Laborieux et al. 2021) are

    dL/dtheta ~ -sum_b kappa_b (dPhi_b/dtheta(s(a)) - dPhi_b/dtheta(s(b))),                    (EP-H)

for every weight, bias and the block input ``x``, with phases ``(a, b) = (+beta, -beta)`` and
``kappa_b = gamma_b / (2 beta)`` (centered), or ``(+beta, free)`` / ``(free, -beta)`` and
``kappa_b = gamma_b / beta``. ``Phi`` is linear in each parameter, so these are the products
``s_{l+1} s_l^T`` (or their convolutional counterparts) of the two phases.

With the clamps the fixed point is piecewise linear in ``beta``, so the centered estimate is exact
(its quadratic terms cancel) until a unit crosses a kink; the one-sided ones keep an ``O(beta)`` bias.

The exact reference (``implicit``) differentiates the free fixed point. With ``D = rho'(dPhi/ds)``
there (``a`` or 0 for the clamps, 1 for a linear output) and ``A`` the symmetric coupling
``(A v)_l = f_{l-1}^lin(v_{l-1}) + f_l^T(v_{l+1})``, the adjoint ``mu = D (g + A mu)`` (the response
of the states to a unit nudge along ``-g``, ``g = dL/ds_L`` at the output layer) is solved by
conjugate gradients in ``z = D^{-1/2} mu``, on the energy Hessian's symmetric system

    (I - D^{1/2} A D^{1/2}) z = D^{1/2} g,                                                    (ADJ)

and ``dL/dtheta = mu . d^2 Phi / ds dtheta``: ``dL/dW_l = sum_b mu_{l+1} s_l^T + s_{l+1} mu_l^T``,
``dL/db_l = sum_b mu_{l+1}``, ``dL/dx = f_0^T(mu_1)`` (IMP-H). It is the true gradient of the loss at
the free fixed point wherever no unit sits exactly on a kink of ``rho`` (a set of measure zero) and
the fixed point is a strict minimum (CG refuses a Hessian that is not positive definite). A clamped
unit held at 0 or 1 has no gradient at all; EP's finite nudge can still move it.

Not reproduced from the paper: batch norm inside a block (a digital ``batchnorm2d`` before a block
with ``input_weights = false`` is the paper's ConvPool feedforward part); strides; pooling other
than max-pooling with stride = side.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from analog.solvers.base import SolverError
from cosim.block import check_upstream_gradient, exact_reading_method
from cosim.gradients import EquilibriumPropagation, GradientMethod, ImplicitDifferentiation
from cosim.hopfield_energy import (
    ACTIVATIONS,
    ADJOINT_MAX_ITERATIONS,
    INIT_METHODS,
    Couplings,
    FixedPoint,
    HopfieldSpec,
    activate,
    activation_slope,
    inner,
    per_sample,
    state_cost,
)

__all__ = ["ACTIVATIONS", "INIT_METHODS", "FixedPoint", "HopfieldBlock", "HopfieldSpec"]


def _initial_parameters(spec: HopfieldSpec, gen: torch.Generator, dtype) -> tuple[list, list]:
    """Weights and biases of every weighted coupling by ``spec.init`` (:data:`INIT_METHODS`)."""
    weights, biases = [], []
    for l in spec.weighted():
        shape = spec.weight_shape(l)
        goe = spec.init == "goe"
        if goe and spec.coupling(l) == "conv":
            k = shape[-1]
            a = torch.randn(shape, generator=gen, dtype=dtype).tril() * math.sqrt(spec.init_variance / k)
            a = a + a.transpose(-1, -2)
            a.diagonal(dim1=-2, dim2=-1).mul_(math.sqrt(2.0))
            weights.append(a)
            if spec.bias:
                biases.append(torch.zeros(shape[0], dtype=dtype))
            continue
        bound = (1.0 if goe else spec.init_scale) / math.sqrt(math.prod(shape[1:]))
        weights.append((2 * torch.rand(shape, generator=gen, dtype=dtype) - 1) * bound)
        if spec.bias:
            biases.append((2 * torch.rand(shape[0], generator=gen, dtype=dtype) - 1) * bound)
    return weights, biases


class _HopfieldFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block: HopfieldBlock, x: torch.Tensor, *params: torch.Tensor):
        x = x.detach()
        free = block.relax(x, phase="free")
        block.record("free", free)
        ctx.block, ctx.x, ctx.free = block, x, free
        return free.states[-1].clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        block: HopfieldBlock = ctx.block
        check_upstream_gradient(grad_output, block.name, "Hopfield")
        grad_x, grads = block.gradients(ctx.x, ctx.free, grad_output.detach())
        ctx.free = None
        return (None, grad_x, *grads)


class HopfieldBlock(nn.Module):
    """A DHN energy block (module docstring) with trainable couplings.

    ``forward(x)``: the block input (dense ``[B, n_in]``, flattened; convolutional ``[B, c_in, H,
    W]``) -> the output layer's free fixed point ``s_L``. ``loss.backward()`` runs the gradient
    ``method`` in the block: :class:`~cosim.gradients.EquilibriumPropagation` (its ``beta`` and
    ``variant``; (N-H), (EP-H)) or :class:`~cosim.gradients.ImplicitDifferentiation` ((ADJ), (IMP-H)),
    the same objects an analog block takes, so ``train.method`` / ``train.beta`` and
    :meth:`cosim.model.FFEBM.set_gradient_method` choose them for both kinds of block.
    """

    def __init__(
        self,
        spec: HopfieldSpec,
        method: GradientMethod | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        name: str = "hopfield",
    ):
        super().__init__()
        self.spec = spec
        self.name = name
        self.method = method if method is not None else EquilibriumPropagation()
        weights, biases = _initial_parameters(spec, torch.Generator().manual_seed(seed), dtype)
        # Not ``weights`` / ``biases``: those state-dict names are an analog block's conductances, which a
        # checkpoint must hold positive.
        self.synapses = nn.ParameterList([nn.Parameter(w) for w in weights])
        self.synapse_biases = nn.ParameterList([nn.Parameter(b) for b in biases])
        self.stats: dict[str, dict[str, float]] = {}
        """Last run of each phase: ``iterations`` and ``change`` (free, positive, negative), and the
        adjoint's ``iterations`` and ``residual`` (relative) for the implicit method."""

    @property
    def method(self) -> GradientMethod:
        return self._method

    @method.setter
    def method(self, method: GradientMethod) -> None:
        self._method = exact_reading_method(method, self.name, "a Hopfield block")

    def parameters_list(self) -> list[nn.Parameter]:
        return [*self.synapses, *self.synapse_biases]

    def couplings(self, params=None) -> Couplings:
        params = [p.detach() for p in self.parameters_list()] if params is None else params
        n = len(self.synapses)
        return Couplings(self.spec, params[:n], params[n:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.synapses[0].dtype
        if self.spec.conv:
            if x.dim() != 4 or x.shape[1] != self.spec.channels[0]:
                raise ValueError(
                    f"{self.name}: a convolutional Hopfield block takes [B, {self.spec.channels[0]}, H, W], "
                    f"got {list(x.shape)} (reshape flat inputs with a reshape block)"
                )
            side = self.spec.input_side
            if side is not None and tuple(x.shape[2:]) != (side, side):
                raise ValueError(f"{self.name}: expects {side}x{side} input maps (input_side), got {list(x.shape[2:])}")
        else:
            x = x.flatten(1)
            if x.shape[1] != self.spec.sizes[0]:
                raise ValueError(f"{self.name}: expects {self.spec.sizes[0]} inputs per sample, got {x.shape[1]}")
        return _HopfieldFunction.apply(self, x.to(dtype), *self.parameters_list())

    def zero_states(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zero states for input ``x`` (the paper's initialisation of the free phase)."""
        try:
            shapes = self.spec.state_shapes(tuple(x.shape[1:]))
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        return tuple(torch.zeros(x.shape[0], *shape, dtype=x.dtype, device=x.device) for shape in shapes)

    @torch.no_grad()
    def relax(
        self,
        x: torch.Tensor,
        phase: str,
        init: tuple[torch.Tensor, ...] | None = None,
        nudge: torch.Tensor | None = None,
    ) -> FixedPoint:
        """Iterate ``s_l <- rho_l(dPhi/ds_l - [l = L] nudge)`` from ``init`` (zeros) for ``t1``
        (free) or ``t2`` (nudged) iterations, or to ``tol``. Odd layers, then even ones (the free
        phase starts with ``s_1``, a nudged one with the group holding ``s_L``, where the nudge enters)."""
        spec = self.spec
        couplings, activations, depth = self.couplings(), spec.activations(), spec.depth
        states = list(self.zero_states(x) if init is None else init)
        steps = spec.t1 if phase == "free" else spec.t2
        groups = [list(range(0, depth, 2)), list(range(1, depth, 2))]
        if phase != "free" and (depth - 1) % 2 == 1:
            groups.reverse()
        change, converged = float("inf"), None
        for iteration in range(1, steps + 1):
            change = 0.0
            for group in groups:
                for l in group:
                    u = couplings.drive(l, states, x)
                    if l == depth - 1 and nudge is not None:
                        u = u - nudge
                    new = activate(activations[l], u)
                    change = max(change, float((new - states[l]).abs().max()))
                    states[l] = new
            if spec.tol is not None and change <= spec.tol:
                converged = True
                break
        if spec.tol is not None and converged is None:
            raise SolverError(
                f"{self.name}, {phase} phase: the states still moved by {change:.3e} in iteration {steps} (tol "
                f"{spec.tol:.1e}); raise {'t1' if phase == 'free' else 't2'}, loosen tol, or lower the weights "
                "(a coupling too strong has no unique fixed point)"
            )
        return FixedPoint(tuple(states), iteration, change, converged)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, states) -> torch.Tensor:
        """``E`` of (E) per sample, ``[B]`` (the nudge not included)."""
        cost = sum(state_cost(name, s) for name, s in zip(self.spec.activations(), states, strict=True))
        return cost - self.couplings().phi(x, states)

    def record(self, phase: str, fp: FixedPoint) -> None:
        self.stats[phase] = {"iterations": float(fp.iterations), "change": fp.change}

    def gradients(self, x, free: FixedPoint, grad_output) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``dL/dx`` and ``dL/dtheta`` (weights, then biases) by the block's method."""
        if isinstance(self.method, ImplicitDifferentiation):
            mu = self.adjoint(x, free, grad_output)
            return self._bilinear_gradients(x, lambda c, x_: self._psi(c, x_, free.states, mu))
        beta, variant = self.method.beta, self.method.variant
        if beta == 0:
            raise ValueError("beta: EP needs beta > 0 to measure a gradient (beta = 0 is the free phase)")
        gamma = grad_output.flatten(1).abs().amax(1)
        unit = grad_output / per_sample(torch.where(gamma > 0, gamma, torch.ones_like(gamma)), grad_output)
        phases = {}
        for name, sign in (("positive", 1.0), ("negative", -1.0)):
            if variant in ("centered", name):
                phases[name] = self.relax(x, name, init=free.states, nudge=sign * beta * unit)
                self.record(name, phases[name])
        a, b = phases.get("positive", free), phases.get("negative", free)
        kappa = gamma / (beta * (2.0 if variant == "centered" else 1.0))
        # (EP-H): -d/dtheta of sum_b kappa_b (Phi_b(s(a)) - Phi_b(s(b))).
        return self._bilinear_gradients(x, lambda c, x_: -(kappa * (c.phi(x_, a.states) - c.phi(x_, b.states))).sum())

    def _bilinear_gradients(self, x, scalar) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Gradients of ``scalar(couplings, x)`` w.r.t. ``x`` and every parameter."""
        with torch.enable_grad():
            params = [p.detach().requires_grad_() for p in self.parameters_list()]
            x_ = x.detach().requires_grad_()
            grads = torch.autograd.grad(scalar(self.couplings(params), x_), [x_, *params])
        return grads[0], list(grads[1:])

    @staticmethod
    def _psi(c: Couplings, x, states, mu) -> torch.Tensor:
        """``mu . dPhi/ds`` summed over the batch: its parameter and input gradients are (IMP-H)."""
        layers = (x, *states)
        total = sum(inner(mu[l], c.up(l, layers[l])) for l in range(len(states)))
        total = total + sum(
            inner(states[l], c.up(l, mu[l - 1], bias=False, at=states[l - 1])) for l in range(1, len(states))
        )
        return total.sum()

    @torch.no_grad()
    def adjoint(self, x, free: FixedPoint, grad_output) -> tuple[torch.Tensor, ...]:
        """``mu`` of (ADJ) by batched conjugate gradients (every sample its own system)."""
        spec, couplings, states = self.spec, self.couplings(), free.states
        # In z = D^{-1/2} mu the system is (I - D^{1/2} A D^{1/2}) z = D^{1/2} g: symmetric, with no
        # 1/D to blow up where a unit saturates, and positive definite exactly when (ADJ)'s is.
        names = spec.activations()
        roots = [activation_slope(name, couplings.drive(l, states, x)).sqrt() for l, name in enumerate(names)]

        def hessian(v):
            av = couplings.coupling_operator(tuple(r * vl for r, vl in zip(roots, v, strict=True)), states)
            return tuple(vl - r * avl for r, vl, avl in zip(roots, v, av, strict=True))

        def dot(p, q):
            return sum(inner(pl, ql) for pl, ql in zip(p, q, strict=True))

        rhs = (*(torch.zeros_like(s) for s in states[:-1]), roots[-1] * grad_output.to(states[-1]))
        mu = tuple(torch.zeros_like(s) for s in states)
        r, p = rhs, rhs
        rs = dot(r, r)
        target = (dot(rhs, rhs).sqrt() * (1e3 * torch.finfo(x.dtype).eps)) ** 2
        done = 0
        for done in range(ADJOINT_MAX_ITERATIONS + 1):
            if bool((rs <= target).all()):
                break
            if done == ADJOINT_MAX_ITERATIONS:
                raise SolverError(
                    f"{self.name}, adjoint: conjugate gradients did not converge in {done} iterations (the free "
                    "fixed point is close to losing its minimum); lower the weights"
                )
            hp = hessian(p)
            php = dot(p, hp)
            live = rs > target
            if bool((php[live] <= 0).any()):
                bad = (live & (php <= 0)).nonzero().flatten().tolist()
                raise SolverError(
                    f"{self.name}, adjoint: the energy's Hessian is not positive definite at the free fixed point "
                    f"of samples {bad[:10]}: it is no strict minimum, so neither EP nor the implicit gradient "
                    "applies; lower the weights, or run the free phase to a tolerance (tol)"
                )
            alpha = torch.where(live, rs / torch.where(live, php, torch.ones_like(php)), torch.zeros_like(rs))
            mu = tuple(m + per_sample(alpha, m) * pl for m, pl in zip(mu, p, strict=True))
            r = tuple(rl - per_sample(alpha, rl) * hl for rl, hl in zip(r, hp, strict=True))
            rs_new = dot(r, r)
            ratio = torch.where(live, rs_new / torch.where(live, rs, torch.ones_like(rs)), torch.zeros_like(rs))
            p = tuple(rl + per_sample(ratio, rl) * pl for rl, pl in zip(r, p, strict=True))
            rs = rs_new
        scale = dot(rhs, rhs).sqrt().clamp_min(torch.finfo(x.dtype).tiny)
        self.stats["adjoint"] = {"iterations": float(done), "residual": float((rs.sqrt() / scale).max())}
        return tuple(r * z for r, z in zip(roots, mu, strict=True))

    def extra_repr(self) -> str:
        kind = f"conv {self.spec.kernel_size}x{self.spec.kernel_size}" if self.spec.conv else "dense"
        if self.spec.pools is not None:
            kind += f", pools {list(self.spec.pools)}"
        sizes = "-".join(map(str, self.spec.layer_sizes))
        tol = f"tol={self.spec.tol:g}" if self.spec.tol is not None else "fixed steps"
        return f"{self.name}: {kind} {sizes}, t1={self.spec.t1}, t2={self.spec.t2}, {tol}, method={self.method.name}"
