"""The ``bmtc`` CUDA design (bitmap in mma-fragment order, decoded in registers): the layout builder against a
dense reference in torch, the kernel's in-register decode arithmetic against popcounts (all 2^16 masks), and
the kernel built here (no GPU) with its PTX checked. The GPU result check is ``scripts/gpu/dev_bmtc.py``."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

from sparsec.backends.cuda.kernels import bmtc_layout as BL
from sparsec.ir.formats import CSR, Bitmap

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")


def _weight(O, K, s, seed=0, dtype=torch.float16):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(O, K, generator=g) * (torch.rand(O, K, generator=g) >= s)
    w[0] = 0
    w[O // 2] = 0
    return w.to(dtype)


@pytest.mark.parametrize("O,K,rt,sc,s", [(100, 200, 2, 32, 0.7), (37, 77, 1, 64, 0.9), (64, 96, 4, 32, 0.0),
                                         (48, 64, 2, 64, 1.0), (130, 1000, 1, 128, 0.8), (33, 40, 2, 32, 0.5)])
@pytest.mark.parametrize("src", ["bitmap", "csr", "dense"])
def test_layout_roundtrip(O, K, rt, sc, s, src):
    w = _weight(O, K, s)
    fmt = {"bitmap": lambda: Bitmap.from_dense(w, tile=(8, 32)), "csr": lambda: CSR.from_dense(w),
           "dense": lambda: w}[src]()
    bufs = BL.build(fmt, rt, sc)
    assert set(bufs) == set(BL.BUFFERS)
    assert bufs["bm_mask"].dtype == torch.int32 and bufs["bm_ptr"].dtype == torch.int32
    rg = 16 * rt
    ngr, nst = -(-O // rg), -(-K // sc)
    assert bufs["bm_mask"].numel() == ngr * nst * 32 * ((rt * sc // 32 + 1) // 2)
    assert bufs["bm_ptr"].numel() == ngr * nst + 1
    nnz = int((w != 0).sum())
    # every stage's run is padded to 8 halves (16-byte copies): at most 7 pads per stage
    assert nnz <= int(bufs["bm_ptr"][-1]) * 8 <= nnz + 7 * ngr * nst
    assert int((bufs["bm_mask"].long() & 0xFFFFFFFF).apply_(lambda v: bin(v).count("1")).sum()) == nnz
    assert torch.equal(BL.to_dense(bufs, O, K, rt, sc), w)


def test_layout_places_elements_in_fragment_order():
    # element (row 9, col 13) of a 16x32 unit: lane g=1, q=1 -> 5; t=5: mm=1, t4=1 -> R = 4 + 0 + 1 = 5, h = 1
    unit, lane, bit, order = BL.element_place(torch.tensor([9]), torch.tensor([13]), 1)
    assert (int(unit), int(lane), int(bit), int(order)) == (0, 5, 13, 11)
    w = torch.zeros(16, 32, dtype=torch.float16)
    w[9, 13] = 3.0
    bufs = BL.build(w, 1, 32)
    assert int(bufs["bm_mask"][5]) == 1 << 13 and float(bufs["bm_values"][0]) == 3.0
    with pytest.raises(ValueError):
        BL.build(w, 1, 48)


def test_layout_bytes():
    w = _weight(512, 1024, 0.7, seed=3)
    b = BL.nbytes(BL.build(w, 2, 32)) / w.numel()
    assert 0.7 < b < 0.85                 # 0.3 * 2 + 1/8 + padding/pointers (dense: 2)


def _spread4(x):
    return (x * 0x00204081) & 0x01010101


def test_register_decode_arithmetic_matches_popcounts():
    """The kernel's j_R for all 8 registers at once (byte-wise prefix by multiplication, no POPC) and its
    prmt selector, for every 16-bit mask, against popcounts and a direct expansion."""
    m = torch.arange(1 << 16, dtype=torch.int64)
    b1lo, b1hi = _spread4((m >> 8) & 0xF), _spread4(m >> 12)
    ja = (((_spread4(m & 0xF) + b1lo) * 0x01010101) & 0xFFFFFFFF)
    jb = ((((_spread4((m >> 4) & 0xF) + b1hi) + (ja >> 24)) * 0x01010101) & 0xFFFFFFFF)
    ja, jb = ja - b1lo, jb - b1hi
    bits = (m.unsqueeze(1) >> torch.arange(16)) & 1
    vals = torch.arange(1, 17)                          # the lane's packed values: 1, 2, ... (0 = padding)
    for R in range(8):
        j = ((ja if R < 4 else jb) >> (8 * (R % 4))) & 0xFF
        pm = (((1 << R) - 1) * 0x101) | (1 << R)
        assert torch.equal(j, ((m.unsqueeze(1) & pm) >> torch.arange(16) & 1).sum(1))
        # prmt(lo = v[j-1], hi = v[j], 0x7632 - 0x22 * (m >> R & 0x101)) -> (b0 ? v[j-1] : 0, b1 ? v[j] : 0)
        t = (m >> R) & 0x101
        sel = 0x7632 - 0x22 * t
        lo_nib, hi_nib = sel & 0xF, (sel >> 8) & 0xF
        b0, b1 = bits[:, R], bits[:, R + 8]
        assert torch.equal(lo_nib == 0, b0 == 1) and torch.equal(hi_nib == 4, b1 == 1)
        assert torch.all((lo_nib == 0) | (lo_nib == 2)) and torch.all((hi_nib == 4) | (hi_nib == 6))
        # the values a direct expansion puts in register R: element order 2R + h has rank popc(bits before it)
        rank0 = ((m.unsqueeze(1) & (((1 << R) - 1) * 0x101)) >> torch.arange(16) & 1).sum(1)
        exp0 = torch.where(b0 == 1, vals[rank0.clamp(max=15)], 0)
        exp1 = torch.where(b1 == 1, vals[(rank0 + b0).clamp(max=15)], 0)
        got0 = torch.where(b0 == 1, vals[(j - 1).clamp(min=0, max=15)], 0)
        got1 = torch.where(b1 == 1, vals[j.clamp(max=15)], 0)
        assert torch.equal(got0, exp0) and torch.equal(got1, exp1)


def test_resolve_knobs():
    from sparsec.backends.cuda.kernels.bmtc import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    d = resolve(MatmulSpec(1, 9216, 36864, False, None, "float16"), None)
    assert (d.rt, d.sc, d.warps, d.nbuf) == (1, 64, 4, 4) and d.ksplit > 1
    d = resolve(MatmulSpec(32, 9216, 36864, False, None, "float16"), None)
    assert (d.rt, d.sc, d.warps, d.nbuf) == (2, 32, 8, 2)
    assert resolve(MatmulSpec(1, 9216, 36864, False, "gelu", "float16"), None).ksplit == 1
    with pytest.raises(KernelError):
        resolve(MatmulSpec(1, 64, 64, False, "relu", "float16"), {"ksplit": 2})
    with pytest.raises(KernelError):
        resolve(MatmulSpec(1, 64, 64, False, None, "float32"), None)
    with pytest.raises(KernelError):
        resolve(MatmulSpec(1, 64, 64, False, None, "float16"), {"rt": 4, "sc": 128, "warps": 8})   # > 48 KiB
    with pytest.raises(KernelError):
        resolve(MatmulSpec(1, 64, 64, False, None, "float16"), {"foo": 1})


def _source(knobs, dtype=torch.float16, O=200, K=1000, T=3, bias=True, act=None):
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    w = _weight(O, K, 0.8, dtype=dtype)
    func, args, kn = cuda_matmul_primfunc(Bitmap.from_dense(w, tile=(8, 32)), T, bias=bias, activation=act,
                                          design="bmtc", knobs=knobs, name="t")
    lib = tc.build(tvm.IRModule({"t": func}), "sm_90")
    src = tc.device_source(lib)
    return src, tc.ptx(src, "sm_90"), args, kn, lib


@needs_nvcc
@pytest.mark.parametrize("dtype,knobs,act", [(torch.float16, {}, None),
                                             (torch.bfloat16, {"warps": 1, "nbuf": 6}, "gelu"),
                                             (torch.float16, {"rt": 1, "sc": 64, "ksplit": 2, "nbuf": 2}, None),
                                             (torch.bfloat16, {"rt": 4, "sc": 32, "warps": 2}, None)])
def test_kernel_decodes_in_registers(dtype, knobs, act):
    src, ptx, args, kn, lib = _source(knobs, dtype, act=act)
    assert [a.name for a in args][:3] == list(BL.BUFFERS)
    body = src[src.rindex('extern "C" __global__'):]
    nb = kn["nbuf"]
    assert f"wait_group_{nb - 1}();" in body               # nbuf - 1 stages' copies in flight
    assert body.count("__syncthreads();") == 2                      # only around the warps' partial sums
    assert "tvm_builtin_cuda_warp_sync();" in body
    nu = kn["rt"] * kn["sc"] // 32
    pt = "bf16" if dtype == torch.bfloat16 else "f16"
    mma = rf"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.{pt}\.{pt}\.f32"
    assert len(re.findall(mma, ptx)) == 2 * nu * (kn["tn"] // 8)
    assert "cp.async.cg.shared.global" in ptx
    assert len(re.findall(r"\bprmt\.b32", ptx)) >= 16 * nu           # one selector prmt + one byte extract per register
    assert len(re.findall(r"\bpopc\.b32", ptx)) <= 2 * ((nu + 1) // 2)   # popcounts only for the lane scan
    assert len(re.findall(r"ld\.shared\.u16", ptx)) >= 16 * nu
    assert not re.search(r"\b(ld|st)\.local", ptx)                  # fragments stay in registers
    assert not re.search(r"\bld\.u16\b", ptx)                       # no generic-address stage loads
    assert "bar.warp.sync" in ptx
    shared = dict((n, int(s)) for _, n, s in re.findall(r"__shared__ alignas\(\d+\) (\w+) (\w+)\[(\d+)\]", body))
    assert set(shared) == {"st__ptr", "red_ptr"}, shared             # the stage buffers are not reused for red
    from sparsec.backends.cuda.kernels.bmtc import buf_halves

    assert shared["st__ptr"] == kn["warps"] * nb * buf_halves(kn["rt"], kn["sc"])
