"""Weight stationary: K on rows, N on columns, M streamed (SCALE-Sim 'ws')."""
from __future__ import annotations

import numpy as np

from sparsec.sim.sat import pe_array as pe


class WeightStationary:
    name = "ws"
    # GEMM dimension -> array role
    roles = {"K": "row", "N": "col", "M": "time"}

    @staticmethod
    def fold_cycles(rows, cols, t):
        """Stall-free cycles of one fold: R to load weights, then T + R + C - 2 to stream and drain."""
        return 2 * rows + cols + t - 2

    def simulate_fold(self, rows, cols, a, vals, idx, gstart, width, trace=None):
        """Out[tm, tn] of one fold, computed by moving data through the grid; returns (out, cycles)."""
        kc, tn = vals.shape
        tm = a.shape[0]
        win = pe.windows(a, gstart, width)                      # [tm, kc, width]
        w = np.zeros((rows, cols), dtype=a.dtype)
        ix = np.zeros((rows, cols), dtype=np.int64)
        w[:kc, :tn], ix[:kc, :tn] = vals, idx
        wreg = np.zeros_like(w)
        ireg = np.zeros_like(ix)
        cyc = 0
        for i in range(rows):                                   # weights shift in from the top
            wreg, ireg = pe.shift_down(wreg, w[rows - 1 - i]), pe.shift_down(ireg, ix[rows - 1 - i])
            if trace is not None:
                trace.append(pe.line(cyc, "load", 0, 0))
            cyc += 1
        bus = np.zeros((rows, cols, width), dtype=a.dtype)      # group windows moving right
        psum = np.zeros((rows, cols), dtype=a.dtype)            # partial sums moving down
        out = np.zeros((tm, cols), dtype=a.dtype)
        r_idx, c_idx = np.arange(rows), np.arange(cols)
        zero_win = np.zeros((rows, width), dtype=a.dtype)
        for s in range(tm + rows + cols - 2):
            t_in = s - r_idx                                    # row r receives A row s - r
            inj = zero_win.copy()
            ok = (t_in >= 0) & (t_in < tm) & (r_idx < kc)
            inj[ok] = win[t_in[ok], r_idx[ok]]
            bus = pe.shift_right(bus, inj)
            psum = pe.shift_down(psum, np.zeros(cols, dtype=a.dtype)) + pe.select(bus, ireg) * wreg
            t_out = s - (rows - 1) - c_idx                      # bottom of column c holds row t_out
            ok = (t_out >= 0) & (t_out < tm)
            out[t_out[ok], c_idx[ok]] = psum[rows - 1, ok]
            if trace is not None:
                busy = int(np.count_nonzero(((s - r_idx[:, None] - c_idx[None, :]) >= 0)
                                            & ((s - r_idx[:, None] - c_idx[None, :]) < tm)))
                trace.append(pe.line(cyc, "stream", busy, int(ok.sum())))
            cyc += 1
        return out[:, :tn], cyc
