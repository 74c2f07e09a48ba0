"""SMASH: row-wise SpGEMM merging partial products as they are generated, by
atomic hashing into the scratchpad.

Each output row i gets an open-addressing hash table of S_i slots (one 8-byte
word: 32-bit column key + fp32 value), S_i = next power of two of
min(N, flops_i) / ``load_factor`` (flops_i, the row's partial products, bounds
its distinct columns). Per partial product (i, j, v): hash j (Fibonacci
hashing: the top log2 S_i bits of j * 2654435769 mod 2^32), then linear
probing: an atomic compare-and-swap on the slot's key (blocking; a slot holding
another key is a *collision*, go to the next slot), then a posted atomic add of
v on the slot's value. When all partial products of a row are in, the
*readout* walks the row's occupied list (each CAS that claims an empty slot
appends the slot to it), writes the row to C and clears those slots. C's
columns are then in table order, as a hash SpGEMM leaves them (scipy's own
SpGEMM also leaves them unsorted); ``sort_rows`` charges a sort of the c_i
keys first. (The functional C handed back is canonical, sorted, either way.) Tokens share a row's new keys in proportion to their partial
products (the model does not track which token claims which slot).

Concurrency: threads insert concurrently, so placement is resolved in rounds:
at round d every unplaced partial product tries slot home + d; among those
claiming one free slot the earliest generated wins the CAS; a partial product
whose key is now in its slot is placed. The result is a valid linear-probing
table (every slot between a key's home and its place is taken).

Capacity: a table gets at most ``size * table_fraction / threads`` bytes of
the core's scratchpad (each thread has at most one row open). A larger table
*overflows to DRAM* (every probe a DRAM atomic), or with ``fragmented`` keeps
its first share-sized fragment on chip and the rest in DRAM (probes split in
proportion).

``tokenise``: a pre-pass (one task per row: read A's row and B's row extents,
write token descriptors to the scratchpad queue) cuts each row into tokens of
about ``token_flops`` partial products; tokens of one row run on several
threads of the same core and hash into the same table, the thread finishing
the row's last token does the readout. Without it, a thread takes whole rows.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.algorithms.base import (Costs, Plan, Stage, csr_from_rows, drop_zeros,
                                               next_pow2, sort_instructions)
from sparsec.sim.piuma.algorithms.common import b_row_hits, load_b_rows, row_core
from sparsec.sim.piuma.algorithms.operands import Operands
from sparsec.sim.piuma.algorithms.registry import register
from sparsec.sim.piuma.config import PiumaConfig

FIB = np.uint64(2654435769)


def table_slots(ops: Operands, load_factor: float) -> np.ndarray:
    """Hash table slots per row (0 for rows without partial products)."""
    ub = np.minimum(ops.N, ops.row_flops)
    slots = next_pow2(np.ceil(ub / load_factor))
    return np.where(ops.row_flops > 0, slots, 0)


def home_slot(col: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Fibonacci hash of ``col`` into a table of ``slots`` (a power of two) slots."""
    bits = np.log2(np.maximum(slots, 1)).astype(np.uint32)
    h = col.astype(np.uint32) * np.uint32(FIB)             # wraps mod 2^32
    return (h >> (np.uint32(32) - bits)).astype(np.int64) * (bits > 0)


