"""Input stationary: K on rows, M on columns, N streamed (SCALE-Sim 'is').

The stationary operand is A, so each PE keeps the whole M-wide group window
of its A element's group; the streamed compressed B carries (value, index).
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.sat import pe_array as pe


class InputStationary:
    name = "is"
    roles = {"K": "row", "M": "col", "N": "time"}

    @staticmethod
    def fold_cycles(rows, cols, t):
        return 2 * rows + cols + t - 2

    def simulate_fold(self, rows, cols, a, vals, idx, gstart, width, trace=None):
        kc, tn = vals.shape
        tm = a.shape[0]
        win = pe.windows(a, gstart, width)                      # [tm, kc, width]
        st = np.zeros((rows, cols, width), dtype=a.dtype)
        st[:kc, :tm] = win.transpose(1, 0, 2)                   # PE(r, c) keeps A[c, group(r)]
        sreg = np.zeros_like(st)
        cyc = 0
        for i in range(rows):
            sreg = pe.shift_down(sreg, st[rows - 1 - i])
            if trace is not None:
                trace.append(pe.line(cyc, "load", 0, 0))
            cyc += 1
        vbus = np.zeros((rows, cols), dtype=a.dtype)
        ibus = np.zeros((rows, cols), dtype=np.int64)
        psum = np.zeros((rows, cols), dtype=a.dtype)
        out = np.zeros((cols, tn), dtype=a.dtype)               # out[m, n]
        r_idx, c_idx = np.arange(rows), np.arange(cols)
        for s in range(tn + rows + cols - 2):
            n_in = s - r_idx
            ok = (n_in >= 0) & (n_in < tn) & (r_idx < kc)
            vin = np.zeros(rows, dtype=a.dtype)
            iin = np.zeros(rows, dtype=np.int64)
            vin[ok], iin[ok] = vals[r_idx[ok], n_in[ok]], idx[r_idx[ok], n_in[ok]]
            vbus, ibus = pe.shift_right(vbus, vin), pe.shift_right(ibus, iin)
            psum = pe.shift_down(psum, np.zeros(cols, dtype=a.dtype)) + pe.select(sreg, ibus) * vbus
            n_out = s - (rows - 1) - c_idx
            ok = (n_out >= 0) & (n_out < tn)
            out[c_idx[ok], n_out[ok]] = psum[rows - 1, ok]
            if trace is not None:
                trace.append(pe.line(cyc, "stream", int(np.count_nonzero(vbus)), int(ok.sum())))
            cyc += 1
        return out[:tm], cyc
