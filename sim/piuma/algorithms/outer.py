"""Outer-product SpGEMM: count, multiply, merge (three phases, barriers between).

Partial products go to per-row *bins* in DRAM, so that each row can be merged
on its own. A bin entry is one 8-byte word: the 32-bit column key and the fp32
value (the row is implicit in the bin), the same layout as a non-zero.

Count (symbolic; one task per piece of at most ``token_flops`` entries of a
column k of A): read the column's extent and the piece (CSC) and B's row
extent (2 words); for each i in the column a
posted remote atomic add of b_k on row i's count (the counts are spread over
all cores' scratchpads). Then each core turns its rows' counts into bin bases
(an exclusive scan: a scratchpad load and store per row, one task per core).
Multiply (one task per *piece* of a column of A: ``outer.token_flops``
partial products, at least one A entry, so that a hub column does not serialise
on one thread — the same splitting SMASH's tokens get): read the piece of A's
column and B's row k (extent + b_k entries; read-only, so L1 can hit when
several pieces of k run on one core); for each i a blocking remote fetch-add
on row i's bin cursor claims b_k slots; each partial product is a
multiply (``mul``) and one posted 8-byte store.
Merge (one task per output row i with p_i partial products in r_i runs, one
per contributing k): read the bin extent (a remote access); k-way heap merge
(ceil(log2 r_i) levels of ``heap_level`` instructions per partial, plus an
add (``flop - mul``) per partial whose key equals the previous one); write the row (c_i + 1 words). The bin is staged in the thread's
share of the scratchpad (``size * table_fraction / threads`` bytes, the share
SMASH's tables and the dense accumulator get): a bin that fits is gathered at
once; otherwise each run is streamed through a double buffer of
``dma_block_words`` words, so at most F = share / (2 blocks) runs merge in one
pass; a row with r_i > F needs ceil(log_F r_i) passes, each but the last
writing its merged runs back to DRAM (p_i words) and the next reading them
(external merge). Gathers are DMA (``merge_gather = "dma"``) then scratchpad
loads, or blocking DRAM loads (``"loads"``).
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
from sparsec.sim.piuma.machine.l1 import l1_hits


def column_pieces(acol: np.ndarray, blen: np.ndarray, token_flops: float):
    """Split each column k of A into pieces of ~token_flops partial products
    (ceil(token_flops / b_k) entries, at least one). Returns (k of each piece,
    entries of each piece)."""
    per = np.maximum(1, np.floor(token_flops / np.maximum(blen, 1))).astype(np.int64)
    acol_i = acol.astype(np.int64)
    npieces = np.maximum(1, -(-acol_i // per))             # an empty column: one piece
    k_of = np.repeat(np.arange(acol.size), npieces)
    first = np.cumsum(npieces) - npieces
    j = np.arange(k_of.size) - np.repeat(first, npieces)
    entries = np.minimum(per[k_of], acol_i[k_of] - j * per[k_of])
    return k_of, np.maximum(entries, 0).astype(float)


def merge_passes(runs: np.ndarray, fits: np.ndarray, fan_in: int) -> np.ndarray:
    """Passes over a row's bin: 1 if it fits the share or has at most fan_in
    runs, else ceil(log_fan_in(runs))."""
    runs = np.maximum(np.asarray(runs, dtype=float), 1.0)
    if fan_in < 2:
        fan_in = 2
    ext = np.ceil(np.log(runs) / np.log(fan_in) - 1e-12)
    return np.where(fits | (runs <= fan_in), 1.0, np.maximum(ext, 1.0))


@register
class Outer:
    name = "outer"

    def plan(self, ops: Operands, cfg: PiumaConfig, machine) -> Plan:
        C, touched = sort_merge(ops)
        k, oc = cfg.costs, cfg.outer
        K, M = ops.K, ops.M
        cores = cfg.core.count
        acol = np.diff(ops.Acsc.indptr).astype(float)
        blen = ops.b_len.astype(float)

        # --- count: per piece of a column k (at most token_flops entries, so a
        # hub column is spread over threads), posted adds of b_k on the rows'
        # counts ----------------------------------------------------------------
        ck, cent = column_pieces(acol, np.ones_like(blen), oc.token_flops)
        Kp = ck.size
        core0 = partition(cent + 4, cores)
        cnt = Costs(Kp, core0, cfg, machine)
        cnt.queue_pop()
        cnt.compute(np.full(Kp, float(k.task)))
        cnt.dram_load(np.full(Kp, 2.0))
        cnt.dram_load(cent)
        cnt.dram_load(np.full(Kp, 2.0))
        cnt.remote_atomic(cent * (blen[ck] > 0), blocking=False)
        rcore = row_core(ops, cores)
        rows_per_core = np.bincount(rcore, minlength=cores).astype(float)
        scan = Costs(cores, np.arange(cores), cfg, machine)
        scan.compute(np.full(cores, float(k.task)))
        scan.spm_load(rows_per_core)
        scan.compute(rows_per_core)                   # the running sum
        scan.spm_store(rows_per_core)

        # --- multiply: pieces of A's columns ---------------------------------------
        k_of, ent = column_pieces(acol, blen, oc.token_flops)
        P = k_of.size
        bk = blen[k_of]
        prods = ent * bk
        core1 = partition(prods + ent + bk + 4, cores)
        hit = l1_hits(cfg.l1, cores, core1, k_of, blen + 2)
        mul = Costs(P, core1, cfg, machine)
        mul.queue_pop()
        mul.compute(np.full(P, float(k.task)))
        mul.dram_load(np.full(P, 2.0))
        mul.dram_load(ent)
        mul.dram_load(2.0 * ~hit)
        mul.l1_load(2.0 * hit)
        mul.dram_load(bk * ~hit)
        mul.l1_load(bk * hit)
        mul.remote_atomic(ent * (bk > 0))
        mul.compute(prods * k.mul)                    # the add happens in the merge
        mul.dram_store(prods)

        # --- merge: per row, k-way merge of its bin ----------------------------------
        p = ops.row_flops.astype(float)
        runs = np.bincount(ops.anz_row, weights=ops.anz_flops > 0, minlength=M)
        share_words = cfg.scratchpad.size_bytes * cfg.scratchpad.table_fraction \
            / cfg.core.threads / 8
        fan_in = int(share_words // (2 * oc.dma_block_words))
        passes = merge_passes(runs, p <= share_words, fan_in)
        mrg = Costs(M, rcore, cfg, machine)
        mrg.queue_pop()
        mrg.compute(np.full(M, float(k.task)))
        mrg.remote_atomic(np.ones(M))
        if oc.merge_gather == "dma":
            mrg.dma_gather(p * passes, machine)
            mrg.spm_load(p * passes)
            mrg.spm_store(p * (passes - 1))           # merged runs staged for write-back
        else:
            mrg.dram_load(p * passes)
        mrg.dram_store(p * (passes - 1))              # external merge: runs back to DRAM
        mrg.compute(p * np.maximum(log2_ceil(runs), 1) * k.heap_level)
        mrg.compute((p - touched) * (k.flop - k.mul))  # adds of equal keys
        mrg.dram_store(touched + 1.0)
        stages = [Stage("count", core0, cnt.demands(), counters=cnt.counters()),
                  Stage("scan", np.arange(cores), scan.demands(), counters=scan.counters()),
                  Stage("multiply", core1, mul.demands(), counters=mul.counters()),
                  Stage("merge", rcore, mrg.demands(), counters=mrg.counters())]
        return Plan(C, stages, {"flops": float(ops.flops),
                                "partial_product_words": float(prods.sum()),
                                "external_merge_rows": float((passes > 1).sum()),
                                "merge_passes_max": float(passes.max()) if M else 0.0})
