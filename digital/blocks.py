"""Small digital blocks that torch does not provide under these names."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Gain", "Reshape"]


class Gain(nn.Module):
    """A fixed gain, e.g. from an analog block's output volts (bounded near +/-0.6 V by its diodes)
    to logits: without it a digital readout starts with logits too small to learn from quickly."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Reshape(nn.Module):
    """Reshape each sample (the batch dimension is kept), e.g. flat digits to ``[1, 8, 8]``."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"
