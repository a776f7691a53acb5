"""Compiled sweeps of the layer-wise solver (numba): fewer, larger operations per sweep.

In eager torch a layer update of :class:`~analog.solvers.layerwise.LayerwiseSolver` is ~30 tensor
operations, each a pass over ``[B, n_l]`` plus microseconds of dispatch. Two compiled forms
replace them on the CPU, for nominal diodes (no per-diode spreads, breakdown or series
resistance: those blocks run eagerly):

* **Small batches** (``B x free nodes <= MAX_VALUES``), where dispatch is nearly all of the time:
  one call per sweep, sample by sample and node by node. Each layer's drive ``b`` of (2) from the
  layers around it, then each node's KCL solved by the scalar form of the eager update
  (:func:`node`: one Newton step from where the node was; a restart from Lambert's W (5) when
  that step is too long to be a contraction; safeguarded Newton in the rails' bracket, with the
  log form (4), when one step is not accurate enough), over-relaxed by ``omega``. The cold first
  sweep starts from the eager solver's forward guess (:func:`~analog.solvers.newton.initial_guess`)
  and puts every node at (5) of its drive.
* **Larger batches**: each layer update is torch's drive product and vectorised ``exp2`` of the
  junction voltages (:func:`_exponents`) and one call (:func:`_update`) that takes a Newton step
  at every node in a branch-free loop the compiler vectorises, solves the few nodes whose step is
  too long or not accurate enough by :func:`node`, and over-relaxes. The cold sweep's starts
  (the forward guess, (5)) stay in torch, whose ``log`` is vectorised.

The stopping rule, tolerance and over-relaxation are the eager solver's (it drives these calls),
each node is solved to the same inner tolerance, and the results agree with the eager sweeps to
rounding. The diode is :meth:`analog.diode.DiodeModel.junction_current`'s: each junction on its
forward branch above ``-3 n Vt`` and on SPICE3's smooth reverse branch below, ``gmin`` across it.
Kernels use IEEE arithmetic (``error_model="numpy"``: a division by zero gives inf or NaN, as in
torch, and a NaN node is reported as non-finite), which also lets the loops vectorise.

numba has no vectorised ``exp`` here (no SVML): the scalar path wins only while dispatch
dominates (:data:`MAX_VALUES`). Compiling takes seconds once per dtype (numba caches it on disk
where it can write); where numba fails the eager sweeps run instead and a warning says why, once.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from analog.diode import LOG2_E

_E3 = math.exp(-3.0)

__all__ = ["MAX_VALUES", "CompiledSweeps", "compiled"]

MAX_VALUES = 1024
"""Largest ``B x free nodes`` for the whole-sweep kernel (larger: the vectorised updates). Its time
over theirs (trained, 1 thread) crosses 1 at 1,000-1,300 values: 784-100-10 0.61 / 0.81 / 1.23 at
B = 4 / 8 / 16, 784-256-10 0.96 / 1.33 at B = 4 / 8, 784-64-64-64-10 0.86 / 1.24 at B = 4 / 8,
64-32-10 0.45 / 0.79 / 1.18 at B = 4 / 16 / 32; theirs is 0.40-0.86 of the eager sweeps' (B 4-64)."""


try:
    from numba import njit
except ImportError as exc:  # a declared dependency; without it the eager sweeps run
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
    _sweep = _residual = _exponents = _update = _layer_residual = None
else:
    _IMPORT_ERROR = None

