"""Diode charge storage (analog.diode_charge): ngspice's level-1 junction and diffusion charge, in
the fast transient and in the ngspice .tran reference, on the 1N4148 card of LTspice's standard.dio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analog import Circuit, CircuitSpec, ConductanceRange
from analog.diode import DiodeModel
from analog.diode_charge import JunctionCharge, card_charge, stage_current
from analog.model_library import load_model_library
from analog.models import ModelFileError, UserModels
from analog.netlist import build_transient, netlist_text
from analog.ngspice import NgspiceTransient
from analog.settling import Capacitances, TransientOptions, simulate_phase
from analog.solvers import FastSolver
from tests.conftest import make_solver, random_inputs

CARDS = {
    "1N4148": ".model 1N4148 D(IS=2.52n RS=0.568 N=1.752 CJO=4p M=0.4 TT=20n)",
    "1N4148-no-RS": ".model 1N4148 D(IS=2.52n N=1.752 CJO=4p M=0.4 TT=20n)",
    "1N4148-BV": ".model 1N4148 D(IS=2.52n RS=0.568 N=1.752 CJO=4p M=0.4 TT=20n BV=100 IBV=100u)",
}
"""LTspice's standard.dio 1N4148 (mfg OnSemi), without and with its breakdown (BV/IBV)."""


def _user(tmp_path, card: str) -> UserModels:
    lib = tmp_path / "diodes.lib"
    lib.write_text(CARDS[card] + "\n", encoding="ascii")
    return UserModels(load_model_library(lib), diode_model="1N4148")


def _block(tmp_path, card: str, temperature_C: float):
    user = _user(tmp_path, card)
    diode = user.diode(temperature_C=temperature_C)
    if diode is None:
        pytest.skip(f"the fast solver does not represent card {card} on this branch: {user.fast_refusal()}")
    spec = CircuitSpec((3, 4, 2), diode_up_V=0.3, diode_down_V=-0.3, diode=diode, user_models=user,
                       conductance=ConductanceRange(1e-5, 1e-2))  # fmt: skip
    return Circuit.random(spec, seed=5), spec


@pytest.mark.parametrize("temperature_C", [27.0, 85.0])
@pytest.mark.parametrize("fc", [0.5, 0.9])
def test_charge_is_the_integral_of_its_capacitance(temperature_C, fc):
    diode = DiodeModel(is_A=2.52e-9, n=1.752, rs_ohm=0.568, temperature_C=temperature_C)
    charge = JunctionCharge(cjo_F=4e-12, vj_V=0.7, m=0.4, fc=fc, tt_s=20e-9, temperature_C=temperature_C)
    vd = torch.linspace(-5.0, 0.75, 400_001, dtype=torch.float64)
    area = torch.full_like(vd, 1.7)
    q, c = charge.charge(diode, vd, area)
    zero = torch.zeros(1, dtype=torch.float64)
    assert abs(float(charge.charge(diode, zero)[0])) < 1e-28 and abs(float(charge.energy_J(diode, zero))) < 1e-28
    # Trapezoid integral of C from -5 V (h = 1.4e-5 V; C'' h^2 / 12 bounds the error).
    integral = torch.cat([torch.zeros(1, dtype=vd.dtype), torch.cumsum(0.5 * (c[1:] + c[:-1]) * (vd[1:] - vd[:-1]), 0)])
    np.testing.assert_allclose((q - q[0]).numpy(), integral.numpy(), rtol=1e-8, atol=1e-22)
    # Stored energy: integral of v dq.
    energy = charge.energy_J(diode, vd, area)
    dq = 0.5 * (vd[1:] * c[1:] + vd[:-1] * c[:-1]) * (vd[1:] - vd[:-1])
    reference = torch.cumsum(dq, 0)
    np.testing.assert_allclose(
        (energy - energy[0]).numpy()[1:], reference.numpy(), rtol=1e-7, atol=1e-9 * float(reference.abs().max())
    )


def test_depletion_charge_is_continuous_at_fc_vj():
    charge = JunctionCharge(cjo_F=4e-12, vj_V=0.7, m=0.4, fc=0.5, temperature_C=85.0)
    knee = charge.knee_V
    below, above = torch.tensor([knee * (1 - 1e-15)], dtype=torch.float64), torch.tensor([knee], dtype=torch.float64)
    (q0, c0), (q1, c1) = charge.depletion(below), charge.depletion(above)
    assert float(q1) == pytest.approx(float(q0), rel=1e-14)
    assert float(c1) == pytest.approx(float(c0), rel=1e-14)
    # Above the knee the capacitance is linear in vd (SPICE's forward extension).
    v = torch.tensor([knee, knee + 0.1, knee + 0.2], dtype=torch.float64)
    _, c = charge.depletion(v)
    assert float(c[2] - c[1]) == pytest.approx(float(c[1] - c[0]), rel=1e-12)


