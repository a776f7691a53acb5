"""``exp`` and ``log`` for numba loops that the compiler vectorises (float64, within a few ulps).

numba compiles ``math.exp`` and ``math.log`` to calls of the C library, one value at a time: a
loop that calls them is not vectorised (numba's vectorised ones need Intel's SVML, absent from
the llvmlite builds installed here). These are written in arithmetic the compiler vectorises:

* ``exp(x) = 2^k p(r)``, ``k = round(x / ln 2)``, ``r = x - k ln 2`` (``|r| <= ln 2 / 2``; ``k ln 2``
  subtracted in two parts, the first exact, after Cody and Waite), ``p`` the Taylor polynomial of
  degree 13 (truncation below 1e-17), ``2^k`` built from its exponent bits in two halves so that
  gradual underflow and overflow to inf come out as the C library's;
* ``log(x) = e ln 2 + 2 atanh(s)``, ``x = 2^e m`` with ``m`` in ``[1/sqrt 2, sqrt 2)``,
  ``s = (m - 1) / (m + 1)`` (``|s| <= 0.172``), ``atanh`` by its series to ``s^21``;
* ``log1p(y)`` by ``log(1 + y) y / ((1 + y) - 1)``, exact in the rounding of ``1 + y``.

And a largest magnitude that keeps a NaN and vectorises: the IEEE bits of ``|x|``, read as
integers, are ordered as ``|x|`` is, with NaN above inf (:func:`magnitude_bits`; a ``max`` over
integers vectorises where a NaN-keeping one over floats does not); :func:`from_bits` reads the
largest back.

Largest error against 120-bit references (tests): 1 ulp for ``exp``, 3 ulp for ``log`` over the
whole double range; NaN, inf, 0 and negative arguments give the C library's values.

numba's disk cache of a kernel that inlines these is keyed on the kernel's own file: after
changing this one, delete the ``*.nbi``/``*.nbc`` files of ``analog/solvers/__pycache__``.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal, localcontext

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["exp", "from_bits", "log", "log1p", "magnitude_bits"]


def _split_ln2() -> tuple[float, float]:
    """``ln 2`` as ``hi + lo``: ``hi`` with its last 20 mantissa bits zero (so ``k hi`` is exact
    for ``|k| < 2^20``), ``lo`` the rest, from a 40-digit ``ln 2``."""
    with localcontext() as ctx:
        ctx.prec = 40
        ln2 = Decimal(2).ln()
        bits = struct.unpack("<q", struct.pack("<d", float(ln2)))[0] & ~((1 << 20) - 1)
        hi = struct.unpack("<d", struct.pack("<q", bits))[0]
        return hi, float(ln2 - Decimal(hi))


_LN2_HI, _LN2_LO = _split_ln2()
_INV_LN2 = 1.0 / math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_TWO54 = 2.0**54
_SMALLEST_NORMAL = 2.2250738585072014e-308
_E = tuple(1.0 / math.factorial(n) for n in range(14))
_A = tuple(1.0 / (2 * n + 1) for n in range(11))


@intrinsic
def _from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _to_bits(typingctx, x):
    """The IEEE bits of the float64 ``x``, as an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


# exp and the bit helpers are inlined by numba itself (in the layer updates' loops: ~15% faster
# than leaving it to LLVM); log and log1p, in the cold sweep only, are left to LLVM, which
# compiles the kernels in a third of the time (~10 s against ~27 s, once per machine).
@njit(cache=True, error_model="numpy", inline="always")
def exp(x):
    """``e^x`` (float64)."""
    x = float(x)
    xc = min(max(x, -800.0), 800.0)  # beyond: 0 or inf by the scaling below; NaN restored at the end
    k = math.floor(xc * _INV_LN2 + 0.5)
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    p = _E[13]
    p = p * r + _E[12]
    p = p * r + _E[11]
    p = p * r + _E[10]
    p = p * r + _E[9]
    p = p * r + _E[8]
    p = p * r + _E[7]
    p = p * r + _E[6]
    p = p * r + _E[5]
    p = p * r + _E[4]
    p = p * r + _E[3]
    p = p * r + _E[2]
    p = p * r + _E[1]
    p = p * r + _E[0]
    ki = int(k)
    half = ki >> 1
    y = p * _from_bits((half + 1023) << 52) * _from_bits((ki - half + 1023) << 52)
    return y if x == x else x


@njit(cache=True, error_model="numpy")
def log(x):
    """``ln x`` (float64): ``-inf`` at 0, NaN below."""
    x = float(x)
    tiny = x < _SMALLEST_NORMAL
    bits = _to_bits(x * _TWO54 if tiny else x)
    e = (bits >> 52) - (1023 + 54 if tiny else 1023)
    m = _from_bits((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)
    high = m > _SQRT2
    m = 0.5 * m if high else m
    e = e + 1 if high else e
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    q = _A[10]
    q = q * z + _A[9]
    q = q * z + _A[8]
    q = q * z + _A[7]
    q = q * z + _A[6]
    q = q * z + _A[5]
    q = q * z + _A[4]
    q = q * z + _A[3]
    q = q * z + _A[2]
    q = q * z + _A[1]
    ef = float(e)
    y = ef * _LN2_HI + (ef * _LN2_LO + 2.0 * s * (q * z + 1.0))
    if x != x or x == math.inf:
        y = x
    elif x == 0.0:
        y = -math.inf
    elif x < 0.0:
        y = math.nan
    return y


@njit(cache=True, error_model="numpy")
def log1p(y):
    """``ln(1 + y)`` (float64), accurate for small ``y``."""
    y = float(y)
    u = 1.0 + y
    d = u - 1.0
    return y if d == 0.0 or d == math.inf else log(u) * (y / d)


@njit(cache=True, error_model="numpy", inline="always")
def magnitude_bits(x):
    """The IEEE bits of ``|x|`` (float64) as an int64: ordered as ``|x|``, NaN above inf."""
    return _to_bits(abs(float(x)))


@njit(cache=True, error_model="numpy", inline="always")
def from_bits(bits):
    """The float64 whose IEEE bits are ``bits`` (e.g. the largest of :func:`magnitude_bits`)."""
    return _from_bits(bits)
