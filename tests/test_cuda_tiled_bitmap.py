"""The ``tiled`` CUDA kernel's ``code="bitmap"`` stages: the layout (``tiled_layout.build_bitmap``) checked against
the dense weight, both through its vectorised inverse and through a plain-Python replay of the kernel's walk
(popcount prefix over lanes, every word from its highest bit down, bank-owned slots); the kernel built here (no
GPU) and its source/PTX checked. GPU results: ``scripts/gpu/dev_tiledbm.py``."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

from sparsec.backends.cuda.kernels import tiled_layout as TL

CASES = [(100, 200, 2, 64, 0.7), (37, 77, 1, 128, 0.9), (64, 300, 4, 32, 0.5), (48, 64, 2, 64, 0.0),
         (100, 300, 4, 128, 0.99), (70, 130, 1, 64, 0.8)]


def _weight(O, K, s):
    torch.manual_seed(O * 7 + K)
    w = torch.randn(O, K, dtype=torch.float16) * (torch.rand(O, K) >= s)
    w[min(3, O - 1)] = 0                                     # an empty row
    return w


@pytest.mark.parametrize("O,K,rt,sc,s", CASES)
def test_bitmap_layout_decodes_to_the_weight(O, K, rt, sc, s):
    w = _weight(O, K, s)
    b = TL.build_bitmap(w, rt, sc)
    nw = TL.bitmap_words(rt, sc)
    rg = 16 * rt
    nseg = -(-O // rg) * -(-K // sc)
    assert b["tc_bits"].dtype == torch.int32 and b["tc_bits"].numel() == nseg * 32 * nw
    assert b["tc_ptr"].numel() == nseg + 1 and b["tc_values"].dtype == torch.float16
    torch.testing.assert_close(TL.bitmap_to_dense(b, O, K, rt, sc), w.double(), rtol=0, atol=0)
    # bytes: S/8 per stage + 2 per non-zero (+ padding to 8 values and 4 per stage)
    nnz = int((w != 0).sum())
    assert TL.nbytes(b) <= nseg * (rg * sc // 8 + 14 + 4) + 2 * nnz + 20


def _replay(b, O, K, rt, sc):
    """The kernel's walk, one stage and lane at a time (plain Python; small weights only)."""
    nw = TL.bitmap_words(rt, sc)
    rg = 16 * rt
    S = rg * sc
    nst = -(-K // sc)
    r, c = torch.meshgrid(torch.arange(rg), torch.arange(sc), indexing="ij")
    tab = TL.slot_of(r.reshape(-1), c.reshape(-1), rt).tolist()
    where = {slot: (int(rr), int(cc)) for slot, rr, cc in zip(tab, r.reshape(-1), c.reshape(-1))}
    bits = [x & 0xFFFFFFFF for x in b["tc_bits"].tolist()]
    vals, ptr = b["tc_values"].double().tolist(), b["tc_ptr"].tolist()
    W = torch.zeros(-(-O // rg) * rg, nst * sc, dtype=torch.float64)
    for seg in range(len(ptr) - 1):
        words = [bits[(seg * 32 + j) * nw: (seg * 32 + j + 1) * nw] for j in range(32)]
        counts = [sum(bin(x).count("1") for x in ws) for ws in words]
        assert sum(counts) <= (ptr[seg + 1] - ptr[seg]) * 8 < sum(counts) + 8
        stage = {}
        for j in range(32):
            k = ptr[seg] * 8 + sum(counts[:j])                  # exclusive prefix over the lanes
            for wi, m in enumerate(words[j]):
                while m:
                    bit = m.bit_length() - 1                    # 31 - clz
                    m ^= 1 << bit
                    b_ = wi * 32 + bit                         # half b_ // Q of the bank's word b_ % Q
                    slot = ((b_ % (16 * nw)) * 32 + j) * 2 + b_ // (16 * nw)
                    assert (slot >> 1) % 32 == j and slot < S and slot not in stage   # lane j: bank j only
                    stage[slot] = vals[k]
                    k += 1
        g, s = divmod(seg, nst)
        for slot, v in stage.items():
            rr, cc = where[slot]
            W[g * rg + rr, s * sc + cc] = v
    return W[:O, :K]


@pytest.mark.parametrize("O,K,rt,sc,s", [(100, 200, 2, 64, 0.7), (37, 77, 1, 128, 0.9), (48, 64, 2, 64, 0.0)])
def test_kernel_walk_replay_places_every_value(O, K, rt, sc, s):
    w = _weight(O, K, s)
    torch.testing.assert_close(_replay(TL.build_bitmap(w, rt, sc), O, K, rt, sc), w.double(), rtol=0, atol=0)


def test_bitmap_layout_from_csr_and_bitmap_formats():
    from sparsec.ir.formats import CSR, Bitmap

    w = _weight(130, 250, 0.8)
    for fmt in (Bitmap.from_dense(w, tile=(8, 32)), CSR.from_dense(w)):
        b = TL.build_bitmap(fmt, 2, 64)
        torch.testing.assert_close(TL.bitmap_to_dense(b, 130, 250, 2, 64), w.double(), rtol=0, atol=0)


def test_bitmap_is_smaller_than_positions_at_70_percent():
    w = _weight(512, 2048, 0.7)
    pos, bm = TL.build(w, 2, 64), TL.build_bitmap(w, 2, 64)
    assert TL.nbytes(bm) < 0.66 * TL.nbytes(pos)
    assert TL.nbytes(bm) / w.numel() < 0.76                   # 0.125 + 2 * 0.3 + padding


def test_resolve_rules():
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(8, 4096, 4096, False, None, "float16")
    ts = resolve(spec, {"code": "bitmap"})
    assert ts.code == "bitmap" and ts.nwords == 2 and ts.cap >= 700 and ts.knobs()["code"] == "bitmap"
    assert resolve(spec, {}).code == "pos"
    for bad in ({"code": "bitmap", "rt": 1, "sc": 32}, {"code": "bitmap", "clear": "unscatter"},
                {"code": "bitmap", "pipe": 2}, {"code": "bits"}):
        with pytest.raises(KernelError):
            resolve(spec, bad)


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")


def _source(knobs, dtype=torch.float16, O=200, K=1000, T=3):
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import Bitmap

    w = (torch.randn(O, K) * (torch.rand(O, K) > 0.8)).to(dtype)
    func, args, kn = cuda_matmul_primfunc(Bitmap.from_dense(w, tile=(8, 32)), T, bias=True, design="tiled",
                                          knobs=knobs, name="t")
    lib = tc.build(tvm.IRModule({"t": func}), "sm_90")
    src = tc.device_source(lib)
    return src, tc.ptx(src, "sm_90"), args, kn


@needs_nvcc
@pytest.mark.parametrize("dtype,knobs", [(torch.float16, {}), (torch.bfloat16, {"rt": 4, "sc": 32, "warps": 2}),
                                         (torch.float16, {"rt": 4, "sc": 128, "warps": 1, "ksplit": 1})])
def test_bitmap_kernel_walks_bits_and_scatters_to_shared(dtype, knobs):
    src, ptx, args, kn = _source(dict(knobs, code="bitmap"), dtype)
    assert [a.name for a in args][:3] == ["tc_values", "tc_bits", "tc_ptr"] and kn["code"] == "bitmap"
    body = src[src.rindex('extern "C" __global__'):]
    assert "__popc(" in body and body.count("__shfl_up_sync(") >= 5 and "__clz(" in body
    assert "while (1)" in body                                 # the per-non-zero walk
    assert body.count("tvm_builtin_cuda_warp_sync();") >= 3
    assert "popc.b32" in ptx and "clz.b32" in ptx and "shfl.sync.up" in ptx
    assert re.search(r"st\.shared\.u16", ptx) and re.search(r"ld\.shared\.v4\.(u32|b32)", ptx)
    assert re.search(r"ld\.shared\.u16", ptx)                  # the staged values
    assert "mma.sync.aligned.m16n8k16" in ptx
    assert not re.search(r"\b(ld|st)\.local\b", ptx)
    shared = dict((n, int(s)) for _, n, s in re.findall(r"__shared__ alignas\(\d+\) (\w+) (\w+)\[(\d+)\]", body))
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import MatmulSpec

    ts = resolve(MatmulSpec(3, 200, 1000, True, None, "float16"), dict(knobs, code="bitmap"))
    assert shared["st__ptr"] == ts.warps * (16 * ts.rt * ts.sc + 8 + ts.cap)
    assert shared["st__ptr"] * 2 + shared["red_ptr"] * 4 <= 48 * 1024