def test_temperature_scaling_follows_diotemp():
    """CJO(T), VJ(T) written out from ngspice's diotemp.c at 85 C for the 1N4148 (VJ 1 V default)."""
    import math

    k, q, ref = 1.38064852e-23, 1.6021766208e-19, 300.15

    def pb(t):
        eg = 1.16 - 7.02e-4 * t * t / (t + 1108)
        return -2 * k * t / q * (1.5 * math.log(t / ref) + q * (-eg / (2 * k * t) + 1.1150877 / (k * 2 * ref)))

    t, tnom = 358.15, 300.15
    pbo = (1.0 - pb(tnom)) / (tnom / ref)
    pot = pb(t) + t / ref * pbo
    cj = 4e-12 / (1 + 0.4 * (400e-6 * (tnom - ref) - (1.0 - pbo) / pbo))
    cj *= 1 + 0.4 * (400e-6 * (t - ref) - (pot - pbo) / pbo)
    charge = JunctionCharge(cjo_F=4e-12, m=0.4, temperature_C=85.0)
    assert charge.pot_V == pytest.approx(pot, rel=1e-14) and charge.cj_F == pytest.approx(cj, rel=1e-14)
    assert charge.pot_V < 1.0 and charge.cj_F > 4e-12  # a hotter junction: lower VJ, higher CJO
    same = JunctionCharge(cjo_F=4e-12, m=0.4)
    assert same.pot_V == pytest.approx(1.0, rel=1e-14) and same.cj_F == pytest.approx(4e-12, rel=1e-14)


def test_stage_current_solves_the_junction_behind_rs():
    diode = DiodeModel(is_A=2.52e-9, n=1.752, rs_ohm=0.568)
    charge = JunctionCharge(cjo_F=4e-12, m=0.4, tt_s=20e-9)
    vd = torch.linspace(-2.0, 1.2, 33, dtype=torch.float64)
    history, dh = torch.full_like(vd, 1e-10), 1e-11
    state, ok = stage_current(diode, charge, vd, history, dh, torch.zeros_like(vd))
    assert ok
    i, _ = diode.junction_current(state.voltage.clone())
    q, _ = charge.charge(diode, state.voltage)
    balance = i + (q - history) / dh - (vd - state.voltage) / diode.rs_ohm
    assert float(balance.abs().max()) < 1e-12 * float(state.current.abs().max())
    # dI/dvd by central differences.
    step = 1e-7
    up, _ = stage_current(diode, charge, vd + step, history, dh, state.voltage)
    dn, _ = stage_current(diode, charge, vd - step, history, dh, state.voltage)
    np.testing.assert_allclose(((up.current - dn.current) / (2 * step)).numpy(), state.conductance.numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    ("values", "match"),
    [({"m": 0.95}, "M: must be in"), ({"fc": 1.0}, "FC"), ({"vj_V": 2.5}, "FC \\* VJ"), ({"cjo_F": -1e-12}, "CJO")],
)
def test_cards_ngspice_would_change_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        JunctionCharge(**values)


def test_card_charge_replaces_diode_F_in_both_transients(tmp_path):
    circuit, spec = _block(tmp_path, "1N4148", 27.0)
    charge = card_charge(spec)
    assert charge is not None and charge.cjo_F == 4e-12 and charge.tt_s == 20e-9 and charge.m == 0.4
    caps = Capacitances(node_F=10e-15, crosspoint_F=0.5e-15, diode_F=3e-15)
    nodes_F = caps.nodes_F(circuit)
    assert torch.allclose(nodes_F, Capacitances(10e-15, 0.5e-15, 0.0).nodes_F(circuit), rtol=0, atol=0)
    deck = netlist_text(build_transient(circuit, nodes_F, torch.zeros(spec.n_sources), torch.zeros(6), 1e-9))
    assert "CN_L1_N0 L1_N0 0 1.5e-14" in deck and ".ic V(L1_N0)=0.0" in deck and "uic" not in deck
    # A card without CJO/TT keeps diode_F.
    lib = tmp_path / "plain.lib"
    lib.write_text(".model DX D(IS=1e-14 VJ=0.6)\n", encoding="ascii")
    plain = CircuitSpec((3, 4, 2), user_models=UserModels(load_model_library(lib), diode_model="DX"))
    assert card_charge(plain) is None
    assert float(caps.nodes_F(Circuit.random(plain, seed=1))[0]) == pytest.approx(10e-15 + 0.5e-15 * 8 + 2 * 3e-15)
    bad = tmp_path / "bad.lib"
    bad.write_text(".model DX D(IS=1e-14 CJO=1p M=0.95)\n", encoding="ascii")
    with pytest.raises(ModelFileError, match="M: must be in"):
        UserModels(load_model_library(bad), diode_model="DX").junction_charge()


