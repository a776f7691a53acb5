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

__all__ = ["GradcheckResult", "gradcheck", "model_gradients"]

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


def gradcheck(
    model: FFEBM,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    betas: Sequence[float],
    methods: Sequence[str] = ("ep-centered", "ep-positive"),
    progress: Callable[[str], None] | None = None,
) -> GradcheckResult:
    """Run the comparison; the model's gradient methods are restored afterwards."""
    blocks = model.analog_blocks()
    saved = [b.method for b in blocks]
    # Keep each block's EP settings (e.g. its measurement ADC), varying only the variant and beta.
    templates = [m if isinstance(m, EquilibriumPropagation) else EquilibriumPropagation() for m in saved]
    try:
        model.set_gradient_method(gradient_method("implicit"))
        exact = model_gradients(model, loss_fn, x)
        exact_all = torch.cat([g.flatten() for g in exact.values()])
        result = GradcheckResult()
        for method in methods:
            errors = []
            for beta in betas:
                if progress:
                    progress(f"{method} beta={beta:g}")
                variant = gradient_method(method, beta)
                for block, template in zip(blocks, templates, strict=True):
                    block.method = replace(template, beta=beta, variant=variant.variant)
                grads = model_gradients(model, loss_fn, x)
                for name, g in grads.items():
                    cosine, rel = _compare(g, exact[name])
                    result.rows.append(
                        {"param": name, "method": method, "beta": beta, "cosine": cosine, "rel_error": rel}
                    )
                cosine, rel = _compare(torch.cat([g.flatten() for g in grads.values()]), exact_all)
                result.rows.append({"param": ALL, "method": method, "beta": beta, "cosine": cosine, "rel_error": rel})
                errors.append(rel)
            result.slopes[method] = fit_slope(betas, errors)
        return result
    finally:
        for block, method in zip(blocks, saved, strict=True):
            block.method = method
