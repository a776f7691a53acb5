"""Resistive crossbar wires (IR drop), reduced exactly to the crossbar's terminals.

Geometry of one crossbar (the ngspice netlist builds the same circuit element by element). Its
``R`` rows are the weight rows (the nodes of layer ``l``, or of the input sources) followed by the
bias rows; its ``C`` columns are the nodes of layer ``l + 1``. The rows are laid out in the order
``row_order`` (physical position -> row): input pairs are interleaved (``+x0, -x0, +x1, -x1, ...``,
see :meth:`analog.circuit.Circuit.wire_row_order`) so that the two halves of a signed weight see
nearly the same wire; laying out all ``+x`` rows first and all ``-x`` rows last would let the
half nearer the readout win and pull every column to one rail. Below, ``i`` is a physical
position. Every row and column is a wire cut into segments of ``wire_ohm`` (conductance ``g_w``):

* row ``i``: its terminal (driver), a segment, cross-point ``(i, 0)``, a segment, ``(i, 1)``, ...,
  ``(i, C - 1)``: the driver sits at column 0's end;
* column ``j``: cross-point ``(0, j)``, a segment, ``(1, j)``, ..., ``(R - 1, j)``, a segment, its
  terminal (the node of layer ``l + 1``): the readout sits past the last row;
* the device of row ``i`` and column ``j`` joins the row wire's node ``a_ij`` and the column
  wire's node ``b_ij`` at cross-point ``(i, j)``.

The ``2 R C`` wire nodes carry no source, so they can be eliminated exactly (Kron reduction): the
crossbar then acts on its ``R + C`` terminals as a dense conductance matrix (a Laplacian)
``L_red``. The reduced network is still reciprocal and passive, so the layered co-content of
:mod:`analog.solvers.physics` keeps its form: the crossbar's terminal couplings become dense and
its row and column nodes couple among themselves.

The elimination follows the grid (all in float64, no general sparse factorisation):

1. Row wire ``i`` is a tridiagonal chain ``T_i`` (its segments, its devices to the column nodes,
   its driver segment). Eliminating it with its terminal and the column nodes ``b_i`` as boundary
   gives the driving-point conductance ``rho_i = g_w - g_w^2 (T_i^-1)_00``, the coupling ``h_i``
   of the terminal to ``b_i`` and the dense block ``K_i = diag(g_i) - diag(g_i) T_i^-1 diag(g_i)``
   among the ``b_i``. The chain's pivots are formed from the far end as sums of positive terms,
   ``Y_j = g_ij + g_w Y_{j+1} / (g_w + Y_{j+1})``, so nothing cancels.
2. The column nodes then form a block-tridiagonal network along the physical rows (blocks of
   ``C``, neighbours joined by ``g_w I``). Its block elimination from row 0 carries the Schur
   complement ``S_i = g_w I + D_i`` with

       D_0 = K_0,    D_{i+1} = K_{i+1} + g_w D_i S_i^-1,                                   (W1)

   the departure from a bare wire, again without cancellation; the readout block is
   ``L_cc = g_w D_{R-1} S_{R-1}^-1``. One back substitution with the ``C`` readouts as right-hand
   sides gives ``L_rc``; the rows' own block ``L_rr = diag(rho) - H^T L_b^-1 H`` needs one
   right-hand side per row. Cost ``O(R C^3)`` and memory ``R C^2``: cheap for a crossbar taller
   than wide, as input crossbars are (1570x100 for MNIST's 784 input pairs and 100 hidden nodes).

The input crossbar's rows are all held by sources, so the free phase needs only ``L_cc`` and
``L_rc`` (:meth:`CrossbarWires.blocks` with ``held_rows=True``): ``C`` right-hand sides, not
``R + C``. What the held rows deliver, and the voltage across every device that EP measures,
follow from the actual terminal voltages by one solve of the same elimination per batch
(:meth:`CrossbarWires.device_voltages`, :meth:`CrossbarWires.terminal_currents`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["CrossbarWires", "check_wire_ohm"]

_RHS_ELEMENTS = 1 << 24
"""Right-hand sides are solved in chunks of at most this many wire-node values (memory bound)."""


def check_wire_ohm(value) -> None:
    """Refuse a wire segment resistance that is not a finite positive value (``None`` is allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"wire_ohm: must be a finite resistance > 0 ohm per segment, or None, got {value!r}")


