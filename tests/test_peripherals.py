"""Non-ideal drivers, amplifiers and nudging sources (analog.peripherals): the dense solver against
the layered one and against ngspice, its Jacobian, EP against the exact gradient of each circuit."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from analog import Circuit, CircuitSpec
from analog.netlist import build_operating_point, netlist_text
from analog.peripherals import Peripherals
from analog.solvers import FastSolver, LayerwiseSolver, SolverError
from analog.solvers.general import GeneralSolver, GeneralSystem
from cosim.cli import main
from cosim.gradients import EquilibriumPropagation, ImplicitDifferentiation

SPEC = CircuitSpec((6, 8, 5, 3), amplifier_gains=(4.0, None), input_gain_V=3.0)

CASES = {
    "driver": Peripherals(driver_ohm=50.0),
    "amp_out": Peripherals(amp_out_ohm=200.0),
    "amp_in": Peripherals(amp_in_ohm=1e3),
    "offset": Peripherals(amp_offset_V=0.02),
    "swing": Peripherals(amp_swing_V=1.0),
    "nudge_out": Peripherals(nudge_out_ohm=100.0),
    "compliance": Peripherals(nudge_compliance_V=0.3),
    "all": Peripherals(
        driver_ohm=50.0,
        amp_out_ohm=200.0,
        amp_in_ohm=1e4,
        amp_offset_V=0.01,
        amp_swing_V=1.5,
        nudge_out_ohm=1e4,
        nudge_compliance_V=0.5,
    ),
}
RECIPROCAL = ("driver", "amp_out", "amp_in", "offset", "nudge_out")


def _case(name: str, seed: int = 1):
    base = Circuit.random(SPEC, seed)
    circuit = Circuit(replace(SPEC, peripherals=CASES[name]), base.weights, base.biases)
    x = torch.rand(6, 6, generator=torch.Generator().manual_seed(seed))
    return base, circuit, SPEC.source_voltages(x)


def _nudge(batch: int, scale: float = 2e-5) -> torch.Tensor:
    return scale * torch.randn(batch, SPEC.n_outputs, generator=torch.Generator().manual_seed(7))


def _flat(g) -> torch.Tensor:
    return torch.cat([g.source_V.flatten(), *[w.flatten() for w in g.weights], *[b.flatten() for b in g.biases]])


def test_general_system_with_ideal_peripherals_is_the_layered_one():
    base, _, src = _case("driver")
    nudge = _nudge(src.shape[0])
    ref = FastSolver().solve(base, src, nudge)
    got = GeneralSolver().solve(base, src, nudge)  # from 0 V: its own Newton, not a copy of the start
    for a, b in zip(ref.voltages, got.voltages, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    torch.testing.assert_close(ref.input_currents_A, got.input_currents_A, rtol=0, atol=1e-17)
    for a, b in zip(ref.bias_currents_A, got.bias_currents_A, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-17)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jacobian_is_the_derivative_of_the_net_currents(name):
    _, circuit, src = _case(name)
    system = GeneralSystem(circuit, src, _nudge(src.shape[0], 1e-4))
    v = torch.cat(FastSolver().solve(circuit, src).voltages, dim=1)
    jac = system.jacobian(v)
    eps = 1e-6
    numeric = torch.stack(
        [
            (system.residual(v + eps * e) - system.residual(v - eps * e)) / (2 * eps)
            for e in torch.eye(v.shape[1]).unsqueeze(1)
        ],
        dim=2,
    )
    assert float((jac - numeric).abs().max()) <= 1e-8 * float(jac.abs().max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_solver_matches_ngspice(name, ngspice_solver):
    base, circuit, src = _case(name)
    for nudge in (None, _nudge(src.shape[0])):
        fast = FastSolver().solve(circuit, src, nudge)
        ref = ngspice_solver.solve(circuit, src, nudge)
        assert max(float((a - b).abs().max()) for a, b in zip(fast.voltages, ref.voltages, strict=True)) <= 1e-8
        assert float((fast.input_currents_A - ref.input_currents_A).abs().max()) <= 1e-12
        assert float(fast.residual_A.max()) <= 1e-15
    # ...and the non-ideality changed the circuit (the compliance only acts on a nudge).
    ideal = FastSolver().solve(base, src, None if name != "compliance" else _nudge(src.shape[0]))
    moved = FastSolver().solve(circuit, src, None if name != "compliance" else _nudge(src.shape[0]))
    assert max(float((a - b).abs().max()) for a, b in zip(ideal.voltages, moved.voltages, strict=True)) > 1e-4


@pytest.mark.parametrize("name", RECIPROCAL)
def test_ep_stays_exact_with_reciprocal_peripherals(name):
    _, circuit, src = _case(name)
    solver = FastSolver()
    free = solver.solve(circuit, src)
    grad_out = torch.randn(src.shape[0], SPEC.n_outputs, generator=torch.Generator().manual_seed(3))
    exact = _flat(ImplicitDifferentiation()(solver, circuit, src, free, grad_out))
    errors = []
    for beta in (0.2, 0.02):
        ep = _flat(EquilibriumPropagation(beta=beta)(solver, circuit, src, free, grad_out))
        errors.append(float((ep - exact).norm() / exact.norm()))
    # Centered EP's bias is O(beta^2): a tenth of beta, a hundredth of the error (down to rounding).
    assert errors[0] <= 1e-4 and errors[1] <= max(errors[0] / 70, 1e-9)


def test_swing_limit_breaks_ep_and_the_exact_gradient_is_still_exact():
    _, circuit, src = _case("swing")
    circuit = Circuit(replace(SPEC, peripherals=Peripherals(amp_swing_V=0.5)), circuit.weights, circuit.biases)
    solver = FastSolver()
    free = solver.solve(circuit, src)
    grad_out = torch.randn(src.shape[0], SPEC.n_outputs, generator=torch.Generator().manual_seed(3))
    exact = ImplicitDifferentiation()(solver, circuit, src, free, grad_out)
    ep = _flat(EquilibriumPropagation(beta=0.001)(solver, circuit, src, free, grad_out))
    cosine = float(ep @ _flat(exact) / (ep.norm() * _flat(exact).norm()))
    assert cosine < 0.99  # the circuit lost its co-content: EP is not its gradient

    def loss(weights0, source):
        c = Circuit(circuit.spec, (weights0, *circuit.weights[1:]), circuit.biases, check_range=False)
        return float((solver.solve(c, source).voltages[-1] * grad_out).sum())

    eps = 1e-9
    w = circuit.weights[0]
    for i, j in ((2, 3), (7, 0)):
        bump = torch.zeros_like(w)
        bump[i, j] = eps
        numeric = (loss(w + bump, src) - loss(w - bump, src)) / (2 * eps)
        assert abs(numeric - float(exact.weights[0][i, j])) <= 1e-5 * abs(numeric)
    bump = torch.zeros_like(src)
    bump[1, 4] = 1e-7
    numeric = (loss(w, src + bump) - loss(w, src - bump)) / 2e-7
    assert abs(numeric - float(exact.source_V[1, 4])) <= 1e-5 * abs(numeric)


def test_netlist_has_the_peripheral_elements():
    _, circuit, src = _case("all")
    text = netlist_text(build_operating_point(circuit, src[0], _nudge(1)[0]))
    assert "RDRV0 L0_N0 L0_D0 50.0" in text and "RW0_0_0 L0_D0 L1_N0" in text
    assert "BAMP_L1_N0 L1_E0 0 v=1.5*tanh(2.6666666666666665*(v(L1_N0)+(0.01)))" in text
    assert "RAOUT_L1_N0 L1_E0 L1_A0 200.0" in text and "RAIN_L1_N0 L1_N0 0 10000.0" in text
    assert "RNUDGE0 L3_N0 0 10000.0" in text and "BNUDGE0 0 L3_N0 i=" in text and "exp((v(L3_N0)-(0.5))/0.025)" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"driver_ohm": 0.0}, "driver_ohm: must be in (0, 1e+09] ohm"),
        ({"amp_out_ohm": float("nan")}, "amp_out_ohm: must be a resistance"),
        ({"amp_offset_V": 2.0}, "amp_offset_V: must be in [-1, 1] V"),
        ({"amp_swing_V": -1.0}, "amp_swing_V: must be in [0.001, 100] V"),
        ({"nudge_knee_V": 0.0}, "nudge_knee_V: must be in [0.0001, 1] V"),
    ],
)
def test_bad_peripheral_values_are_named(kwargs, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("+", r"\+")
    ):
        Peripherals(**kwargs)


def test_peripherals_that_the_circuit_cannot_have_are_refused():
    with pytest.raises(ValueError, match="amp_offset_V: this block has no amplifiers"):
        CircuitSpec((4, 3, 2), peripherals=Peripherals(amp_offset_V=0.01))
    with pytest.raises(ValueError, match="driver_ohm: non-ideal peripherals with resistive wires"):
        CircuitSpec((4, 3, 2), wire_ohm=1.0, peripherals=Peripherals(driver_ohm=10.0))
    _, circuit, src = _case("driver")
    with pytest.raises(SolverError, match=r"non-ideal peripherals \(driver_ohm\).*solver.name = 'fast'"):
        LayerwiseSolver().solve(circuit, src)


AMP_CONFIG = """
name = "amp-fidelity"
seed = 0
[data]
train_subset = 64
test_subset = 32
[[model.blocks]]
type = "analog"
sizes = [64, 12, 8, 10]
input_gain_V = 4.0
amplifier_gains = [4.0, 4.0]
[[model.blocks]]
type = "scale"
factor = 10.0
[gradcheck]
samples = 8
betas = [0.02]
"""


def test_gradcheck_fidelity_table(tmp_path, capsys):
    config = tmp_path / "amp.toml"
    config.write_text(AMP_CONFIG)
    assert main(["gradcheck", "--config", str(config), "--fidelity", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {(r["key"], r["value"]): r for r in report["fidelity"]}
    assert report["beta"] == 0.02 and rows[(None, None)]["cosine"] > 0.99999
    for key in ("driver_ohm", "amp_out_ohm", "amp_in_ohm", "amp_offset_V", "nudge_out_ohm"):
        strongest = [r for (k, _), r in rows.items() if k == key][-1]
        assert strongest["cosine"] > 0.9999 and strongest["output_shift"] > 1e-3, key
    swing = [r["cosine"] for (k, _), r in rows.items() if k == "amp_swing_V"]
    assert swing[-1] < 0.999 and swing[-1] < swing[0]  # tighter limit, worse EP


def test_eval_condition_refuses_amplifier_keys_on_a_block_without_amplifiers(tmp_path, capsys):
    config = tmp_path / "noamp.toml"
    config.write_text(
        AMP_CONFIG.replace("sizes = [64, 12, 8, 10]", "sizes = [64, 12, 10]").replace(
            "amplifier_gains = [4.0, 4.0]\n", ""
        )
    )
    code = main(["gradcheck", "--config", str(config), "--set", "model.blocks[0].amp_swing_V=1.0"])
    assert code == 2
    assert "model.blocks[0].amp_swing_V: this block has no amplifiers" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["driver", "all"])
def test_power_balances_with_peripherals(name):
    from analog.energy import equilibrium_power

    _, circuit, src = _case(name)
    for nudge in (None, _nudge(src.shape[0])):
        eq = FastSolver().solve(circuit, src, nudge)
        power = equilibrium_power(circuit, src, eq, nudge)
        # Tellegen: what the sources deliver is what the elements dissipate, at rounding level.
        assert float(((power.delivered_W - power.dissipated_W).abs() / power.delivered_W.abs()).max()) <= 1e-13
        assert float(power.peripherals_W.min()) > 0 and float(power.charging_W.abs().max()) <= 1e-18


def test_amplifier_offset_draws_per_amplifier(ngspice_solver):
    from analog.devices import DeviceConfig
    from cosim.block import AnalogBlock

    block = AnalogBlock(SPEC, seed=3, devices=DeviceConfig(amp_offset_sigma_V=0.02))
    offsets = block.amp_offset
    assert offsets.shape == (8,) and 0.005 < float(offsets.std()) < 0.05  # one per amplified node
    assert "amp_offset" in block.state_dict()  # model state: a checkpoint holds these amplifiers
    circuit = block.circuit()
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    src = SPEC.source_voltages(x)
    fast = FastSolver().solve(circuit, src)
    ref = ngspice_solver.solve(circuit, src)
    assert max(float((a - b).abs().max()) for a, b in zip(fast.voltages, ref.voltages, strict=True)) <= 1e-8
    ideal = FastSolver().solve(Circuit(SPEC, circuit.weights, circuit.biases), src)
    assert max(float((a - b).abs().max()) for a, b in zip(fast.voltages, ideal.voltages, strict=True)) > 1e-3
    grad_out = torch.randn(4, SPEC.n_outputs, generator=torch.Generator().manual_seed(3))
    exact = _flat(ImplicitDifferentiation()(FastSolver(), circuit, src, fast, grad_out))
    ep = _flat(EquilibriumPropagation(beta=0.01)(FastSolver(), circuit, src, fast, grad_out))
    assert float((ep - exact).norm() / exact.norm()) <= 1e-6  # offsets keep the circuit reciprocal
    with pytest.raises(ValueError, match=r"amp_offset: expected shape \[8\]"):
        Circuit(SPEC, circuit.weights, circuit.biases, True, None, None, torch.zeros(3))
