"""What the energy report counts besides the circuit's own power: converter conversions and digital
MACs per sample, the peripherals' quiescent power, the devices' programming (measured by a training
run or estimated from one optimizer step), and the published chip the report compares with.

Energies per conversion: ADC ``FoM_W 2^bits`` (Walden; Murmann's survey), DAC ``2^bits C_u V^2``,
MAC from Horowitz (ISSCC 2014); see :class:`cosim.config.EnergyConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from analog.circuit import Circuit
from cosim.build import make_optimizer
from cosim.config import EnergyConfig, RunConfig
from cosim.losses import loss_value

__all__ = [
    "PUBLISHED",
    "CostModel",
    "block_counts",
    "digital_macs",
    "estimate_programming",
    "peripheral_power_W",
    "programming_from_run",
    "published_comparison",
]


@dataclass(frozen=True)
class CostModel:
    """Energy per converter conversion and per digital MAC, joules."""

    adc_J: float
    dac_J: float
    mac_J: float

    @classmethod
    def from_config(cls, cfg: EnergyConfig) -> CostModel:
        return cls(
            adc_J=cfg.adc_fom_J * 2**cfg.adc_bits,
            dac_J=2**cfg.dac_bits * cfg.dac_unit_F * cfg.dac_ref_V**2,
            mac_J=cfg.mac_energy_J,
        )


def block_counts(circuit: Circuit, n_nudged: int, n_measured: int, needs_input_grad: bool) -> dict:
    """Conversions and EP-update MACs of one analog block per sample (see the module docstring)."""
    spec = circuit.spec
    n_free = sum(spec.layer_sizes[1:])
    devices = sum(w.numel() for w in circuit.weights) + sum(b.numel() for b in circuit.biases)
    reads = n_free + (spec.n_sources if needs_input_grad else 0)
    return {
        "devices": devices,
        "dac_inference": spec.n_inputs,
        "adc_inference": spec.n_outputs,
        "dac_training": spec.n_inputs + n_nudged * spec.n_outputs,
        "adc_training": spec.n_outputs + n_measured * reads,
        "ep_update_macs": 2 * devices,
    }


def digital_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Multiply-accumulates per sample of every ``Linear`` and ``Conv2d`` in one forward pass of
    ``x`` (the output is returned so that the pass can be the one used for training)."""
    total = [0]

    def hook(module, inputs, output):
        per_sample = output.numel() // output.shape[0]
        if isinstance(module, nn.Linear):
            total[0] += per_sample * module.in_features
        else:
            kh, kw = module.kernel_size
            total[0] += per_sample * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0], out


PUBLISHED = (
    {
        "name": "IBM HERMES 64-core PCM AIMC chip, 8-bit MVM, one-phase read",
        "source": "Le Gallo et al., Nat. Electron. 6, 680-693 (2023): 63.1 TOPS at 9.76 TOPS/W",
        "tops_per_W": 9.76,
    },
    {
        "name": "IBM HERMES 64-core PCM AIMC chip, 8-bit MVM, four-phase (high-precision) read",
        "source": "Le Gallo et al., Nat. Electron. 6, 680-693 (2023): 16.1 TOPS at 2.48 TOPS/W",
        "tops_per_W": 2.48,
    },
)
"""Published analog in-memory-computing efficiencies the report compares with (one MAC = 2 ops)."""


def published_comparison(macs: int, inference: dict) -> dict:
    """This design's inference efficiency against :data:`PUBLISHED`, for the same work: ``macs``
    multiply-accumulates per sample (one per crossbar device). Ours counts the array, peripherals and
    converters of the analog blocks (``analog + converters``), the published chip everything on it."""
    ops = 2 * macs
    energy = inference["analog"] + inference["converters"]
    return {
        "macs_per_inference": macs,
        "energy_J": energy,
        "tops_per_W": ops / energy / 1e12 if energy > 0 else float("nan"),
        "published": [{**ref, "energy_J_same_macs": ops / (ref["tops_per_W"] * 1e12)} for ref in PUBLISHED],
        "note": "ours: analog array, peripherals and converters of this design at the assumed ADC/DAC energies; "
        "published: the whole chip (digital, on-chip network, its ADCs) measured",
    }


def programming_from_run(summary: dict, model) -> dict | None:
    """The programming per step a training run measured (its ``summary.json``'s ``programming``,
    :func:`cosim.training.finish`), in :func:`estimate_programming`'s form; ``None`` when the run
    did not count it."""
    measured = summary.get("programming")
    if not isinstance(measured, dict) or not measured:
        return None
    keys = ("pulses_per_step", "energy_J_per_step", "time_s_per_step", "steps")
    if not all(isinstance(p, dict) and all(k in p for k in keys) for p in measured.values()):
        return None  # a summary from before these figures were kept
    blocks = {}
    for name, p in measured.items():
        blocks[name] = {k: float(p[k]) for k in keys[:3]}
        blocks[name]["energy_J_per_epoch"] = float(p.get("energy_J_per_epoch", float("nan")))
    steps = max(int(p.get("steps", 0)) for p in measured.values())
    return {
        "source": f"measured over the training run ({steps} optimizer steps)",
        "blocks": blocks,
        "not_counted": [b.name for b in model.analog_blocks() if b.name not in blocks],
    }


def peripheral_power_W(spec, cfg: EnergyConfig) -> float:
    """Quiescent power of one block's input drivers (one per input source) and amplifiers (one
    per amplified node, and one inverting stage per node of a dual-rail layer), watts."""
    amplifiers = spec.amplified_nodes() + spec.inverting_amplifiers()
    return (spec.n_sources * cfg.driver_quiescent_A + amplifiers * cfg.amp_quiescent_A) * cfg.peripheral_supply_V


def estimate_programming(config: RunConfig, model, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict:
    """The devices' programming cost of one optimizer step on ``x``, ``y``, estimated by taking that
    step (with a fresh optimizer: Adam's first step moves every device by ``lr`` of its range) and
    restoring the model. Per block: ``energy_J_per_step``, ``time_s_per_step``, ``pulses_per_step``
    (blocks whose devices do not count programming, see
    :attr:`analog.devices.DeviceConfig.counts_programming`, are listed in ``not_counted``)."""
    blocks = model.analog_blocks()
    counted = [b for b in blocks if b.devices.counts_programming]
    out = {
        "source": "estimated from one optimizer step (a fresh optimizer)",
        "blocks": {},
        "not_counted": [b.name for b in blocks if not b.devices.counts_programming],
    }
    if not counted:
        out["source"] = "not counted: the devices give no pulse step and energy (devices.levels, write_pulse_*)"
        return out
    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        loss_value(config.train.loss, model(x.to(next(model.parameters()).dtype)), y, n_classes).backward()
        make_optimizer(model, config.train).step()
        with torch.no_grad():
            for block in counted:
                cost = {"pulses": 0.0, "energy_J": 0.0, "time_s": 0.0}
                for i, (p, array) in enumerate(zip(block.conductances(), block.arrays, strict=True)):
                    for key, value in array.programming(getattr(block, f"written_{i}"), p).items():
                        cost[key] += value
                out["blocks"][block.name] = {
                    "pulses_per_step": cost["pulses"],
                    "energy_J_per_step": cost["energy_J"],
                    "time_s_per_step": cost["time_s"],
                }
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(saved[name])
        model.zero_grad(set_to_none=True)
    return out
