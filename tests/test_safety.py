"""User text never reaches ngspice's control language; ngspice failures, crashes and hangs end in a
clear error or a retried batch; fuzzed configs and model files never escape as tracebacks."""

from __future__ import annotations

import os
import re
import signal
import string
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analog.circuit import Circuit, CircuitSpec
from analog.model_library import load_model_library
from analog.models import ModelFileError, UserModels
from analog.solvers import FastSolver
from analog.solvers.base import SolverError
from cosim.cli import main
from cosim.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "netlists" / "user_models.lib"

CONFIG = """
[[model.blocks]]
type = "analog"
sizes = [4, 3, 2]
model_file = "{model_file}"
{extra}

[solver]
name = "ngspice"

[solve]
samples = 2
"""


def _config(tmp_path: Path, model_file: Path, extra: str = 'diode_model = "DFAST"') -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(model_file=model_file, extra=extra), encoding="utf-8")
    return path


def test_control_block_that_would_shell_out_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    library = tmp_path / "evil.lib"
    library.write_text(f".model DFAST D (IS=1e-14)\n.control\nshell touch {marker}\n.endc\n", encoding="utf-8")
    code = main(["solve", "--config", str(_config(tmp_path, library)), "--solver", "ngspice"])
    err = capsys.readouterr().err
    assert code == 2 and "control blocks" in err and "Traceback" not in err
    assert not marker.exists()
    # Hidden variants: a continuation line, a comment, upper case, backquotes.
    for text in (
        "* .CONTROL\n.model DFAST D (IS=1e-14)\n",
        ".model DFAST D (IS=1e-14\n+ N=1) $ `touch x`\n",
        ".subckt N n\nR1 n 0 1k\n.ends\n.endc\n",
        ".subckt N n\nX1 n shell\n.ends\n",
    ):
        library.write_text(text, encoding="utf-8")
        with pytest.raises(ModelFileError):
            load_model_library(library)
    assert not marker.exists()


def test_includes_stay_inside_the_model_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "outside.lib").write_text(".model DOUT D (IS=1e-14)\n")
    (folder / "inside.lib").write_text(".model DIN D (IS=2e-14 N=1.1)\n")
    main_lib = folder / "main.lib"
    main_lib.write_text(".include inside.lib\n")
    library = load_model_library(main_lib)
    assert library.model("DIN") is not None and ".include" not in library.spice()
    for target in ("../outside.lib", str(tmp_path / "outside.lib"), "link.lib"):
        if target == "link.lib":
            (folder / "link.lib").symlink_to(tmp_path / "outside.lib")
        main_lib.write_text(f".include {target}\n")
        with pytest.raises(ModelFileError, match="only files inside the model file's folder"):
            load_model_library(main_lib)
    main_lib.write_text(".include main.lib\n")
    with pytest.raises(ModelFileError, match="include cycle"):
        load_model_library(main_lib)


def test_example_library_in_ngspice_and_fast_refusals(ngspice_solver):
    library = load_model_library(EXAMPLE)
    dfast = UserModels(library, diode_model="DFAST")
    spec = CircuitSpec(
        (6, 4, 3), diode_up_V=0.3, diode_down_V=-0.3, input_gain_V=5.0, diode=dfast.diode(), user_models=dfast
    )
    circuit = Circuit.random(spec, seed=3)
    source_V = spec.source_voltages(torch.rand(4, 6, generator=torch.Generator().manual_seed(4)))
    fast = FastSolver().solve(circuit, source_V)
    spice = ngspice_solver.solve(circuit, source_V)
    assert (fast.all_voltages() - spice.all_voltages()).abs().max().item() <= 1e-9

    # RS (solved per junction), CJO (no DC effect) and BV/IBV are the fast solver's now; IKF is not.
    real = UserModels(library, diode_model="DREAL")
    spec_real = CircuitSpec((6, 4, 3), input_gain_V=5.0, diode=real.diode(), user_models=real)
    with_rs = Circuit(spec_real, circuit.weights, circuit.biases)
    fast_rs = FastSolver().solve(with_rs, source_V)
    assert (fast_rs.all_voltages() - ngspice_solver.solve(with_rs, source_V).all_voltages()).abs().max() <= 1e-9
    breakdown = UserModels(library, diode_model="DBREAK")
    spec_bv = CircuitSpec((6, 4, 3), input_gain_V=5.0, diode=breakdown.diode(), user_models=breakdown)
    with_bv = Circuit(spec_bv, circuit.weights, circuit.biases)
    fast_bv = FastSolver().solve(with_bv, source_V)
    assert (fast_bv.all_voltages() - ngspice_solver.solve(with_bv, source_V).all_voltages()).abs().max() <= 1e-9
    knee = UserModels(library, diode_model="DKNEE")
    with pytest.raises(SolverError, match=r"diode model 'DKNEE'.*IKF"):
        spec_knee = CircuitSpec((6, 4, 3), user_models=knee)
        FastSolver().solve(Circuit(spec_knee, circuit.weights, circuit.biases), source_V)
    neuron = UserModels(library, neuron_subckt="NEURON_CLAMP")
    clamp = Circuit(CircuitSpec((6, 4, 3), input_gain_V=5.0, user_models=neuron), circuit.weights, circuit.biases)
    with pytest.raises(SolverError, match="neuron subcircuit 'NEURON_CLAMP'"):
        FastSolver().solve(clamp, source_V)
    # The same clamp built from a subcircuit (plus a 10 Mohm leak) as ngspice solves it.
    clamped = ngspice_solver.solve(clamp, source_V)
    assert (clamped.all_voltages() - spice.all_voltages()).abs().max().item() < 1e-3


