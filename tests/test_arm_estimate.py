"""The llvm-mca static estimate for --target arm: its parts on known loops, and its ranking
against guest instruction counts from qemu on a small case (independent of the estimate)."""
import pytest
import torch

from sparsec.backends.arm.mca import estimate, mac_lanes, mca_cycles_per_iter, work_macs
from sparsec.backends.arm.qemu_count import kernel_instructions
from sparsec.ir.formats import CSR, NM, Dense
from sparsec.passes.prune import prune


def test_mca_on_a_known_loop():
    """Two 4-lane FMAs, each accumulating into itself across iterations: bound by the FMA latency
    (4 cycles on Neoverse-N1), not by the two FP pipes."""
    insns = ("fmla v0.4s, v1.4s, v2.s[0]", "fmla v3.4s, v1.4s, v2.s[1]", "ldr q1, [x0], #16",
             "subs x8, x8, #1", "b.ne .L")
    n1 = mca_cycles_per_iter(insns[:-1], "neoverse-n1")
    a55 = mca_cycles_per_iter(insns[:-1], "cortex-a55")
    assert 3.5 <= n1 <= 5.0 and a55 >= 3.5
    assert mac_lanes(["\tfmla v0.4s, v1.4s, v2.s[0]", "\tfmadd s0, s1, s2, s0", "\tadd x0, x0, #1"]) == 5


def test_work_model():
    w = torch.zeros(8, 16)
    w[0, :3] = 1.0
    assert work_macs(CSR.from_dense(w), 4) == 3 * 4
    assert work_macs(Dense.from_dense(w), 4) == 8 * 16 * 4
    p, _ = prune(torch.randn(8, 16), "2:4")
    assert work_macs(NM.from_dense(p, n=2, m=4), 3) == 8 * 8 * 3     # every slot, padding included


def test_sparse_cheaper_than_dense_on_both_cores():
    w = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))
    p90, _ = prune(w, "unstructured", 0.9)
    p24, _ = prune(w, "2:4")
    for cpu in ("neoverse-n1", "cortex-a76"):
        d = estimate(Dense.from_dense(w), 64, cpu).cycles
        assert estimate(CSR.from_dense(p90), 64, cpu).cycles * 3 <= d
        assert estimate(NM.from_dense(p24, n=2, m=4), 64, cpu).cycles < d


def test_ranking_agrees_with_qemu_instruction_counts():
    """dense vs 2:4 vs 90% CSR on a small case: the estimate orders them as qemu's counts do."""
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    p90, _ = prune(w, "unstructured", 0.9)
    p24, _ = prune(w, "2:4")
    fmts = {"dense": Dense.from_dense(w), "nm": NM.from_dense(p24, n=2, m=4), "csr": CSR.from_dense(p90)}
    est = {k: estimate(f, 16).cycles for k, f in fmts.items()}
    cnt = {k: kernel_instructions(f, 16) for k, f in fmts.items()}
    assert sorted(est, key=est.get) == sorted(cnt, key=cnt.get), (est, cnt)
    assert cnt["csr"] < cnt["dense"]