if _IMPORT_ERROR is None:

    @njit(cache=True, error_model="numpy", inline="always")
    def junction(vd, vte, i_s, gmin):
        if vd >= -3.0 * vte:
            e = math.exp(vd / vte)
            return i_s * (e - 1.0) + gmin * vd, i_s * e / vte + gmin
        r = (3.0 * vte / math.e) / vd
        arg = r * r * r
        return -i_s * (1.0 + arg) + gmin * vd, 3.0 * i_s * arg / vd + gmin

    @njit(cache=True, error_model="numpy", inline="always")
    def diodes(x, s, dp, has_up, has_down):
        """u-space current leaving a node through its diodes, and its conductance."""
        v = s * x
        f = 0.0
        g = 0.0
        if has_up:
            i, gj = junction(v - dp[0], dp[2], dp[3], dp[4])
            f += i
            g += gj
        if has_down:
            i, gj = junction(dp[1] - v, dp[2], dp[3], dp[4])
            f -= i
            g += gj
        return f / s, g

    @njit(cache=True, error_model="numpy", inline="always")
    def lambert(b, d, s, dp, has_up, has_down):
        """(5) of :func:`analog.solvers.layer_nodes.cold_start` for one node."""
        up, down, vte, i_s = dp[0], dp[1], dp[2], dp[3]
        a = b / d * s
        if has_up and has_down:
            past = a - 0.5 * (up + down)
            sigma = 1.0 if past > 0.0 else (-1.0 if past < 0.0 else 0.0)
            t = abs(past) - 0.5 * (up - down)
        elif has_up:
            sigma = 1.0
            t = a - up
        else:
            sigma = -1.0
            t = down - a
        q = i_s / (d * vte)
        log_x = max(t / vte + math.log(q) + q, -60.0)
        w = log_x if log_x > 20.0 else math.log1p(math.exp(log_x))  # torch's softplus
        for _ in range(2):  # W_NEWTON
            w = w - (w + math.log(w) - log_x) * w / (w + 1.0)
        return (a - sigma * (w * vte - i_s / d)) / s

    @njit(cache=True, error_model="numpy")
    def node(x0, b, d, lp, dp, has_up, has_down, tol_u, cold, max_newton):
        """Solve (2) for one node from ``x0`` (``cold``: from (5)); ``lp``: ``(s, lo, hi, curvature)``."""
        s, curvature = lp[0], lp[3]
        if not (has_up or has_down):
            return b / d
        x = lambert(b, d, s, dp, has_up, has_down) if cold else x0
        f, g = diodes(x, s, dp, has_up, has_down)
        delta = (b - f - d * x) / (d + g)
        if abs(delta) * curvature > 0.05 and not cold:
            x = lambert(b, d, s, dp, has_up, has_down)
            f, g = diodes(x, s, dp, has_up, has_down)
            delta = (b - f - d * x) / (d + g)
        if abs(delta) * curvature <= 0.05 and curvature * delta * delta <= tol_u:
            return x + delta
        # The bracket of the eager solver's _bracketed: between a = b / D and the rails.
        a = b / d
        lo, hi = min(a, lp[1]), max(a, lp[2])
        for k in range(max_newton):
            if k > 0:
                f, g = diodes(x, s, dp, has_up, has_down)
            r = b - d * x
            h = f - r
            linear = h / (d + g)
            step = abs(linear)
            ratio = f / r
            if ratio > 1.0:  # (4), the longer of the two steps past the root on the diode's side
                log_step = abs(math.log(ratio) / (g / f + d / r))
                if log_step > step:
                    step = log_step
            newton = x - math.copysign(step, linear)
            if h > 0.0:
                hi = min(hi, x)
            else:
                lo = max(lo, x)
            inside = lo <= newton <= hi
            x_new = newton if inside else 0.5 * (lo + hi)
            moved = abs(x_new - x)
            x = x_new
            if inside and curvature * moved * moved <= tol_u:
                break
        return x

    @njit(cache=True, error_model="numpy", inline="always")
    def upstream(u, smp, k, const, w, w_off, offsets, out):
        """``c_l`` plus the layer before's current, of layer ``k`` (0-based), sample ``smp``, into ``out[:n_k]``."""
        o0, n = offsets[k], offsets[k + 1] - offsets[k]
        for i in range(n):
            out[i] = const[smp, o0 + i]
        if k > 0:
            p0, base = offsets[k - 1], w_off[k - 1]
            for j in range(o0 - p0):
                uj = u[smp, p0 + j]
                row = base + j * n
                for i in range(n):
                    out[i] += uj * w[row + i]

    @njit(cache=True, error_model="numpy")
    def drive(u, smp, k, const, w, w_off, offsets, out):
        """``b`` of (2) for layer ``k`` (0-based) of sample ``smp`` into ``out[:n_k]``."""
        upstream(u, smp, k, const, w, w_off, offsets, out)
        o1 = offsets[k + 1]
        if k < offsets.shape[0] - 2:
            nn, base = offsets[k + 2] - o1, w_off[k]
            for i in range(o1 - offsets[k]):
                acc = 0.0
                row = base + i * nn
                for j in range(nn):
                    acc += w[row + j] * u[smp, o1 + j]
                out[i] += acc

    @njit(cache=True, error_model="numpy")
    def guess(u, smp, const, diag, w, w_off, offsets, lp, dp, has_up, has_down, work):
        """:func:`~analog.solvers.newton.initial_guess` for sample ``smp`` (nominal diodes): a
        forward pass, each layer from the one before alone, each node where its diode alone
        carries what the linear network pushes past the rail."""
        depth = offsets.shape[0] - 1
        up, down, vte, i_s = dp[0], dp[1], dp[2], dp[3]
        for k in range(depth):
            o0, n = offsets[k], offsets[k + 1] - offsets[k]
            upstream(u, smp, k, const, w, w_off, offsets, work)
            s = lp[k, 0]
            for i in range(n):
                c, d = work[i], diag[o0 + i]
                v = c / d * s
                if has_up:
                    excess = max(s * c - d * up, 0.0)
                    v = min(v, up + vte * math.log1p(excess / i_s))
                if has_down:
                    excess = max(d * down - s * c, 0.0)
                    v = max(v, down - vte * math.log1p(excess / i_s))
                u[smp, o0 + i] = v / s

    @njit(cache=True, error_model="numpy")
    def _sweep(
        u, const, diag, w, w_off, offsets, lp, dp, has_up, has_down, omega, inner_tol, cold, max_newton, changes
    ):
        """One sweep over the layers of every sample, in place on ``u`` ``[B, N]`` (u-space);
        ``changes[k]``: layer ``k``'s largest move in volts (``cold``: since the forward guess)."""
        depth = offsets.shape[0] - 1
        width = 0
        for k in range(depth):
            width = max(width, offsets[k + 1] - offsets[k])
            changes[k] = 0.0
        b = np.empty(width)
        start = np.empty(offsets[depth])
        for smp in range(u.shape[0]):
            if cold:
                guess(u, smp, const, diag, w, w_off, offsets, lp, dp, has_up, has_down, b)
                for i in range(offsets[depth]):
                    start[i] = u[smp, i]
            for k in range(depth):
                o0, n = offsets[k], offsets[k + 1] - offsets[k]
                drive(u, smp, k, const, w, w_off, offsets, b)
                s = lp[k, 0]
                tol_u = inner_tol / s
                change = changes[k]
                for i in range(n):
                    x0 = u[smp, o0 + i]
                    x = node(x0, b[i], diag[o0 + i], lp[k], dp, has_up, has_down, tol_u, cold, max_newton)
                    if omega != 1.0:
                        x = x0 + omega * (x - x0)
                    u[smp, o0 + i] = x
                    moved = abs(x - (start[o0 + i] if cold else x0)) * s
                    if not moved <= change:  # keeps a NaN
                        change = moved
                changes[k] = change

    @njit(cache=True, error_model="numpy")
    def _exponents(x, s, dp, has_up, has_down, e):
        """``e[0]``, ``e[1]``: the up and down junctions' forward exponents in log2 units,
        ``max(vd, -3 n Vt) log2(e) / (n Vt)``, for ``exp2`` (torch's vectorised one) to take."""
        up, down, vte = dp[0], dp[1], dp[2]
        c = LOG2_E / vte
        knee = -3.0 * vte
        for smp in range(x.shape[0]):
            for i in range(x.shape[1]):
                v = s * x[smp, i]
                e[0, smp, i] = max(v - up, knee) * c if has_up else 0.0
                e[1, smp, i] = max(down - v, knee) * c if has_down else 0.0

    @njit(cache=True, error_model="numpy", inline="always")
    def _branch_free(vd, evd, dp):
        """:meth:`DiodeModel.junction_current`'s branch-free value and slope from ``evd`` (the
        exponential at the clamped voltage): vectorisable."""
        vte, i_s, gmin = dp[2], dp[3], dp[4]
        k = 3.0 * vte / math.e
        ratio = k / min(vd, -3.0 * vte)
        arg = ratio * ratio * ratio
        i = (evd - arg - (1.0 + _E3)) * i_s + gmin * vd
        g = (arg * ratio * (3.0 / k) + (evd - _E3) / vte) * i_s + gmin
        return i, g

    @njit(cache=True, error_model="numpy")
    def _update(x, ref, b, d, e, lp, dp, has_up, has_down, omega, inner_tol, max_newton, new, flag):
        """One layer update of a whole batch in place on ``x`` ``[B, n]``: a Newton step on (2)
        for every node (vectorised, from the exponentials ``e`` of :func:`_exponents`); the node
        solve of :func:`node` for the few whose step is too long to be a contraction or too
        inaccurate; over-relaxation. The largest move from ``ref`` (V)."""
        s, curvature = lp[0], lp[3]
        tol_u = inner_tol / s
        up, down = dp[0], dp[1]
        inv_s = 1.0 / s
        rows, n = x.shape
        for smp in range(rows):
            for i in range(n):
                x0 = x[smp, i]
                v = s * x0
                f = 0.0
                g = 0.0
                if has_up:
                    i_u, g_u = _branch_free(v - up, e[0, smp, i], dp)
                    f += i_u
                    g += g_u
                if has_down:
                    i_d, g_d = _branch_free(down - v, e[1, smp, i], dp)
                    f -= i_d
                    g += g_d
                delta = (b[smp, i] - f * inv_s - d[i] * x0) / (d[i] + g)
                step = abs(delta)
                new[smp, i] = x0 + delta
                # Not a contraction, not accurate enough, or not finite (an overflowed diode).
                flag[smp, i] = not ((step * curvature <= 0.05) & (curvature * step * step <= tol_u))
        for smp in range(rows):
            for i in range(n):
                if flag[smp, i]:
                    new[smp, i] = node(x[smp, i], b[smp, i], d[i], lp, dp, has_up, has_down, tol_u, False, max_newton)
        change = 0.0
        for smp in range(rows):
            for i in range(n):
                x0 = x[smp, i]
                value = x0 + omega * (new[smp, i] - x0) if omega != 1.0 else new[smp, i]
                moved = abs(value - ref[smp, i]) * s
                x[smp, i] = value
                if not moved <= change:  # keeps a NaN
                    change = moved
        return change

    @njit(cache=True, error_model="numpy")
    def _layer_residual(x, b, d, e, lp, dp, has_up, has_down, out):
        """``out[smp] = max(out[smp], largest KCL error of the layer's nodes)``, amperes."""
        s = lp[0]
        up, down = dp[0], dp[1]
        for smp in range(x.shape[0]):
            worst = out[smp]
            for i in range(x.shape[1]):
                xi = x[smp, i]
                v = s * xi
                f = 0.0
                if has_up:
                    f += _branch_free(v - up, e[0, smp, i], dp)[0]
                if has_down:
                    f -= _branch_free(down - v, e[1, smp, i], dp)[0]
                r = abs((b[smp, i] - d[i] * xi) * s - f)
                if not r <= worst:
                    worst = r
            out[smp] = worst

    @njit(cache=True, error_model="numpy")
    def _residual(u, const, diag, w, w_off, offsets, lp, dp, has_up, has_down, out):
        """Largest KCL error of each sample, amperes (``s_l r`` of :class:`LayeredSystem`)."""
        depth = offsets.shape[0] - 1
        width = 0
        for k in range(depth):
            width = max(width, offsets[k + 1] - offsets[k])
        b = np.empty(width)
        for smp in range(u.shape[0]):
            worst = 0.0
            for k in range(depth):
                o0, n = offsets[k], offsets[k + 1] - offsets[k]
                drive(u, smp, k, const, w, w_off, offsets, b)
                s = lp[k, 0]
                for i in range(n):
                    x = u[smp, o0 + i]
                    f, _ = diodes(x, s, dp, has_up, has_down)
                    r = abs((b[i] - diag[o0 + i] * x - f) * s)
                    if not r <= worst:
                        worst = r
            out[smp] = worst


