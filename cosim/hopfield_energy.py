"""The Deep Hopfield Network's energy, for :mod:`cosim.hopfield`'s blocks: the activations and their
state costs, the block's shape (:class:`HopfieldSpec`), its couplings (dense, convolutional with
max-pooling, a dense tail, a one-to-one input; and their transposes) and the fixed point a
relaxation returns (:class:`FixedPoint`). The formulation and its references are in
:mod:`cosim.hopfield`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ACTIVATIONS",
    "ADJOINT_MAX_ITERATIONS",
    "INIT_METHODS",
    "Couplings",
    "FixedPoint",
    "HopfieldSpec",
    "activate",
    "activation_slope",
    "inner",
    "per_sample",
    "state_cost",
]


ACTIVATIONS = ("clamp", "clamp-half", "sigmoid")
"""``clamp``: ``clamp(u, 0, 1)``; ``clamp-half``: ``clamp(u / 2, 0, 1)``; ``sigmoid``:
``1 / (1 + exp(-(4 u - 2)))``, a smooth counterpart of ``clamp`` (same range, slope 1 at ``u = 1/2``)."""
_SLOPE = {"clamp": 1.0, "clamp-half": 0.5}


def activate(name: str, u: torch.Tensor) -> torch.Tensor:
    """``rho(u)`` of activation ``name`` (:data:`ACTIVATIONS`; ``identity`` for an unclamped output)."""
    if name == "identity":
        return u
    if name == "sigmoid":
        return torch.sigmoid(4.0 * u - 2.0)
    return (_SLOPE[name] * u).clamp(0.0, 1.0)


def activation_slope(name: str, u: torch.Tensor) -> torch.Tensor:
    """``rho'(u)``; zero where a clamp is saturated (the kinks themselves count as saturated)."""
    if name == "identity":
        return torch.ones_like(u)
    if name == "sigmoid":
        r = torch.sigmoid(4.0 * u - 2.0)
        return 4.0 * r * (1.0 - r)
    a = _SLOPE[name]
    return a * ((a * u > 0) & (a * u < 1)).to(u.dtype)


def state_cost(name: str, s: torch.Tensor) -> torch.Tensor:
    """``G(s)`` of (E) per sample, ``G' = rho^{-1}``, ``[B]``."""
    if name == "identity":
        g = 0.5 * s**2
    elif name == "sigmoid":
        t = s.clamp(1e-300, 1.0)
        q = (1.0 - s).clamp(1e-300, 1.0)
        g = 0.25 * (s * t.log() + (1.0 - s) * q.log()) + 0.5 * s
    else:
        g = s**2 / (2.0 * _SLOPE[name])
    return g.flatten(1).sum(1)


ADJOINT_MAX_ITERATIONS = 2000
"""Conjugate-gradient iterations allowed for the adjoint system (ADJ)."""


INIT_METHODS = ("uniform", "goe")
"""``uniform``: every weight and bias uniform in ``+-init_scale / sqrt(fan_in)``; ``goe``: the
official code's ``goe`` weight initialiser (``src/models/initializers.py``): every ``k x k`` kernel
slice a symmetric Gaussian matrix (off-diagonal variance ``init_variance / k``, diagonal ``8
init_variance / k``), conv biases 0, dense couplings left at torch's ``nn.Linear`` default
(uniform in ``+-1 / sqrt(fan_in)``, weights and biases)."""


