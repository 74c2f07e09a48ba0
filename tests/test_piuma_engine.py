"""Engine vs the analytical estimate, bounds the timing must respect, counters."""
import numpy as np
import pytest

from sparsec.errors import ParameterError
from sparsec.sim.piuma import ALGORITHMS, load_config, simulate, simulate_all
from sparsec.sim.piuma import analytic
from sparsec.sim.piuma.algorithms.operands import Operands
from sparsec.sim.piuma.inputs import banded, erdos_renyi, rmat
from sparsec.sim.piuma.machine import Machine

# Stated in docs/piuma.md: the analytic estimate is within [0.5, 1.05] of the
# simulated cycles when every thread has several tasks.
LOW, HIGH = 0.5, 1.05

MATRICES = {"rmat": lambda: rmat(10, 8, seed=11), "er": lambda: erdos_renyi(2000, avg=8, seed=3),
            "banded": lambda: banded(3000, 4)}


@pytest.mark.parametrize("name", list(MATRICES))
def test_analytic_agrees_within_tolerance(name):
    A = MATRICES[name]()
    for algo, r in simulate_all(A).items():
        ratio = r.analytic_cycles / r.cycles
        assert LOW <= ratio <= HIGH, f"{name}/{algo}: analytic/sim = {ratio:.2f}"


def test_simulation_respects_throughput_bounds():
    """No result may beat the DRAM or issue capacity of the machine."""
    A = rmat(10, 8, seed=2)
    cfg = load_config()
    for algo, r in simulate_all(A, config=cfg).items():
        words = r.counters["dram_accesses"]
        assert r.cycles >= words / cfg.dram_words_per_cycle
        issue = r.counters["instructions"] / (cfg.core.count * cfg.core.pipelines)
        assert r.cycles >= issue
        assert 0 < r.utilisation["thread_utilisation"] <= 1 + 1e-9
        assert 0 <= r.utilisation["pipeline_utilisation"] <= 1 + 1e-9
        assert r.utilisation["dram_utilisation"] <= 1 + 1e-9


def test_counters_follow_the_algorithms():
    A = rmat(9, 8, seed=4)
    res = simulate_all(A)
    flops = res["smash"].shape["flops"]
    # outer writes one word (key + value) per partial product and reads it back
    assert res["outer"].counters["dram_write_words"] >= flops
    assert res["outer"].counters["dram_read_words"] >= flops
    assert res["outer"].counters["partial_product_words"] == flops
    # SMASH: at least one CAS and one add per partial product, collisions counted
    s = res["smash"].counters
    assert s["atomics"] >= 2 * flops
    assert s["probes"] == pytest.approx(flops + s["collisions"])
    assert s["overflow_rows"] == 0 and res["smash"].counters["spm_peak_bytes"] > 0
    # row-wise and SMASH never write partial products to DRAM
    assert res["smash"].counters["dram_write_words"] < 2 * flops


def test_overflow_goes_to_dram():
    A = rmat(9, 8, seed=4)
    small = load_config().with_(scratchpad__size_bytes=4096, smash__fragmented=False)
    frag = small.with_(smash__fragmented=True)
    base = simulate(A, algo="smash")
    over = simulate(A, algo="smash", config=small)
    part = simulate(A, algo="smash", config=frag)
    assert over.counters["overflow_rows"] > 0
    assert over.counters["overflow_atomics"] > part.counters["overflow_atomics"] > 0
    assert over.counters["dram_accesses"] > base.counters["dram_accesses"]
    assert over.cycles > base.cycles


def test_more_cores_not_slower_on_balanced_work():
    A = erdos_renyi(4000, avg=8, seed=5)
    ops = Operands(A, A)
    cfg = load_config()
    c1 = simulate(None, None, "smash", cfg.with_(core__count=1), operands=ops).cycles
    c4 = simulate(None, None, "smash", cfg.with_(core__count=4), operands=ops).cycles
    assert 2.5 < c1 / c4 <= 4.0 + 1e-9


def test_load_factor_changes_collisions():
    A = rmat(9, 8, seed=6)
    loose = simulate(A, algo="smash", config=load_config().with_(smash__load_factor=0.25))
    tight = simulate(A, algo="smash", config=load_config().with_(smash__load_factor=1.0))
    assert tight.counters["collisions"] > loose.counters["collisions"]
    assert tight.counters["table_slots"] < loose.counters["table_slots"]