def test_convergence_failure_names_block_sample_and_retries(tmp_path, ngspice_solver):
    from cosim.block import AnalogBlock

    library = tmp_path / "bad.lib"
    library.write_text(".subckt LOOP n\nV1 n 0 DC 1\nV2 n 0 DC 2\n.ends\n")  # a voltage-source loop
    spec = CircuitSpec((2, 2), user_models=UserModels(load_model_library(library), neuron_subckt="LOOP"))
    block = AnalogBlock(spec, solver=ngspice_solver, name="analog7")
    with pytest.raises(SolverError) as info:
        block(torch.zeros(3, 2))
    message = str(info.value)
    assert "analog block analog7" in message and "sample 0" in message
    for rung in ("gmin stepping", "source stepping", "relaxed tolerances", "one .op per sample"):
        assert rung in message


def test_hung_worker_is_killed_and_the_batch_retried():
    from analog.solvers.ngspice import NgspiceSolver

    spec = CircuitSpec((4, 3, 2))
    circuit = Circuit.random(spec, seed=2)
    source_V = spec.source_voltages(torch.rand(5, 4, generator=torch.Generator().manual_seed(2)))
    with NgspiceSolver(timeout_s=4.0) as solver:
        reference = solver.solve(circuit, source_V)
        (pid,) = solver.worker_pids()
        os.kill(pid, signal.SIGSTOP)  # the worker hangs: alive, never answers
        try:
            again = solver.solve(circuit, source_V)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert pid not in solver.worker_pids()
    torch.testing.assert_close(again.all_voltages(), reference.all_voltages(), rtol=0, atol=1e-12)


def test_nonfinite_inputs_and_gradients_are_named():
    spec = CircuitSpec((3, 2))
    circuit = Circuit.random(spec)
    v = spec.source_voltages(torch.rand(4, 3))
    v[2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"NaN/inf in samples \[2\]"):
        FastSolver().solve(circuit, v)
    w = circuit.weights[0].clone()
    w[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weights\[0\]: contains NaN"):
        Circuit(spec, (w,), circuit.biases)
    from cosim.block import AnalogBlock

    block = AnalogBlock(spec, name="analog3")
    out = block(torch.rand(2, 3))
    with pytest.raises(FloatingPointError, match=r"analog3.*NaN/inf"):
        (out * float("nan")).sum().backward()


# ---------------------------------------------------------------------------------------------
# Fuzzing.

FRAGMENTS = [
    ".model DX D (IS=1e-14 N=1.05)",
    ".model DX D IS=1e-14",
    ".model 9X D (IS=1)",
    ".model DY Q (IS=1)",
    ".subckt NRN n",
    ".subckt NRN n m params: g=1",
    ".ends",
    ".ends NRN",
    "R1 n 0 1k",
    "R2 n 0 {g*2}",
    "D1 n 0 DX",
    "V1 n 0 DC 0.3",
    "V2 n 0 SIN(0 1 1k)",
    "E1 a 0 n 0 2",
    "F1 n 0 V1 0.5",
    "B1 n 0 I={v(n)*2}",
    "X1 n NRN",
    "+ N=2",
    ".control",
    ".endc",
    "shell rm -rf /",
    "`echo hi`",
    ".include other.lib",
    ".include ../../etc/passwd",
    ".lib lib.lib sect",
    ".options reltol=1",
    ".tran 1n 1u",
    ".param a=1",
    "* comment",
    "; comment",
    "R3 n 0 1k ; trailing",
    "Rbad n 0 1kk",
    "Q1 a b c QX",
    "X2 n NOPE",
    "",
    ".end",
    ".exec",
    "R4 n$ 0 1",
    ".MODEL DZ d(is=2e-14)",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(string.printable, max_size=40)), max_size=12))
def test_fuzzed_model_files_are_validated_or_refused(lines):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.lib"
        (Path(folder) / "other.lib").write_text(".model DO D (IS=1e-14)\n")
        path.write_text("\n".join(lines), encoding="ascii", errors="replace")
        try:
            library = load_model_library(path)
        except ModelFileError as exc:
            assert str(exc).startswith("model file ")
            return
    text = library.spice()
    assert not re.search(r"\.control|\.endc|\bshell\b|`|\.include|\.lib\b|\.options|\.tran|\.param", text, re.I)
    for line in text.splitlines()[1:]:
        assert re.match(r"(\.model |\.subckt |\.ends |[RCLDVIEFGHBX][A-Za-z0-9_]* )", line, re.I), line


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 300), max_size=5),
)
_KEYS = [
    "sizes",
    "input_pairs",
    "input_gain_V",
    "bias_V",
    "diode_up_V",
    "diode_down_V",
    "amplifier_gains",
    "g_min_S",
    "g_max_S",
    "diode_is_A",
    "diode_n",
    "temperature_C",
    "model_file",
    "diode_model",
    "neuron_subckt",
    "typo_key",
]


@settings(max_examples=200, deadline=None)
@given(block=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6), seed=_VALUES, lr=_VALUES)
def test_fuzzed_configs_are_validated_or_refused(block, seed, lr):
    data = {"seed": seed, "model": {"blocks": [{"type": "analog", "sizes": [4, 2], **block}]}, "train": {"lr": lr}}
    try:
        config = parse_config(data, "<fuzz>")
    except ConfigError as exc:
        assert str(exc).startswith("invalid configuration <fuzz>:")
        return
    # A configuration that validates builds its circuit: the configuration and the library agree.
    config.model.blocks[0].circuit_spec()
