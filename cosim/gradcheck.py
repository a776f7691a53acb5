"""Compare the hybrid gradient (EP in analog blocks) with the end-to-end exact gradient.

For every parameter tensor, method and beta: the cosine similarity and the relative error
``|g - g_exact| / |g_exact|``; plus the log-log slope of the relative error of the whole gradient
(all parameters concatenated) against beta, which is ~2 for centered EP and ~1 for one-sided EP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from cosim.gradients import EquilibriumPropagation, gradient_method
from cosim.model import FFEBM

__all__ = ["GradcheckResult", "Run", "gradcheck", "method_gradients", "model_gradients"]

ALL = "all"


def model_gradients(model: FFEBM, loss_fn: Callable[[torch.Tensor], torch.Tensor], x) -> dict[str, torch.Tensor]:
    """``{parameter name: gradient}`` of ``loss_fn(model(x))`` with the model's current methods."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(x))
    loss.backward()
    out = {}
    for name, p in model.named_parameters():
        out[name] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
    return out


def _compare(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    g, ref = g.flatten().double(), ref.flatten().double()
    ref_norm = ref.norm().item()
    denom = g.norm().item() * ref_norm
    cosine = (g @ ref).item() / denom if denom > 0 else float("nan")
    rel = (g - ref).norm().item() / ref_norm if ref_norm > 0 else float("nan")
    return cosine, rel


@dataclass
class GradcheckResult:
    rows: list[dict] = field(default_factory=list)
    """One row per (param, method, beta): ``param, method, beta, cosine, rel_error``."""
    slopes: dict[str, float] = field(default_factory=dict)
    """Fitted ``d log(rel_error) / d log(beta)`` per method, over all parameters."""

    def table(self, param: str = ALL) -> list[dict]:
        return [r for r in self.rows if r["param"] == param]

    @property
    def slope_centered(self) -> float:
        return self.slopes.get("ep-centered", float("nan"))

    @property
    def slope_one_sided(self) -> float:
        for m in ("ep-positive", "ep-negative"):
            if m in self.slopes:
                return self.slopes[m]
        return float("nan")


def fit_slope(betas: Sequence[float], errors: Sequence[float]) -> float:
    pts = [(math.log(b), math.log(e)) for b, e in zip(betas, errors, strict=True) if e > 0 and math.isfinite(e)]
    if len(pts) < 2:
        return float("nan")
    xs, ys = np.array(pts).T
    return float(np.polyfit(xs, ys, 1)[0])


def method_gradients(
    model: FFEBM, loss_fn: Callable[[torch.Tensor], torch.Tensor], x, method: str, beta: float | None
) -> dict[str, torch.Tensor]:
    """:func:`model_gradients` with every analog block's gradient ``method`` at ``beta``:
    ``"implicit"`` (the exact gradient, ``beta`` None) or an EP variant, which keeps each block's EP
    settings (e.g. its measurement ADC) and varies only the variant and beta. The blocks' methods
    are restored afterwards."""
    blocks = model.energy_blocks()
    saved = [b.method for b in blocks]
    try:
        if method == "implicit":
            model.set_gradient_method(gradient_method("implicit"))
        else:
            variant = gradient_method(method, beta).variant
            for block, own in zip(blocks, saved, strict=True):
                template = own if isinstance(own, EquilibriumPropagation) else EquilibriumPropagation()
                block.method = replace(template, beta=beta, variant=variant)
        return model_gradients(model, loss_fn, x)
    finally:
        for block, own in zip(blocks, saved, strict=True):
            block.method = own


Run = tuple[str, float | None]
"""One gradient of a check: ``(method, beta)``, ``("implicit", None)`` for the exact gradient."""


def gradcheck(
    model: FFEBM,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    betas: Sequence[float],
    methods: Sequence[str] = ("ep-centered", "ep-positive"),
    progress: Callable[[str], None] | None = None,
    gradients: Callable[[Sequence[Run]], list[dict[str, torch.Tensor]]] | None = None,
) -> GradcheckResult:
    """Run the comparison; the model's gradient methods are restored afterwards. ``gradients``
    computes the gradients of a list of runs, in order: by default one after the other in this
    process (:func:`method_gradients`, with a ``progress`` line before each), or e.g. one task per
    run on a cluster (:func:`cosim.ngspice_jobs.spread_gradients`)."""
    runs: list[Run] = [("implicit", None), *((method, beta) for method in methods for beta in betas)]
    if gradients is None:

        def gradients(runs: Sequence[Run]) -> list[dict[str, torch.Tensor]]:
            out = []
            for method, beta in runs:
                if progress and beta is not None:
                    progress(f"{method} beta={beta:g}")
                out.append(method_gradients(model, loss_fn, x, method, beta))
            return out

    exact, *measured = gradients(runs)
    exact_all = torch.cat([g.flatten() for g in exact.values()])
    result = GradcheckResult()
    by_run = dict(zip(runs[1:], measured, strict=True))
    for method in methods:
        errors = []
        for beta in betas:
            grads = by_run[(method, beta)]
            for name, g in grads.items():
                cosine, rel = _compare(g, exact[name])
                result.rows.append({"param": name, "method": method, "beta": beta, "cosine": cosine, "rel_error": rel})
            cosine, rel = _compare(torch.cat([g.flatten() for g in grads.values()]), exact_all)
            result.rows.append({"param": ALL, "method": method, "beta": beta, "cosine": cosine, "rel_error": rel})
            errors.append(rel)
        result.slopes[method] = fit_slope(betas, errors)
    return result
