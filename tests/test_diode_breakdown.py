"""Reverse breakdown (BV, IBV, NBV, TCV) and the instance area in the fast solver, as ngspice 39
computes them (``dioload.c`` breakdown branch, ``diotemp.c`` knee iteration), on datasheet cards:

* the 1N4148 card ``IS=2.52n RS=0.568 N=1.752 CJO=4p M=0.4 TT=20n`` of LTspice's ``standard.dio``
  (mfg OnSemi) with the ``BV=100 IBV=100u`` of the common vendor-library 1N4148 card (VRRM 100 V),
  in its forward region (the breakdown branch is there but never reached);
* the 1N4733 5.1 V Zener of LTspice's ``standard.dio`` (17.2.4, ``lib/cmp/standard.dio``, as
  reprinted without its LTspice-only ``mfg``/``type`` keys, e.g. in the ``tau`` simulator's bundled
  standard models): ``Is=.88f Rs=.21 Cjo=400p M=.55 Bv=5.1 Ibv=49m``, driven into breakdown.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from analog import Circuit, CircuitSpec, ConductanceRange
from analog.diode import NGSPICE_RELTOL, DiodeModel, thermal_voltage
from analog.model_library import load_model_library
from analog.models import ModelFileError, UserModels
from analog.netlist import build_operating_point, netlist_text
from analog.solvers import FastSolver
from analog.solvers.layerwise import LayerwiseSolver
from tests.conftest import make_solver

CARD_1N4148 = ".model 1N4148 D(IS=2.52n RS=0.568 N=1.752 CJO=4p M=0.4 TT=20n BV=100 IBV=100u)"
CARD_1N4733 = ".model 1N4733 D(Is=.88f Rs=.21 Cjo=400p M=.55 Bv=5.1 Ibv=49m)"
CARD_NBV_TCV = ".model DZTC D(Is=1e-14 N=1.3 Rs=1 Bv=5.6 Ibv=5m Nbv=1.8 Tcv=2m)"
"""Not a datasheet card: exercises NBV (not N) and TCV (BV falls by 2 mV/K)."""
TEMPERATURES_C = (-40.0, 27.0, 125.0)
RELTOL = NGSPICE_RELTOL
"""Where diotemp.c's knee iteration stops (the decks' reltol)."""
DV_MAX_V = 1e-8
"""Fast solver vs ngspice. At 5 V nodes ngspice's own convergence test (reltol 1e-9 of |v|) leaves
~5e-9 V; with reltol 1e-13 in both the two agree to 5e-13 V (measured)."""


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    path = tmp_path_factory.mktemp("cards") / "diodes.lib"
    path.write_text("\n".join((CARD_1N4148, CARD_1N4733, CARD_NBV_TCV)) + "\n", encoding="ascii")
    return load_model_library(path)


def _diotemp_knee(diode: DiodeModel, i_s: float) -> float:
    """diotemp.c (ngspice 39, level 1, TLEV 0), written out with floats."""
    vt = thermal_voltage(diode.temperature_C)
    nbv = diode.n if diode.nbv is None else diode.nbv
    bv = diode.bv_V - diode.tcv_V_per_K * (diode.temperature_C - diode.tnom_C)
    cbv = diode.ibv_A
    if cbv < i_s * bv / vt:
        return bv
    xbv = bv - nbv * vt * math.log(1 + cbv / i_s)
    for _ in range(25):
        xbv = bv - nbv * vt * math.log(cbv / i_s + 1 - xbv / vt)
        if abs(i_s * (math.exp((bv - xbv) / (nbv * vt)) - 1 + xbv / vt) - cbv) <= RELTOL * cbv:
            break
    return xbv


def _dioload_current(diode: DiodeModel, vd: float, i_s: float, xbv: float) -> float:
    """dioload.c's three branches in ngspice's order, gmin included."""
    vt = thermal_voltage(diode.temperature_C)
    vte, vtebrk = diode.n * vt, (diode.n if diode.nbv is None else diode.nbv) * vt
    if vd >= -3 * vte:
        i = i_s * (math.exp(vd / vte) - 1)
    elif vd >= -xbv:
        i = -i_s * (1 + (3 * vte / (vd * math.e)) ** 3)
    else:
        i = -i_s * math.exp(-(xbv + vd) / vtebrk)
    return i + diode.gmin_S * vd


DIODES = {
    "1N4733": dict(is_A=0.88e-15, bv_V=5.1, ibv_A=49e-3),
    "1N4148": dict(is_A=2.52e-9, n=1.752, bv_V=100.0, ibv_A=100e-6),
    "nbv-tcv": dict(is_A=1e-14, n=1.3, bv_V=5.6, ibv_A=5e-3, nbv=1.8, tcv_V_per_K=2e-3),
    "low-bv": dict(is_A=1e-9, n=2.0, bv_V=0.5, ibv_A=1e-3),
}


@pytest.mark.parametrize("temperature_C", TEMPERATURES_C)
@pytest.mark.parametrize("name", DIODES)
def test_junction_current_is_dioloads_three_branches(name, temperature_C):
    diode = DiodeModel(**DIODES[name], temperature_C=temperature_C, area=1.7)
    i_s = diode.saturation_current()
    xbv = _diotemp_knee(diode, i_s)
    assert diode.breakdown_voltage() == pytest.approx(xbv, abs=1e-13)
    vd = torch.linspace(-xbv - 0.6, 0.5, 4001)
    vd = torch.cat([vd, torch.tensor([-xbv, -xbv - 1e-9, -xbv + 1e-9, -3 * diode.vte_V])])
    i, g = diode.junction_current(vd.clone())
    ref = torch.tensor([_dioload_current(diode, float(v), i_s, xbv) for v in vd])
    np.testing.assert_allclose(i.numpy(), ref.numpy(), rtol=1e-12, atol=1e-30)
    # The conductance is the current's derivative away from the branch ends.
    h = 1e-7
    ends = torch.tensor([-3 * diode.vte_V, -max(xbv, 3 * diode.vte_V)])
    away = (vd[:, None] - ends).abs().min(1).values > 1e-5
    i_hi, _ = diode.junction_current(vd + h)
    i_lo, _ = diode.junction_current(vd - h)
    rounding = 8 * torch.finfo(torch.float64).eps * (i_hi.abs() + i_lo.abs()) / (2 * h)
    error = (g - (i_hi - i_lo) / (2 * h)).abs()
    assert bool((error <= 1e-5 * g.abs() + rounding)[away].all())


def test_the_knee_puts_ibv_at_minus_bv_as_diotemp_does():
    """diotemp.c matches Is (exp((BV - xbv) / (NBV Vt)) - 1 + xbv / Vt) = IBV, not the current
    dioload.c's breakdown branch carries at -BV: that is IBV - Is (xbv / Vt - 1). Where
    IBV < Is BV / Vt it takes xbv = BV (the 1N4148 at 125 C)."""
    for kw, temperature_C in ((DIODES["1N4733"], 27.0), (DIODES["1N4148"], 27.0), (DIODES["nbv-tcv"], -40.0)):
        diode = DiodeModel(**kw, temperature_C=temperature_C, gmin_S=0.0)
        xbv, i_s, vt = diode.breakdown_voltage(), diode.saturation_current(), thermal_voltage(temperature_C)
        bv = diode.bv_V - diode.tcv_V_per_K * (temperature_C - diode.tnom_C)
        i, _ = diode.junction_current(torch.tensor([-bv]))
        expected = diode.ibv_A - i_s * (xbv / vt - 1)
        assert -float(i) == pytest.approx(expected, rel=2 * RELTOL)
        assert 0.5 < xbv < bv
    hot = DiodeModel(**DIODES["1N4148"], temperature_C=125.0)
    assert hot.breakdown_voltage() == 100.0


def test_per_diode_knees_follow_area_and_emission():
    diode = DiodeModel(**DIODES["1N4733"], temperature_C=85.0)
    area = torch.tensor([[0.5, 1.0, 3.0]])
    emission = torch.tensor([[1.0, 1.2, 0.9]])
    knees = diode.breakdown_voltage(area, emission)
    for j in range(3):
        own = {**DIODES["1N4733"], "n": float(emission[0, j]), "area": float(area[0, j])}
        alone = DiodeModel(**own, temperature_C=85.0)
        assert float(knees[0, j]) == pytest.approx(alone.breakdown_voltage(), abs=1e-12)
        vd = torch.tensor([-5.3, -5.0, -4.0, 0.6])
        got, _ = diode.current(vd.clone(), area[0, j], emission[0, j])
        ref, _ = alone.current(vd.clone())
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["1N4733", "1N4148", "nbv-tcv", "low-bv"])
@pytest.mark.parametrize("rs_ohm", [0.0, 2.0])
def test_cocontent_is_the_integral_of_the_current_through_breakdown(name, rs_ohm):
    diode = DiodeModel(**DIODES[name], rs_ohm=rs_ohm, temperature_C=60.0)
    xbv = diode.breakdown_voltage()
    b = max(xbv, 3 * diode.vte_V)
    stops = [-xbv - 0.8, -b - 0.05, -b - 1e-6, -b, -b + 1e-6, -b + 0.3, -3 * diode.vte_V, 0.0, 0.5]

    # With RS the current's step at the junction's -b is a steep ramp in vd (the junction stays at
    # -b while R I takes up the step): its ends are where the quadrature splits too.
    step, _ = diode.junction_current(torch.tensor([-b, -b - 1e-12]))
    ramp = [-b + diode.rs_ohm * float(i) for i in step]
    phi = diode.cocontent(torch.tensor(stops))
    for lo, hi, phi_lo, phi_hi in zip(stops, stops[1:], phi, phi[1:], strict=False):
        ends = [lo, *sorted(x for x in ramp if lo < x < hi), hi]
        integral = sum(_gauss_legendre(diode, a, c) for a, c in itertools.pairwise(ends))
        # Rounding: of the difference of two co-contents, and of the current (vd - u) / R with RS.
        eps = torch.finfo(torch.float64).eps
        ohmic = abs(hi - lo) * max(abs(lo), abs(hi)) / (diode.rs_ohm or math.inf)
        noise = 8 * eps * (max(abs(phi_lo), abs(phi_hi)) + ohmic)
        assert float(phi_hi - phi_lo) == pytest.approx(integral, rel=1e-10, abs=float(noise) + 1e-24)
    # Continuous through the knee (it changes by what the current carries over 2 pV), and
    # convex (the current rises everywhere, its step included).
    at_knee = diode.cocontent(torch.tensor([-b - 1e-12, -b + 1e-12]))
    steepest, _ = diode.current(torch.tensor([-b - 1e-12]))
    assert float(at_knee[0] - at_knee[1]) <= 2.01e-12 * float(-steepest) + 8 * eps * float(at_knee.abs().max())
    grid = torch.linspace(-xbv - 0.8, 0.5, 20001)
    values = diode.cocontent(grid.clone())
    second = values[2:] - 2 * values[1:-1] + values[:-2]
    assert float(second.min()) >= -1e-12 * float(values.abs().max())
    i, _ = diode.current(grid.clone())
    assert bool((i[1:] >= i[:-1]).all())


def _gauss_legendre(diode: DiodeModel, lo: float, hi: float, pieces: int = 64, order: int = 32) -> float:
    """``integral_lo^hi I(v) dv`` by composite Gauss-Legendre quadrature (the current is smooth
    between the ends given)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, pieces + 1)
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    nodes = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    current, _ = diode.current(torch.from_numpy(nodes))
    return float((current.numpy().reshape(pieces, order) * w).sum(1) @ half)


