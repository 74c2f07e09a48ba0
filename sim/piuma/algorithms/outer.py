"""Outer-product SpGEMM: multiply phase, barrier, merge phase.

Multiply (one task per k): read A's column k (CSC: 2 + a'_k words) and B's row
k (2 + b_k words); for each i in the column, a remote atomic fetch-add on row
i's bin counter (the counters are spread over all cores' scratchpads) returns
where row i's a'_k x b_k partial products go; each partial product is written
as two words (packed (i, j) and the value) with posted stores.
Merge (one task per output row i with p_i partial products in runs from
r_i = #k contributing): read the counter (a remote access), fetch the 2 p_i
words (DMA gather into the scratchpad then scratchpad loads, or direct DRAM
loads), k-way heap merge (ceil(log2 r_i) levels of ``heap_level``
instructions per partial), write the row (c_i + 1 words).
Bins are filled in k order, so the functional merge is a stable sort by
column within each row followed by a sum of equal columns.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.algorithms.base import Costs, Plan, Stage, log2_ceil, partition
from sparsec.sim.piuma.algorithms.common import row_core, sort_merge
from sparsec.sim.piuma.algorithms.operands import Operands
from sparsec.sim.piuma.algorithms.registry import register
from sparsec.sim.piuma.config import PiumaConfig


@register
class Outer:
    name = "outer"

    def plan(self, ops: Operands, cfg: PiumaConfig, machine) -> Plan:
        C, touched = sort_merge(ops)
        k = cfg.costs
        K = ops.K
        acol = np.diff(ops.Acsc.indptr).astype(float)
        blen = ops.b_len.astype(float)
        prods = acol * blen
        core1 = partition(prods + acol + blen + 1, cfg.core.count)
        mul = Costs(K, core1, cfg, machine)
        mul.queue_pop()
        mul.compute(np.full(K, float(k.task)))
        mul.dram_load(np.full(K, 2.0))
        mul.dram_load(acol)
        mul.dram_load(np.full(K, 2.0))
        mul.dram_load(blen)
        mul.remote_atomic(acol * (blen > 0))
        mul.compute(prods * k.flop)
        mul.dram_store(2 * prods)

        M = ops.M
        core2 = row_core(ops, cfg.core.count)
        p = ops.row_flops.astype(float)
        runs = np.bincount(ops.anz_row, weights=ops.anz_flops > 0, minlength=M)
        mrg = Costs(M, core2, cfg, machine)
        mrg.queue_pop()
        mrg.compute(np.full(M, float(k.task)))
        mrg.remote_atomic(np.ones(M))
        if cfg.outer.merge_gather == "dma":
            mrg.dma_gather(2 * p, machine)
            mrg.spm_load(2 * p)
        else:
            mrg.dram_load(2 * p)
        mrg.compute(p * np.maximum(log2_ceil(runs), 1) * k.heap_level)
        mrg.dram_store(touched + 1.0)
        stages = [Stage("multiply", core1, mul.demands(), counters=mul.counters()),
                  Stage("merge", core2, mrg.demands(), counters=mrg.counters())]
        return Plan(C, stages, {"flops": float(ops.flops),
                                "partial_product_words": float(2 * prods.sum())})
