"""Temperature: ngspice's level-1 model (IS scaled from TNOM to TEMP with XTI and EG) in the fast
solver, the same circuit in ngspice, and the physics a designer checks first (a forward-biased
junction loses about 2 mV/K)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from analog import Circuit, CircuitSpec
from analog.diode import ZERO_CELSIUS_K, DiodeModel, thermal_voltage
from analog.netlist import build_batch, build_operating_point, netlist_text
from analog.solvers import FastSolver
from tests.conftest import log_uniform_circuit, make_solver, random_inputs

CORNERS_C = (-40.0, 27.0, 85.0, 125.0)


def test_saturation_current_follows_the_spice_temperature_equation():
    diode = DiodeModel(is_A=2e-12, n=1.7, temperature_C=85.0, tnom_C=25.0, xti=3.0, eg_eV=1.11)
    t, tnom = 85.0 + ZERO_CELSIUS_K, 25.0 + ZERO_CELSIUS_K
    expected = 2e-12 * math.exp((t / tnom - 1) * 1.11 / (1.7 * thermal_voltage(85.0)) + 3.0 / 1.7 * math.log(t / tnom))
    assert diode.saturation_current() == pytest.approx(expected, rel=1e-14)
    assert DiodeModel(is_A=2e-12, temperature_C=60.0, tnom_C=60.0).saturation_current() == 2e-12
    # Per diode, N enters the scaling: a factor on N changes IS(T).
    emission = torch.tensor([1.0, 1.2], dtype=torch.float64)
    per_diode = diode.saturation_current(emission)
    assert per_diode[0].item() == pytest.approx(expected, rel=1e-14) and per_diode[1].item() < expected


def _clamp_voltage(temperature_C: float, solver) -> float:
    """One node driven hard through 1e-4 S into its upper diode (rail at 0 V)."""
    spec = CircuitSpec(
        (1, 1), input_pairs=False, bias_V=None, diode_down_V=None, diode=DiodeModel(temperature_C=temperature_C)
    )
    circuit = Circuit(spec, (torch.full((1, 1), 1e-4, dtype=torch.float64),), (torch.zeros(0, 1),))
    return solver.solve(circuit, torch.tensor([[5.0]], dtype=torch.float64)).output.item()


def test_the_clamp_voltage_falls_about_two_millivolts_per_kelvin():
    volts = [_clamp_voltage(t, FastSolver()) for t in CORNERS_C]
    assert all(a > b for a, b in itertools.pairwise(volts)), volts
    slope = (volts[-1] - volts[0]) / (CORNERS_C[-1] - CORNERS_C[0])
    assert -2.2e-3 < slope < -1.5e-3, f"{slope * 1e3:.2f} mV/K"


def test_the_clamp_voltage_in_ngspice_is_the_fast_solvers():
    spice = make_solver("ngspice")
    for t in CORNERS_C:
        assert abs(_clamp_voltage(t, spice) - _clamp_voltage(t, FastSolver())) <= 1e-9, t


@pytest.mark.parametrize("temperature_C", CORNERS_C)
def test_fast_matches_ngspice_at_temperature_corners(temperature_C):
    """A strongly driven block with diode spreads of IS and N (each diode its own IS(T))."""
    diode = DiodeModel(is_A=5e-14, n=1.3, temperature_C=temperature_C, tnom_C=27.0, xti=3.0, eg_eV=1.11)
    spec = CircuitSpec((16, 12, 6), input_gain_V=20.0, diode=diode)
    base = log_uniform_circuit(spec, 11)
    gen = torch.Generator().manual_seed(12)
    area = torch.exp(0.5 * torch.randn(2, 18, generator=gen, dtype=torch.float64))
    emission = torch.exp(0.1 * torch.randn(2, 18, generator=gen, dtype=torch.float64))
    circuit = Circuit(spec, base.weights, base.biases, diode_area=area, diode_emission=emission)
    source_V = spec.source_voltages(random_inputs(spec, 16, 11))
    fast = FastSolver().solve(circuit, source_V)
    spice = make_solver("ngspice").solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-8


def test_the_deck_sets_temperature_and_nominal_temperature_apart():
    spec = CircuitSpec((2, 2), diode=DiodeModel(temperature_C=125.0, tnom_C=25.0, xti=2.0, eg_eV=0.69))
    text = netlist_text(build_batch(Circuit.random(spec, seed=0), torch.zeros(1, 4)))
    assert ".options TEMP = 125.0" in text and ".options TNOM = 25.0" in text
    assert ".model DNEURON D (EG=0.69 IS=1e-14 N=1.0 TNOM=25.0 XTI=2.0)" in text


def test_a_card_named_like_a_part_number_with_its_own_tnom(tmp_path):
    """``1N4148``-style names load; a card setting IS, N, TNOM, XTI and EG is simulated by the fast
    solver at the block's temperature exactly as ngspice does."""
    from analog.model_library import load_model_library
    from analog.models import UserModels

    lib = tmp_path / "diodes.lib"
    lib.write_text(".model 1N4148DC D (IS=2.52n N=1.752 TNOM=25 XTI=3 EG=1.11)\n", encoding="ascii")
    user = UserModels(load_model_library(lib), diode_model="1N4148DC")
    diode = user.diode(temperature_C=85.0, tnom_C=27.0)
    assert diode is not None and (diode.tnom_C, diode.is_A, diode.n) == (25.0, 2.52e-9, 1.752)
    spec = CircuitSpec((4, 3), input_gain_V=3.0, diode=diode, user_models=user)
    circuit = Circuit.random(spec, seed=2)
    source_V = spec.source_voltages(random_inputs(spec, 8, 2))
    fast = FastSolver().solve(circuit, source_V)
    spice = make_solver("ngspice").solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-8