def _zener_block(user: UserModels, temperature_C: float) -> tuple[Circuit, torch.Tensor]:
    """One Zener from each node to a 0 V rail (cathode at the rail); inputs of -10..-20 V through
    1e-4..1e-2 S push every node below -BV, where the reverse-biased Zener clamps it."""
    spec = CircuitSpec((8, 6, 4), input_pairs=False, input_gain_V=20.0, bias_V=None, diode_up_V=0.0,
                       diode_down_V=None, diode=user.diode(temperature_C), user_models=user,
                       conductance=ConductanceRange(1e-4, 1e-2))  # fmt: skip
    x = -0.5 - 0.5 * torch.rand(6, 8, generator=torch.Generator().manual_seed(5))
    return Circuit.random(spec, seed=5), spec.source_voltages(x)


@pytest.mark.parametrize("temperature_C", TEMPERATURES_C)
def test_fast_and_layerwise_agree_in_breakdown(library, temperature_C):
    circuit, source_V = _zener_block(UserModels(library, diode_model="1N4733"), temperature_C)
    newton = FastSolver().solve(circuit, source_V)
    sweeps = LayerwiseSolver().solve(circuit, source_V)
    assert (newton.all_voltages() - sweeps.all_voltages()).abs().max().item() <= 1e-10
    assert newton.residual_A.max().item() < 1e-12 and sweeps.residual_A.max().item() < 1e-12


