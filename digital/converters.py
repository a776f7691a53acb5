"""Converters at the analog/digital boundary: a DAC before an analog block, an ADC after it.

Both are uniform mid-tread quantisers over a voltage range with a straight-through gradient
(the derivative of the clipping only), the usual model of a converter in hardware-aware training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Converter"]


class _Quantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi, levels):
        inside = (x >= lo) & (x <= hi)
        ctx.save_for_backward(inside)
        step = (hi - lo) / (levels - 1)
        return torch.round((x.clamp(lo, hi) - lo) / step) * step + lo

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


class Converter(nn.Module):
    """``bits``-bit converter over ``[lo, hi]`` (volts for a DAC's output or an ADC's input).

    ``bits = None`` makes it an ideal converter (identity), so a model keeps the same structure
    with converters on or off.
    """

    def __init__(self, bits: int | None, lo: float, hi: float, kind: str = "adc"):
        super().__init__()
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 24):
            raise ValueError(f"{kind}.bits: must be an integer in [1, 24] or None (ideal), got {bits!r}")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{kind}.range: need finite lo < hi, got [{lo!r}, {hi!r}]")
        self.bits, self.lo, self.hi, self.kind = bits, float(lo), float(hi), kind

    @property
    def levels(self) -> int | None:
        return None if self.bits is None else 2**self.bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits is None:
            return x
        return _Quantize.apply(x, self.lo, self.hi, self.levels)

    def extra_repr(self) -> str:
        bits = "ideal" if self.bits is None else f"{self.bits} bits"
        return f"{self.kind}, {bits}, range [{self.lo}, {self.hi}]"
