"""Output stationary: M on rows, N on columns, K streamed in time (SCALE-Sim 'os').

Each PE accumulates one output; A rows carry group windows from the left,
compressed B columns carry (value, index) from the top. Results leave
through a separate output chain overlapped with the next fold, so a fold
ends with its last MAC (SCALE-Sim's R + C + T - 2).
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.sat import pe_array as pe


class OutputStationary:
    name = "os"
    roles = {"M": "row", "N": "col", "K": "time"}

    @staticmethod
    def fold_cycles(rows, cols, t):
        return rows + cols + t - 2

    def simulate_fold(self, rows, cols, a, vals, idx, gstart, width, trace=None):
        kc, tn = vals.shape
        tm = a.shape[0]
        win = pe.windows(a, gstart, width)                      # [tm, kc, width]
        abus = np.zeros((rows, cols, width), dtype=a.dtype)
        vbus = np.zeros((rows, cols), dtype=a.dtype)
        ibus = np.zeros((rows, cols), dtype=np.int64)
        acc = np.zeros((rows, cols), dtype=a.dtype)
        r_idx, c_idx = np.arange(rows), np.arange(cols)
        cyc = 0
        for s in range(kc + rows + cols - 2):
            k_a = s - r_idx                                     # row r receives window of k = s - r
            ok = (k_a >= 0) & (k_a < kc) & (r_idx < tm)
            ain = np.zeros((rows, width), dtype=a.dtype)
            ain[ok] = win[r_idx[ok], k_a[ok]]
            abus = pe.shift_right(abus, ain)
            k_b = s - c_idx                                     # column c receives B[k = s - c, c]
            ok = (k_b >= 0) & (k_b < kc) & (c_idx < tn)
            vin = np.zeros(cols, dtype=a.dtype)
            iin = np.zeros(cols, dtype=np.int64)
            vin[ok], iin[ok] = vals[k_b[ok], c_idx[ok]], idx[k_b[ok], c_idx[ok]]
            vbus, ibus = pe.shift_down(vbus, vin), pe.shift_down(ibus, iin)
            acc += pe.select(abus, ibus) * vbus
            if trace is not None:
                trace.append(pe.line(cyc, "mac", int(np.count_nonzero(vbus)), 0))
            cyc += 1
        return acc[:tm, :tn], cyc