@pytest.mark.parametrize("solver", ["fast", "fast-layerwise"])
@pytest.mark.parametrize("temperature_C", TEMPERATURES_C)
@pytest.mark.parametrize("card", ["1N4733", "DZTC"])
def test_a_zener_clamps_at_its_breakdown_voltage_as_in_ngspice(library, card, temperature_C, solver):
    user = UserModels(library, diode_model=card)
    circuit, source_V = _zener_block(user, temperature_C)
    fast = make_solver(solver).solve(circuit, source_V)
    spice = make_solver("ngspice").solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= DV_MAX_V
    # Breakdown current flows: every node sits just past -BV(T), far above where the inputs pull it.
    diode = circuit.spec.diode
    bv = diode.bv_V - diode.tcv_V_per_K * (temperature_C - diode.tnom_C)
    v = fast.all_voltages()
    assert float(v.max()) < -0.9 * bv and float(v.min()) > -1.2 * bv
    i, _ = diode.current(v.clone())
    assert float(i.max()) < -1e-4, "every Zener carries more than 0.1 mA in breakdown"


@pytest.mark.parametrize("solver", ["fast", "fast-layerwise"])
@pytest.mark.parametrize("temperature_C", TEMPERATURES_C)
def test_the_1n4148_card_with_breakdown_equals_ngspice_forward(library, temperature_C, solver):
    user = UserModels(library, diode_model="1N4148")
    diode = user.diode(temperature_C)
    assert (diode.bv_V, diode.ibv_A, diode.rs_ohm) == pytest.approx((100.0, 100e-6, 0.568), rel=1e-15)
    spec = CircuitSpec((8, 6, 4), input_gain_V=4.0, diode=diode, user_models=user,
                       conductance=ConductanceRange(1e-5, 1e-2))  # fmt: skip
    circuit = Circuit.random(spec, seed=5)
    source_V = spec.source_voltages(2 * torch.rand(8, 8, generator=torch.Generator().manual_seed(5)) - 1)
    fast = make_solver(solver).solve(circuit, source_V)
    spice = make_solver("ngspice").solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= DV_MAX_V
    assert float(fast.all_voltages().abs().max()) > 0.3, "forward-biased diodes clamp some nodes"