@pytest.mark.parametrize("card", ["1N4148", "1N4148-no-RS"])
def test_charge_transient_settles_and_energy_balances(tmp_path, card):
    circuit, spec = _block(tmp_path, card, 27.0)
    source_V = spec.source_voltages(4 * random_inputs(spec, 2, 5) - 2)
    free = FastSolver().solve(circuit, source_V).all_voltages()
    tr = simulate_phase(circuit, Capacitances(), source_V, torch.zeros_like(free), free)
    assert bool(((tr.voltages[-1] - free).abs().amax(1) <= 1e-3 * free.abs().amax(1)).all())
    # The sources pay for the dissipation (RS included) and the junctions' stored energy.
    balance = tr.supply_J - tr.dissipated_J - tr.charge_J
    assert float((balance.abs() / tr.supply_J.abs()).max()) < 1e-5
    # The junctions hold most of the energy: 4 pF each against ~15 fF of node capacitance.
    assert float(tr.charge_J.min()) > 50 * float((0.5 * Capacitances().nodes_F(circuit) * free**2).sum(1).max())


def _compare_with_ngspice(tmp_path, card: str, temperature_C: float) -> list[float]:
    make_solver("ngspice")  # skips when ngspice is missing
    circuit, spec = _block(tmp_path, card, temperature_C)
    source_V = spec.source_voltages(4 * random_inputs(spec, 2, 5) - 2)
    nudge = 2e-3 * torch.randn(2, spec.n_outputs, generator=torch.Generator().manual_seed(1))
    caps = Capacitances()
    # rtol 1e-7 leaves the differences where 1e-8 has them (9e-8 V; 1.4e-7 V without RS) at 2/3 of the steps.
    options = TransientOptions(rtol=1e-7, atol_V=1e-12)
    free = FastSolver().solve(circuit, source_V).all_voltages()
    nudged = FastSolver().solve(circuit, source_V, nudge).all_voltages()
    diffs = []
    with NgspiceTransient() as ngspice:
        for start, final, current in ((torch.zeros_like(free), free, None), (free, nudged, nudge)):
            ours = simulate_phase(circuit, caps, source_V, start, final, current, TransientOptions())
            t_stop = 1.5 * float(ours.settle_time_s.max())
            waves = ngspice.run(circuit, caps, source_V, start, t_stop, current)
            for b, wave in enumerate(waves):
                assert len(wave.times_s) > 100 and float(wave.times_s[-1]) == pytest.approx(t_stop)
                again = simulate_phase(
                    circuit,
                    caps,
                    source_V[b : b + 1],
                    start[b : b + 1],
                    final[b : b + 1],
                    None if current is None else current[b : b + 1],
                    options,
                    t_eval=wave.times_s,
                )
                on_grid = torch.isin(again.times_s, wave.times_s)
                assert int(on_grid.sum()) == len(wave.times_s)
                swing = float((final[b] - start[b]).abs().max())
                assert swing > 0.01, "the phase moves the junctions visibly"
                diffs.append(float((again.voltages[on_grid, 0] - wave.voltages).abs().max()))
    return diffs


@pytest.mark.ngspice
@pytest.mark.parametrize("card", ["1N4148", "1N4148-no-RS", "1N4148-BV"])
def test_fast_charge_transient_matches_ngspice_tran(tmp_path, card):
    """Free phase from rest and nudged phase from the free equilibrium, at common time points;
    the remaining ~1e-7 V are ngspice's own error (its first, backward-Euler, step)."""
    diffs = _compare_with_ngspice(tmp_path, card, 27.0)
    assert max(diffs) <= 3e-7, diffs


@pytest.mark.ngspice
@pytest.mark.slow
@pytest.mark.parametrize("card", ["1N4148", "1N4148-no-RS"])
def test_fast_charge_transient_matches_ngspice_tran_at_85C(tmp_path, card):
    """At 85 C CJO and VJ move by several percent (diotemp.c); the waveforms still agree."""
    diffs = _compare_with_ngspice(tmp_path, card, 85.0)
    assert max(diffs) <= 3e-7, diffs


_CONFIG = """
name = "energy-charge"
seed = 0
[[model.blocks]]
type = "linear"
in_features = 64
out_features = 6
[[model.blocks]]
type = "analog"
sizes = [6, 5, 10]
input_gain_V = 2.0
diode_up_V = 0.3
diode_down_V = -0.3
model_file = "{lib}"
diode_model = "1N4148"
[energy]
samples = 2
rtol = 1e-8
ngspice = {ngspice}
"""


@pytest.mark.slow
@pytest.mark.parametrize("ngspice", [False, True], ids=["fast", "with-ngspice"])
def test_cli_energy_runs_on_a_card_with_charge(tmp_path, capsys, ngspice):
    from cosim.cli import main

    if ngspice:
        make_solver("ngspice")
    lib = tmp_path / "diodes.lib"
    lib.write_text(CARDS["1N4148"] + "\n", encoding="ascii")
    config = tmp_path / "energy.toml"
    config.write_text(_CONFIG.format(lib=lib, ngspice=str(ngspice).lower()))
    assert main(["energy", "--config", str(config), "--json", "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    (block,) = report["blocks"]
    assert block["diode_charge"] == "1N4148"
    for row in block["phases"]:
        assert row["settle_time_s"] > 0 and row["energy_J"] > 0 and row["charge_J"] != 0
        if ngspice:
            assert row["ngspice_max_wave_diff_V"] <= 1e-6
