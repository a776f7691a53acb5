"""Checks of a block's description that name the offending field and the fix: the combinations of
:class:`~analog.circuit.CircuitSpec` settings that are not supported, and conductance tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from analog.devices import ConductanceRange
from analog.peripherals import Peripherals

__all__ = ["check_conductances", "check_hidden_pairs", "check_peripherals"]


def check_hidden_pairs(spec) -> None:
    """Refuse dual-rail layers (``hidden_pairs``) where the block cannot have them (``spec``: a
    :class:`~analog.circuit.CircuitSpec`, checked while it is built)."""
    if not isinstance(spec.hidden_pairs, bool):
        raise ValueError(f"hidden_pairs: must be true or false, got {spec.hidden_pairs!r}")
    if not spec.hidden_pairs:
        return
    if spec.depth < 2:
        raise ValueError(
            "hidden_pairs: this block has no hidden layer (sizes has two entries): only the input "
            "crossbar exists, and input_pairs already signs it; drop the key"
        )
    if spec.wire_ohm is not None:
        raise ValueError("hidden_pairs: dual-rail layers with resistive wires (wire_ohm) are not supported")
    p = spec.peripherals
    if not p.ideal or p.dynamic:
        which = ", ".join(p.set_fields() + (["amp_gbw_Hz"] if p.dynamic else []))
        raise ValueError(
            f"hidden_pairs: dual-rail layers with non-ideal peripherals ({which}) are not supported; "
            "drop one or the other"
        )


def check_peripherals(spec) -> None:
    """Refuse peripheral non-idealities the block's other settings exclude (``spec`` as above)."""
    p = spec.peripherals
    if not isinstance(p, Peripherals):
        raise ValueError(f"peripherals: expected analog.peripherals.Peripherals, got {type(p).__name__}")
    if p.ideal and not p.dynamic:
        return
    if spec.wire_ohm is not None and not p.ideal:
        raise ValueError(
            f"{p.set_fields()[0]}: non-ideal peripherals with resistive wires (wire_ohm) are not supported "
            "(the wire model has ideal drivers); set one or the other"
        )
    gains = spec.amplifier_gains
    if p.amp_gbw_Hz is not None and p.ideal and spec.wire_ohm is not None:
        raise ValueError("amp_gbw_Hz: amplifier dynamics with resistive wires (wire_ohm) are not supported")
    if not p.amplifiers_ideal and (gains is None or all(a is None for a in gains)):
        amp = next((k for k in p.set_fields() if k.startswith("amp_")), "amp_gbw_Hz")
        raise ValueError(
            f"{amp}: this block has no amplifiers (amplifier_gains); the amp_* keys describe them, "
            "drop the key or add amplifier_gains"
        )


def check_conductances(
    name: str, tensors: Sequence[torch.Tensor], shapes, conductance: ConductanceRange, check_range: bool = True
) -> None:
    """Refuse conductance tensors ``name[l]`` of the wrong count or shape, non-finite or non-positive,
    or (``check_range``) outside ``conductance``'s range: the message names the tensor and the fix."""
    if len(tensors) != len(shapes):
        raise ValueError(f"{name}: expected {len(shapes)} tensors (one per layer), got {len(tensors)}")
    lo, hi = conductance.g_min_S, conductance.g_max_S
    for l, (t, shape) in enumerate(zip(tensors, shapes, strict=True)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape):
            got = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}[{l}]: expected shape {list(shape)}, got {got}")
        if t.numel() == 0:
            continue
        t = t.detach()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}[{l}]: contains NaN or inf conductances")
        if (t <= 0).any():
            raise ValueError(
                f"{name}[{l}]: conductances must be > 0 S, found {t.min().item():.3e} S "
                f"(allowed range [{lo:.3e}, {hi:.3e}] S)"
            )
        if check_range:
            slack = 1e-9 * hi
            if t.min().item() < lo - slack or t.max().item() > hi + slack:
                raise ValueError(
                    f"{name}[{l}]: conductance out of [G_min, G_max] = [{lo:.3e}, {hi:.3e}] S "
                    f"(found [{t.min().item():.3e}, {t.max().item():.3e}] S); clip it or widen "
                    "conductance.g_min_S / g_max_S"
                )
