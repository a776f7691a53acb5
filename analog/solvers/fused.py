"""Fused sweeps of the layer-wise solver: one compiled call per sweep instead of ~35 tensor operations per layer.

Once the sweeps of :class:`~analog.solvers.layerwise.LayerwiseSolver` are local, a sweep is, for
every free layer in turn, its drive ``b`` (two small matrix products) and one Newton step of every
node's KCL (2) with nominal diodes, over-relaxed by ``omega``. In eager torch that is about 35
operations per layer, each a pass over ``[B, n_l]`` plus a few microseconds of dispatch: at small
batches and in deep blocks the dispatch is most of the time. :func:`sweep` (and the cold first
sweep :func:`cold_sweep`, and the final KCL check :func:`residual`) are written once, in plain
torch, and handed to ``torch.compile``, which turns each layer's elementwise work into one
vectorised loop (C++ on CPU) between the matrix products.

Both diodes of a node are evaluated as the eager solver does (:meth:`analog.diode.DiodeModel.
junction_current`, nominal: no spreads, breakdown or series resistance), with one saving: when the
rails are at least ``6 n Vt`` apart, the diode farther from the node is always on its reverse
branch (its junction voltage is below ``-3 n Vt``), where the exponential is the constant
``e^-3``, so only the nearer diode needs one. The results agree with the eager solver to rounding,
and the solver's acceptance rule, tolerance and stopping rule are unchanged. Compiling costs
seconds once per process, network shape and dtype; where it fails (no C++ compiler, an unsupported
platform) the eager functions run instead and a warning says why, once.
"""

from __future__ import annotations

import math
import threading
import warnings

import torch

from analog.solvers.layer_nodes import lambert_root

__all__ = ["FusedKernels", "cold_sweep", "kernels", "residual", "sweep"]

_E3 = math.exp(-3.0)


def _junction(vd, vte, inv_vte, i_s, gmin, k):
    """Nominal level-1 junction current and conductance, branch-free as in
    :meth:`analog.diode.DiodeModel.junction_current` (``k = 3 n Vt / e``)."""
    evd = torch.exp(torch.clamp(vd * inv_vte, min=-3.0))
    ratio = k / torch.minimum(vd, -3.0 * vte)
    arg = ratio * ratio * ratio
    i = (evd - arg - (1.0 + _E3)) * i_s + gmin * vd
    g = (arg * ratio * (3.0 / k) + (evd - _E3) * inv_vte) * i_s + gmin
    return i, g


def _reverse(vd, i_s, gmin, k):
    """:func:`_junction` where ``vd <= -3 n Vt`` (the reverse branch, no exponential)."""
    ratio = k / vd
    arg = ratio * ratio * ratio
    return -(1.0 + arg) * i_s + gmin * vd, arg * ratio * (3.0 / k) * i_s + gmin


def _diodes(v, phys, rails):
    """Current leaving each node through its diodes and their conductance, physical volts.

    ``phys``: ``(s, V_up, V_down, n Vt, Is, gmin)`` as 0-d tensors; ``rails``: ``(has_up,
    has_down, split)``, ``split`` when both rails are at least ``6 n Vt`` apart."""
    _, up, down, vte, i_s, gmin = phys[:6]
    has_up, has_down, split = rails
    inv_vte, k = 1.0 / vte, (3.0 / math.e) * vte
    if split:
        past = v - 0.5 * (up + down)
        sigma = (past >= 0).to(past.dtype) * 2.0 - 1.0
        near = past.abs() - 0.5 * (up - down)
        i_n, g_n = _junction(near, vte, inv_vte, i_s, gmin, k)
        i_f, g_f = _reverse(-near - (up - down), i_s, gmin, k)
        return sigma * (i_n - i_f), g_n + g_f
    f = torch.zeros_like(v)
    g = torch.zeros_like(v)
    if has_up:
        i_up, g_up = _junction(v - up, vte, inv_vte, i_s, gmin, k)
        f, g = f + i_up, g + g_up
    if has_down:
        i_dn, g_dn = _junction(down - v, vte, inv_vte, i_s, gmin, k)
        f, g = f - i_dn, g + g_dn
    return f, g


def _drive(parts, const, weights, k):
    b = const[k]
    if k > 0:
        b = b + parts[k - 1] @ weights[k - 1]
    if k < len(parts) - 1:
        b = b + parts[k + 1] @ weights[k].T
    return b


def _newton(x0, b, d, phys, rails):
    """One Newton step on (2) for a layer, u-space: ``x0 + delta``'s ``delta``."""
    scale = phys[0]
    f, g = _diodes(x0 * scale, phys, rails)
    return (b - f / scale - d * x0) / (d + g)


