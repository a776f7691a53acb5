"""numba kernels of :mod:`analog.solvers.compiled` (that module says what they compute and when
they run): the scalar node solve, the whole-sweep kernel for small batches, the vectorised layer
update and the KCL residuals. ``_IMPORT_ERROR`` says why they are absent, if numba is."""

from __future__ import annotations

import math

import numpy as np

from analog.diode import LOG2_E

_E3 = math.exp(-3.0)

try:
    from numba import njit
except ImportError as exc:  # a declared dependency; without it the eager sweeps run
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
    sweep = residual = exponents = update = layer_residual = None
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
    def sweep(u, const, diag, w, w_off, offsets, lp, dp, has_up, has_down, omega, inner_tol, cold, max_newton, changes):
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
    def exponents(x, s, dp, has_up, has_down, e):
        """``e``: the exponent, in log2 units, of the node's nearer junction,
        ``max(vd, -3 n Vt) log2(e) / (n Vt)``, for ``exp2`` (torch's vectorised one) to take."""
        up, down, vte = dp[0], dp[1], dp[2]
        c = LOG2_E / vte
        knee = -3.0 * vte
        for smp in range(x.shape[0]):
            for i in range(x.shape[1]):
                v = s * x[smp, i]
                near = knee
                if has_up:
                    near = max(v - up, near)
                if has_down:
                    near = max(down - v, near)
                e[smp, i] = near * c

    @njit(cache=True, error_model="numpy", inline="always")
    def _pair(v, e, up, down, both, spread):
        """Both junctions' exponentials (at their clamped voltages) from the nearer one's ``e``:
        the farther one's exponent is ``(V_dn - V_up) / (n Vt)`` less the nearer one's, so its
        exponential is ``spread / e`` (``spread = exp((V_dn - V_up) / (n Vt))``), at least
        ``e^-3`` (its clamp). With one rail (``both`` false), ``e`` is that junction's."""
        if not both:
            return e, e
        other = max(spread / e, _E3)
        up_near = v - up >= down - v
        return (e if up_near else other), (other if up_near else e)

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
    def update(x, ref, b, d, e, lp, dp, has_up, has_down, omega, inner_tol, max_newton, new, flag):
        """One layer update of a whole batch in place on ``x`` ``[B, n]``: a Newton step on (2)
        for every node (vectorised, from the exponentials ``e`` of :func:`_exponents`); the node
        solve of :func:`node` for the few whose step is too long to be a contraction or too
        inaccurate; over-relaxation. The largest move from ``ref`` (V)."""
        s, curvature = lp[0], lp[3]
        tol_u = inner_tol / s
        up, down = dp[0], dp[1]
        spread, both = math.exp((down - up) / dp[2]), has_up and has_down
        inv_s = 1.0 / s
        rows, n = x.shape
        for smp in range(rows):
            for i in range(n):
                x0 = x[smp, i]
                v = s * x0
                f = 0.0
                g = 0.0
                e_up, e_down = _pair(v, e[smp, i], up, down, both, spread)
                if has_up:
                    i_u, g_u = _branch_free(v - up, e_up, dp)
                    f += i_u
                    g += g_u
                if has_down:
                    i_d, g_d = _branch_free(down - v, e_down, dp)
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
    def layer_residual(x, b, d, e, lp, dp, has_up, has_down, out):
        """``out[smp] = max(out[smp], largest KCL error of the layer's nodes)``, amperes."""
        s = lp[0]
        up, down = dp[0], dp[1]
        spread, both = math.exp((down - up) / dp[2]), has_up and has_down
        for smp in range(x.shape[0]):
            worst = out[smp]
            for i in range(x.shape[1]):
                xi = x[smp, i]
                v = s * xi
                f = 0.0
                e_up, e_down = _pair(v, e[smp, i], up, down, both, spread)
                if has_up:
                    f += _branch_free(v - up, e_up, dp)[0]
                if has_down:
                    f -= _branch_free(down - v, e_down, dp)[0]
                r = abs((b[smp, i] - d[i] * xi) * s - f)
                if not r <= worst:
                    worst = r
            out[smp] = worst

    @njit(cache=True, error_model="numpy")
    def residual(u, const, diag, w, w_off, offsets, lp, dp, has_up, has_down, out):
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
