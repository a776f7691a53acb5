"""How exact EP stays when the peripherals are not ideal (``cosim gradcheck --fidelity``).

For each non-ideality of :mod:`analog.peripherals` at a few strengths, the same model (same seeds,
so the same conductances and devices) is built with that one key set on every analog block, and the
centered EP gradient is compared with the exact gradient of *that* circuit (implicit
differentiation of its own, possibly non-symmetric, KCL Jacobian). A reciprocal non-ideality keeps
EP exact up to its ``O(beta^2)`` bias; the amplifiers' swing limit breaks reciprocity, and the
nudging sources' compliance changes the nudge itself: the table shows by how much.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cosim.build import build_model
from cosim.config import RunConfig, resolve_config
from cosim.data import Dataset
from cosim.gradcheck import _compare, model_gradients
from cosim.gradients import EquilibriumPropagation, gradient_method
from cosim.losses import make_loss

__all__ = ["SETTINGS", "fidelity_table"]

SETTINGS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("driver_ohm", (10.0, 100.0, 1000.0)),
    ("amp_out_ohm", (10.0, 100.0, 1000.0)),
    ("amp_in_ohm", (1e6, 1e5, 1e4)),
    ("amp_offset_V", (0.001, 0.01, 0.05)),
    ("amp_swing_V", (2.0, 1.0, 0.5)),
    ("nudge_out_ohm", (1e6, 1e5, 1e4)),
    ("nudge_compliance_V", (1.0, 0.5, 0.3)),
)
"""Each non-ideality and the strengths it is measured at (ohms / volts)."""


def fidelity_table(
    config_name: str,
    base_overrides: Sequence[tuple[str, object]],
    config: RunConfig,
    data: Dataset,
    solver,
    beta: float,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Rows ``{key, value, cosine, rel_error, output_shift}`` (``key`` ``None``: ideal peripherals);
    ``output_shift`` is the largest change of the model's output (its own units, e.g. logits) the
    setting causes on the gradcheck samples, to show that the setting matters.
    Amplifier keys are skipped when no analog block has amplifiers."""
    analog = [i for i, b in enumerate(config.model.blocks) if b.type == "analog"]
    # The key goes to every analog block, so the amplifier keys need amplifiers in each.
    amplified = all(any(a is not None for a in (config.model.blocks[i].amplifier_gains or [])) for i in analog)
    n = config.gradcheck.samples
    x = data.train_x[:n]
    loss_fn = make_loss(config.train.loss, data.train_y[:n], data.n_classes)
    reference_out = None
    rows = []
    cases: list[tuple[str | None, float | None]] = [(None, None)]
    for key, values in SETTINGS:
        if key.startswith("amp_") and not amplified:
            continue
        cases.extend((key, v) for v in values)
    for key, value in cases:
        if progress:
            progress("ideal peripherals" if key is None else f"{key}={value:g}")
        extra = [] if key is None else [(f"model.blocks[{i}].{key}", value) for i in analog]
        cfg = resolve_config(config_name, [*base_overrides, *extra])
        model = build_model(cfg, data.input_shape, solver=solver, n_classes=data.n_classes)
        xs = x.to(next(model.parameters()).dtype)
        model.set_gradient_method(gradient_method("implicit"))
        exact = model_gradients(model, loss_fn, xs)
        for block in model.analog_blocks():
            template = block.method if isinstance(block.method, EquilibriumPropagation) else EquilibriumPropagation()
            block.method = EquilibriumPropagation(beta=beta, variant="centered", measurement=template.measurement)
        ep = model_gradients(model, loss_fn, xs)
        cosine, rel = _compare(
            torch.cat([g.flatten() for g in ep.values()]), torch.cat([g.flatten() for g in exact.values()])
        )
        with torch.no_grad():
            out = model(xs)
        if reference_out is None:
            reference_out = out
        shift = float((out - reference_out).abs().max())
        rows.append({"key": key, "value": value, "cosine": cosine, "rel_error": rel, "output_shift": shift})
    return rows
