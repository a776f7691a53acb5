"""Transients of blocks with non-ideal peripherals (analog.settling_general): the same integrator as
the layered one on ideal blocks, ngspice's .tran with driver/amplifier resistances and amplifier
poles, and the settling a gain-bandwidth imposes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from analog import Circuit, CircuitSpec
from analog.netlist import build_transient, netlist_text
from analog.peripherals import Peripherals
from analog.settling import Capacitances, simulate_phase
from analog.settling_general import simulate, simulate_general
from analog.solvers import FastSolver

SPEC = CircuitSpec((4, 5, 4, 3), amplifier_gains=(4.0, None), input_gain_V=3.0)


def _phase(peripherals: Peripherals, seed: int = 1):
    base = Circuit.random(SPEC, seed)
    circuit = Circuit(replace(SPEC, peripherals=peripherals), base.weights, base.biases)
    src = SPEC.source_voltages(torch.rand(2, 4, generator=torch.Generator().manual_seed(seed)))
    start = torch.zeros(2, 12)
    final = torch.cat(FastSolver().solve(circuit, src).voltages, dim=1)
    return circuit, src, start, final


def test_the_dense_integrator_is_the_layered_one_on_an_ideal_block():
    circuit, src, start, final = _phase(Peripherals())
    layered = simulate_phase(circuit, Capacitances(), src, start, final)
    dense = simulate_general(circuit, Capacitances(), src, start, final)
    assert dense.steps == layered.steps
    torch.testing.assert_close(dense.settle_time_s, layered.settle_time_s, rtol=1e-9, atol=0)
    torch.testing.assert_close(dense.supply_J, layered.supply_J, rtol=1e-9, atol=0)


def test_a_gain_bandwidth_sets_the_settling():
    times = []
    for gbw in (None, 1e9, 1e8):
        circuit, src, start, final = _phase(Peripherals(amp_gbw_Hz=gbw))
        tr = simulate(circuit, Capacitances(), src, start, final)
        times.append(float(tr.settle_time_s.max()))
        # Energy: what the sources deliver is dissipated or stored (the amplifiers' share included).
        balance = (tr.supply_J - tr.dissipated_J - tr.charge_J).abs() / tr.supply_J.abs()
        assert float(balance.max()) <= 1e-7
    # The pole at GBW / A (tau = A / (2 pi GBW) = 0.64 ns, 6.4 ns) outlasts the RC settling (~0.5 ns).
    assert times[0] < 1e-9 < times[1] < times[2] and times[2] / times[1] > 5


def test_the_transient_deck_has_the_poles():
    circuit, src, start, _ = _phase(Peripherals(amp_gbw_Hz=1e9, amp_out_ohm=300.0))
    text = netlist_text(build_transient(circuit, Capacitances().nodes_F(circuit), src[0], start[0], 1e-9))
    assert "EAMP_L1_N0 L1_P0 0 L1_N0 0 4.0" in text and "RPOLE_L1_N0 L1_P0 L1_Q0 1000.0" in text
    assert "EBUF_L1_N0 L1_E0 0 L1_Q0 0 1.0" in text and "RAOUT_L1_N0 L1_E0 L1_A0 300.0" in text
    tau = 4.0 / (2 * torch.pi * 1e9)
    assert f"CPOLE_L1_N0 L1_Q0 0 {tau / 1000.0!r}" in text or f"CPOLE_L1_N0 L1_Q0 0 {tau / 1000.0:.6g}" in text


@pytest.mark.parametrize(
    "peripherals",
    [
        Peripherals(driver_ohm=100.0, amp_out_ohm=300.0),
        Peripherals(amp_gbw_Hz=1e9, driver_ohm=100.0, amp_out_ohm=300.0),
    ],
    ids=["resistances", "gbw"],
)
def test_fast_transient_matches_ngspice_tran(peripherals):
    from analog.ngspice import NgspiceTransient

    circuit, src, start, final = _phase(peripherals)
    src, start, final = src[:1], start[:1], final[:1]
    ours = simulate(circuit, Capacitances(), src, start, final)
    t_stop = 1.5 * float(ours.settle_time_s.max())
    with NgspiceTransient() as tran:
        waves = tran.run(circuit, Capacitances(), src, start, t_stop)
    for b, wave in enumerate(waves):
        again = simulate(
            circuit, Capacitances(), src[b : b + 1], start[b : b + 1], final[b : b + 1], t_eval=wave.times_s
        )
        on = torch.isin(again.times_s, wave.times_s)
        assert float((again.voltages[on, 0] - wave.voltages).abs().max()) <= 1e-6
