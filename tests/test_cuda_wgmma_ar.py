"""``design="wgmma"`` on 2:4 weights with ``ar`` > 0: the stored values go from global memory straight into
registers and the sparse ``wgmma`` takes its A operand from them (no A tile in shared memory).

Checked here without a GPU: the register order of ``mma_layout.sp_frag`` against the ISA's A-fragment layout
(written out independently, element by element), the kernel's index arithmetic replayed on that buffer, the
resolve rules, and the generated PTX/SASS (register-operand ``wgmma.mma_async.sp``, no A tensor map, no spills).
Numerical correctness runs on an H100: ``DEV_WGSP_MODE=ar scripts/gpu/dev_wgsp.py``.
"""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

HAS_NVCC = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


def _nm24(O, K, dt=torch.float16, seed=0):
    from sparsec.ir.formats import NM
    from sparsec.passes.prune import prune_nm

    w = torch.randn(O, K, generator=torch.Generator().manual_seed(seed))
    return NM.from_dense(prune_nm(w, 2, 4).weight.to(dt), n=2, m=4)


def isa_a_fragment(sp_values: torch.Tensor, rb: int, s: int, lane: int) -> list[float]:
    """The 8 stored values lane ``lane`` of the warp owning 16-row block ``rb`` holds for k32 step ``s`` (16 stored
    columns), as the PTX ISA's A-fragment figure for ``wgmma .sp`` m64nNk32 f16/bf16 (= ``mma.m16n8k16``'s A over
    the stored columns) gives them: register r = 0..3 holds two values, r = 0: (g, 2t), (g, 2t+1); r = 1: (g+8, 2t),
    (g+8, 2t+1); r = 2: (g, 2t+8), (g, 2t+9); r = 3: (g+8, 2t+8), (g+8, 2t+9) with g = lane // 4, t = lane % 4.
    Rows past the weight read 0."""
    O = sp_values.shape[0]
    g, t = lane // 4, lane % 4
    out = []
    for row_off, col_off in ((0, 0), (8, 0), (0, 8), (8, 8)):
        for e in range(2):
            row = 16 * rb + g + row_off
            col = 16 * s + col_off + 2 * t + e
            out.append(float(sp_values[row, col]) if row < O else 0.0)
    return out


