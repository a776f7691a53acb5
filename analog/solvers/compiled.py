"""Compiled sweeps of the layer-wise solver (numba): fewer, larger operations per sweep.

In eager torch a layer update of :class:`~analog.solvers.layerwise.LayerwiseSolver` is ~30 tensor
operations, each a pass over ``[B, n_l]`` plus microseconds of dispatch. Two compiled forms
replace them on the CPU, for nominal diodes (no per-diode spreads, breakdown or series
resistance: those blocks run eagerly):

* **Small batches** (``B x free nodes <= MAX_VALUES``), where dispatch is nearly all of the time:
  one call per sweep, sample by sample and node by node. Each layer's drive ``b`` of (2) from the
  layers around it, then each node's KCL solved by the scalar form of the eager update (the
  kernels' ``node``: one Newton step from where the node was; a restart from Lambert's W (5)
  when that step is too long to be a contraction; safeguarded Newton in the rails' bracket, with
  the log form (4), when one step is not accurate enough), over-relaxed by ``omega``. The cold
  first sweep starts from the eager solver's forward guess
  (:func:`~analog.solvers.newton.initial_guess`) and puts every node at (5) of its drive.
* **Larger batches**: each layer update is torch's drive product and one call that takes a
  Newton step at every node in a loop the compiler vectorises (one ``exp`` per node: that of the
  nearer junction; the farther one's follows from it, ``exp((V_dn - V_up) / (n Vt))`` over it,
  or its clamp), solves the few nodes whose step is too long or not accurate enough by the node
  solve, and over-relaxes. The cold sweep's forward guess and its starts (5) are vectorised
  calls of their own. ``exp`` and ``log`` in these loops are :mod:`analog.solvers.compiled_math`'s,
  which vectorise (numba's call the C library one value at a time).

The stopping rule, tolerance and over-relaxation are the eager solver's (it drives these calls),
each node is solved to the same inner tolerance, and the results agree with the eager sweeps to
rounding. The diode is :meth:`analog.diode.DiodeModel.junction_current`'s: each junction on its
forward branch above ``-3 n Vt`` and on SPICE3's smooth reverse branch below, ``gmin`` across it.
Kernels use IEEE arithmetic (``error_model="numpy"``: a division by zero gives inf or NaN, as in
torch, and a NaN node is reported as non-finite), which also lets the loops vectorise.

The scalar path wins only while dispatch dominates (:data:`MAX_VALUES`). Compiling takes
seconds once per dtype (numba caches it on disk where it can write); where numba fails the eager
sweeps run instead and a warning says why, once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["MAX_VALUES", "CompiledSweeps", "compiled"]

MAX_VALUES = 256
"""Largest ``B x free nodes`` for the whole-sweep kernel (larger: the vectorised updates). Its time
over theirs (trained, 1 thread) crosses 1 at 250-400 values: 784-100-10 0.95 / 1.14 / 1.58 at
B = 2 / 4 / 8, 784-256-10 1.24 at B = 2, 784-64-64-64-10 1.09 / 1.46 at B = 2 / 4, 64-32-10
0.86 / 1.34 at B = 4 / 8."""


class CompiledSweeps:
    """The kernels, compiled on their first call; :attr:`failure` says why they are not used, if so."""

    def __init__(self) -> None:
        self._kernels = None
        self._failure: str | None = None

    @property
    def failure(self) -> str | None:
        """Why the kernels are not used (numba missing or unable to compile here), or ``None``."""
        self._module()
        return self._failure

    @failure.setter
    def failure(self, value: str | None) -> None:
        self._failure = value

    @property
    def available(self) -> bool:
        return self.failure is None

    def _module(self):
        """:mod:`analog.solvers.compiled_kernels`, imported on first use (numba takes ~0.2 s to
        import: processes that never sweep, e.g. ngspice workers, do not pay it)."""
        if self._kernels is None:
            from analog.solvers import compiled_kernels

            self._kernels = compiled_kernels
            if self._failure is None:
                self._failure = compiled_kernels._IMPORT_ERROR
        return self._kernels

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
        done, _ = self._call("sweep", u, *args, float(omega), float(inner_tol), bool(cold), int(max_newton), changes)
        return changes if done else None

    def layer_arguments(self, layer, diodes: tuple) -> tuple:
        """What the vectorised kernels take of one layer, gathered once per solve: its conductance
        sums ``D``, (5)'s ``(ln q + q, Is / D)`` per node, ``(s, lo, hi, curvature)`` and
        ``diodes`` (:meth:`diode_arguments`)."""
        cold_d = torch.stack([layer.lambert_offset, layer.is_over_d]).numpy()
        return layer.d.numpy(), cold_d, np.array([layer.scale, layer.lo, layer.hi, layer.curvature]), *diodes

    def forward_guess(self, current: torch.Tensor, args: tuple) -> torch.Tensor | None:
        """:func:`~analog.solvers.newton.initial_guess` of one layer (u-space) from its ``current``
        (``c_l`` plus the layer before's), or ``None`` where the kernels cannot run; ``args``
        from :meth:`layer_arguments`."""
        out = torch.empty(current.shape, dtype=current.dtype)
        d, _, lp, dp, has_up, has_down = args
        done, _ = self._call("forward_guess", current.contiguous().numpy(), d, lp[0], dp, has_up, has_down, out.numpy())
        return out if done else None

    def update(self, x, ref, b, args: tuple, omega, inner_tol, max_newton, cold=False) -> float | None:
        """One vectorised layer update in place on ``x`` (``[B, n]``, contiguous, CPU) given its
        drive ``b`` (``cold``: from (5) of each node, whatever ``x`` holds); ``args`` from
        :meth:`layer_arguments`. The largest move from ``ref`` (V), or ``None`` where the kernels
        cannot run (``x`` is then unchanged)."""
        xn = x.numpy()
        new, flag = np.empty_like(xn), np.empty(xn.shape, dtype=np.int8)
        tail = (float(omega), float(inner_tol), bool(cold), int(max_newton), new, flag)
        done, result = self._call("update", xn, ref.numpy(), b.contiguous().numpy(), *args, *tail)
        return result[0] if done else None

    def layer_residual(self, x: torch.Tensor, b: torch.Tensor, args: tuple, out: np.ndarray) -> bool:
        """Fold the layer's largest KCL error per sample (A) into ``out``; ``False`` where it
        cannot run; ``args`` from :meth:`layer_arguments`."""
        d, _, lp, dp, has_up, has_down = args
        return self._call("layer_residual", x.numpy(), b.contiguous().numpy(), d, lp, dp, has_up, has_down, out)[0]

    def residual(self, u: np.ndarray, args: tuple) -> np.ndarray | None:
        """Each sample's largest KCL error (A), or ``None`` where the kernels cannot run."""
        out = np.empty(u.shape[0])
        done, _ = self._call("residual", u, *args, out)
        return out if done else None

    def _call(self, kernel: str, *args) -> tuple[bool, object]:
        """``(True, the kernel's result)``, or ``(False, None)`` where numba cannot compile it."""
        if self.failure is not None:
            return False, None
        try:
            return True, getattr(self._kernels, kernel)(
                *args
            )  # the first call per dtype compiles (or loads numba's cache)
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