class CompiledSweeps:
    """The kernels, compiled on their first call; :attr:`failure` says why they are not used, if so."""

    def __init__(self) -> None:
        self.failure: str | None = _IMPORT_ERROR

    @property
    def available(self) -> bool:
        return self.failure is None

    @staticmethod
    def diode_arguments(system) -> tuple:
        """``(dp, has_up, has_down)``: the rails, ``n Vt``, ``Is`` and ``gmin`` of the block's diodes."""
        spec, diode = system.spec, system.spec.diode
        up, down = spec.diode_up_V, spec.diode_down_V
        rails = (0.0 if up is None else up, 0.0 if down is None else down)
        dp = np.array([*rails, diode.vte_V, diode.saturation_current(), diode.gmin_S])
        return dp, up is not None, down is not None

    def arguments(self, system, layers) -> tuple:
        """The flat arrays the whole-sweep kernels take for one solve (numpy views of ``system``'s tensors)."""
        couplings = [w.contiguous().reshape(-1) for w in system.weights[1:]]
        if couplings:
            w = torch.cat(couplings).numpy()
        else:
            w = np.zeros(1, dtype=np.float32 if system.dtype == torch.float32 else np.float64)
        w_off = np.zeros(max(len(couplings), 1), dtype=np.int64)
        for k in range(1, len(couplings)):
            w_off[k] = w_off[k - 1] + couplings[k - 1].numel()
        lp = np.array([[layer.scale, layer.lo, layer.hi, layer.curvature] for layer in layers])
        offsets = np.asarray(system.offsets, dtype=np.int64)
        const = system.const.contiguous().numpy()
        return const, system.diag.numpy(), w, w_off, offsets, lp, *self.diode_arguments(system)

    def sweep(self, u: np.ndarray, args: tuple, omega: float, inner_tol: float, cold: bool, max_newton: int):
        """One sweep in place on ``u``; each layer's largest move (V), or ``None`` where it cannot run."""
        changes = np.empty(len(args[4]) - 1)
        done, _ = self._call(_sweep, u, *args, float(omega), float(inner_tol), bool(cold), int(max_newton), changes)
        return changes if done else None

    def update(self, x, ref, b, layer, diodes: tuple, omega, inner_tol, max_newton) -> float | None:
        """One vectorised layer update in place on ``x`` (``[B, n]``, contiguous, CPU) given its
        drive ``b``; ``diodes`` from :meth:`diode_arguments`. The largest move from ``ref`` (V), or
        ``None`` where the kernels cannot run (``x`` is then unchanged)."""
        if (exp := self._exponentials(x, layer, diodes)) is None:
            return None
        xn = x.numpy()
        new, flag = np.empty_like(xn), np.empty(xn.shape, dtype=np.bool_)
        args = (ref.numpy(), b.contiguous().numpy(), layer.d.numpy(), *exp, *diodes, float(omega), float(inner_tol))
        done, change = self._call(_update, xn, *args, int(max_newton), new, flag)
        return change if done else None

    def layer_residual(self, x: torch.Tensor, b: torch.Tensor, layer, diodes: tuple, out: np.ndarray) -> bool:
        """Fold the layer's largest KCL error per sample (A) into ``out``; ``False`` where it cannot run."""
        if (exp := self._exponentials(x, layer, diodes)) is None:
            return False
        args = (x.numpy(), b.contiguous().numpy(), layer.d.numpy(), *exp, *diodes, out)
        return self._call(_layer_residual, *args)[0]

    def _exponentials(self, x: torch.Tensor, layer, diodes: tuple) -> tuple | None:
        """``(e, lp)``: both junctions' exponentials at the layer's nodes (torch's vectorised
        ``exp2`` of :func:`_exponents`) and the layer's ``(s, lo, hi, curvature)``."""
        e = torch.empty((2, *x.shape), dtype=x.dtype)
        if not self._call(_exponents, x.numpy(), layer.scale, *diodes, e.numpy())[0]:
            return None
        return e.exp2_().numpy(), np.array([layer.scale, layer.lo, layer.hi, layer.curvature])

    def residual(self, u: np.ndarray, args: tuple) -> np.ndarray | None:
        """Each sample's largest KCL error (A), or ``None`` where the kernels cannot run."""
        out = np.empty(u.shape[0])
        done, _ = self._call(_residual, u, *args, out)
        return out if done else None

    def _call(self, kernel, *args) -> tuple[bool, object]:
        """``(True, kernel's result)``, or ``(False, None)`` where numba cannot compile it."""
        if self.failure is not None:
            return False, None
        try:
            return True, kernel(*args)  # the first call per dtype compiles (or loads numba's cache)
        except Exception as exc:  # numba cannot compile here (platform, cache): eager from now on
            if not type(exc).__module__.startswith("numba"):
                raise
            text = str(exc).strip().splitlines()
            self.failure = f"{type(exc).__name__}: {text[0] if text else ''}"
            warnings.warn(
                f"fast-layerwise: numba could not compile its small-batch sweeps ({self.failure}); running "
                "them eagerly (same results, slower at small batches)",
                RuntimeWarning,
                stacklevel=4,
            )
            return False, None


compiled = CompiledSweeps()
"""The process's compiled sweeps."""
