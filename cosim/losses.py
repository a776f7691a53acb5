"""Losses on the model's output (logits, or output voltages for MSE)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cosim.config import ConfigError

__all__ = ["loss_value", "make_loss"]


def loss_value(name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean loss over the batch. ``cross-entropy`` on logits; ``mse`` against one-hot targets."""
    if name == "cross-entropy":
        return F.cross_entropy(out, y)
    if name == "mse":
        target = F.one_hot(y, n_classes).to(out.dtype)
        return 0.5 * ((out - target) ** 2).sum(1).mean()
    raise ConfigError(f"train.loss: unknown loss {name!r}; choose 'cross-entropy' or 'mse'")


def make_loss(name: str, y: torch.Tensor, n_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    loss_value(name, torch.zeros(1, n_classes), y[:1], n_classes)  # validate the name early
    return lambda out: loss_value(name, out, y, n_classes)
