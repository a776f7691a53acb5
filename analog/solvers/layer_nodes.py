"""What one layer update of the layer-wise solver needs, gathered once per solve: each free layer's
constants of (2) (:mod:`analog.solvers.layerwise`), the bracket the rails give its root, the
curvature bound that decides when one Newton step is enough, and the exact cold start (5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analog.solvers.physics import LayeredSystem

__all__ = ["W_NEWTON", "Layer", "cold_start", "fused_arguments", "lambert_root", "layer_constants"]


@dataclass
class Layer:
    """What (2) needs of one free layer, gathered once per solve."""

    system: LayeredSystem
    l: int
    d: torch.Tensor
    const: torch.Tensor
    params: tuple
    scale: float
    lo: float
    hi: float
    curvature: float
    """``|h''| / h'`` bound in u-space (1/V), see :func:`_curvature_per_volt`."""
    is_over_d: torch.Tensor
    """``Is / D`` per node (V), nominal diode, for :func:`cold_start`."""
    lambert_offset: torch.Tensor
    """``ln q + q`` with ``q = Is / (D n Vt)`` per node: the constant part of (5)."""
    lambert: bool = False
    """(5) of :func:`cold_start` is exact for this layer's diodes up to gmin and the far rail's
    junction (nominal diodes, no breakdown or series resistance)."""

    def drive(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """``b`` of (2) given every layer's current values ``parts`` (``[B, n_l]`` each)."""
        system, l, b = self.system, self.l, self.const
        if l > 1:
            b = torch.addmm(b, parts[l - 2], system.weights[l - 1])
        if l < system.depth:
            b = torch.addmm(b, parts[l], system.weights[l].T)
        return b


def layer_constants(system: LayeredSystem, kind: type[Layer] = Layer) -> list[Layer]:
    """Every free layer's :class:`Layer` (``kind``: a subclass with its own couplings, e.g. convolutions)."""
    spec = system.spec
    lambert = (
        bool(system.rails)
        and system.area is None
        and system.emission is None
        and spec.diode.breakdown_voltage() is None
        and not spec.diode.rs_ohm
    )
    anchors = _rail_anchors(system)
    per_volt = _curvature_per_volt(system)
    layers = []
    diode = system.spec.diode
    i_s = diode.saturation_current()
    for l in range(1, system.depth + 1):
        s = system.layer_scales[l - 1]
        d = system.layer(system.diag.unsqueeze(0), l)[0]
        q = i_s / (d * diode.vte_V)
        layers.append(
            kind(
                system=system,
                l=l,
                d=d,
                const=system.layer(system.const, l),
                params=system.node_params([l]),
                scale=s,
                lo=anchors[l - 1][0],
                hi=anchors[l - 1][1],
                curvature=per_volt * s,
                is_over_d=i_s / d,
                lambert_offset=torch.log(q) + q,
                lambert=lambert,
            )
        )
    return layers


def fused_arguments(system: LayeredSystem, layers: list[Layer]) -> tuple | None:
    """``(const, diag, weights, physics, is_over_d, lambert_offset, rails)``, the arguments of
    :mod:`analog.solvers.fused`'s kernels, or ``None`` where they do not apply: diodes other than nominal ones (spreads,
    breakdown, series resistance), wired crossbars, or a device other than the CPU (where the
    eager sweep runs; the compiled one is only checked on CPU)."""
    if not all(layer.lambert for layer in layers) or system.offdiag is not None or system.device.type != "cpu":
        return None
    spec = system.spec
    diode = spec.diode
    up, down = spec.diode_up_V, spec.diode_down_V
    rails = (0.0 if up is None else up, 0.0 if down is None else down)
    physics = torch.tensor(
        [
            [layer.scale, *rails, diode.vte_V, diode.saturation_current(), diode.gmin_S, layer.curvature]
            for layer in layers
        ],
        dtype=system.dtype,
        device=system.device,
    )
    const = [layer.const for layer in layers]
    diag = [layer.d for layer in layers]
    split = up is not None and down is not None and up - down >= 6.0 * diode.vte_V
    lambert = ([layer.is_over_d for layer in layers], [layer.lambert_offset for layer in layers])
    return const, diag, list(system.weights[1:]), physics, *lambert, (up is not None, down is not None, split)


def cold_start(system: LayeredSystem, layer: Layer, b: torch.Tensor, steps: int = 2) -> torch.Tensor:
    """A cold start for (2): each node where its nearer diode alone carries what the
    conductances bring.

    With the layer's drive ``b`` known (``a = s b / D``, physical volts, the all-off value), a
    node above the up rail sits where ``D (a - v) = Is (exp((v - V_up) / (n Vt)) - 1)``. With
    ``y = a - v`` and ``z = (D y + Is) / (D n Vt)`` this is ``z e^z = X``, so ``z = W(X)``
    (Lambert's W) with

        ln X = ln(Is / (D n Vt)) + (a - V_up + Is / D) / (n Vt),                           (5)

    and likewise below the down rail (mirrored). The same expression holds between the rails,
    where it gives the small reverse current. ``W`` of a huge ``X`` is found in log form, as the
    root of ``w + ln w = ln X`` by :data:`W_NEWTON` Newton steps from ``softplus(ln X)``
    (largest error 1e-4 in ``w``, i.e. 3e-6 V, over ``ln X`` in [-60, 2000]), so the nodes start
    where one Newton step on (2) takes them to rounding: nominal diodes without gmin or the
    other rail's junction, which that step accounts for. With breakdown the fixed point of
    :func:`_start_breakdown` is used instead.
    """
    spec, s = system.spec, layer.scale
    diode = spec.diode
    up, dn = spec.diode_up_V, spec.diode_down_V
    if up is None and dn is None:
        return b / layer.d  # no diode: the all-off value is the root
    if diode.breakdown_voltage() is not None:
        return _start_breakdown(system, layer, b / layer.d * s, steps) / s
    rails = (up is not None, dn is not None)
    phys = (s, 0.0 if up is None else up, 0.0 if dn is None else dn, diode.vte_V)
    return lambert_root(b, layer.d, layer.is_over_d, layer.lambert_offset, phys, rails)


def lambert_root(b, d, is_over_d, lambert_offset, phys, rails) -> torch.Tensor:
    """(5) for a layer with at least one rail, u-space: ``phys`` starts ``(s_l, V_up, V_down, n Vt)``
    (floats or 0-d tensors; a missing rail's value is unused), ``rails`` ``(has_up, has_down, ...)``.
    Plain torch, so that the fused kernels (:mod:`analog.solvers.fused`) compile the same code."""
    scale, up, down, vte = phys[0], phys[1], phys[2], phys[3]
    has_up, has_down = rails[0], rails[1]
    a = b / d * scale
    # sigma = +1 where the up diode is the nearer (or only) one, -1 for the down diode; t is how
    # far a lies past that diode's rail (negative between the rails).
    if has_up and has_down:
        past = a - 0.5 * (up + down)
        sigma = torch.sign(past)
        t = past.abs() - 0.5 * (up - down)
    elif has_up:
        sigma = torch.ones_like(a)
        t = a - up
    else:
        sigma = -torch.ones_like(a)
        t = down - a
    log_x = torch.clamp(t / vte + lambert_offset, min=-60.0)
    w = torch.nn.functional.softplus(log_x)
    for _ in range(W_NEWTON):
        w = w - (w + torch.log(w) - log_x) * w / (w + 1.0)
    return (a - sigma * (w * vte - is_over_d)) / scale


W_NEWTON = 2
"""Newton steps on ``w + ln w = ln X`` in :func:`cold_start`."""


def _start_breakdown(system: LayeredSystem, layer: Layer, a: torch.Tensor, steps: int) -> torch.Tensor:
    """:func:`cold_start` for diodes with reverse breakdown: ``steps`` passes of the fixed point
    ``v <- V_up + n Vt ln(1 + D (a - v) / Is)`` (contracting by ``n Vt / (a - v)`` once a node
    conducts), bounded by the breakdown branch of :func:`_breakdown_start`; physical volts."""
    spec = system.spec
    diode = spec.diode
    vte, inv_is = diode.vte_V, 1.0 / diode.saturation_current()
    xbv = diode.breakdown_voltage()
    v = a.clone()
    for _ in range(steps):
        up = dn = None
        if spec.diode_up_V is not None:
            up = torch.log1p((a - v).mul_(layer.d).clamp_(min=0.0).mul_(inv_is)).mul_(vte).add_(spec.diode_up_V)
        if spec.diode_down_V is not None:
            dn = torch.log1p((v - a).mul_(layer.d).clamp_(min=0.0).mul_(inv_is)).mul_(-vte).add_(spec.diode_down_V)
        up, dn = _breakdown_start(spec, a, v, layer.d, xbv, up, dn)
        v = torch.clamp(a, min=dn, max=up)
    return v


def _breakdown_start(spec, a, v, d, xbv, up, dn):
    """:func:`cold_start`'s bounds with the diodes' breakdown: a node pushed ``xbv`` past a rail the
    wrong way sits where the reverse-biased diode carries ``D (a - v)``,
    ``v = V_up - xbv - NBV Vt ln(1 + D (v - a) / Is)`` (likewise above the down rail)."""
    diode = spec.diode
    vbk, inv_is = diode.vte_brk_V, 1.0 / diode.saturation_current()
    if spec.diode_up_V is not None:
        floor = torch.log1p((v - a).mul_(d).clamp_(min=0.0).mul_(inv_is)).mul_(-vbk).add_(spec.diode_up_V - xbv)
        dn = floor if dn is None else torch.maximum(dn, floor)
    if spec.diode_down_V is not None:
        ceiling = torch.log1p((a - v).mul_(d).clamp_(min=0.0).mul_(inv_is)).mul_(vbk).add_(spec.diode_down_V + xbv)
        up = ceiling if up is None else torch.minimum(up, ceiling)
    return up, dn


def _rail_anchors(system: LayeredSystem) -> list[tuple[float, float]]:
    """Per layer, ``(m_lo, m_hi)`` in u-space with the zero ``m`` of ``f`` inside ``[m_lo, m_hi]``.

    ``f(V_up) = -I(V_dn - V_up)`` and ``f(V_dn) = I(V_dn - V_up)`` have opposite signs (the junction
    current vanishes at zero bias), so ``m`` lies between the rails; with one rail it is that rail,
    with none ``f = 0`` and Newton on (2) is exact in one step.
    """
    spec = system.spec
    rails = [r for r in (spec.diode_up_V, spec.diode_down_V) if r is not None]
    lo, hi = (min(rails), max(rails)) if rails else (-math.inf, math.inf)
    return [(lo / s, hi / s) for s in system.layer_scales]


def _curvature_per_volt(system: LayeredSystem) -> float:
    """A bound on ``|h''| / h'`` of (2) in physical volts (1/V); times ``s_l`` in u-space, where
    ``f(u) = I(s u) / s``.

    Forward, ``I'' / I' = 1 / (n Vt)``; on the smooth reverse branch ``I = -Is (1 + (k / vd)^3)``,
    ``I'' / I' = -4 / vd <= 4 / (3 n Vt)`` since ``vd <= -3 n Vt`` there; in breakdown
    ``|I''| / I' = 1 / (NBV Vt)``. ``h' = D + I'`` only lowers the ratio. The smallest emission
    factor of the diode spread gives the steepest curve. After a Newton step ``delta`` the error
    left is below ``curvature delta^2``.
    """
    diode = system.spec.diode
    n_min = 1.0 if system.emission is None else min(1.0, float(system.emission.min()))
    bound = 4.0 / (3.0 * diode.vte_V * n_min)
    if diode.bv_V is not None:
        bound = max(bound, 1.0 / (diode.vte_brk_V * (n_min if diode.nbv is None else 1.0)))
    return bound