def hash_insert(row, col, val, base, slots):
    """Insert partial products (in generation order) into per-row linear-probing
    tables laid out at ``base[row]``; returns (slot, displacement) per partial
    product, the tables' keys (-1 empty) and summed values, and the slot of
    every distinct (row, column) in row-major, column-sorted order.

    Partial products with the same (row, column) follow the same probe
    sequence and are placed in the same round, so the rounds run on the
    distinct keys, each generated at its first occurrence (exactly the same
    placement as running them all)."""
    total = int(base[-1] + slots[-1]) if base.size else 0
    key_at = np.full(total, -1, dtype=np.int64)
    n = row.size
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, key_at, np.zeros(total), z
    ncol = int(col.max()) + 1
    _, first, inv = np.unique(row * ncol + col, return_index=True, return_inverse=True)
    urow, ucol = row[first], col[first]
    u = first.size
    winner = np.full(total, np.iinfo(np.int64).max, dtype=np.int64)
    S = slots[urow]
    start = base[urow]
    home = home_slot(ucol, S)
    uslot = np.empty(u, dtype=np.int64)
    udisp = np.empty(u, dtype=np.int64)
    todo = np.arange(u)
    d = 0
    while todo.size:
        s = start[todo] + ((home[todo] + d) & (S[todo] - 1))
        free = key_at[s] < 0
        if free.any():
            fs, fi = s[free], todo[free]
            gen = first[fi]
            np.minimum.at(winner, fs, gen)
            won = winner[fs] == gen
            key_at[fs[won]] = ucol[fi[won]]
        placed = key_at[s] == ucol[todo]
        uslot[todo[placed]] = s[placed]
        udisp[todo[placed]] = d
        todo = todo[~placed]
        d += 1
    slot = uslot[inv.reshape(-1)]
    disp = udisp[inv.reshape(-1)]
    values = np.bincount(slot, weights=val, minlength=total)
    return slot, disp, key_at, values, uslot


def tokens(ops: Operands, token_flops: float):
    """Cut rows into tokens: contiguous runs of a row's A non-zeros with about
    ``token_flops`` partial products (at least one non-zero); an empty row is
    one empty token. Returns (token of each A non-zero, row of each token)."""
    nnz = ops.anz_row.size
    if nnz:
        csum = np.cumsum(ops.anz_flops) - ops.anz_flops          # exclusive, global
        row_start = csum[ops.A.indptr[:-1].clip(max=nnz - 1)]
        local = csum - row_start[ops.anz_row]
        piece = np.floor(local / token_flops) if np.isfinite(token_flops) else np.zeros(nnz)
        new = np.ones(nnz, dtype=bool)
        new[1:] = (ops.anz_row[1:] != ops.anz_row[:-1]) | (piece[1:] != piece[:-1])
    else:
        new = np.zeros(0, dtype=bool)
    # one extra token for every empty row, ordered by row
    tok_row = np.concatenate([ops.anz_row[new], np.flatnonzero(ops.a_len == 0)])
    order = np.argsort(tok_row, kind="stable")
    tok_row = tok_row[order]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    anz_tok = rank[np.cumsum(new) - 1] if nnz else np.zeros(0, dtype=np.int64)
    return anz_tok, tok_row


def pool_budget(nbytes: np.ndarray, tok_row: np.ndarray, tcore: np.ndarray, threads: int,
                pool: float) -> np.ndarray:
    """Scratchpad bytes row i's table may hold when tables share the core's pool.

    The threads of a core pull its queue in order, so the tokens in flight lie
    within ``threads`` consecutive queue positions. Row i is open from its first
    token f_i to its last l_i; the rows whose tokens fall in
    [f_i - threads + 1, l_i + threads - 1] (same core) can be open beside it.
    If their tables (D_i bytes, row i's included) fit the pool, row i's table is
    all on chip; otherwise every one of them gets the same fraction pool / D_i
    of its table (the open tables then add up to at most the pool). The
    engine's measured peak occupancy checks this static estimate."""
    M = nbytes.size
    T = tok_row.size
    if T == 0:
        return np.full(M, pool)
    idx = np.arange(T)
    first = np.full(M, -1, dtype=np.int64)
    last = np.full(M, -1, dtype=np.int64)
    first[tok_row[::-1]] = idx[::-1]
    last[tok_row] = idx
    cores = int(tcore.max()) + 1
    cstart = np.searchsorted(tcore, np.arange(cores), side="left")
    cend = np.searchsorted(tcore, np.arange(cores), side="right")
    has = first >= 0
    rows = np.flatnonzero(has)
    c = tcore[first[rows]]
    lo = np.maximum(first[rows] - threads + 1, cstart[c])
    hi = np.minimum(last[rows] + threads - 1, cend[c] - 1)
    csum = np.concatenate([[0.0], np.cumsum(nbytes)])
    demand = csum[tok_row[hi] + 1] - csum[tok_row[lo]]
    out = np.full(M, pool)
    out[rows] = nbytes[rows] * np.minimum(1.0, pool / np.maximum(demand, 1e-9))
    return out