@settings(max_examples=25, deadline=None)
@given(O=st.integers(1, 70), ks=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_frag_order_is_the_isa_register_fragment(O, ks, seed):
    """Every lane's 8 values of every (16-row block, k32 step) in ``sp_frag`` are the ISA's A fragment of
    ``sp_values`` (O not a multiple of 16: the padded rows hold zeros)."""
    from sparsec.backends.cuda.kernels import mma_layout as ML

    K = 32 * ks
    lay = ML.build(_nm24(O, K, seed=seed), frag=True)
    fr = lay["sp_frag"]
    assert fr.shape == (-(-O // 16), K // 32, 32, 8) and fr.dtype == lay["sp_values"].dtype
    for rb in range(fr.shape[0]):
        for s in range(fr.shape[1]):
            for lane in range(32):
                assert fr[rb, s, lane].float().tolist() == isa_a_fragment(lay["sp_values"], rb, s, lane), \
                    (rb, s, lane)


def test_kernel_index_arithmetic_reads_each_warps_fragment():
    """The kernel's load (``load_a``: uint32 word ``((rb * K/32 + 4 kt + kk) * 32 + lane) * 4 + e`` of the flat
    ``sp_frag``) replayed in torch for a 192-row tile: warp w of warpgroup wg, k-tile kt, step kk, register e gets
    the ISA fragment of rows 192 bx + 64 wg + 16 w .. (clamped to the last row block: rows past O are never
    stored)."""
    from sparsec.backends.cuda.kernels import mma_layout as ML

    O, K, BM = 1000, 512, 192
    lay = ML.build(_nm24(O, K), frag=True)
    words = lay["sp_frag"].contiguous().view(torch.int32).flatten()       # the kernel's uint32 view
    vals = lay["sp_values"]
    RB, NS32 = -(-O // 16), K // 32
    for bx in range(-(-O // BM)):
        for wg in range(BM // 64):
            for w in range(4):
                rb = min(bx * (BM // 16) + wg * 4 + w, RB - 1)
                for kt in range(K // 128):
                    for kk in range(4):
                        for lane in (0, 5, 17, 31):
                            got = []
                            for e in range(4):
                                word = words[((rb * NS32 + kt * 4 + kk) * 32 + lane) * 4 + e]
                                got += torch.tensor([int(word)], dtype=torch.int32).view(vals.dtype).float().tolist()
                            assert got == isa_a_fragment(vals, rb, 4 * kt + kk, lane), (bx, wg, w, kt, kk, lane)


def test_frag_order_mutations_fail_the_isa_check():
    """The ISA check above can fail: swapping the two row halves or the two column halves of the fragment, or
    the lane order, gives a different buffer."""
    from sparsec.backends.cuda.kernels import mma_layout as ML

    lay = ML.build(_nm24(48, 128), frag=True)
    v, fr = lay["sp_values"], lay["sp_frag"]
    RB, KH = 3, 64
    base = v.view(RB, 2, 8, KH // 16, 2, 4, 2)
    for perm in ((0, 3, 2, 5, 1, 4, 6), (0, 3, 5, 2, 4, 1, 6), (0, 3, 2, 5, 4, 6, 1)):
        bad = base.permute(*perm).reshape(RB, KH // 16, 32, 8)
        assert not torch.equal(bad, fr), perm
        assert any(bad[0, 0, lane].float().tolist() != isa_a_fragment(v, 0, 0, lane) for lane in range(32))


def test_ar_resolve_rules_and_ring():
    """``ar`` needs 2:4 weights, the TMA producer and ``wip=0``; without an A tile a slot is B + metadata only, so
    more slots fit (192 x 128: 6 of 36 KB)."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import SMEM_LIMIT, resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(1024, 11008, 4096, False, None, "float16")
    ws = resolve(11008, 4096, 1024, dict(ar=2, bm=192), spec, sparse=True)
    assert ws.ar == 2 and ws.wip == 0 and ws.stage_raw() * 2 == 128 * 128 * 2 + 192 * 8 * 2
    assert ws.stages == 6 and ws.smem_bytes() <= SMEM_LIMIT
    for bad, msg in ((dict(ar=2, ws=0), "needs 2:4 weights, ws=1, tma=1"), (dict(ar=2, wip=1), "wip=0"),
                     (dict(ar=2, spk=64), "spk=128"), (dict(ar=2, tma=0), "tma=1")):
        with pytest.raises(KernelError, match=msg):
            resolve(11008, 4096, 1024, bad, spec, sparse=True)
    with pytest.raises(KernelError, match="a dense weight"):
        resolve(11008, 4096, 1024, dict(ar=2), spec, sparse=False)
    with pytest.raises(KernelError, match="ar"):
        resolve(11008, 4096, 1024, dict(ar=4), spec, sparse=True)
    with pytest.raises(KernelError, match="ana=1"):
        resolve(11008, 4096, 1024, dict(ana=1), spec, sparse=True)


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not installed")
def test_ar_kernels_take_a_from_registers():
    """The generated kernels: ``sp_frag`` as the weight argument, 4 register-operand ``wgmma.mma_async.sp`` per
    128-column k-tile (``{a0..a3}``, B from a descriptor) and no shared-memory A operand, 16-byte global loads of
    the values, a TMA producer for the activations and metadata only (two tensor maps), and nothing spilled at
    192/128 rows x 128 tokens with 2 register sets, 128 rows with 3."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    confs = {"wgar_192_2": (1000, 1024, 1024, torch.float16, False, None, dict(ar=2, bm=192)),
             "wgar_128_3": (1003, 1152, 200, torch.bfloat16, True, "gelu", dict(ar=3, bm=128)),
             "wgar_split": (520, 2048, 77, torch.float16, True, None, dict(ar=2, ks=2)),
             "wgar_na": (1000, 1024, 300, torch.float16, False, None, dict(ar=2, bm=192, ana=1))}
    funcs, args = {}, {}
    for sym, (O, K, T, dt, bias, act, kn) in confs.items():
        funcs[sym], a, _ = cuda_matmul_primfunc(_nm24(O, K, dt), T, bias=bias, activation=act, knobs=kn, name=sym,
                                                design="wgmma")
        args[sym] = [(x.name, x.shape) for x in a]
        assert args[sym][0] == ("sp_frag", (-(-O // 16), K // 32, 32, 8)), sym
    lib = tc.build(tvm.IRModule(funcs), "sm_90a")
    bodies = tc.ptx_entries(tc.ptx(lib, "sm_90a"))
    for sym, (O, K, T, dt, *_r) in confs.items():
        (body,) = [b for n, b in bodies.items() if n.startswith(sym + "_kernel") and "wgmma" in b]
        pt = "f16" if dt == torch.float16 else "bf16"
        rs = re.findall(rf"wgmma\.mma_async\.sp\.sync\.aligned\.m64n\d+k32\.f32\.{pt}\.{pt} \{{[^}}]*\}}, "
                        r"\{%r\d+, %r\d+, %r\d+, %r\d+\}, %rd\d+, %r\d+, 0, 1, 1, 1, 0;", body)
        assert len(rs) >= 4 and len(rs) % 4 == 0, (sym, len(rs))
        assert len(re.findall(r"wgmma\.mma_async", body)) == len(rs), sym          # no descriptor-A wgmma
        na = len(re.findall(r"ld\.global\.nc\.L1::no_allocate\.v4\.u32", body))
        assert (na > 0) == (sym == "wgar_na"), sym                                 # ana=1: not allocated in L1
        assert na or re.search(r"ld\.global\.nc\.v4\.u32", body), sym
        assert "cp.async.bulk.tensor" in body
    spills = tc.ptxas_spills(lib, "sm_90a")
    assert not any(spills.values()), spills