@pytest.mark.parametrize("solver", ["fast", "fast-layerwise"])
def test_breakdown_with_area_and_diode_spreads_equals_ngspice(solver):
    """The built-in card with BV (NBV following each diode's own N), an instance area of 2.5 times
    the per-diode spread factors, rails 8 V apart so that some Zeners break down."""
    diode = DiodeModel(is_A=1e-14, n=1.2, bv_V=4.0, ibv_A=2e-3, rs_ohm=3.0, area=2.5, temperature_C=85.0)
    spec = CircuitSpec((6, 5, 3), input_gain_V=12.0, bias_V=2.0, diode_up_V=4.0, diode_down_V=-4.0, diode=diode,
                       conductance=ConductanceRange(1e-4, 1e-2))  # fmt: skip
    base = Circuit.random(spec, seed=7)
    gen = torch.Generator().manual_seed(8)
    area = torch.exp(0.4 * torch.randn(2, 8, generator=gen))
    emission = 1 + 0.1 * torch.rand(2, 8, generator=gen)
    circuit = Circuit(spec, base.weights, base.biases, diode_area=area, diode_emission=emission)
    source_V = spec.source_voltages(2 * torch.rand(6, 6, generator=gen) - 1)
    fast = make_solver(solver).solve(circuit, source_V)
    spice = make_solver("ngspice").solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= DV_MAX_V
    v = fast.all_voltages()
    knees = diode.breakdown_voltage(area, emission)
    beyond = (v < 4.0 - knees[0]) | (v > -4.0 + knees[1])
    assert bool(beyond.any()), "some diodes are in breakdown"
    text = netlist_text(build_operating_point(circuit, source_V[0]))
    assert "BV=4.0 EG=1.11 IBV=0.002 IS=1e-14 N=" in text and "NBV" not in text
    assert f"DUP_L1_N0 L1_N0 RAIL_UP DNEURON_UP_L1_N0 area={2.5 * float(area[0, 0])!r}" in text