class CrossbarWires:
    """One crossbar with resistive wires, eliminated down to its terminals.

    ``conductances``: device conductances ``[R, C]`` in siemens (weight rows, then bias rows);
    ``wire_ohm``: resistance of every wire segment; ``row_order``: the row at each physical position
    (a permutation of ``0..R-1``; default: as given). Terminals, :meth:`blocks`, :attr:`reduced`,
    :meth:`device_voltages` and :meth:`terminal_currents` are in the logical order: rows as given,
    then columns. Construction does steps 1 and 2 of the module docstring (once per set of
    conductances); the reduced blocks are formed on first use and kept.
    """

    def __init__(self, conductances: torch.Tensor, wire_ohm: float, row_order=None):
        check_wire_ohm(wire_ohm)
        g = conductances.detach().to("cpu", torch.float64)
        rows, cols = g.shape
        order = np.arange(rows) if row_order is None else np.asarray(row_order, dtype=np.int64)
        if order.shape != (rows,) or not np.array_equal(np.sort(order), np.arange(rows)):
            raise ValueError(f"row_order: expected a permutation of 0..{rows - 1}, got {row_order!r}")
        self._order = torch.from_numpy(order)
        self._logical = torch.from_numpy(np.argsort(order))  # physical position of each logical row
        self.conductances = g
        """``[R, C]`` siemens, logical order."""
        self._g = g[self._order]  # physical rows from here on
        self.rows, self.cols = rows, cols
        self.wire_S = 1.0 / float(wire_ohm)
        self._chains()
        self._sweep()
        self._rc: torch.Tensor | None = None  # L_rc and L_rr (logical rows), formed on first use
        self._rr: torch.Tensor | None = None

    def _chains(self) -> None:
        """Step 1: pivots of every row chain, ``rho``, ``h`` and the blocks ``K`` ``[R, C, C]``."""
        g, gw = self._g, self.wire_S
        pivot = torch.empty_like(g)  # p_j = g_w + Y_j, eliminating from the far end
        right = torch.zeros_like(g)  # what node j sees through its right segment
        seen = g[:, -1].clone()  # Y_j: node j's device and everything beyond it
        pivot[:, -1] = gw + seen
        for j in range(self.cols - 2, -1, -1):
            right[:, j] = gw * seen / pivot[:, j + 1]
            seen = g[:, j] + right[:, j]
            pivot[:, j] = gw + seen
        left = torch.empty_like(g)  # what node j sees through its left segment (the driver is held)
        left[:, 0] = gw
        for j in range(1, self.cols):
            behind = g[:, j - 1] + left[:, j - 1]
            left[:, j] = gw * behind / (gw + behind)
        self._pivot = pivot
        self._rho = gw * seen / pivot[:, 0]
        log_reach = torch.cumsum(torch.log(gw / pivot), dim=1)
        self._reach = torch.exp(log_reach)  # g_w T^-1 e_0: the row's voltage per volt at its driver
        self._h = g * self._reach
        # T^-1 of a tridiagonal chain: (T^-1)_jl = (T^-1)_jj prod_{m=j+1..l} g_w / p_m for j <= l.
        own = 1.0 / (g + left + right)  # (T^-1)_jj
        index = torch.arange(self.cols)
        k = (log_reach.unsqueeze(1) - log_reach.unsqueeze(2)).abs_().neg_().exp_()  # in place: [R, C, C]
        k.mul_(torch.where(index.view(-1, 1) <= index, own.unsqueeze(2), own.unsqueeze(1)))
        k.mul_(g.unsqueeze(2)).mul_(g.unsqueeze(1)).neg_()
        k.diagonal(dim1=1, dim2=2).add_(g)
        self._K = k

    def _chain_solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``T_i^-1 rhs_i`` for every row chain at once, in place; ``rhs`` ``[C, R, m]`` (along the
        chain first, so that every step is contiguous)."""
        gw, pivot = self.wire_S, self._pivot.T.unsqueeze(2)  # [C, R, 1]
        for j in range(self.cols - 2, -1, -1):
            rhs[j].addcdiv_(rhs[j + 1], pivot[j + 1], value=gw)
        rhs[0].div_(pivot[0])
        for j in range(1, self.cols):
            rhs[j].add_(rhs[j - 1], alpha=gw).div_(pivot[j])
        return rhs

    def _sweep(self) -> None:
        """Step 2, (W1): the inverse Schur complements ``S_i^-1`` ``[R, C, C]`` and ``L_cc``."""
        gw, eye = self.wire_S, torch.eye(self.cols, dtype=torch.float64)
        inverse = torch.empty_like(self._K)
        departure = self._K[0]
        for i in range(self.rows):
            s_inv = torch.cholesky_inverse(torch.linalg.cholesky(departure + gw * eye))
            inverse[i] = s_inv
            carried = gw * (departure @ s_inv)
            carried = 0.5 * (carried + carried.T)
            if i + 1 < self.rows:
                departure = self._K[i + 1] + carried
        self._s_inv = inverse
        self._cc = carried  # L_cc = g_w D_{R-1} S_{R-1}^-1
        del self._K

    def _network_solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """Column-node voltages ``L_b^-1 rhs`` for currents ``rhs`` ``[R, C, m]`` into them, in place."""
        gw, s_inv = self.wire_S, self._s_inv
        for i in range(1, self.rows):
            rhs[i].addmm_(s_inv[i - 1], rhs[i - 1], alpha=gw)
        step = torch.empty_like(rhs[0])
        torch.mm(s_inv[-1], rhs[-1], out=step)
        rhs[-1].copy_(step)
        for i in range(self.rows - 2, -1, -1):
            torch.mm(s_inv[i], rhs[i].add_(rhs[i + 1], alpha=gw), out=step)
            rhs[i].copy_(step)
        return rhs

    def _held_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_rc`` ``[R, C]`` (physical rows) from one back substitution with the readouts as
        right-hand sides (they inject ``g_w`` into the last block only), and ``L_cc`` of the sweep."""
        gw, h = self.wire_S, self._h
        rc = torch.empty(self.rows, self.cols, dtype=torch.float64)
        x = gw * self._s_inv[-1]
        rc[-1] = -(h[-1] @ x)
        for i in range(self.rows - 2, -1, -1):
            x = gw * (self._s_inv[i] @ x)
            rc[i] = -(h[i] @ x)
        return rc, self._cc

    def _row_block(self) -> torch.Tensor:
        """``L_rr = diag(rho) - H^T L_b^-1 H`` ``[R, R]`` (physical rows): one right-hand side per row."""
        rr = torch.diag(self._rho)
        chunk = max(1, _RHS_ELEMENTS // (self.rows * self.cols))
        for start in range(0, self.rows, chunk):
            which = torch.arange(start, min(start + chunk, self.rows))
            rhs = torch.zeros(self.rows, self.cols, len(which), dtype=torch.float64)
            rhs[which, :, torch.arange(len(which))] = self._h[which]
            rr[:, which] -= torch.einsum("ic,icm->im", self._h, self._network_solve(rhs))
        return 0.5 * (rr + rr.T)

    def blocks(
        self, n_weight_rows: int, dtype: torch.dtype, device, held_rows: bool = False
    ) -> dict[str, torch.Tensor]:
        """``L_red`` cut into its blocks: ``rr`` (weight rows), ``rb`` (weight rows x bias rows),
        ``rc``, ``bb``, ``bc``, ``cc`` (columns), as tensors.

        ``held_rows``: every row is held by a source (the input crossbar), so only the blocks that
        touch the columns are formed (``rc``, ``bc``, ``cc``: ``C`` right-hand sides); the currents
        the rows deliver come from :meth:`terminal_currents`."""
        if self._rc is None:
            rc, self._cc = self._held_blocks()
            self._rc = rc[self._logical]
        if not held_rows and self._rr is None:
            self._rr = self._row_block()[self._logical][:, self._logical]
        r, b = slice(0, n_weight_rows), slice(n_weight_rows, self.rows)
        out = {"rc": self._rc[r], "bc": self._rc[b], "cc": self._cc}
        if not held_rows:
            out |= {"rr": self._rr[r, r], "rb": self._rr[r, b], "bb": self._rr[b, b]}
        return {k: v.to(dtype=dtype, device=device) for k, v in out.items()}

    @property
    def reduced(self) -> np.ndarray:
        """The whole ``L_red`` ``[R + C, R + C]`` in siemens (symmetric), logical order: ``R``
        right-hand sides on first use, for small crossbars and tests (the solvers take
        :meth:`blocks`)."""
        m = self.blocks(self.rows, torch.float64, "cpu")
        top = torch.cat([m["rr"], m["rc"]], dim=1)
        return torch.cat([top, torch.cat([m["rc"].T, m["cc"]], dim=1)]).numpy()

    def _column_side(self, terminal_V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Column-node voltages ``[R, C, B]`` (physical rows) for terminal voltages ``[B, R + C]``,
        and the row voltages ``[R, B]`` in physical order."""
        t = terminal_V.detach().to("cpu", torch.float64)
        rows_V = t[:, : self.rows][:, self._order].T
        rhs = self._h.unsqueeze(2) * rows_V.unsqueeze(1)
        rhs[-1].add_(t[:, self.rows :].T, alpha=self.wire_S)
        return self._network_solve(rhs), rows_V

    def device_voltages(self, terminal_V: torch.Tensor) -> torch.Tensor:
        """Voltage across every device (row side minus column side), ``[B, R, C]``, for terminal
        voltages ``[B, R + C]`` (rows then columns): one solve of the elimination per batch."""
        column_side, rows_V = self._column_side(terminal_V)
        side = column_side.permute(1, 0, 2)  # [C, R, B]
        row_side = self._chain_solve(torch.mul(side, self._g.T.unsqueeze(2)))
        row_side.addcmul_(self._reach.T.unsqueeze(2), rows_V.unsqueeze(0)).sub_(side)  # now the drop
        drop = row_side.permute(2, 1, 0)[:, self._logical]
        return drop.to(dtype=terminal_V.dtype, device=terminal_V.device)

    def terminal_currents(self, terminal_V: torch.Tensor) -> torch.Tensor:
        """Current into the crossbar at every terminal, ``[B, R + C]`` amperes (``L_red`` times the
        terminal voltages ``[B, R + C]``), from the same solve as :meth:`device_voltages` without
        the row wires: row ``i`` takes ``rho_i t_i - h_i . b_i``, column ``j`` what its last
        segment carries."""
        column_side, rows_V = self._column_side(terminal_V)
        rows = self._rho.unsqueeze(1) * rows_V - torch.einsum("rc,rcb->rb", self._h, column_side)
        columns = self.wire_S * (terminal_V.detach().to("cpu", torch.float64)[:, self.rows :] - column_side[-1].T)
        current = torch.cat([rows[self._logical].T, columns], dim=1)
        return current.to(dtype=terminal_V.dtype, device=terminal_V.device)
