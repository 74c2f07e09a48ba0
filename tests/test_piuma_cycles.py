"""Hand-derived cycle counts on a machine small enough to follow on paper.

The machine (``TINY``): one core, one multi-threaded pipeline with one thread
(so tasks run back to back), each memory request waits for the previous one
(max_outstanding = 1), no L1, DRAM latency 10 cycles and 1 access/cycle
(8 GB/s at 1 GHz), a 1x1 mesh (no hops), one scratchpad bank with latency 2,
every instruction cost 1 (so flop = mul = 1: the add SMASH and outer leave
to the atomic or the merge costs nothing extra here). A load of n words costs n issue cycles plus n round
trips; stores only their issue cycles. No shared resource binds (checked in
each docstring), so a task takes exactly its chain.
"""
import scipy.sparse as sp

from sparsec.sim.piuma import load_config, simulate

TINY = load_config().with_(
    core__count=1, core__mtp_pipelines=1, core__threads_per_mtp=1, core__stp_pipelines=0,
    core__max_outstanding=1, l1__enabled=False,
    scratchpad__banks=1, scratchpad__latency=2, scratchpad__access_cycles=1,
    scratchpad__atomic_cycles=1, scratchpad__table_fraction=1.0,
    dram__channels=1, dram__gbytes_per_s_per_channel=8.0, dram__latency=10,
    mesh__rows=1, mesh__cols=1, mesh__header_bytes=0,
    sync__barrier_cycles=0,
    costs__task=1, costs__flop=1, costs__hash=1, costs__merge_step=1, costs__heap_level=1,
    costs__sort_compare=1, costs__mul=1,
    # the first two tests charge the sort of each output row (c lg c)
    rowwise__sort_rows=True, smash__sort_rows=True,
)

# A (4x4): row 0 = {0, 2}, row 1 = {}, row 2 = {1}, row 3 = {0, 1, 3}
A = sp.csr_matrix(([1.0, 2, 3, 4, 5, 6], ([0, 0, 2, 3, 3, 3], [0, 2, 1, 0, 1, 3])), shape=(4, 4))
# B (4x4): row 0 = {1, 3}, row 1 = {0}, row 2 = {1, 2}, row 3 = {}
B = sp.csr_matrix(([1.0, 2, 3, 4, 5], ([0, 0, 1, 2, 2], [1, 3, 0, 1, 2])), shape=(4, 4))
# Per row i: a = |A_i|, f = partial products, c = distinct output columns
#   row 0: k=0 -> {1,3}, k=2 -> {1,2}: a=2, f=4, c=3
#   row 1: a=0, f=0, c=0
#   row 2: k=1 -> {0}: a=1, f=1, c=1
#   row 3: k=0 -> {1,3}, k=1 -> {0}, k=3 -> {}: a=3, f=3, c=3


def test_rowwise_dense_cycles():
    """Row-wise, dense accumulator in the scratchpad (4 cols * 8 B fits).

    Per row (W = 1, Ld = 10, Ls = 2):
      queue pop (scratchpad atomic)   1 + 2            =  3
      task set-up                     1                =  1
      A row extent (2 DRAM loads)     2 + 2*10         = 22
      A entries (a loads)             a + 10a          = 11a
      B row extents (2a loads)        2a + 20a         = 22a
      B entries (f loads)             f + 10f          = 11f
      multiply-add                    f                =  f
      SPA load (f)                    f + 2f           =  3f
      SPA store + list append         f + c            =  f + c
      read list + values (2c loads)   2c + 4c          =  6c
      reset (c stores)                c                =  c
      sort                            c * ceil(log2 c) =  c lg c
      write C row + pointer           c + 1
    = 27 + 33a + 16f + 9c + c lg c.
    Row 0: 27 + 66 + 64 + 27 + 6 = 190; row 1: 27; row 2: 27 + 33 + 16 + 9 = 85;
    row 3: 27 + 99 + 48 + 27 + 6 = 207. Total 509.
    Bounds that could bind instead: DRAM words per row <= 2 + 3a + f + c + 1 = 18
    (+10 latency) < chain; one bank: < 20 slots per row < chain.
    """
    r = simulate(A, B, algo="rowwise", config=TINY)
    assert r.cycles == 509


