"""The ``tiled`` CUDA kernel's ``code="pos7"`` stages (3-byte non-zeros: chunks of 8 entries of one 128-slot group,
one 64-bit code word per chunk): the layout (``tiled_layout.build_pos7``) checked against the dense weight through a
plain-Python replay of the kernel's scatter (its int32 decode arithmetic, batch by batch and lane by lane) and
through the vectorised inverse; the kernel built here (no GPU, sm_90a) and its source/PTX checked. GPU results:
``scripts/gpu/dev_tiledp7.py``."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

from sparsec.backends.cuda.kernels import tiled_layout as TL

CASES = [(100, 200, 2, 64, 0.7), (37, 77, 1, 128, 0.9), (64, 300, 4, 32, 0.5), (48, 64, 2, 64, 0.0),
         (100, 300, 2, 64, 0.99), (70, 130, 1, 64, 0.8), (33, 70, 1, 32, 0.7), (96, 200, 2, 32, 0.6)]


def _weight(O, K, s, seed=0):
    torch.manual_seed(O * 7 + K + seed)
    w = torch.randn(O, K, dtype=torch.float16) * (torch.rand(O, K) >= s)
    w[min(3, O - 1)] = 0                                     # an empty row
    return w


def _i32(x):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def _replay(b, O, K, rt, sc):
    """The kernel's scatter in plain Python: stage by stage, batch of 32 chunks by batch, lane by lane, entry j of
    a chunk stored at ``((lo >> 21) & 0x780) + ((word >> 7(j % 4)) & 127)`` (int32 arithmetic shifts) with
    ``word = lo`` for j < 4 and ``hi`` for j >= 4. Asserts that a slot never receives two different values."""
    rg = 16 * rt
    S = rg * sc
    nst = -(-K // sc)
    r, c = torch.meshgrid(torch.arange(rg), torch.arange(sc), indexing="ij")
    tab = TL.slot_of(r.reshape(-1), c.reshape(-1), rt).tolist()
    where = {slot: (int(rr), int(cc)) for slot, rr, cc in zip(tab, r.reshape(-1), c.reshape(-1))}
    code, vals, ptr = b["tc_code"].tolist(), b["tc_values"].double().tolist(), b["tc_ptr"].tolist()
    W = torch.zeros(-(-O // rg) * rg, nst * sc, dtype=torch.float64)
    for seg in range(len(ptr) - 1):
        stage = {}
        for ch in range(ptr[seg], ptr[seg + 1]):
            lo, hi = code[2 * ch], code[2 * ch + 1]
            assert -(1 << 31) <= lo < 1 << 31 and 0 <= hi < 1 << 28    # hi's bits 28..31 unused
            for j in range(8):
                word = lo if j < 4 else hi
                slot = ((lo >> 21) & 0x780) + ((word >> 7 * (j % 4)) & 127)
                assert slot < S
                assert slot >> 7 == ((lo >> 28) & 15)               # one group per chunk
                v = vals[ch * 8 + j]
                assert stage.get(slot, v) == v                      # a pad repeats an entry: same slot, same value
                stage[slot] = v
        g, s = divmod(seg, nst)
        for slot, v in stage.items():
            rr, cc = where[slot]
            W[g * rg + rr, s * sc + cc] = v
    return W[:O, :K]


@pytest.mark.parametrize("order", TL.P7_ORDERS)
@pytest.mark.parametrize("O,K,rt,sc,s", CASES)
def test_pos7_layout_decodes_to_the_weight(O, K, rt, sc, s, order):
    w = _weight(O, K, s)
    b = TL.build_pos7(w, rt, sc, order=order)
    rg = 16 * rt
    nseg = -(-O // rg) * -(-K // sc)
    n = int(b["tc_ptr"][-1])
    assert b["tc_code"].dtype == torch.int32 and b["tc_values"].dtype == torch.float16
    assert b["tc_ptr"].numel() == nseg + 1 and b["tc_code"].numel() >= 2 * n and b["tc_values"].numel() >= 8 * n
    torch.testing.assert_close(TL.pos7_to_dense(b, O, K, rt, sc), w.double(), rtol=0, atol=0)
    if O * K <= 30000:
        torch.testing.assert_close(_replay(b, O, K, rt, sc), w.double(), rtol=0, atol=0)
    # entries: the non-zeros of every (stage, 128-slot group), padded to a multiple of 8
    rows, cols = (w != 0).nonzero(as_tuple=True)
    slot = TL.slot_of(rows % rg, cols % sc, rt)
    grp = ((rows // rg) * -(-K // sc) + cols // sc) * (rg * sc // 128) + (slot >> 7)
    cnt = torch.bincount(grp)
    assert n == int(((cnt + 7) // 8).sum())


def test_pos7_from_csr_bitmap_and_dense_sources():
    from sparsec.ir.formats import CSR, Bitmap, Dense

    w = _weight(130, 250, 0.8)
    ref = TL.build_pos7(w, 2, 64)
    for fmt in (Bitmap.from_dense(w, tile=(8, 32)), CSR.from_dense(w), Dense.from_dense(w)):
        b = TL.build_pos7(fmt, 2, 64)
        torch.testing.assert_close(TL.pos7_to_dense(b, 130, 250, 2, 64), w.double(), rtol=0, atol=0)
        for k in TL.P7_BUFFERS:
            assert torch.equal(b[k], ref[k]), k


def test_pos7_empty_stages_and_a_fully_dense_stage():
    w = torch.zeros(64, 256, dtype=torch.float16)
    w[:32, 64:128] = torch.randn(32, 64).half().clamp_min(0.01)    # one stage (rt=2, sc=64) fully dense
    w[40, 200] = 1.0                                                # a one-entry group: 7 pads
    b = TL.build_pos7(w, 2, 64)
    ptr = b["tc_ptr"].tolist()
    assert ptr == [0, 0, 256, 256, 256, 256, 256, 256, 257]        # 2048 / 8 chunks, empty stages, one chunk
    torch.testing.assert_close(TL.pos7_to_dense(b, 64, 256, 2, 64), w.double(), rtol=0, atol=0)
    torch.testing.assert_close(_replay(b, 64, 256, 2, 64), w.double(), rtol=0, atol=0)
    z = TL.build_pos7(torch.zeros(40, 50, dtype=torch.float16), 2, 64)          # no non-zero at all
    assert int(z["tc_ptr"][-1]) == 0 and z["tc_code"].numel() >= 2 and z["tc_values"].numel() >= 8
    assert not TL.pos7_to_dense(z, 40, 50, 2, 64).any()


def test_pos7_bytes_and_bank_order():
    w = _weight(512, 2048, 0.7)
    pos, p7, p7s = TL.build(w, 2, 64), TL.build_pos7(w, 2, 64), TL.build_pos7(w, 2, 64, order="slot")
    assert TL.nbytes(p7) < 0.85 * TL.nbytes(pos)                   # 3 instead of 4 bytes per non-zero, + pads
    assert TL.nbytes(p7) / w.numel() < 1.0
    assert TL.nbytes(p7) == TL.nbytes(p7s)
    # the greedy placement: fewer shared-memory wavefronts than slot order, close to pos's bank order
    assert TL.pos7_wavefronts(p7) < 0.7 * TL.pos7_wavefronts(p7s)
    assert TL.pos7_wavefronts(p7) < 1.25 * TL.store_wavefronts(pos)


def test_pos7_layout_refuses_large_stages_and_build_for_dispatches():
    w = _weight(64, 128, 0.7)
    with pytest.raises(ValueError):
        TL.build_pos7(w, 4, 64)                                     # 4096 slots: 32 groups
    for kn, names in (({"code": "pos7", "rt": 2, "sc": 64}, TL.P7_BUFFERS), ({"rt": 2, "sc": 64}, TL.BUFFERS),
                      ({"code": "bitmap", "rt": 2, "sc": 64}, TL.BM_BUFFERS)):
        lay, got = TL.build_for(w, kn)
        assert got == names and set(lay) == set(names)


def test_resolve_rules():
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(8, 4096, 4096, False, None, "float16")
    ts = resolve(spec, {"code": "pos7"})
    assert ts.code == "pos7" and ts.knobs()["code"] == "pos7" and "vsrc" not in ts.knobs()
    d = resolve(spec, {})
    assert d.code == "pos" and "code" not in d.knobs()
    assert (ts.rt, ts.sc, ts.warps, ts.ksplit) == (d.rt, d.sc, d.warps, d.ksplit)
    assert resolve(spec, {"code": "pos7", "clear": "unscatter"}).clear == "unscatter"
    assert resolve(MatmulSpec(64, 4096, 4096, False, None, "float16"), {"code": "pos7"}).rt == 4   # 4x32: 2048 slots
    for bad in ({"code": "pos7", "rt": 4, "sc": 64}, {"code": "pos7", "rt": 2, "sc": 128}):
        with pytest.raises(KernelError):
            resolve(spec, bad)


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")


def _source(knobs, dtype=torch.float16, O=200, K=1000, T=3, act=None):
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import Bitmap

    w = (torch.randn(O, K) * (torch.rand(O, K) > 0.8)).to(dtype)
    func, args, kn = cuda_matmul_primfunc(Bitmap.from_dense(w, tile=(8, 32)), T, bias=True, activation=act,
                                          design="tiled", knobs=knobs, name="t")
    lib = tc.build(tvm.IRModule({"t": func}), "sm_90a")
    src = tc.device_source(lib)
    return src, tc.ptx(src, "sm_90a"), args, kn


@needs_nvcc
@pytest.mark.parametrize("dtype,knobs,act", [
    (torch.float16, {}, None),
    (torch.bfloat16, {"rt": 4, "sc": 32, "warps": 2}, "relu"),
    (torch.float16, {"rt": 1, "sc": 128, "ksplit": 3, "clear": "unscatter"}, None),
    (torch.float16, {"rt": 1, "sc": 32, "pipe": 2, "ksplit": 2}, None),
    (torch.bfloat16, {"pipe": 3}, "gelu"),
])
def test_pos7_kernel_loads_code_words_and_scatters(dtype, knobs, act):
    src, ptx, args, kn = _source(dict(knobs, code="pos7"), dtype, act=act)
    assert [a.name for a in args][:3] == ["tc_values", "tc_code", "tc_ptr"] and kn["code"] == "pos7"
    assert args[1].dtype == "int32"
    body = src[src.rindex('extern "C" __global__'):]
    assert "int2*)(pos_ptr" in body                           # one 8-byte code word per lane and batch
    assert "& 1920)" in body and "& 127)" in body              # (lo >> 21) & 0x780, (word >> 7k) & 127
    assert re.search(r"ld\.global\.nc\.v2\.(u32|b32)", ptx)
    assert re.search(r"st\.shared\.u16", ptx) and re.search(r"ld\.shared\.v4\.(u32|b32)", ptx)
    assert "mma.sync.aligned.m16n8k16" in ptx
    assert not re.search(r"\b(ld|st)\.local\b", ptx)
    assert not re.search(r"ld\.global\.nc\.v4\.(s16|u16|b16)", ptx)
    if kn["ksplit"] > 1:
        assert re.search(r"red\.|atom\.", ptx)
    if kn["clear"] == "unscatter":
        assert body.count("& 1920)") >= 24                     # scatter + unscatter of both batch kinds


@needs_nvcc
def test_pos_kernel_has_no_pos7_decode():
    src, _, args, kn = _source({})
    assert [a.name for a in args][:3] == ["tc_values", "tc_pos", "tc_ptr"] and "code" not in kn
    assert "& 1920)" not in src and "int2*)(pos_ptr" not in src
