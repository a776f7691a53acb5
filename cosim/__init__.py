"""Co-simulation: the ff-EBM model, the hybrid gradient, training, checks, sweeps and the CLI."""

from cosim.block import AnalogBlock
from cosim.conv_block import ConvAnalogBlock
from cosim.gradients import (
    METHODS,
    BlockGradients,
    EquilibriumPropagation,
    GradientMethod,
    ImplicitDifferentiation,
    gradient_method,
)
from cosim.hopfield import HopfieldBlock, HopfieldSpec
from cosim.model import FFEBM

__all__ = [
    "FFEBM",
    "METHODS",
    "AnalogBlock",
    "BlockGradients",
    "ConvAnalogBlock",
    "EquilibriumPropagation",
    "GradientMethod",
    "HopfieldBlock",
    "HopfieldSpec",
    "ImplicitDifferentiation",
    "gradient_method",
]
