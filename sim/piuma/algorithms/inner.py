"""Inner-product SpGEMM: CSR A x CSC B, an index intersection per output.

One task per output row i: read A's row (2 + a_i words, then kept in L1);
for every candidate column j read B's column extent (2 words) and entries
(b_j words; L1 or DRAM) and merge-intersect the two index lists, worst case
a_i + b_j ``merge_step`` steps (early exit is not modelled); each match is a
multiply-add; write C(i, j) for every non-empty intersection, then the row
pointer.
Candidates: ``nonempty`` (default) tests every pair of a non-empty row i of A
and a non-empty column j of B: an inner product cannot know which dot products
are non-zero before computing them, and skipping empty rows and columns (known
from the extents) is all it can prune. ``structure`` tests only the (i, j) of
C's pattern, as if it were known beforehand (a masked product, as when the
pattern is reused across iterations; the symbolic phase is not charged; an
optimistic lower bound, not a real inner product); ``all`` tests all N columns
for every row.
The functional result is the sum over the matching k in increasing order, the
same numbers as the merge of the row's partial products.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.algorithms.base import Costs, Plan, Stage, partition
from sparsec.sim.piuma.algorithms.common import row_core, sort_merge
from sparsec.sim.piuma.algorithms.operands import Operands
from sparsec.sim.piuma.algorithms.registry import register
from sparsec.sim.piuma.config import PiumaConfig
from sparsec.sim.piuma.machine.l1 import l1_hits


@register
class Inner:
    name = "inner"

    def plan(self, ops: Operands, cfg: PiumaConfig, machine) -> Plan:
        C, touched = sort_merge(ops)
        M, k = ops.M, cfg.costs
        bcol = np.diff(ops.Bc.indptr).astype(float)       # entries per column of B
        a = ops.a_len.astype(float)
        if cfg.inner.candidates == "structure":
            core = row_core(ops, cfg.core.count)
            # pattern before cancellations: every touched (i, j)
            cand_row, cand_col = self._pattern(ops, C, touched)
            hit = l1_hits(cfg.l1, cfg.core.count, core[cand_row], cand_col, bcol + 2)
            miss = ~hit
            n_miss = np.bincount(cand_row, weights=miss, minlength=M)
            n_hit = np.bincount(cand_row, weights=hit, minlength=M)
            w_miss = np.bincount(cand_row, weights=bcol[cand_col] * miss, minlength=M)
            w_hit = np.bincount(cand_row, weights=bcol[cand_col] * hit, minlength=M)
            ncand = touched.astype(float)
            bsum = w_miss + w_hit
        else:
            every = cfg.inner.candidates == "all"
            rows_ok = np.ones(M, dtype=bool) if every else a > 0
            cols_ok = np.ones(ops.N, dtype=bool) if every else bcol > 0
            ncand = rows_ok * float(cols_ok.sum())
            bsum = rows_ok * float(bcol[cols_ok].sum())
            # rows to cores in blocks of equal intersection work
            core = partition(ncand * a + bsum + 1, cfg.core.count)
            n_hit, n_miss, w_hit, w_miss = self._all_columns(ops, cfg, core, bcol, cols_ok,
                                                             rows_ok)
        costs = Costs(M, core, cfg, machine)
        costs.queue_pop()
        costs.compute(np.full(M, float(k.task)))
        costs.dram_load(np.full(M, 2.0))
        costs.dram_load(a)
        costs.dram_load(2 * n_miss)
        costs.l1_load(2 * n_hit)
        costs.dram_load(w_miss)
        costs.l1_load(w_hit)
        costs.compute((ncand * a + bsum) * k.merge_step)
        costs.compute(ops.row_flops * float(k.flop))
        costs.dram_store(touched + 1.0)
        stage = Stage("rows", core, costs.demands(), counters=costs.counters())
        return Plan(C, [stage], {"flops": float(ops.flops),
                                 "intersections": float(ncand.sum())})

    @staticmethod
    def _pattern(ops: Operands, C, touched):
        """(row, col) of every touched output, row-major; from C plus any cancelled ones."""
        if int(touched.sum()) == C.nnz:
            return np.repeat(np.arange(ops.M), np.diff(C.indptr)), C.indices.astype(np.int64)
        rows, cols = [], []
        for r0, r1 in ops.row_chunks():
            _, row, col, _ = ops.partials(r0, r1)
            key = np.unique(row * ops.N + col)
            rows.append(key // ops.N)
            cols.append(key % ops.N)
        return np.concatenate(rows), np.concatenate(cols)

    @staticmethod
    def _all_columns(ops: Operands, cfg: PiumaConfig, core, bcol, cols_ok, rows_ok):
        """Every candidate row reads every candidate column: a core's L1 keeps the
        first columns that fit (all are used equally often); the core's first
        candidate row misses them all. Returns per row (columns hit, columns
        missed, entry words hit, entry words missed)."""
        M = ops.M
        bc = bcol[cols_ok]
        words = bc + 2
        if cfg.l1.enabled and M:
            fit = np.cumsum(words) <= cfg.l1.size_bytes // 8
        else:
            fit = np.zeros(bc.size, dtype=bool)
        hot_cols, hot_words = float(fit.sum()), float(bc[fit].sum())
        rows = np.flatnonzero(rows_ok)
        first = np.zeros(M, dtype=bool)
        if rows.size:
            rc = core[rows]
            first[rows[np.concatenate([[True], rc[1:] != rc[:-1]])]] = True
        n_hit = np.where(first, 0.0, hot_cols) * rows_ok
        w_hit = np.where(first, 0.0, hot_words) * rows_ok
        return n_hit, bc.size * rows_ok - n_hit, w_hit, bc.sum() * rows_ok - w_hit