@dataclass(frozen=True)
class HopfieldSpec:
    """The shape and dynamics of one DHN block; validated at construction ("field: message")."""

    sizes: tuple[int, ...] | None = None
    """Dense block: ``[n_in, hidden..., n_out]``, as an analog block's ``sizes``."""
    channels: tuple[int, ...] | None = None
    """Convolutional block: ``[c_in, c_1, ..., c_K]``, each layer a ``c_l``-channel feature map."""
    kernel_size: int | None = None
    """Convolutional block: side ``k`` of every ``k x k`` kernel (stride 1)."""
    padding: int = 0
    """Convolutional block: zero padding of every convolution; a layer's side is ``H + 2p - k + 1``
    (then divided by its pooling)."""
    pools: tuple[int, ...] | None = None
    """Convolutional block: a ``p x p`` max-pooling (stride ``p``) after each convolution, one
    entry per convolutional coupling (``len(channels) - 1``), 1 for none (the paper's ``pools``
    string: ``m`` is 2, ``-`` is 1). ``None``: no pooling."""
    dense: tuple[int, ...] = ()
    """Convolutional block: dense layers after the last feature map (flattened), e.g. ``[256]``
    (the paper's ``fc`` inside a block)."""
    input_side: int | None = None
    """Convolutional block: side of the square input maps; needed with ``dense`` (it sets the
    width of the first dense coupling), checked against the input when given."""
    input_weights: bool = True
    """Couple the input to the first layer through weights (``f_0``); ``False``: the input drives
    the first layer one to one, ``<s_1, x>`` (the paper's EB block after its feedforward block
    when a digital normalisation sits between them); the input must then have the first layer's
    shape."""
    activation: str = "clamp"
    """``clamp``: ``clamp(u, 0, 1)`` (the paper's); ``clamp-half``: ``clamp(u / 2, 0, 1)``."""
    clamp_output: bool = True
    """Apply the activation to the output layer too (the paper's inner blocks); ``False``: a linear
    output layer, ``s_L = dPhi/ds_L`` (the paper's last block, before its readout)."""
    bias: bool = True
    """A bias on every weighted coupling."""
    t1: int = 60
    """Free-phase iterations (the paper's T1), or their maximum with ``tol``."""
    t2: int = 20
    """Nudged-phase iterations (the paper's T2), or their maximum with ``tol``."""
    tol: float | None = None
    """Stop a phase once no state moves by more than this in one iteration (states are in
    ``[0, 1]``); ``None``: run exactly ``t1`` / ``t2`` iterations."""
    init: str = "uniform"
    """Initial weights: ``uniform`` or ``goe`` (:data:`INIT_METHODS`)."""
    init_scale: float = 0.5
    """``uniform``: weights and biases drawn uniform in ``+-init_scale / sqrt(fan_in)`` (the paper's
    scaled Kaiming-uniform initialisation, alpha 0.5)."""
    init_variance: float = 8.351e-5
    """``goe``: the variance parameter ``V`` of the kernels (the paper's splitting runs: 8.351e-5)."""

    def __post_init__(self) -> None:
        if (self.sizes is None) == (self.channels is None):
            raise ValueError("sizes: give sizes (a dense block) or channels (a convolutional block), not both")
        layers, key = (self.sizes, "sizes") if self.sizes is not None else (self.channels, "channels")
        if len(layers) < 2 or any(not _positive_int(n) for n in layers):
            raise ValueError(
                f"{key}: needs an input and at least one layer, each a positive integer, got {list(layers)}"
            )
        if self.channels is not None:
            self._check_conv()
        elif self.kernel_size is not None or self.padding != 0 or self.pools is not None or self.dense:
            raise ValueError(
                "kernel_size: a dense block (sizes) has no kernel, pooling or dense tail; give channels for a "
                "convolutional block"
            )
        elif self.input_side is not None:
            raise ValueError("input_side: only a convolutional block (channels) takes square input maps")
        if not self.input_weights and self.layer_sizes[0] != self.layer_sizes[1]:
            raise ValueError(
                f"input_weights: false drives the first layer one to one from the input, so they need the same "
                f"width, got {self.layer_sizes[0]} and {self.layer_sizes[1]}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.t1 < 1:
            raise ValueError(f"t1: the free phase needs at least 1 iteration, got {self.t1}")
        if self.t2 < 1:
            raise ValueError(f"t2: a nudged phase needs at least 1 iteration, got {self.t2}")
        if self.tol is not None and not (math.isfinite(self.tol) and 0 < self.tol < 1):
            raise ValueError(f"tol: must be in (0, 1) (states are in [0, 1]), got {self.tol}")
        if self.init not in INIT_METHODS:
            raise ValueError(f"init: must be one of {', '.join(INIT_METHODS)}, got {self.init!r}")
        if not (math.isfinite(self.init_scale) and 0 < self.init_scale <= 10):
            raise ValueError(f"init_scale: must be in (0, 10], got {self.init_scale}")
        if not (math.isfinite(self.init_variance) and 0 < self.init_variance <= 1):
            raise ValueError(f"init_variance: must be in (0, 1], got {self.init_variance}")

    def _check_conv(self) -> None:
        n_conv = len(self.channels) - 1
        has_kernel = n_conv > 1 or self.input_weights
        if has_kernel and (self.kernel_size is None or not 1 <= self.kernel_size <= 31):
            raise ValueError(
                f"kernel_size: a convolutional block needs a kernel side in [1, 31], got {self.kernel_size}"
            )
        if not 0 <= self.padding < (self.kernel_size or 1):
            raise ValueError(f"padding: must be in [0, kernel_size - 1], got {self.padding}")
        if self.pools is not None:
            if len(self.pools) != n_conv or any(not _positive_int(p) or p > 8 for p in self.pools):
                raise ValueError(
                    f"pools: one max-pooling side in [1, 8] per convolutional coupling ({n_conv}), got "
                    f"{list(self.pools)}"
                )
            if not self.input_weights and self.pools[0] != 1:
                raise ValueError("pools: the first entry must be 1 with input_weights = false (no coupling to pool)")
        if any(not _positive_int(n) for n in self.dense):
            raise ValueError(f"dense: each dense layer needs a positive width, got {list(self.dense)}")
        if self.input_side is not None and not (_positive_int(self.input_side) and self.input_side <= 4096):
            raise ValueError(f"input_side: must be a positive side in pixels, got {self.input_side}")
        if self.dense and self.input_side is None:
            raise ValueError("input_side: a convolutional block with dense layers needs the side of its input maps")
        if self.input_side is not None:
            self.state_shapes((self.channels[0], self.input_side, self.input_side))

    @property
    def conv(self) -> bool:
        return self.channels is not None

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """The input, then each state layer: ``sizes``, or ``channels`` followed by ``dense``."""
        return self.sizes if self.sizes is not None else (*self.channels, *self.dense)

    @property
    def depth(self) -> int:
        """Number of state layers ``L``."""
        return len(self.layer_sizes) - 1

    def coupling(self, l: int) -> str:
        """Kind of coupling ``l`` (layer ``l`` to ``l + 1``): ``identity``, ``conv``, ``flatten``
        (a feature map into a dense layer) or ``dense``."""
        if l == 0 and not self.input_weights:
            return "identity"
        if not self.conv:
            return "dense"
        n_conv = len(self.channels) - 1
        return "conv" if l < n_conv else ("flatten" if l == n_conv else "dense")

    def pool(self, l: int) -> int:
        """Max-pooling side after convolutional coupling ``l`` (1: none)."""
        return 1 if self.pools is None or self.coupling(l) != "conv" else self.pools[l]

    def weighted(self) -> tuple[int, ...]:
        """Indices of the couplings that carry weights (all but an ``identity`` input)."""
        return tuple(l for l in range(self.depth) if self.coupling(l) != "identity")

    def state_shapes(self, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        """One sample's shape of every state layer for one input sample of ``input_shape``;
        ``ValueError`` if a map shrinks below one pixel."""
        shapes, shape = [], tuple(input_shape)
        for l in range(self.depth):
            kind, n = self.coupling(l), self.layer_sizes[l + 1]
            if kind == "conv":
                side = tuple((s + 2 * self.padding - self.kernel_size + 1) // self.pool(l) for s in shape[1:])
                if min(side) < 1:
                    raise ValueError(
                        f"input_side: input maps {list(input_shape[1:])} are too small for the block's "
                        f"{len(self.channels) - 1} convolutions and pools"
                    )
                shape = (n, *side)
            else:
                shape = shape if kind == "identity" else (n,)
            shapes.append(shape)
        return tuple(shapes)

    def activations(self) -> tuple[str, ...]:
        """The activation of each state layer: ``identity`` for an unclamped output."""
        return tuple(
            self.activation if l < self.depth - 1 or self.clamp_output else "identity" for l in range(self.depth)
        )

    def weight_shape(self, l: int) -> tuple[int, ...]:
        """Shape of coupling ``l``'s weights (a weighted coupling)."""
        n_in, n_out = self.layer_sizes[l], self.layer_sizes[l + 1]
        kind = self.coupling(l)
        if kind == "conv":
            return (n_out, n_in, self.kernel_size, self.kernel_size)
        if kind == "flatten":
            return (n_out, math.prod(self.state_shapes((self.channels[0], self.input_side, self.input_side))[l - 1]))
        return (n_out, n_in)


def _positive_int(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1


@dataclass
class FixedPoint:
    """States of one phase and how the iteration ended."""

    states: tuple[torch.Tensor, ...]
    """``s_1 .. s_L``: ``[B, n_l]`` (dense) or ``[B, c_l, H_l, W_l]`` (convolutional)."""
    iterations: int
    change: float
    """Largest change of any state in the last iteration (dimensionless, states are in ``[0, 1]``)."""
    converged: bool | None
    """``None`` when the phase ran a fixed number of iterations (no ``tol``)."""


class Couplings:
    """The couplings ``f_l`` of one block for given (detached or differentiable) parameters.

    With max-pooling, ``f_l(v) = pool(conv(v) + b)`` is piecewise linear: its linear part at a
    state ``s_l`` selects, in each pooling window, the position where ``conv(s_l)`` is largest.
    ``down`` applies the adjoint of that selection (``max_unpool2d``, then the transposed
    convolution), so ``drive`` is ``dPhi/ds_l`` exactly as the official code's ``grad_pre``; the
    selection of the state it was last computed at is kept, so an iteration pools each
    convolution once. The input's drive ``f_0(x)`` is computed once for as long as ``x`` is the
    same tensor (a relaxation holds its input fixed: one input product per phase, not per iteration)."""

    def __init__(self, spec: HopfieldSpec, weights, biases):
        self.spec = spec
        self.weights = dict(zip(spec.weighted(), weights, strict=True))
        self.biases = dict(zip(spec.weighted(), biases, strict=False))
        self._selection: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._input: tuple[torch.Tensor, bool, torch.Tensor] | None = None

    def _linear(self, l: int, v: torch.Tensor, bias: bool) -> torch.Tensor:
        """Coupling ``l`` before any pooling (identity, convolution, or dense)."""
        kind = self.spec.coupling(l)
        if kind == "identity":
            return v
        b = self.biases.get(l) if bias and self.spec.bias else None
        if kind == "conv":
            return F.conv2d(v, self.weights[l], b, padding=self.spec.padding)
        return F.linear(v.flatten(1), self.weights[l], b)

    def _select(self, l: int, at: torch.Tensor) -> torch.Tensor:
        """Pooling indices of coupling ``l`` at lower state ``at`` (kept while ``at`` is the same tensor)."""
        kept = self._selection.get(l)
        if kept is not None and kept[0] is at:
            return kept[1]
        with torch.no_grad():
            _, index = F.max_pool2d(self._linear(l, at, bias=False), self.spec.pool(l), return_indices=True)
        self._selection[l] = (at, index)
        return index

    def up(self, l: int, v: torch.Tensor, bias: bool = True, at: torch.Tensor | None = None) -> torch.Tensor:
        """``f_l(v)``: the drive of layer ``l+1`` from layer ``l`` (``l = 0``: the input). ``at``: the
        linear part of a pooled coupling at that lower state instead (for (ADJ) and (IMP-H))."""
        if l == 0 and at is None:
            kept = self._input
            if kept is not None and kept[0] is v and kept[1] == bias:
                return kept[2]
        z, p = self._linear(l, v, bias), self.spec.pool(l)
        if p > 1 and at is None:
            z, index = F.max_pool2d(z, p, return_indices=True)
            self._selection[l] = (v, index.detach())
        elif p > 1:
            index = self._select(l, at)
            z = z.flatten(2).gather(2, index.flatten(2)).view(index.shape)
        if l == 0 and at is None:
            self._input = (v, bias, z)
        return z

    def down(self, l: int, v: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """``f_l^T(v)`` at lower state ``at``: the drive of layer ``l`` from layer ``l+1`` (the
        adjoint of the linear part: a transposed matrix or convolution, after un-pooling)."""
        kind = self.spec.coupling(l)
        if kind == "identity":
            return v
        if kind != "conv":
            return (v @ self.weights[l]).view(at.shape)
        p = self.spec.pool(l)
        if p > 1:
            grow = 2 * self.spec.padding - self.spec.kernel_size + 1
            size = (at.shape[-2] + grow, at.shape[-1] + grow)
            v = F.max_unpool2d(v, self._select(l, at), p, output_size=size)
        return F.conv_transpose2d(v, self.weights[l], padding=self.spec.padding)

    def drive(self, l: int, states, x: torch.Tensor | None, bias: bool = True, at=None) -> torch.Tensor:
        """``dPhi/ds_l`` of free layer ``l`` (0-based: ``states[l]`` is ``s_{l+1}``); ``x`` None: no
        input. ``at``: linearise the pooled couplings at these states (``states`` is then a direction)."""
        at = states if at is None else at
        lower = x if l == 0 else states[l - 1]
        out = 0.0
        if lower is not None:
            out = self.up(l, lower, bias, at=None if at is states or l == 0 else at[l - 1])
        if l + 1 < len(states):
            out = out + self.down(l + 1, states[l + 1], at[l])
        if not torch.is_tensor(out):
            out = torch.zeros_like(states[l])
        return out

    def phi(self, x: torch.Tensor, states) -> torch.Tensor:
        """``Phi`` of (E) per sample, ``[B]``."""
        layers = (x, *states)
        return sum(inner(layers[l + 1], self.up(l, layers[l])) for l in range(len(states)))

    def coupling_operator(self, v, states) -> tuple[torch.Tensor, ...]:
        """``A v`` of (ADJ): the drives of ``v`` without input or biases, pooled couplings
        linearised at ``states``."""
        return tuple(self.drive(l, v, None, bias=False, at=states) for l in range(len(v)))


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product ``[B]``."""
    return (a * b).flatten(1).sum(1)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` ``[B]`` shaped to broadcast against ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))
