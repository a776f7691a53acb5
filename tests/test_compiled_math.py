"""The vectorisable ``exp``/``log``/``log1p`` of the compiled sweeps against 120-bit references."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

numba = pytest.importorskip("numba")

from analog.solvers import compiled_math as vm  # noqa: E402  (needs numba)

FUNCTIONS = {"exp": (0, mpmath.exp), "log": (1, mpmath.log), "log1p": (2, mpmath.log1p)}


@numba.njit(error_model="numpy")
def _apply(which, x, out):
    for i in range(x.size):
        if which == 0:
            out[i] = vm.exp(x[i])
        elif which == 1:
            out[i] = vm.log(x[i])
        else:
            out[i] = vm.log1p(x[i])


@numba.njit(error_model="numpy")
def _largest(x):
    top = 0
    for i in range(x.size):
        top = max(top, vm.magnitude_bits(x[i]))
    return vm.from_bits(top)


def _run(name: str, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _apply(FUNCTIONS[name][0], x, out)
    return out


def _arguments(name: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    if name == "exp":  # the whole range, the reduction's boundaries and gradual underflow
        parts = [rng.uniform(-745.0, 709.7, 4000), rng.uniform(-2.0, 2.0, 2000), rng.uniform(-1e-9, 1e-9, 200)]
        parts.append(np.arange(-40, 41) * math.log(2.0) / 2)
    elif name == "log":  # every binade, subnormals, and around 1 and sqrt(2)
        parts = [np.exp(rng.uniform(-744.0, 709.0, 4000)), rng.uniform(0.5, 2.0, 2000)]
        parts.append(math.sqrt(2.0) * (1 + rng.uniform(-1e-12, 1e-12, 200)))
    else:
        parts = [rng.uniform(-1.0, 1.0, 3000), 10.0 ** rng.uniform(-300, 300, 2000)]
        parts.append(-(10.0 ** rng.uniform(-300, -1e-4, 500)))
    return np.concatenate(parts)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_within_a_few_ulp_of_a_120_bit_reference(name):
    x = _arguments(name)
    got = _run(name, x)
    mpmath.mp.prec = 120
    reference = np.array([float(FUNCTIONS[name][1](mpmath.mpf(float(v)))) for v in x])
    normal = np.abs(reference) >= np.finfo(np.float64).tiny
    ulps = np.abs(got[normal] - reference[normal]) / np.spacing(np.abs(reference[normal]))
    assert ulps.max() <= {"exp": 1.0, "log": 3.0, "log1p": 3.0}[name]
    # Below the normal range (exp's gradual underflow): within two of the smallest subnormal steps.
    assert np.all(np.abs(got[~normal] - reference[~normal]) <= 2 * np.spacing(0.0))


SPECIAL = {  # (argument, value) pairs
    "exp": [(0.0, 1.0), (-0.0, 1.0), (np.inf, np.inf), (-np.inf, 0.0), (709.79, np.inf), (-745.2, 0.0)],
    "log": [(1.0, 0.0), (0.0, -np.inf), (-0.0, -np.inf), (-1.0, np.nan), (np.inf, np.inf), (-np.inf, np.nan)],
    "log1p": [(0.0, 0.0), (-1.0, -np.inf), (-2.0, np.nan), (np.inf, np.inf), (1e-300, 1e-300)],
}


@pytest.mark.parametrize("name", list(SPECIAL))
def test_special_values_are_the_c_librarys(name):
    x, expected = np.array([*SPECIAL[name], (np.nan, np.nan)]).T
    np.testing.assert_allclose(_run(name, x), expected, rtol=1e-15, atol=0)


def test_the_largest_magnitude_keeps_a_nan_wherever_it_is():
    x = np.array([0.5, -3.0, 2.0, -0.0, 1e-310])
    assert _largest(x) == 3.0
    assert _largest(np.array([0.0, -0.0])) == 0.0
    assert _largest(np.array([1.0, -np.inf, 2.0])) == np.inf
    for where in range(len(x)):
        with_nan = x.copy()
        with_nan[where] = np.nan
        assert math.isnan(_largest(with_nan)), f"a NaN at {where} was lost"
