"""The Deep Hopfield Network's energy, for :mod:`cosim.hopfield`'s blocks: the activations and their
state costs, the block's shape (:class:`HopfieldSpec`), its couplings (dense or convolutional, and
their transposes) and the fixed point a relaxation returns (:class:`FixedPoint`). The formulation
and its references are in :mod:`cosim.hopfield`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ACTIVATIONS",
    "ADJOINT_MAX_ITERATIONS",
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


@dataclass(frozen=True)
class HopfieldSpec:
    """The shape and dynamics of one DHN block; validated at construction ("field: message")."""

    sizes: tuple[int, ...] | None = None
    """Dense block: ``[n_in, hidden..., n_out]``, as an analog block's ``sizes``."""
    channels: tuple[int, ...] | None = None
    """Convolutional block: ``[c_in, c_1, ..., c_L]``, each layer a ``c_l``-channel feature map."""
    kernel_size: int | None = None
    """Convolutional block: side ``k`` of every ``k x k`` kernel (stride 1)."""
    padding: int = 0
    """Convolutional block: zero padding of every convolution; a layer's side is ``H + 2p - k + 1``."""
    activation: str = "clamp"
    """``clamp``: ``clamp(u, 0, 1)`` (the paper's); ``clamp-half``: ``clamp(u / 2, 0, 1)``."""
    clamp_output: bool = True
    """Apply the activation to the output layer too (the paper's inner blocks); ``False``: a linear
    output layer, ``s_L = dPhi/ds_L`` (the paper's last block, before its readout)."""
    bias: bool = True
    """A bias on every coupling."""
    t1: int = 60
    """Free-phase iterations (the paper's T1), or their maximum with ``tol``."""
    t2: int = 20
    """Nudged-phase iterations (the paper's T2), or their maximum with ``tol``."""
    tol: float | None = None
    """Stop a phase once no state moves by more than this in one iteration (states are in
    ``[0, 1]``); ``None``: run exactly ``t1`` / ``t2`` iterations."""
    init_scale: float = 0.5
    """Weights and biases drawn uniform in ``+-init_scale / sqrt(fan_in)`` (the paper's scaled
    Kaiming-uniform initialisation, alpha 0.5)."""

    def __post_init__(self) -> None:
        if (self.sizes is None) == (self.channels is None):
            raise ValueError("sizes: give sizes (a dense block) or channels (a convolutional block), not both")
        layers, key = (self.sizes, "sizes") if self.sizes is not None else (self.channels, "channels")
        if len(layers) < 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in layers):
            raise ValueError(
                f"{key}: needs an input and at least one layer, each a positive integer, got {list(layers)}"
            )
        if self.channels is not None:
            if self.kernel_size is None or not 1 <= self.kernel_size <= 31:
                raise ValueError(
                    f"kernel_size: a convolutional block needs a kernel side in [1, 31], got {self.kernel_size}"
                )
            if not 0 <= self.padding < self.kernel_size:
                raise ValueError(f"padding: must be in [0, kernel_size - 1], got {self.padding}")
        elif self.kernel_size is not None or self.padding != 0:
            raise ValueError(
                "kernel_size: a dense block (sizes) has no kernel; give channels for a convolutional block"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.t1 < 1:
            raise ValueError(f"t1: the free phase needs at least 1 iteration, got {self.t1}")
        if self.t2 < 1:
            raise ValueError(f"t2: a nudged phase needs at least 1 iteration, got {self.t2}")
        if self.tol is not None and not (math.isfinite(self.tol) and 0 < self.tol < 1):
            raise ValueError(f"tol: must be in (0, 1) (states are in [0, 1]), got {self.tol}")
        if not (math.isfinite(self.init_scale) and 0 < self.init_scale <= 10):
            raise ValueError(f"init_scale: must be in (0, 10], got {self.init_scale}")

    @property
    def conv(self) -> bool:
        return self.channels is not None

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``sizes`` or ``channels``: the input, then each state layer."""
        return self.sizes if self.sizes is not None else self.channels

    @property
    def depth(self) -> int:
        """Number of state layers ``L``."""
        return len(self.layer_sizes) - 1

    def activations(self) -> tuple[str, ...]:
        """The activation of each state layer: ``identity`` for an unclamped output."""
        return tuple(
            self.activation if l < self.depth - 1 or self.clamp_output else "identity" for l in range(self.depth)
        )

    def weight_shape(self, l: int) -> tuple[int, ...]:
        n_in, n_out = self.layer_sizes[l], self.layer_sizes[l + 1]
        return (n_out, n_in, self.kernel_size, self.kernel_size) if self.conv else (n_out, n_in)


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
    """The couplings ``f_l`` of one block for given (detached or differentiable) parameters."""

    def __init__(self, spec: HopfieldSpec, weights, biases):
        self.spec, self.weights, self.biases = spec, weights, biases

    def up(self, l: int, v: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """``f_l(v)``: the drive of layer ``l+1`` from layer ``l`` (``l = 0``: the input)."""
        b = self.biases[l] if bias and self.spec.bias else None
        if self.spec.conv:
            return F.conv2d(v, self.weights[l], b, padding=self.spec.padding)
        return F.linear(v, self.weights[l], b)

    def down(self, l: int, v: torch.Tensor) -> torch.Tensor:
        """``f_l^T(v)``: the drive of layer ``l`` from layer ``l+1`` (the adjoint of the linear part)."""
        if self.spec.conv:
            return F.conv_transpose2d(v, self.weights[l], padding=self.spec.padding)
        return v @ self.weights[l]

    def drive(self, l: int, states, x: torch.Tensor | None, bias: bool = True) -> torch.Tensor:
        """``dPhi/ds_l`` of free layer ``l`` (0-based: ``states[l]`` is ``s_{l+1}``); ``x`` None: no input."""
        lower = x if l == 0 else states[l - 1]
        out = self.up(l, lower, bias) if lower is not None else 0.0
        if l + 1 < len(states):
            out = out + self.down(l + 1, states[l + 1])
        if lower is None and not torch.is_tensor(out):
            out = torch.zeros_like(states[l])
        return out

    def phi(self, x: torch.Tensor, states) -> torch.Tensor:
        """``Phi`` of (E) per sample, ``[B]``."""
        layers = (x, *states)
        return sum(inner(layers[l + 1], self.up(l, layers[l])) for l in range(len(states)))

    def coupling_operator(self, v) -> tuple[torch.Tensor, ...]:
        """``A v`` of (ADJ): the drives of ``v`` without input or biases."""
        return tuple(self.drive(l, v, None, bias=False) for l in range(len(v)))


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product ``[B]``."""
    return (a * b).flatten(1).sum(1)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` ``[B]`` shaped to broadcast against ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))
