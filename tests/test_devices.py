"""Device nonidealities: each has a test of its physical effect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from analog import CircuitSpec, ConductanceRange
from analog.devices import DeviceArray, DeviceConfig, IOConfig
from analog.readout import Measurement
from cosim import AnalogBlock, EquilibriumPropagation

RANGE = ConductanceRange(1e-6, 1e-4)


def array(shape=(200, 50), seed=0, **kw) -> DeviceArray:
    return DeviceArray(DeviceConfig(**kw), RANGE, shape, torch.Generator().manual_seed(seed))


def uniform(shape=(200, 50), seed=1):
    return 1e-6 + 99e-6 * torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_quantization_yields_only_allowed_levels():
    devices = array(levels=8)
    g = devices.write(uniform(), uniform(seed=2))
    levels = torch.linspace(1e-6, 1e-4, 8)
    distance = (g.unsqueeze(-1) - levels).abs().amin(-1)
    assert distance.max().item() < 1e-18
    assert len(torch.unique(g)) == 8


def test_stuck_devices_never_move_under_updates():
    devices = array(stuck_at_min_fraction=0.1, stuck_at_max_fraction=0.05)
    stuck_min, stuck_max = devices.stuck == 1, devices.stuck == 2
    assert 0.07 < stuck_min.double().mean() < 0.13 and 0.03 < stuck_max.double().mean() < 0.07
    g = devices.write(uniform(), uniform())
    for step in range(5):
        g = devices.write(g, g + (-1) ** step * 3e-5)
        assert torch.all(g[stuck_min] == 1e-6) and torch.all(g[stuck_max] == 1e-4)
    assert torch.all(devices.read(g)[stuck_max] == 1e-4)


def test_soft_bounds_shrink_updates_near_the_bounds():
    devices = array(nonlinearity=1.0)
    near_max = torch.full((4,), 0.9e-4)
    near_min = torch.full((4,), 0.1e-4)
    up_high = devices.write(near_max, near_max + 1e-6) - near_max
    up_low = devices.write(near_min, near_min + 1e-6) - near_min
    assert (up_high < 0.25 * up_low).all()
    down_low = near_min - devices.write(near_min, near_min - 1e-6)
    down_high = near_max - devices.write(near_max, near_max - 1e-6)
    assert (down_low < 0.25 * down_high).all()


def test_asymmetry_scales_decreases():
    devices = array(asymmetry=0.5)
    g = torch.full((3,), 5e-5)
    assert torch.allclose(g - devices.write(g, g - 2e-6), torch.full((3,), 1e-6))
    assert torch.allclose(devices.write(g, g + 2e-6) - g, torch.full((3,), 2e-6))


def test_write_noise_spreads_updates_in_proportion():
    torch.manual_seed(0)
    devices = array(shape=(20000,), write_noise_sigma=0.3)
    g = torch.full((20000,), 5e-5)
    delta = devices.write(g, g + 1e-6) - g
    assert abs(delta.mean().item() / 1e-6 - 1) < 0.02
    assert abs(delta.std().item() / 1e-6 - 0.3) < 0.02


@pytest.mark.parametrize(
    ("distribution", "mode"), [("normal", "proportional"), ("lognormal", "proportional"), ("normal", "absolute")]
)
def test_device_to_device_variability_statistics(distribution, mode):
    devices = array(shape=(40000,), d2d_sigma=0.1, d2d_distribution=distribution, d2d_mode=mode)
    g = torch.full((40000,), 5e-5)
    ratio = devices.read(g) / g
    expected = 0.1 if mode == "proportional" else 0.1 * 99e-6 / 5e-5
    assert abs(ratio.std().item() - expected) < 0.05 * expected
    assert torch.equal(devices.read(g), devices.read(g)), "d2d spread is fixed per device"


def test_read_noise_changes_every_phase():
    torch.manual_seed(0)
    devices, io = array(shape=(1000,)), IOConfig(read_noise_sigma=0.02)
    g = torch.full((1000,), 5e-5)
    a, b = devices.read(g, io), devices.read(g, io)
    assert not torch.equal(a, b)
    assert abs((a / g).std().item() - 0.02) < 0.003


def test_ideal_devices_present_exactly_the_programmed_conductances():
    spec = CircuitSpec((8, 4, 3))
    ideal = AnalogBlock(spec, seed=3, devices=DeviceConfig())
    circuit = ideal.circuit()
    for programmed, seen in zip(ideal.conductances(), (*circuit.weights, *circuit.biases), strict=True):
        assert torch.equal(programmed.detach(), seen)
    assert circuit.diode_area is None and circuit.diode_emission is None
    # The same seed with a device spread presents other conductances: the comparison can fail.
    spread = AnalogBlock(spec, seed=3, devices=DeviceConfig(d2d_sigma=0.1))
    assert not torch.equal(spread.circuit().weights[0], circuit.weights[0])


def test_block_programming_quantizes_and_pins():
    spec = CircuitSpec((8, 4, 3))
    block = AnalogBlock(spec, seed=3, devices=DeviceConfig(levels=4, stuck_at_max_fraction=0.2))
    levels = torch.linspace(1e-6, 1e-4, 4)
    with torch.no_grad():
        for p in block.conductances():
            p.add_(1.7e-5)
    block.clip_()
    for p in block.conductances():
        assert (p.unsqueeze(-1) - levels).abs().amin(-1).max().item() < 1e-18


def test_measurement_adc_quantizes_ep_readings():
    spec = CircuitSpec((8, 6, 4), input_gain_V=5.0)
    block = AnalogBlock(spec, seed=1, method=EquilibriumPropagation(beta=0.1, measurement=Measurement(bits=4)))
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(0))
    F.mse_loss(block(x), torch.zeros(6, 4)).backward()
    free = block.solver.solve(block.circuit(), spec.source_voltages(x))
    measured = block.method.measurement.read(free)
    step = 2.0 / 15
    for v in measured.voltages:
        assert torch.allclose(v / step, torch.round(v / step), atol=1e-9)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.conductances())


def test_device_config_validation_names_the_field():
    with pytest.raises(ValueError, match="levels"):
        DeviceConfig(levels=1)
    with pytest.raises(ValueError, match="stuck_at"):
        DeviceConfig(stuck_at_min_fraction=0.7, stuck_at_max_fraction=0.5)
    with pytest.raises(ValueError, match="d2d_distribution"):
        DeviceConfig(d2d_distribution="uniform")


def test_stochastic_rounding_keeps_small_updates_on_average():
    torch.manual_seed(0)
    nearest = array(shape=(20000,), levels=16)
    stochastic = array(shape=(20000,), levels=16, stochastic_rounding=True)
    level = 1e-6 + 5 * (99e-6 / 15)
    g = torch.full((20000,), level)
    small = 0.2 * 99e-6 / 15  # a fifth of a level
    assert (nearest.write(g, g + small) - g).abs().max().item() < 1e-18, "nearest rounding swallows the update"
    moved = stochastic.write(g, g + small) - g
    assert abs(moved.mean().item() / small - 1) < 0.05
    levels = torch.linspace(1e-6, 1e-4, 16)
    assert ((g + moved).unsqueeze(-1) - levels).abs().amin(-1).max().item() < 1e-18


def _spread_circuits(seed: int, area_sigma: float, emission_sigma: float = 0.0):
    """A strongly driven 16-12-6 block with and without diode spread, and its inputs."""
    from analog import Circuit
    from tests.conftest import log_uniform_circuit, random_inputs

    spec = CircuitSpec((16, 12, 6), input_gain_V=20.0)
    base = log_uniform_circuit(spec, seed)
    area = torch.exp(area_sigma * torch.randn(2, 18, generator=torch.Generator().manual_seed(seed + 100)))
    emission = None
    if emission_sigma:
        emission = torch.exp(emission_sigma * torch.randn(2, 18, generator=torch.Generator().manual_seed(seed + 200)))
    spread = Circuit(spec, base.weights, base.biases, diode_area=area, diode_emission=emission)
    only_area = Circuit(spec, base.weights, base.biases, diode_area=area)
    return base, only_area, spread, spec.source_voltages(random_inputs(spec, 16, seed))


def _check_fast_solution(circuit, source_V):
    from analog.energy import static_power
    from analog.solvers import FastSolver

    fast = FastSolver().solve(circuit, source_V)
    assert fast.residual_A.max().item() <= 1e-12
    power = static_power(circuit, source_V, fast.voltages, input_currents_A=fast.input_currents_A)
    assert abs(power.dissipated_W - power.delivered_W).max().item() <= 1e-9 * power.delivered_W.abs().max().item()
    return fast


def test_diode_spread_moves_the_equilibrium():
    from analog.solvers import FastSolver

    base, _, spread, source_V = _spread_circuits(5, area_sigma=1.0)
    fast = _check_fast_solution(spread, source_V)
    plain = FastSolver().solve(base, source_V)
    # A diode with e times the Is conducts the same current at n Vt (25.9 mV) less.
    assert (fast.all_voltages() - plain.all_voltages()).abs().max().item() > 5e-3


def test_diode_spread_fast_matches_ngspice():
    from analog.solvers import FastSolver
    from tests.conftest import make_solver

    _, _, spread, source_V = _spread_circuits(5, area_sigma=1.0)
    fast = FastSolver().solve(spread, source_V)
    spice = make_solver("ngspice").solve(spread, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-8


def test_block_draws_diode_spread_once():
    block = AnalogBlock(CircuitSpec((8, 4, 3)), seed=2, devices=DeviceConfig(diode_is_sigma=0.5))
    a, b = block.circuit().diode_area, block.circuit().diode_area
    assert a is not None and torch.equal(a, b) and a.shape == (2, 7)
    assert 0.2 < a.log().std().item() < 0.9


def test_emission_coefficient_spread_moves_the_equilibrium():
    from analog import Circuit
    from analog.solvers import FastSolver

    base, only_area, spread, source_V = _spread_circuits(6, area_sigma=0.5, emission_sigma=0.3)
    fast = _check_fast_solution(spread, source_V)
    area_only = FastSolver().solve(only_area, source_V)
    # A conducting diode sits near n Vt ln(I / Is) ~ 0.6 V: a 30% spread of n moves it by ~0.1 V.
    assert (fast.all_voltages() - area_only.all_voltages()).abs().max().item() > 2e-2
    with pytest.raises(ValueError, match="diode_emission"):
        Circuit(base.spec, base.weights, base.biases, diode_emission=torch.full((2, 18), 20.0))


def test_emission_coefficient_spread_fast_matches_ngspice():
    from analog.solvers import FastSolver
    from tests.conftest import make_solver

    _, _, spread, source_V = _spread_circuits(6, area_sigma=0.5, emission_sigma=0.3)
    fast = FastSolver().solve(spread, source_V)
    spice = make_solver("ngspice").solve(spread, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-8


def test_block_draws_emission_spread_once_within_range():
    block = AnalogBlock(CircuitSpec((8, 4, 3)), seed=2, devices=DeviceConfig(diode_n_sigma=0.8))
    a, b = block.circuit().diode_emission, block.circuit().diode_emission
    assert a is not None and torch.equal(a, b) and a.shape == (2, 7)
    assert float(a.min()) >= 0.5 and float(a.max()) <= 10.0
    with pytest.raises(ValueError, match="diode_n_sigma"):
        DeviceConfig(diode_n_sigma=-0.1)
