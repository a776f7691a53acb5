"""The operating point of a conv analog block: conducting diodes, node spans and the linear-block
warning, as for a dense block (analog.operating_point)."""

from __future__ import annotations

import torch

from analog.conv_circuit import ConvCircuit, ConvCircuitSpec
from analog.operating_point import conv_operating_point
from analog.solvers.conv_layerwise import ConvLayerwiseSolver


def report(gain_V: float) -> dict:
    spec = ConvCircuitSpec(channels=(2, 3, 3), side=(5, 5), kernel_size=3, input_gain_V=gain_V)
    circuit = ConvCircuit.random(spec, seed=0)
    x = torch.randn(4, *spec.grid(0), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    source_V = spec.source_voltages(x)
    return conv_operating_point(circuit, ConvLayerwiseSolver().solve(circuit, source_V))


def test_a_strongly_driven_conv_block_conducts_and_a_weak_one_is_reported_linear():
    strong, weak = report(40.0), report(0.1)
    assert strong["diodes_conducting_fraction"] > 0.05 and not strong["warnings"]
    assert [layer["layer"] for layer in strong["layers"]] == [1, 2]
    assert weak["diodes_conducting_fraction"] == 0
    (warning,) = weak["warnings"]
    assert warning.startswith("effectively linear") and "diode_up_V <=" in warning
    for op in (strong, weak):
        layer = op["layers"][0]
        assert layer["node_min_V"] < layer["node_max_V"] < layer["knee_V"] + 1
        assert op["max_kcl_residual_A"] < 1e-12 and op["output_swing_V"] > 0