def test_bottleneck_names():
    A = rmat(8, 8, seed=1)
    cfg = load_config()
    m = Machine(cfg)
    plan = ALGORITHMS["outer"]().plan(Operands(A, A), cfg, m)
    names = analytic.bottleneck(plan, m)
    assert len(names) == 4 and all(isinstance(n, str) for n in names)


def test_unknown_algorithm_and_shape_mismatch():
    with pytest.raises(ParameterError, match="unknown algorithm 'gemm'"):
        simulate(rmat(5, 2), algo="gemm")
    with pytest.raises(ParameterError, match="A's columns must equal B's rows"):
        simulate(np.ones((3, 4)), np.ones((3, 4)), algo="smash")


def test_outer_external_merge_when_runs_exceed_fan_in():
    """A scratchpad share too small for the bins and for more than two run
    buffers forces multi-pass merges: each extra pass writes the row's
    partial products back to DRAM and reads them again."""
    A = rmat(9, 8, seed=4)
    ops = Operands(A, A)
    base = simulate(None, None, "outer", operands=ops)
    small = load_config().with_(scratchpad__size_bytes=66 * 8 * 256, outer__dma_block_words=64)
    ext = simulate(None, None, "outer", small, operands=ops)
    assert base.counters["external_merge_rows"] == 0
    assert ext.counters["external_merge_rows"] > 0 and ext.counters["merge_passes_max"] >= 2
    flops = ops.flops
    assert ext.counters["dram_write_words"] > base.counters["dram_write_words"]
    assert ext.counters["dram_read_words"] - base.counters["dram_read_words"] == pytest.approx(
        ext.counters["dram_write_words"] - base.counters["dram_write_words"])
    assert base.counters["dram_write_words"] >= flops
    assert ext.cycles > base.cycles


def test_inner_without_the_pattern_tests_every_nonempty_pair():
    A = rmat(9, 8, seed=4)
    ops = Operands(A, A)
    cfg = load_config()
    real = simulate(None, None, "inner", cfg, operands=ops)
    masked = simulate(None, None, "inner", cfg.with_(inner__candidates="structure"), operands=ops)
    rows = int((ops.a_len > 0).sum())
    cols = int((np.diff(ops.Bc.indptr) > 0).sum())
    assert real.counters["intersections"] == rows * cols
    assert masked.counters["intersections"] == real.C.nnz   # no cancellations in R-MAT
    assert real.cycles > masked.cycles


def test_pooled_tables_fit_the_pool_and_overflow_less():
    """Tables sharing the core's pool: fewer probes overflow to DRAM than with a
    fixed 1/threads share. The pool budget is a static estimate (rows open
    beside a row = rows within `threads` tokens of it); the engine measures
    the real peak. On this over-subscribed 512 KB scratchpad it overshoots
    the pool by 18% (rows whose slow tokens keep them open longer), stated in
    docs/piuma.md; held here to at most 25%."""
    A = rmat(11, 8, seed=3)
    ops = Operands(A, A)
    small = load_config().with_(scratchpad__size_bytes=1 << 19)
    pool = simulate(None, None, "smash", small, operands=ops)
    thread = simulate(None, None, "smash", small.with_(smash__table_share="thread"), operands=ops)
    assert thread.counters["overflow_atomics"] > 2 * pool.counters["overflow_atomics"] > 0
    assert pool.cycles < thread.cycles
    assert pool.counters["spm_peak_bytes"] <= 1.25 * pool.counters["table_pool_bytes"]


def test_pool_budget_by_hand():
    """One core, 2 threads, tokens of rows [0, 0, 1, 2, 3] (queue order);
    tables 100, 200, 50, 400 bytes; pool 500.
    Row 0 (tokens 0-1): window tokens [0, 2] -> rows 0, 1: 300 <= 500, all on chip.
    Row 1 (token 2): window [1, 3] -> rows 0, 1, 2: 350, on chip.
    Row 2 (token 3): window [2, 4] -> rows 1, 2, 3: 650 > 500: 50 * 500/650.
    Row 3 (token 4): window [3, 4] -> rows 2, 3: 450, on chip."""
    from sparsec.sim.piuma.algorithms.smash import pool_budget
    nbytes = np.array([100.0, 200, 50, 400])
    tok_row = np.array([0, 0, 1, 2, 3])
    b = pool_budget(nbytes, tok_row, np.zeros(5, dtype=int), 2, 500.0)
    np.testing.assert_allclose(b, [100, 200, 50 * 500 / 650, 400])
    # a second core's queue is a separate window
    b2 = pool_budget(nbytes, tok_row, np.array([0, 0, 0, 1, 1]), 2, 500.0)
    np.testing.assert_allclose(b2, [100, 200, 50, 400])
