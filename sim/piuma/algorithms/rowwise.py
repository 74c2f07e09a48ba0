"""Row-wise (Gustavson) SpGEMM with a dense or a sorted accumulator.

One task per output row i, pulled by a thread from its core's queue:
  read A's row extent (2 words) and entries (a_i words); for each A(i, k) read
  B's row extent and entries (L1 or DRAM); then accumulate the row's partial
  products:
  * ``dense``: a sparse accumulator (SPA) of N values, private to the thread:
    per partial product a blocking load and a posted store of SPA[j]; per new
    column a posted store to the occupied list; at the end load the occupied
    list, load the values, reset the touched SPA words, write the row (columns
    in first-touch order; ``sort_rows`` charges sorting the list first).
    The SPA lives in the scratchpad when ``N * 8 B * threads`` fits in the
    accumulator share of it, else in DRAM (every access then a DRAM access).
  * ``sorted``: a k-way heap merge of the row's sorted B rows: ``heap_level``
    instructions per level, ceil(log2(runs)) levels per partial product; no
    accumulator memory.
Finally C's row (c_i words) and its pointer (1 word) are written.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.algorithms.base import Costs, Plan, Stage, log2_ceil, sort_instructions
from sparsec.sim.piuma.algorithms.common import (b_row_hits, dense_accumulate, load_b_rows,
                                                 row_core, sort_merge)
from sparsec.sim.piuma.algorithms.operands import Operands
from sparsec.sim.piuma.algorithms.registry import register
from sparsec.sim.piuma.config import PiumaConfig


def spa_in_scratchpad(cfg: PiumaConfig, ncols: int) -> bool:
    sc = cfg.scratchpad
    return ncols * 8 * cfg.core.threads <= sc.size_bytes * sc.table_fraction


@register
class Rowwise:
    name = "rowwise"

    def plan(self, ops: Operands, cfg: PiumaConfig, machine) -> Plan:
        acc = cfg.rowwise.accumulator
        C, touched = dense_accumulate(ops) if acc == "dense" else sort_merge(ops)
        M, k = ops.M, cfg.costs
        core = row_core(ops, cfg.core.count)
        costs = Costs(M, core, cfg, machine)
        costs.queue_pop()
        costs.compute(np.full(M, float(k.task)))
        costs.dram_load(np.full(M, 2.0))
        costs.dram_load(ops.a_len)
        load_b_rows(costs, ops, ops.anz_row, b_row_hits(ops, cfg, core[ops.anz_row]))
        flops = ops.row_flops.astype(float)
        c = touched.astype(float)
        costs.compute(flops * k.flop)
        counters = {}
        if acc == "dense":
            in_spm = spa_in_scratchpad(cfg, ops.N)
            if in_spm:
                costs.spm_load(flops)
                costs.spm_store(flops + c)        # SPA update + occupied-list append
                costs.spm_load(2 * c)             # occupied list + values at readout
                costs.spm_store(c)                # reset
            else:
                costs.dram_load(flops)
                costs.dram_store(flops + c)
                costs.dram_load(2 * c)
                costs.dram_store(c)
            if cfg.rowwise.sort_rows:
                costs.compute(sort_instructions(c, ops.N, k))
            counters["accumulator_in_scratchpad"] = float(in_spm)
        else:
            runs = np.bincount(ops.anz_row, weights=ops.anz_flops > 0, minlength=M)
            costs.compute(flops * log2_ceil(runs) * k.heap_level)
        costs.dram_store(c + 1)
        stage = Stage("rows", core, costs.demands(), counters=costs.counters())
        return Plan(C, [stage], {**counters, "flops": float(ops.flops)})