def test_smash_cycles():
    """SMASH, whole rows (tokenise off), every table on chip.

    Table sizes S = next_pow2(min(4, f) / 0.5): row 0: 8, row 2: 2, row 3: 8.
    Fibonacci homes for S = 8 (top 3 bits of j * 2654435769 mod 2^32):
    j=0 -> 0, j=1 -> 4, j=2 -> 1, j=3 -> 6; for S = 2, j=0 -> 0: no collision,
    so one CAS per partial product.
    Hash task per row:
      pop 3 + set-up 1 + A extent 22 + A entries 11a + B extents 22a + B entries 11f
      multiply + hash 2f; CAS (blocking) f + 2f; add (posted) f;
      new key: list fetch-add (blocking) c + 2c, list store c
      = 26 + 33a + 17f + 4c
    Readout: list loads 3c, slot loads 3c, clears c, sort c lg c, write c + 1
      = 8c + c lg c + 1
    Row 0: 26 + 66 + 68 + 12 + 24 + 6 + 1 = 203; row 1: 26 + 1 = 27;
    row 2: 26 + 33 + 17 + 4 + 8 + 1 = 89; row 3: 26 + 99 + 51 + 12 + 24 + 6 + 1 = 219.
    Total 538.
    """
    cfg = TINY.with_(smash__tokenise=False)
    r = simulate(A, B, algo="smash", config=cfg)
    assert r.counters["collisions"] == 0
    assert r.cycles == 538


def test_two_threads_share_one_pipeline():
    """Two threads on one MTP: the pipeline's issue slots are a FCFS resource.

    Issue slots per row task (instructions: 1 pop + 1 set-up + 2 + a + 2a + f
    loads + f multiply-adds + f SPA loads + (f + c) stores + 2c loads + c resets
    + c lg c + (c + 1) writes = 5 + 3a + 4f + 5c + c lg c):
    row 0: 5 + 6 + 16 + 15 + 6 = 48, row 1: 5, row 2: 5 + 3 + 4 + 5 = 17,
    row 3: 5 + 9 + 12 + 15 + 6 = 47; chains 190, 27, 85, 207 (row-wise test).
    t=0: thread 0 takes row 0, reserves issue [0, 48], ends at 190.
         thread 1 takes row 1, its 5 slots queue behind: [48, 53]; ends at
         max(0 + 27, 53) = 53.
    t=53: thread 1 takes row 2: slots [53, 70], ends at 53 + 85 = 138.
    t=138: thread 1 takes row 3 (thread 0 is busy until 190): ends 138 + 207 = 345.
    Makespan 345 (thread 0 is done at 190).
    """
    cfg = TINY.with_(core__threads_per_mtp=2)
    r = simulate(A, B, algo="rowwise", config=cfg)
    assert r.cycles == 345


def test_unsorted_rows_drop_the_sort():
    """Without ``sort_rows`` the c lg c sort of each row is not charged:
    rows 0 and 3 have c = 3, ceil(log2 3) = 2, so 6 cycles each.
    Row-wise 509 - 12 = 497; SMASH 538 - 12 = 526."""
    cfg = TINY.with_(rowwise__sort_rows=False, smash__sort_rows=False)
    assert simulate(A, B, algo="rowwise", config=cfg).cycles == 497
    assert simulate(A, B, algo="smash", config=cfg.with_(smash__tokenise=False)).cycles == 526


