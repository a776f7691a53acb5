"""numba kernels of :mod:`analog.solvers.compiled` (that module says what they compute and when
they run): the scalar node solve, the whole-sweep kernel for small batches, the vectorised layer
update and the KCL residuals. ``_IMPORT_ERROR`` says why they are absent, if numba is."""

from __future__ import annotations

import math

import numpy as np

_E3 = math.exp(-3.0)

try:
    from numba import njit

    from analog.solvers import compiled_math as vm
except ImportError as exc:  # a declared dependency; without it the eager sweeps run
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
    sweep = residual = forward_guess = update = layer_residual = None
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
    def lambert(b, d, s, up, down, vte, has_up, has_down, offset, is_over_d):
        """(5) of :func:`analog.solvers.layer_nodes.cold_start` for one node, in selects that
        vectorise; ``offset = ln q + q`` (``q = Is / (D n Vt)``) and ``is_over_d = Is / D``."""
        a = b / d * s
        both = has_up and has_down
        past = a - 0.5 * (up + down)
        side = 1.0 if past > 0.0 else (-1.0 if past < 0.0 else 0.0)
        sigma = side if both else (1.0 if has_up else -1.0)
        t = (abs(past) - 0.5 * (up - down)) if both else ((a - up) if has_up else (down - a))
        log_x = max(t / vte + offset, -60.0)
        w = log_x if log_x > 20.0 else vm.log1p(vm.exp(log_x))  # torch's softplus
        w = w - (w + vm.log(w) - log_x) * w / (w + 1.0)  # W_NEWTON = 2 steps
        w = w - (w + vm.log(w) - log_x) * w / (w + 1.0)
        return (a - sigma * (w * vte - is_over_d)) / s

    @njit(cache=True, error_model="numpy", inline="always")
    def restart(b, d, s, dp, has_up, has_down):
        """:func:`lambert` for a node whose constants are not at hand."""
        q = dp[3] / (d * dp[2])
        return lambert(b, d, s, dp[0], dp[1], dp[2], has_up, has_down, math.log(q) + q, dp[3] / d)

    @njit(cache=True, error_model="numpy")
    def node(x0, b, d, lp, dp, has_up, has_down, tol_u, cold, max_newton):
        """Solve (2) for one node from ``x0`` (``cold``: from (5)); ``lp``: ``(s, lo, hi, curvature)``."""
        s, curvature = lp[0], lp[3]
        if not (has_up or has_down):
            return b / d
        x = restart(b, d, s, dp, has_up, has_down) if cold else x0
        f, g = diodes(x, s, dp, has_up, has_down)
        delta = (b - f - d * x) / (d + g)
        if abs(delta) * curvature > 0.05 and not cold:
            x = restart(b, d, s, dp, has_up, has_down)
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
                top = vm.magnitude_bits(changes[k])
                for i in range(n):
                    x0 = u[smp, o0 + i]
                    x = node(x0, b[i], diag[o0 + i], lp[k], dp, has_up, has_down, tol_u, cold, max_newton)
                    if omega != 1.0:
                        x = x0 + omega * (x - x0)
                    u[smp, o0 + i] = x
                    top = max(top, vm.magnitude_bits((x - (start[o0 + i] if cold else x0)) * s))
                changes[k] = vm.from_bits(top)  # the largest move; NaN if any

    # The vectorised kernels take the diode's constants out of ``dp`` before their loops: numba's
    # arrays may alias, so a read of ``dp`` inside a loop that stores is not hoisted, and the loop
    # is then not vectorised (measured: 5x slower).

    @njit(cache=True, error_model="numpy", inline="always")
    def _guess(c, d, s, up, down, vte, i_s, has_up, has_down, crossed):
        """One node of :func:`forward_guess`. Unless the rails are crossed at most one diode
        takes an excess, so one ``log1p`` serves both (the other's clamp then changes nothing)."""
        v = c / d * s
        over, under = s * c - d * up, d * down - s * c
        if crossed:
            on_up = up + vte * vm.log1p(max(over, 0.0) / i_s)
            on_down = down - vte * vm.log1p(max(under, 0.0) / i_s)
        else:
            excess = max(over if has_up else 0.0, under if has_down else 0.0, 0.0)
            on = vte * vm.log1p(excess / i_s)
            on_up, on_down = up + on, down - on
        v = min(v, on_up) if has_up else v
        v = max(v, on_down) if has_down else v
        return v / s

    @njit(cache=True, error_model="numpy")
    def forward_guess(current, d, s, dp, has_up, has_down, out):
        """:func:`~analog.solvers.newton.initial_guess` of one layer into ``out`` ``[B, n]``
        (u-space), from its ``current`` (``c_l`` plus the layer before's): vectorised."""
        up, down, vte, i_s = dp[0], dp[1], dp[2], dp[3]
        if has_up and has_down and down > up:
            for smp in range(current.shape[0]):
                for i in range(current.shape[1]):
                    out[smp, i] = _guess(current[smp, i], d[i], s, up, down, vte, i_s, True, True, True)
        else:
            for smp in range(current.shape[0]):
                for i in range(current.shape[1]):
                    out[smp, i] = _guess(current[smp, i], d[i], s, up, down, vte, i_s, has_up, has_down, False)

    @njit(cache=True, error_model="numpy", inline="always")
    def _branch_free(vd, evd, vte, i_s, gmin):
        """:meth:`DiodeModel.junction_current`'s value and slope from ``evd`` (the exponential at
        the clamped voltage ``max(vd, -3 n Vt)``), branch-free."""
        k = 3.0 * vte / math.e
        ratio = k / min(vd, -3.0 * vte)
        arg = ratio * ratio * ratio
        i = (evd - arg - (1.0 + _E3)) * i_s + gmin * vd
        g = (arg * ratio * (3.0 / k) + (evd - _E3) / vte) * i_s + gmin
        return i, g

    @njit(cache=True, error_model="numpy", inline="always")
    def _current(v, up, down, vte, i_s, gmin, spread, has_up, has_down):
        """The node's diode current (A) and conductance at ``v`` (V), branch-free, from one
        ``exp``: that of the nearer junction. The farther one's exponent is ``(V_dn - V_up) /
        (n Vt)`` less the nearer one's, so its exponential is ``spread / e`` (``spread =
        exp((V_dn - V_up) / (n Vt))``), at least ``e^-3`` (its clamp)."""
        near = -3.0 * vte
        near = max(v - up, near) if has_up else near
        near = max(down - v, near) if has_down else near
        e = vm.exp(near / vte)
        other = max(spread / e, _E3)
        one = not (has_up and has_down)
        up_near = v - up >= down - v
        i_u, g_u = _branch_free(v - up, e if (one or up_near) else other, vte, i_s, gmin)
        i_d, g_d = _branch_free(down - v, e if (one or not up_near) else other, vte, i_s, gmin)
        f = (i_u if has_up else 0.0) - (i_d if has_down else 0.0)
        g = (g_u if has_up else 0.0) + (g_d if has_down else 0.0)
        return f, g

    VECTOR_STEPS = 3
    """Vectorised passes over a layer after its first Newton step, at most."""
    VECTOR_SHARE = 32
    """A pass runs while at least one node in this many needs it (a restart from (5) or another
    step); fewer are left to the scalar node solve, cheaper for so few. Measured on
    784-256-256-256-10, trained, B = 128, where 12% of the nodes restart in the early sweeps:
    73 ms per free phase against 121 ms with the scalar solves alone (eager sweeps: 116 ms)."""

    @njit(cache=True, error_model="numpy", inline="always")
    def _step(x0, b, d, s, up, down, vte, i_s, gmin, spread, has_up, has_down, curvature, tol_u):
        """A Newton step on (2) from ``x0``, and what it leaves (int8): 0 accurate to ``tol_u``, 1
        short enough to be a contraction but not that accurate, 2 too long or not finite (an
        overflowed diode)."""
        f, g = _current(s * x0, up, down, vte, i_s, gmin, spread, has_up, has_down)
        delta = (b - f / s - d * x0) / (d + g)
        step = abs(delta)
        short = step * curvature <= 0.05
        state = 0 if (short & (curvature * step * step <= tol_u)) else (1 if short else 2)
        return x0 + delta, state

    @njit(cache=True, error_model="numpy")
    def update(x, ref, b, d, cold_d, lp, dp, has_up, has_down, omega, inner_tol, cold, max_newton, new, flag):
        """One layer update of a whole batch in place on ``x`` ``[B, n]`` given its drive ``b``:
        (``cold``: every node first put at (5), ``cold_d`` its ``(offset, Is / D)`` of
        :func:`lambert`) a Newton step on (2) for every node (vectorised), more where many are not
        yet accurate; the node solve of :func:`node` for the few whose step is too long to be a
        contraction or too inaccurate; over-relaxation. ``flag``: int8 work space. The largest
        move from ``ref`` (V) and how many vectorised passes followed the first step."""
        s, curvature = lp[0], lp[3]
        up, down, vte, i_s, gmin = dp[0], dp[1], dp[2], dp[3], dp[4]
        tol_u = inner_tol / s
        spread = math.exp((down - up) / vte)
        rows, n = x.shape
        if cold:  # a loop of its own: a branch inside the next one keeps it from vectorising
            for smp in range(rows):
                for i in range(n):
                    x[smp, i] = lambert(b[smp, i], d[i], s, up, down, vte, has_up, has_down, cold_d[0, i], cold_d[1, i])
        inaccurate = too_long = 0
        for smp in range(rows):
            for i in range(n):
                x1, state = _step(
                    x[smp, i], b[smp, i], d[i], s, up, down, vte, i_s, gmin, spread, has_up, has_down, curvature, tol_u
                )
                new[smp, i], flag[smp, i] = x1, state
                inaccurate += state == 1
                too_long += state == 2
        # While many nodes are left (a deep block's early sweeps move them far), vectorised
        # passes over the layer: those whose step was too long restart from (5), those whose
        # step was short but not accurate enough take another Newton step. The few left get the
        # scalar node solve from where they were.
        passes = 0
        for passes in range(VECTOR_STEPS + 1):
            restarts = too_long * VECTOR_SHARE >= rows * n
            if passes == VECTOR_STEPS or (not restarts and inaccurate * VECTOR_SHARE < rows * n):
                break
            inaccurate = too_long = 0
            for smp in range(rows):
                for i in range(n):
                    state = flag[smp, i]
                    if restarts:  # loop-invariant: the compiler takes it out of the loop
                        start = lambert(b[smp, i], d[i], s, up, down, vte, has_up, has_down, cold_d[0, i], cold_d[1, i])
                        x1 = start if state == 2 else new[smp, i]
                    else:
                        x1 = new[smp, i]
                    x2, after = _step(
                        x1, b[smp, i], d[i], s, up, down, vte, i_s, gmin, spread, has_up, has_down, curvature, tol_u
                    )
                    restarted = (state == 2) & restarts
                    again = (state == 1) | restarted
                    new[smp, i] = x2 if again else x1
                    # 3: too long even from (5), left to the scalar solve
                    state = (3 if (restarted & (after == 2)) else after) if again else state
                    flag[smp, i] = state
                    inaccurate += state == 1
                    too_long += state == 2
        for smp in range(rows):
            for i in range(n):
                if flag[smp, i] != 0:
                    new[smp, i] = node(x[smp, i], b[smp, i], d[i], lp, dp, has_up, has_down, tol_u, False, max_newton)
        top = 0
        for smp in range(rows):
            for i in range(n):
                x0 = x[smp, i]
                value = x0 + omega * (new[smp, i] - x0) if omega != 1.0 else new[smp, i]
                top = max(top, vm.magnitude_bits(value - ref[smp, i]))  # ref may be x: read first
                x[smp, i] = value
        return vm.from_bits(top) * s, passes  # the largest move (NaN if any is); vectorised passes

    @njit(cache=True, error_model="numpy")
    def layer_residual(x, b, d, lp, dp, has_up, has_down, out):
        """``out[smp] = max(out[smp], largest KCL error of the layer's nodes)``, amperes."""
        s = lp[0]
        up, down, vte, i_s, gmin = dp[0], dp[1], dp[2], dp[3], dp[4]
        spread = math.exp((down - up) / vte)
        for smp in range(x.shape[0]):
            top = vm.magnitude_bits(out[smp])
            for i in range(x.shape[1]):
                xi = x[smp, i]
                f = _current(s * xi, up, down, vte, i_s, gmin, spread, has_up, has_down)[0]
                top = max(top, vm.magnitude_bits((b[smp, i] - d[i] * xi) * s - f))
            out[smp] = vm.from_bits(top)

    @njit(cache=True, error_model="numpy")
    def residual(u, const, diag, w, w_off, offsets, lp, dp, has_up, has_down, out):
        """Largest KCL error of each sample, amperes (``s_l r`` of :class:`LayeredSystem`)."""
        depth = offsets.shape[0] - 1
        width = 0
        for k in range(depth):
            width = max(width, offsets[k + 1] - offsets[k])
        b = np.empty(width)
        for smp in range(u.shape[0]):
            top = 0
            for k in range(depth):
                o0, n = offsets[k], offsets[k + 1] - offsets[k]
                drive(u, smp, k, const, w, w_off, offsets, b)
                s = lp[k, 0]
                for i in range(n):
                    x = u[smp, o0 + i]
                    f, _ = diodes(x, s, dp, has_up, has_down)
                    top = max(top, vm.magnitude_bits((b[i] - diag[o0 + i] * x - f) * s))
            out[smp] = vm.from_bits(top)  # NaN if any error is