@register
class Smash:
    name = "smash"

    def plan(self, ops: Operands, cfg: PiumaConfig, machine) -> Plan:
        sc, k, banks = cfg.smash, cfg.costs, cfg.scratchpad.banks
        M = ops.M
        S = table_slots(ops, sc.load_factor)
        anz_tok, tok_row = tokens(ops, sc.token_flops if sc.tokenise else np.inf)
        T = tok_row.size
        rcore = row_core(ops, cfg.core.count)
        tcore = rcore[tok_row]
        pool = cfg.scratchpad.size_bytes * cfg.scratchpad.table_fraction
        if sc.table_share == "pool":
            budget = pool_budget(S * 8.0, tok_row, tcore, cfg.core.threads, pool)
        else:
            budget = np.full(M, pool / cfg.core.threads)
        fits = S * 8 <= budget
        frac = np.where(fits, 1.0, (budget / np.maximum(S * 8, 1)) if sc.fragmented else 0.0)

        # --- functional hashing, chunk by chunk; per-token probe counts -------
        probes_spm, probes_dram = np.zeros(T), np.zeros(T)
        adds_spm, adds_dram = np.zeros(T), np.zeros(T)
        cas_banks, add_banks = np.zeros(T * banks), np.zeros(T * banks)
        collisions = 0
        out_r, out_c, out_v = [], [], []
        touched = np.zeros(M)
        for r0, r1 in ops.row_chunks():
            anz, row, col, val = ops.partials(r0, r1)
            if row.size == 0:
                continue
            lrow = row - r0
            Sl = S[r0:r1]
            base = np.concatenate([[0], np.cumsum(Sl)[:-1]])
            slot, disp, key_at, values, uslot = hash_insert(lrow, col, val, base, Sl)
            collisions += int(disp.sum())
            tok = anz_tok[anz]
            f = frac[row]
            on_chip = bool(np.all(f == 1.0))
            probes_spm += np.bincount(tok, weights=(disp + 1) * f, minlength=T)
            adds_spm += np.bincount(tok, weights=f, minlength=T)
            if not on_chip:
                probes_dram += np.bincount(tok, weights=(disp + 1) * (1 - f), minlength=T)
                adds_dram += np.bincount(tok, weights=1 - f, minlength=T)
            # banks: the final slot's bank for the add and the last probe, and
            # the slots passed over for the failed probes
            add_banks += np.bincount(tok * banks + slot % banks, weights=f, minlength=T * banks)
            extra = np.flatnonzero(disp)
            steps = disp[extra]
            rep = np.repeat(extra, steps)
            back = np.arange(rep.size) - np.repeat(np.cumsum(steps) - steps, steps) + 1
            Sp = Sl[lrow[rep]]
            passed = base[lrow[rep]] + ((slot[rep] - base[lrow[rep]] - back) & (Sp - 1))
            cas_banks += np.bincount(np.concatenate([tok, tok[rep]]) * banks
                                     + np.concatenate([slot, passed]) % banks,
                                     weights=np.concatenate([f, f[rep]]), minlength=T * banks)
            # readout: keys and values read from the tables' occupied slots
            # (uslot: one per distinct key, already in row, column order)
            if int((key_at >= 0).sum()) != uslot.size:
                raise AssertionError("SMASH: hash tables hold keys no partial product made")
            orow = np.searchsorted(base, uslot, side="right") - 1
            out_r.append(orow + r0)
            out_c.append(key_at[uslot])
            out_v.append(values[uslot])
            touched[r0:r1] = np.bincount(orow, minlength=r1 - r0)
        if out_r:
            C = drop_zeros(csr_from_rows(np.concatenate(out_r), np.concatenate(out_c),
                                         np.concatenate(out_v), (M, ops.N)))
        else:
            import scipy.sparse as sp
            C = sp.csr_matrix((M, ops.N))

        # --- the token tasks -----------------------------------------------------
        tok_anz = np.bincount(anz_tok, minlength=T).astype(float)
        tok_flops = np.bincount(anz_tok, weights=ops.anz_flops, minlength=T)
        costs = Costs(T, tcore, cfg, machine)
        costs.queue_pop()
        costs.compute(np.full(T, float(k.task)))
        if sc.tokenise:
            costs.spm_load(np.ones(T))                 # the token descriptor
        else:
            costs.dram_load(np.full(T, 2.0))           # A's row extent
        costs.dram_load(tok_anz)
        load_b_rows(costs, ops, anz_tok, b_row_hits(ops, cfg, tcore[anz_tok]))
        # multiply and hash; the add is the atomic add at the bank
        costs.compute(tok_flops * (k.mul + k.hash))
        costs.spm_atomic(probes_spm, cas_banks.reshape(T, banks))
        costs.dram_atomic(probes_dram)
        costs.spm_atomic(adds_spm, add_banks.reshape(T, banks), blocking=False)
        costs.dram_atomic(adds_dram, blocking=False)

        # a CAS that claims an empty slot also appends the slot to the row's
        # occupied list (fetch-add on the list tail + a store), so the readout
        # reads c_i slots instead of scanning all S_i
        new_keys = touched[tok_row] * (np.bincount(anz_tok, weights=ops.anz_flops, minlength=T)
                                       / np.maximum(ops.row_flops[tok_row], 1))
        costs.spm_atomic(new_keys)
        costs.spm_store(new_keys)

        # --- the readout of each row ----------------------------------------------
        f = frac
        ro = Costs(M, rcore, cfg, machine)
        ro.spm_load(touched)                          # the occupied list
        ro.spm_load(touched * f)                      # the slots it names ...
        ro.dram_load(touched * (1 - f))
        ro.spm_store(touched * f)                     # ... cleared for the next row
        ro.dram_store(touched * (1 - f))
        if sc.sort_rows:
            ro.compute(sort_instructions(touched, ops.N, k))
        ro.dram_store(touched + 1)
        Sf = S.astype(float)

        stages = []
        counters = {"flops": float(ops.flops), "collisions": float(collisions),
                    "probes": float(probes_spm.sum() + probes_dram.sum()),
                    "overflow_rows": float((~fits).sum()),
                    "overflow_atomics": float(probes_dram.sum() + adds_dram.sum()),
                    "table_slots": float(S.sum()), "table_pool_bytes": float(pool)}
        if sc.tokenise:
            stages.append(self._tokeniser(ops, cfg, machine, rcore, tok_row))
        stages.append(Stage("hash", tcore, costs.demands(), group=tok_row,
                            readout=ro.demands(), readout_core=rcore,
                            spm_bytes=Sf * 8 * frac,
                            counters=merge(costs.counters(), ro.counters())))
        return Plan(C, stages, counters)

    @staticmethod
    def _tokeniser(ops: Operands, cfg: PiumaConfig, machine, rcore, tok_row) -> Stage:
        """Pre-pass: per row read A's extent, DMA-gather A's row and its B rows'
        extents into the scratchpad, cut tokens, post their descriptors (one
        scratchpad word each) to the core's queue."""
        M = ops.M
        tok_per_row = np.bincount(tok_row, minlength=M).astype(float)
        c = Costs(M, rcore, cfg, machine)
        c.queue_pop()
        c.compute(np.full(M, float(cfg.costs.task)))
        c.dram_load(np.full(M, 2.0))
        # A's row and its B rows' extents: independent addresses, gathered by
        # the core's DMA engine into the scratchpad (one descriptor), then read
        c.dma_gather(3.0 * ops.a_len, machine)
        c.spm_load(3.0 * ops.a_len)
        c.compute(2.0 * ops.a_len)
        c.spm_store(tok_per_row)
        return Stage("tokenise", rcore, c.demands(), counters=c.counters())


def merge(a: dict, b: dict) -> dict:
    return {key: a.get(key, 0.0) + b.get(key, 0.0) for key in set(a) | set(b)}
