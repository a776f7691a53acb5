"""Memory a model will need, estimated from its configuration before anything is allocated.

Every layer size is bounded on its own (:data:`analog.circuit.MAX_LAYER_SIZE`), but two wide
layers make a crossbar of ``n_in * n_out`` conductances: 100,000 x 100,000 in float64 is 80 GB for
one copy. Allocating it would be killed by the kernel's OOM killer after minutes of swapping; the
estimate refuses it at once with the figures.
"""

from __future__ import annotations

import psutil
import torch

from analog.circuit import CircuitSpec
from cosim.config import ConfigError

__all__ = [
    "COPIES_PER_CONDUCTANCE",
    "WORKSPACE_PER_NODE",
    "MemoryEstimate",
    "available_bytes",
    "check_memory",
    "estimate_memory",
]

COPIES_PER_CONDUCTANCE = 6
"""Tensors of one conductance's size alive during training: the parameter, its gradient, what the
devices hold (``written_``), the read copy the solver sees, and two optimizer states (Adam)."""
WORKSPACE_PER_NODE = 16
"""Values per free node and sample that the fast solver and the EP phases keep (voltages of the
free and two nudged phases, residuals, Newton steps and diode currents, with slack)."""


class MemoryEstimate:
    """Bytes a model's analog blocks need: ``conductances`` (all copies) and ``workspace`` (the
    solver's working set for one batch)."""

    def __init__(self, conductances: int, workspace: int):
        self.conductances = conductances
        self.workspace = workspace

    @property
    def total(self) -> int:
        return self.conductances + self.workspace


def estimate_memory(specs: list[CircuitSpec], dtype: torch.dtype, batch: int) -> MemoryEstimate:
    """Bytes the analog blocks of ``specs`` need in ``dtype`` for batches of ``batch`` samples."""
    size = torch.empty((), dtype=dtype).element_size()
    conductances = workspace = 0
    for spec in specs:
        conductances += COPIES_PER_CONDUCTANCE * spec.n_devices() * size
        workspace += WORKSPACE_PER_NODE * batch * sum(spec.nodes_per_layer()) * size
    return MemoryEstimate(conductances, workspace)


def available_bytes(device: torch.device) -> int:
    """Memory that can be allocated now on ``device``: free RAM (with reclaimable cache) for the
    CPU, free memory of the GPU for CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB"


def check_memory(specs: list[CircuitSpec], dtype: torch.dtype, batch: int, device: torch.device, where: str) -> None:
    """Refuse, before anything is allocated, analog blocks that need more memory than ``device``
    has free; ``where`` names the configuration keys in the message."""
    need = estimate_memory(specs, dtype, batch)
    have = available_bytes(device)
    if need.total > have:
        raise ConfigError(
            f"{where}: the analog blocks need about {_gb(need.total)} ({_gb(need.conductances)} for "
            f"{COPIES_PER_CONDUCTANCE} copies of the conductances, {_gb(need.workspace)} of solver working set "
            f"for batches of {batch}) but {device} has {_gb(have)} available; use smaller layers (sizes), "
            "a smaller batch or dtype = 'float32'"
        )