def _tc_spec(temperature_C: float) -> CircuitSpec:
    return CircuitSpec(
        (6, 8, 3),
        input_gain_V=12.0,  # driven hard: with no diode conducting, a uniform scale would change nothing
        diode=DiodeModel(temperature_C=temperature_C),
        conductance_tc1=2e-3,
        conductance_tc2=1e-6,
    )


def test_conductance_temperature_coefficients_follow_the_resistor_equation():
    spec = _tc_spec(85.0)
    assert spec.conductance_factor() == pytest.approx(1 / (1 + 2e-3 * 58 + 1e-6 * 58**2), rel=1e-15)
    assert _tc_spec(27.0).conductance_factor() == 1.0
    with pytest.raises(ValueError, match="conductance_tc1: must be in"):
        CircuitSpec((2, 2), conductance_tc1=0.5)
    with pytest.raises(ValueError, match="non-positive at -200 C"):
        CircuitSpec((2, 2), diode=DiodeModel(temperature_C=-200.0), conductance_tc1=0.1)


@pytest.mark.parametrize("temperature_C", [-40.0, 125.0])
def test_ngspice_applies_the_same_tc1_tc2(temperature_C, ngspice_solver):
    spec = _tc_spec(temperature_C)
    base = Circuit.random(spec, 1)
    f = spec.conductance_factor()
    # What the block presents at temperature; the deck holds the nominal values with tc1/tc2.
    circuit = Circuit(spec, tuple(w * f for w in base.weights), tuple(b * f for b in base.biases), False)
    text = netlist_text(build_operating_point(circuit, spec.source_voltages(torch.ones(1, 6))[0]))
    assert " tc1=0.002 tc2=1e-06" in text and f"RW0_0_0 L0_N0 L1_N0 {1 / float(base.weights[0][0, 0])!r}" in text
    src = spec.source_voltages(torch.rand(4, 6, generator=torch.Generator().manual_seed(1)))
    fast = FastSolver().solve(circuit, src)
    ref = ngspice_solver.solve(circuit, src)
    assert max(float((a - b).abs().max()) for a, b in zip(fast.voltages, ref.voltages, strict=True)) <= 1e-8
    # ...and the coefficients matter: the nominal circuit at the same temperature is another one.
    nominal = FastSolver().solve(base, src)
    assert max(float((a - b).abs().max()) for a, b in zip(fast.voltages, nominal.voltages, strict=True)) > 1e-3
