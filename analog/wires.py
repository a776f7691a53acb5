"""Resistive crossbar wires (IR drop), reduced exactly to the crossbar's terminals.

Geometry of one crossbar (the ngspice netlist builds the same circuit element by element). Its
``R`` rows are the weight rows (the nodes of layer ``l``, or of the input sources) followed by the
bias rows; its ``C`` columns are the nodes of layer ``l + 1``. The rows are laid out in the order
``row_order`` (physical position -> row): input pairs are interleaved (``+x0, -x0, +x1, -x1, ...``,
see :meth:`analog.circuit.Circuit.wire_row_order`) so that the two halves of a signed weight see
nearly the same wire; laying out all ``+x`` rows first and all ``-x`` rows last would let the
half nearer the readout win and pull every column to one rail. Below, ``i`` is a physical
position. Every row and column is a wire cut into segments of ``wire_ohm``:

* row ``i``: its terminal (driver), a segment, cross-point ``(i, 0)``, a segment, ``(i, 1)``, ...,
  ``(i, C - 1)``: the driver sits at column 0's end;
* column ``j``: cross-point ``(0, j)``, a segment, ``(1, j)``, ..., ``(R - 1, j)``, a segment, its
  terminal (the node of layer ``l + 1``): the readout sits past the last row;
* the device of row ``i`` and column ``j`` joins the row wire's node and the column wire's node
  at cross-point ``(i, j)``.

The ``2 R C`` wire nodes carry no source, so they can be eliminated exactly (Kron reduction): the
crossbar then acts on its ``R + C`` terminals as the dense conductance matrix (a Laplacian)

    L_red = g_w I - g_w^2 P^T L_ii^{-1} P,

with ``L_ii`` the sparse Laplacian of the wire nodes (devices, segments, and the segments to the
terminals, which are held at 0 V) and ``P`` the incidence of the terminals' first segments. The
reduced network is still reciprocal and passive, so the layered co-content of
:mod:`analog.solvers.physics` keeps its form: the crossbar's terminal couplings become dense and
its row and column nodes couple among themselves. The wire node voltages, and so the voltage across
every device that EP measures, follow from the terminal voltages by one more sparse solve.

The reduction is computed in float64 with SciPy's sparse LU, once per set of conductances.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

__all__ = ["CrossbarWires", "check_wire_ohm"]


def check_wire_ohm(value) -> None:
    """Refuse a wire segment resistance that is not a finite positive value (``None`` is allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"wire_ohm: must be a finite resistance > 0 ohm per segment, or None, got {value!r}")


class CrossbarWires:
    """One crossbar with resistive wires, reduced to its terminals.

    ``conductances``: device conductances ``[R, C]`` in siemens (weight rows, then bias rows);
    ``wire_ohm``: resistance of every wire segment; ``row_order``: the row at each physical position
    (a permutation of ``0..R-1``; default: as given). Terminals, ``reduced`` and
    :meth:`device_voltages` are in the logical order: rows as given, then columns.
    """

    def __init__(self, conductances: torch.Tensor, wire_ohm: float, row_order=None):
        check_wire_ohm(wire_ohm)
        g = conductances.detach().to("cpu", torch.float64).numpy()
        rows, cols = g.shape
        order = np.arange(rows) if row_order is None else np.asarray(row_order, dtype=np.int64)
        if order.shape != (rows,) or not np.array_equal(np.sort(order), np.arange(rows)):
            raise ValueError(f"row_order: expected a permutation of 0..{rows - 1}, got {row_order!r}")
        self._order = order
        g = g[order]  # physical rows from here on
        self.rows, self.cols = rows, cols
        self.wire_S = 1.0 / float(wire_ohm)
        n = rows * cols
        row_node = np.arange(n).reshape(rows, cols)  # wire node of row i at cross-point (i, j)
        col_node = n + row_node  # wire node of column j at cross-point (i, j)
        self._row_node, self._col_node = row_node, col_node
        gw = self.wire_S
        edges_a = [row_node.ravel(), row_node[:, :-1].ravel(), col_node[:-1, :].ravel()]
        edges_b = [col_node.ravel(), row_node[:, 1:].ravel(), col_node[1:, :].ravel()]
        weights = [g.ravel(), np.full(rows * (cols - 1), gw), np.full((rows - 1) * cols, gw)]
        a, b, w = np.concatenate(edges_a), np.concatenate(edges_b), np.concatenate(weights)
        diag = np.bincount(a, w, 2 * n) + np.bincount(b, w, 2 * n)
        # Where the terminals attach: row i at (i, 0), column j at (R - 1, j).
        self._attach = np.concatenate([row_node[:, 0], col_node[-1, :]])
        diag[self._attach] += gw
        lap = sp.coo_matrix(
            (
                np.concatenate([diag, -w, -w]),
                (np.concatenate([np.arange(2 * n), a, b]), np.concatenate([np.arange(2 * n), b, a])),
            ),
            shape=(2 * n, 2 * n),
        ).tocsc()
        self._lu = spla.splu(lap, permc_spec="MMD_AT_PLUS_A")
        terminals = rows + cols
        rhs = np.zeros((2 * n, terminals))
        rhs[self._attach, np.arange(terminals)] = 1.0
        inverse_at_attach = self._lu.solve(rhs)[self._attach]
        reduced = gw * np.eye(terminals) - gw * gw * inverse_at_attach
        # Back to the logical terminal order: physical terminal p is logical terminal full[p].
        full = np.concatenate([order, rows + np.arange(cols)])
        logical = np.empty_like(reduced)
        logical[np.ix_(full, full)] = reduced
        self.reduced = 0.5 * (logical + logical.T)
        """``L_red`` ``[R + C, R + C]`` in siemens (symmetric), logical order."""
        self._full = full

    def device_voltages(self, terminal_V: torch.Tensor) -> torch.Tensor:
        """Voltage across every device (row side minus column side), ``[B, R, C]``, for terminal
        voltages ``[B, R + C]`` (rows then columns)."""
        t = terminal_V.detach().to("cpu", torch.float64).numpy()[:, self._full]  # physical order
        rhs = np.zeros((2 * self.rows * self.cols, t.shape[0]))
        rhs[self._attach] = self.wire_S * t.T
        nodes = self._lu.solve(rhs)
        drop = (nodes[self._row_node.ravel()] - nodes[self._col_node.ravel()]).T.reshape(-1, self.rows, self.cols)
        logical = np.empty_like(drop)
        logical[:, self._order] = drop
        out = torch.from_numpy(logical)
        return out.to(dtype=terminal_V.dtype, device=terminal_V.device)

    def blocks(self, n_weight_rows: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        """``L_red`` cut into its blocks: ``rr`` (weight rows), ``rb`` (weight rows x bias rows),
        ``rc``, ``bb``, ``bc``, ``cc`` (columns), as tensors."""
        m = torch.from_numpy(self.reduced).to(dtype=dtype, device=device)
        r, b = slice(0, n_weight_rows), slice(n_weight_rows, self.rows)
        c = slice(self.rows, self.rows + self.cols)
        return {"rr": m[r, r], "rb": m[r, b], "rc": m[r, c], "bb": m[b, b], "bc": m[b, c], "cc": m[c, c]}
