"""TVMScript macros shared by the families."""
from __future__ import annotations

from tvm.script import tirx as T


@T.macro
def tree_sum(acc, lanes):
    """``acc[0] = sum(acc[0:lanes])`` for a power-of-two ``lanes`` <= 64, as log2(lanes)
    vector adds (a serial chain of scalar adds costs ``lanes`` FP-add latencies)."""
    if lanes >= 64:
        for l in T.vectorized(32):
            acc[l] = acc[l] + acc[l + 32]
    if lanes >= 32:
        for l in T.vectorized(16):
            acc[l] = acc[l] + acc[l + 16]
    if lanes >= 16:
        for l in T.vectorized(8):
            acc[l] = acc[l] + acc[l + 8]
    if lanes >= 8:
        for l in T.vectorized(4):
            acc[l] = acc[l] + acc[l + 4]
    if lanes >= 4:
        for l in T.vectorized(2):
            acc[l] = acc[l] + acc[l + 2]
    if lanes >= 2:
        acc[0] = acc[0] + acc[1]