def test_inner_nonempty_candidates_cycles():
    """Inner product testing every (non-empty row of A, non-empty column of B).

    B's columns: 0 = {1}, 1 = {0, 2}, 2 = {2}, 3 = {0}: all 4 non-empty,
    5 entries. Rows of A with a > 0: 0, 2, 3; each reads 4 column extents
    (8 loads: 8 + 80 = 88) and 5 entries (55), merge steps 4a + 5 (every
    candidate pair a + b_j), f multiply-adds, writes c + 1.
      row 0 (a=2, f=4, c=3): 3 + 1 + 22 + 22 + 88 + 55 + 13 + 4 + 4 = 212
      row 1 (a=0): pop, set-up, extent, row pointer: 3 + 1 + 22 + 1 = 27
      row 2 (a=1, f=1, c=1): 3 + 1 + 22 + 11 + 88 + 55 + 9 + 1 + 2 = 192
      row 3 (a=3, f=3, c=3): 3 + 1 + 22 + 33 + 88 + 55 + 17 + 3 + 4 = 226
    Total 657.
    """
    r = simulate(A, B, algo="inner", config=TINY)
    assert r.counters["intersections"] == 12
    assert r.cycles == 657


def test_outer_cycles():
    """Outer product: count, scan, multiply, merge (barriers cost 0 here).

    A's columns: 0 = {0, 3}, 1 = {2, 3}, 2 = {0}, 3 = {3} (a' = 2, 2, 1, 1);
    b = 2, 1, 2, 0. Remote atomics: latency 2 (scratchpad, no mesh hops).
    Count, per k: pop 3 + set-up 1 + A extent 22 + entries 11a' + B extent 22
      + posted adds a' (if b > 0): k0 72, k1 72, k2 60, k3 59 = 263.
    Scan (one task): set-up 1 + 4 count loads 4 + 8 + 4 adds + 4 stores = 21.
    Multiply, one piece per column: pop 3 + set-up 1 + A extent 22 + 11a'
      + B extent 22 + 11b + blocking fetch-adds 3a' (if b > 0) + a'b
      multiplies + a'b stores:
      k0 (2, 2): 3+1+22+22+22+22+6+4+4 = 106; k1 (2, 1): 91; k2 (1, 2): 88;
      k3 (1, 0): 59. Total 344.
    Merge, per row (p = 4, 0, 1, 3; runs 2, 0, 1, 2; c = 3, 0, 1, 3; the
    bin fits the scratchpad: one pass): pop 3 + set-up 1 + bin extent
      (remote, blocking) 3; DMA gather if p > 0: 2 instructions + set-up 20
      + p/4 + DRAM latency 10; scratchpad loads 3p; heap p * max(ceil(log2
      runs), 1); write c + 1:
      row 0: 7 + 33 + 12 + 4 + 4 = 60; row 1: 7 + 1 = 8;
      row 2: 7 + 32.25 + 3 + 1 + 2 = 45.25; row 3: 7 + 32.75 + 9 + 3 + 4 = 55.75.
      Total 169.
    Sum 263 + 21 + 344 + 169 = 797. No shared resource binds: at most 12
    DRAM words per task (+10 latency), the one bank < 12 slots per task.
    """
    r = simulate(A, B, algo="outer", config=TINY)
    assert r.stage_cycles == {"count": 263, "scan": 21, "multiply": 344, "merge": 169}
    assert r.cycles == 797


def test_sort_cost_is_the_cheaper_of_comparison_and_radix():
    """Default costs (sort_compare 3, radix_step 8, radix_bits 8), N = 16384
    (14-bit keys: 2 radix passes, 2 * 256 counters each):
      c = 1000: comparison 1000 * 10 * 3 = 30000, radix 2 * (8000 + 512) = 17024
      c = 10:   comparison 10 * 4 * 3 = 120,      radix 2 * (80 + 512) = 1184
      c = 1:    nothing to sort."""
    import numpy as np
    from sparsec.sim.piuma.algorithms.base import sort_instructions
    k = load_config().costs
    np.testing.assert_array_equal(sort_instructions(np.array([1000, 10, 1]), 16384, k),
                                  [17024, 120, 0])
