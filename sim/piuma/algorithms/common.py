"""Pieces shared by the algorithms: functional merges, B-segment loads, tokens."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sparsec.sim.piuma.algorithms.base import Costs, csr_from_rows, drop_zeros
from sparsec.sim.piuma.algorithms.operands import Operands
from sparsec.sim.piuma.config import PiumaConfig
from sparsec.sim.piuma.machine.l1 import l1_hits


def sort_merge(ops: Operands):
    """C by merging each row's partial products: stable sort on (row, column),
    then sum runs of equal keys (the k-way merge of the outer product's bins
    and of the row-wise sorted accumulator). Returns (C, touched per row)."""
    rows, cols, vals = [], [], []
    for r0, r1 in ops.row_chunks():
        _, row, col, val = ops.partials(r0, r1)
        if row.size == 0:
            continue
        order = np.lexsort((col, row))
        row, col, val = row[order], col[order], val[order]
        new = np.ones(row.size, dtype=bool)
        new[1:] = (row[1:] != row[:-1]) | (col[1:] != col[:-1])
        starts = np.flatnonzero(new)
        rows.append(row[starts])
        cols.append(col[starts])
        vals.append(np.add.reduceat(val, starts))
    return _assemble(ops, rows, cols, vals)


def _assemble(ops: Operands, rows, cols, vals):
    """(C, touched): C without exact cancellations, and per row the distinct
    columns accumulated (what an accumulator holds and the cost model uses)."""
    if not rows:
        return sp.csr_matrix((ops.M, ops.N)), np.zeros(ops.M, dtype=np.int64)
    rows = np.concatenate(rows)
    touched = np.bincount(rows, minlength=ops.M)
    C = csr_from_rows(rows, np.concatenate(cols), np.concatenate(vals), (ops.M, ops.N))
    return drop_zeros(C), touched


def dense_accumulate(ops: Operands, window_elems: int = 1 << 22):
    """C through a dense accumulator (SPA) per row: values added at their
    column, an occupancy flag per column; the occupied columns are read back
    in column order."""
    rows, cols, vals = [], [], []
    span = max(1, window_elems // max(ops.N, 1))
    for c0, c1 in ops.row_chunks():
        for r0 in range(c0, c1, span):
            r1 = min(r0 + span, c1)
            _, row, col, val = ops.partials(r0, r1)
            if row.size == 0:
                continue
            idx = (row - r0) * ops.N + col
            size = (r1 - r0) * ops.N
            spa = np.bincount(idx, weights=val, minlength=size)
            flag = np.bincount(idx, minlength=size) > 0
            occ = np.flatnonzero(flag)
            rows.append(occ // ops.N + r0)
            cols.append(occ % ops.N)
            vals.append(spa[occ])
    return _assemble(ops, rows, cols, vals)


def row_core(ops: Operands, cores: int) -> np.ndarray:
    """Rows to cores: contiguous blocks with near-equal partial products."""
    from sparsec.sim.piuma.algorithms.base import partition
    return partition(ops.row_flops + ops.a_len + 1, cores)


def b_row_hits(ops: Operands, cfg: PiumaConfig, anz_core: np.ndarray) -> np.ndarray:
    """Per A non-zero (i, k): does reading B's row k (pointers + entries) hit in L1?"""
    return l1_hits(cfg.l1, cfg.core.count, anz_core, ops.anz_k, ops.b_len + 2)


def load_b_rows(costs: Costs, ops: Operands, anz_task: np.ndarray, hit: np.ndarray) -> None:
    """Per task: read the extents and entries of the B rows its A non-zeros select."""
    n = costs.n
    blen = ops.b_len[ops.anz_k].astype(float)
    miss = ~hit
    costs.dram_load(2 * np.bincount(anz_task, weights=miss, minlength=n))
    costs.l1_load(2 * np.bincount(anz_task, weights=hit, minlength=n))
    costs.dram_load(np.bincount(anz_task, weights=blen * miss, minlength=n))
    costs.l1_load(np.bincount(anz_task, weights=blen * hit, minlength=n))