def sweep(parts, const, diag, weights, physics, omega, rails, lambert=None):
    """One over-relaxed sweep of single Newton steps over the free layers, in order, u-space.

    ``parts``, ``const``: per layer ``[B, n_l]``; ``diag``: per layer ``[n_l]``; ``weights``: the
    couplings between free layers (``W_1 .. W_{L-1}``); ``physics``: ``[L, 7]`` rows ``(s_l, V_up,
    V_down, n Vt, Is, gmin, curvature)``; ``omega``: 0-d; ``rails``: see :func:`_diodes`.
    ``lambert``: ``(is_over_d, lambert_offset)`` per layer, or ``None``; with it, a node whose
    Newton step is too long to be a contraction (``step * curvature > 0.05``, the rule of
    :meth:`~analog.solvers.layerwise.LayerwiseSolver._relax`) restarts from (5) and takes its
    Newton step from there. Returns the new layers, each one's largest Newton step (``[L]``,
    u-space, before over-relaxation) and its largest move (``[L]``)."""
    parts = list(parts)
    steps, moves = [], []
    for k in range(len(parts)):
        phys = physics[k].unbind()
        x0 = parts[k]
        b = _drive(parts, const, weights, k)
        delta = _newton(x0, b, diag[k], phys[:6], rails)
        step = delta.abs()
        target = x0 + delta
        if lambert is not None:
            far = step * phys[6] > 0.05
            x = lambert_root(b, diag[k], lambert[0][k], lambert[1][k], phys, rails)
            again = _newton(x, b, diag[k], phys[:6], rails)
            target = torch.where(far, x + again, target)
            step = torch.where(far, again.abs(), step)
        parts[k] = x0 + omega * (target - x0)
        steps.append(step.amax())
        moves.append((parts[k] - x0).abs().amax())
    return parts, torch.stack(steps), torch.stack(moves)


def cold_sweep(const, diag, weights, physics, is_over_d, lambert_offset, rails):
    """The first sweep from nothing: each layer started by (5) from the layers before it (the later
    ones at 0 V), then again with both neighbours known, then one Newton step. Returns the layers,
    each one's largest Newton step and its largest move since the first start (``[L]`` each)."""
    depth = len(const)
    parts = [torch.zeros_like(c) for c in const]
    for k in range(depth):
        b = _drive(parts, const, weights, k)
        parts[k] = lambert_root(b, diag[k], is_over_d[k], lambert_offset[k], physics[k].unbind(), rails)
    first = list(parts)
    steps, moves = [], []
    for k in range(depth):
        phys = physics[k].unbind()
        b = _drive(parts, const, weights, k)
        x = lambert_root(b, diag[k], is_over_d[k], lambert_offset[k], phys, rails)
        delta = _newton(x, b, diag[k], phys[:6], rails)
        parts[k] = x + delta
        steps.append(delta.abs().amax())
        moves.append((parts[k] - first[k]).abs().amax())
    return parts, torch.stack(steps), torch.stack(moves)


def residual(parts, const, diag, weights, physics, rails):
    """The KCL residual ``s_l r`` of every node (amperes), as one ``[B, N]`` tensor."""
    out = []
    for k in range(len(parts)):
        scale = physics[k, 0]
        f, _ = _diodes(parts[k] * scale, physics[k].unbind()[:6], rails)
        out.append((_drive(parts, const, weights, k) - diag[k] * parts[k]) * scale - f)
    return torch.cat(out, dim=1)


class FusedKernels:
    """:func:`sweep`, :func:`cold_sweep` and :func:`residual`, compiled on first use (eager where
    compiling fails)."""

    def __init__(self) -> None:
        self._compiled: dict[str, object] = {}
        self._failed: str | None = None
        self._lock = threading.Lock()

    @property
    def failure(self) -> str | None:
        """Why compiling failed (the eager functions then run), or ``None``."""
        return self._failed

    def sweep(self, *args):
        return self._call(sweep, args)

    def cold_sweep(self, *args):
        return self._call(cold_sweep, args)

    def residual(self, *args):
        return self._call(residual, args)

    def _call(self, eager, args):
        if self._failed is not None:
            return eager(*args)
        with self._lock:
            fn = self._compiled.get(eager.__name__)
            if fn is None:
                fn = self._compiled[eager.__name__] = torch.compile(eager, fullgraph=True)
        try:
            with warnings.catch_warnings():
                # torch's own deprecation notes while it compiles are not the user's concern (and
                # would fail the compile where warnings are errors).
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
                warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
                return fn(*args)
        except Exception as exc:  # no C++ compiler, an unsupported platform: eager from now on
            text = str(exc).strip().splitlines()
            self._failed = f"{type(exc).__name__}: {text[0] if text else ''}"
            warnings.warn(
                f"fast-layerwise: torch.compile of its fused sweeps failed ({self._failed}); running them "
                "eagerly (same results, slower at small batches and in deep blocks; solver fuse = false "
                "skips compiling)",
                RuntimeWarning,
                stacklevel=3,
            )
            return eager(*args)


kernels = FusedKernels()
"""The process's fused kernels."""