def test_card_and_config_keys(tmp_path, library):
    from cosim.config import ConfigError, parse_config

    lib = tmp_path / "z.lib"
    lib.write_text(CARD_1N4733 + "\n.model DAREA D(IS=1e-14 BV=6 AREA=2)\n", encoding="ascii")
    block = {"type": "analog", "sizes": [4, 2], "diode_bv_V": 6.2, "diode_ibv_A": 5e-3, "diode_area": 3.0}
    spec = parse_config({"model": {"blocks": [block]}}).model.blocks[0].circuit_spec()
    assert (spec.diode.bv_V, spec.diode.ibv_A, spec.diode.area) == (6.2, 5e-3, 3.0)
    with pytest.raises(ConfigError, match="diode_bv_V"):
        parse_config({"model": {"blocks": [{**block, "diode_bv_V": -1.0}]}})
    card = {"type": "analog", "sizes": [4, 2], "model_file": str(lib), "diode_model": "1N4733"}
    with pytest.raises(ConfigError, match="diode_model replaces diode_bv_V"):
        parse_config({"model": {"blocks": [{**card, "diode_bv_V": 6.0}]}})
    spec = parse_config({"model": {"blocks": [{**card, "diode_area": 2.0}]}}).model.blocks[0].circuit_spec()
    assert spec.diode.area == 2.0 and spec.diode.bv_V == 5.1 and spec.diode.ibv_A == 49e-3
    assert spec.user_models.fast_refusal() is None
    circuit = Circuit.random(spec)
    assert "area=2.0" in netlist_text(build_operating_point(circuit, torch.zeros(8))).replace(" ", "")
    with pytest.raises(ConfigError, match=r"AREA=2.*diode_area"):
        parse_config({"model": {"blocks": [{**card, "diode_model": "DAREA", "diode_area": 2.0}]}})
    assert UserModels(load_model_library(lib), diode_model="DAREA").diode().area == 2.0
    with pytest.raises(ModelFileError, match="bv_V"):
        lib.write_text(".model DBAD D(IS=1e-14 BV=0)\n", encoding="ascii")
        UserModels(load_model_library(lib), diode_model="DBAD").diode()


def test_breakdown_is_an_evaluation_condition():
    from cosim.conditions import ANALOG_KEYS

    assert {"diode_bv_V", "diode_ibv_A"} <= set(ANALOG_KEYS)


RUN = """
name = "digits-1n4148"
seed = 0
[data]
dataset = "digits"
train_subset = 640
test_subset = 64
[[model.blocks]]
type = "analog"
sizes = [64, 32, 10]
input_gain_V = 6.0
model_file = "{library}"
diode_model = "1N4148"
[[model.blocks]]
type = "scale"
factor = 30.0
[train]
epochs = 2
batch_size = 32
optimizer = "adam"
lr = 0.01
schedule = "none"
beta = 0.1
ngspice_eval_samples = 32
"""


def test_a_1n4148_card_with_breakdown_trains_exports_resumes_and_gradchecks(tmp_path, capsys):
    """The whole workflow on the card with BV/IBV, in the fast solver, validated by ngspice."""
    import json

    from cosim.cli import main

    library = tmp_path / "diodes.lib"
    library.write_text(CARD_1N4148 + "\n", encoding="ascii")
    config = tmp_path / "run.toml"
    config.write_text(RUN.format(library=library), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ngspice_samples"] == 32
    assert summary["ngspice_test_accuracy"] == summary["fast_test_accuracy_same_samples"]
    assert summary["test_accuracy"] > 0.5, "two epochs on digits learn"
    assert main(["netlist", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "net")]) == 0
    deck = (tmp_path / "net" / "analog0.cir").read_text()
    assert ".model 1N4148 D (IS=2.52n RS=0.568 N=1.752 CJO=4p M=0.4 TT=20n BV=100 IBV=100u)" in deck
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
    capsys.readouterr()
    assert main(["gradcheck", "--config", str(config), "--betas", "0.1,0.05", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    centered = [r for r in report["results"] if r["method"] == "ep-centered" and r["param"] == "all"]
    assert min(r["cosine"] for r in centered) > 1 - 1e-9


def test_the_ideal_diode_solver_clamps_at_an_ideal_zener(library):
    """fast-ideal's box: a node pushed past a rail the wrong way stops where its Zener carries
    g_max * 1 V, xbv + NBV Vt ln(1 + g_max / Is) below the rail; the Shockley solution is near."""
    from analog.solvers.ideal import IdealDiodeSolver

    circuit, source_V = _zener_block(UserModels(library, diode_model="1N4733"), 27.0)
    ideal = IdealDiodeSolver().solve(circuit, source_V).all_voltages()
    diode = circuit.spec.diode
    v_z = diode.breakdown_voltage() + diode.vte_brk_V * math.log1p(1e-2 / diode.saturation_current())
    assert float(ideal.min()) >= -v_z - 1e-12 and float(ideal.max()) < -4.5
    exact = FastSolver().solve(circuit, source_V).all_voltages()
    assert (ideal - exact).abs().max().item() < 0.3
