"""A designer's own diode card: series resistance solved exactly per junction, charge parameters
accepted for DC, the fast solver equal to ngspice on the 1N4148 card of LTspice's standard.dio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from analog import Circuit, CircuitSpec, ConductanceRange
from analog.diode import DiodeModel, thermal_voltage
from analog.model_library import load_model_library
from analog.models import UserModels
from analog.solvers import FastSolver
from tests.conftest import make_solver, random_inputs

CARD_1N4148 = ".model 1N4148 D (IS=2.52n RS=0.568 N=1.752 CJO=4p M=0.4 TT=20n)"
"""LTspice's standard.dio card (mfg OnSemi) without BV/IBV, which the fast solver does not model."""


def test_series_resistance_matches_an_independent_solution():
    """One node driven through g from x into a diode with RS: KCL solved by bisection on the
    junction voltage, the Shockley current written out here."""
    diode = DiodeModel(is_A=2.52e-9, n=1.752, rs_ohm=50.0)
    g, x = 1e-2, 3.0
    vte, gmin = diode.n * thermal_voltage(27.0), diode.gmin_S

    def junction(u: float) -> float:
        return diode.is_A * math.expm1(u / vte) + gmin * u

    u_ref = brentq(lambda u: g * (x - (u + diode.rs_ohm * junction(u))) - junction(u), 0.0, x, xtol=1e-16)
    v_ref = u_ref + diode.rs_ohm * junction(u_ref)
    spec = CircuitSpec((1, 1), input_pairs=False, bias_V=None, diode_down_V=None, diode=diode,
                       conductance=ConductanceRange(1e-6, 0.1))  # fmt: skip
    circuit = Circuit(spec, (torch.full((1, 1), g, dtype=torch.float64),), (torch.zeros(0, 1),))
    v = FastSolver().solve(circuit, torch.tensor([[x]], dtype=torch.float64)).output.item()
    assert v == pytest.approx(v_ref, abs=1e-12)
    assert v - u_ref > 0.5, "the series resistance carries a visible part of the drop"


def test_cocontent_integrates_the_current_with_series_resistance():
    diode = DiodeModel(is_A=1e-12, n=1.3, rs_ohm=20.0)
    vd = torch.linspace(-1.0, 1.5, 20001, dtype=torch.float64)
    current, conductance = diode.current(vd.clone())
    phi = diode.cocontent(vd.clone())
    # d phi / d vd = I and dI/dvd = g (central differences on the grid).
    step = float(vd[1] - vd[0])
    np.testing.assert_allclose(
        ((phi[2:] - phi[:-2]) / (2 * step)).numpy(), current[1:-1].numpy(), rtol=1e-5, atol=1e-11
    )
    np.testing.assert_allclose(
        ((current[2:] - current[:-2]) / (2 * step)).numpy(), conductance[1:-1].numpy(), rtol=2e-3, atol=1e-9
    )


@pytest.mark.parametrize("solver", ["fast", "fast-layerwise"])
def test_the_1n4148_card_in_the_fast_solver_equals_ngspice(tmp_path, solver):
    lib = tmp_path / "diodes.lib"
    lib.write_text(CARD_1N4148 + "\n.model 1N4148NORS D (IS=2.52n N=1.752)\n", encoding="ascii")
    library = load_model_library(lib)
    user = UserModels(library, diode_model="1N4148")
    diode = user.diode(temperature_C=85.0)
    assert diode is not None and diode.rs_ohm == 0.568
    spec = CircuitSpec((8, 6, 4), input_gain_V=4.0, diode=diode, user_models=user,
                       conductance=ConductanceRange(1e-5, 1e-2))  # fmt: skip
    circuit = Circuit.random(spec, seed=5)
    source_V = spec.source_voltages(random_inputs(spec, 8, 5))
    fast = make_solver(solver).solve(circuit, source_V)
    spice = make_solver("ngspice").solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-8
    no_rs = UserModels(library, diode_model="1N4148NORS")
    spec_no_rs = CircuitSpec((8, 6, 4), input_gain_V=4.0, diode=no_rs.diode(temperature_C=85.0), user_models=no_rs,
                             conductance=ConductanceRange(1e-5, 1e-2))  # fmt: skip
    plain = FastSolver().solve(Circuit(spec_no_rs, circuit.weights, circuit.biases), source_V)
    assert (fast.all_voltages() - plain.all_voltages()).abs().max().item() > 5e-4, "RS matters at these currents"
