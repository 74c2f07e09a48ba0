"""Hand-derived cycle counts on a machine small enough to follow on paper.

The machine (``TINY``): one core, one multi-threaded pipeline with one thread
(so tasks run back to back), each memory request waits for the previous one
(max_outstanding = 1), no L1, DRAM latency 10 cycles and 1 access/cycle
(8 GB/s at 1 GHz), a 1x1 mesh (no hops), one scratchpad bank with latency 2,
every instruction cost 1. A load of n words costs n issue cycles plus n round
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
    costs__sort_compare=1,
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
