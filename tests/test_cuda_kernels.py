"""CUDA matmul kernel families: generated and nvcc-compiled here (no GPU), instructions checked in the PTX.

Numerical correctness against torch runs on a GPU machine (scripts/gpu_check.sh -> check_kernels.py).
"""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")

O, K, TOK = 40, 72, 5      # not multiples of the 16-row / 32-column tiles


def _formats(dtype):
    from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant

    g = torch.Generator().manual_seed(0)
    w = torch.randn(O, K, generator=g)
    un = (w * (torch.rand(O, K, generator=g) > 0.8)).to(dtype)
    nm = torch.zeros(O, K)
    nm[:, 1::4] = w[:, 1::4]
    nm[:, 2::4] = w[:, 2::4]
    return {"dense": Dense.from_dense(w.to(dtype)), "bitmap": Bitmap.from_dense(un, tile=(8, 32)),
            "csr": CSR.from_dense(un), "nm": NM.from_dense(nm.to(dtype), n=2, m=4),
            "bsr": BSR.from_dense(un, block=(4, 4)), "groupquant": GroupQuant.from_dense(un, group=8, bits=4)}


@pytest.fixture(scope="module")
def built():
    """Every family in fp16 (two epilogues), bf16 and fp32, built as one module; its PTX per kernel."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    funcs = {}
    for dt, tag in ((torch.float16, "f16"), (torch.bfloat16, "bf16"), (torch.float32, "f32")):
        for name, fmt in _formats(dt).items():
            for bias, act in (((False, None), (True, "gelu")) if tag == "f16" else ((True, "relu"),)):
                sym = f"k_{name}_{tag}_{int(bias)}{act or ''}"
                funcs[sym] = cuda_matmul_primfunc(fmt, TOK, bias=bias, activation=act, name=sym)[0]
    from sparsec.ir.formats import Dense

    # no bound checks at all (T, K, O multiples of the tiles): the case that exposed the retyping bug
    funcs["k_dense_exact"] = cuda_matmul_primfunc(Dense.from_dense(torch.zeros(256, 512, dtype=torch.float16)), 64,
                                                  name="k_dense_exact")[0]
    lib = tc.build(tvm.IRModule(funcs), "sm_90")
    ptx = tc.ptx(lib, "sm_90")
    bodies = tc.ptx_entries(ptx)
    return funcs, bodies, tc.device_source(lib)


@pytest.mark.parametrize("fmt", ["dense", "bitmap", "csr", "nm", "bsr", "groupquant"])
def test_fp16_and_bf16_kernels_use_tensor_core_mma(built, fmt):
    _, bodies, _ = built
    for sym, ty in ((f"k_{fmt}_f16_0", "f16"), (f"k_{fmt}_bf16_1relu", "bf16")):
        body = next(b for k, b in bodies.items() if k.startswith(sym))
        assert re.search(rf"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.{ty}\.{ty}\.f32", body), sym
        assert ".local" not in body, f"{sym} spills to local memory"


@pytest.mark.parametrize("fmt", ["dense", "bitmap", "nm"])
def test_fp32_kernels_are_simt(built, fmt):
    _, bodies, _ = built
    body = next(b for k, b in bodies.items() if k.startswith(f"k_{fmt}_f32"))
    assert "mma.sync" not in body and re.search(r"fma\.rn(\.ftz)?\.f32", body)


def test_dense_loads_weights_and_activations_16_bytes_at_a_time(built):
    _, bodies, _ = built
    body = next(b for k, b in bodies.items() if k.startswith("k_dense_f16_0"))
    assert "ld.global.v4.u32" in body or "ld.global.nc.v4.u32" in body


def test_bitmap_kernel_expands_bits_with_popc(built):
    _, bodies, _ = built
    body = next(b for k, b in bodies.items() if k.startswith("k_bitmap_f16_0"))
    assert "popc.b32" in body


def test_unsupported_parameters_are_refused():
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.kernels.common import KernelError
    from sparsec.ir.formats import NM, Bitmap

    w = torch.zeros(16, 30, dtype=torch.float16)
    with pytest.raises(KernelError, match="tile 3x5"):
        cuda_matmul_primfunc(Bitmap.from_dense(w, tile=(3, 5)), 4)
    with pytest.raises(KernelError, match="m=3"):
        cuda_matmul_primfunc(NM.from_dense(w, n=1, m=3), 4)
    with pytest.raises(KernelError, match="knob warps=3"):
        cuda_matmul_primfunc(Bitmap.from_dense(w, tile=(8, 32)), 4, knobs={"warps": 3})


def test_argument_order_is_torch_layout():
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import CSR

    w = torch.eye(8, 24, dtype=torch.float16)
    func, args, _ = cuda_matmul_primfunc(CSR.from_dense(w), 3, bias=True, activation="relu")
    assert [a.name for a in args] == ["indptr", "indices", "values", "X", "bias", "Y"]
    assert args[3].shape == (3, 24) and args[5].shape == (3, 8)
    assert len(func.params) == 6


def test_mma_fragments_stay_16_bit_arrays(built):
    """Regression: when every access of a fragment buffer was a vector, TVM's storage rewrite retyped it
    ``uint4 xv[1]`` and the mma's element offset (+4 halves) became +4 uint4 (garbage, wrong results)."""
    _, _, src = built
    assert not re.search(r"uint4 (xb|af|acc)_ptr\[", src)
    assert re.search(r"half xb_ptr\[8\]", src) and re.search(r"nv_bfloat16 xb_ptr\[8\]", src)
    for m in re.finditer(r"\"r\"\(\(\(unsigned \*\)\((\w+)_ptr", src):      # every mma operand array
        assert not re.search(rf"uint\d? {m.group(1)}_ptr\[", src), m.group(1)


# ---------------------------------------------------------------- tiled kernel (tiled.py, tiled_layout.py)

def _emulate_tiled(bufs, O, K, X, rt, sc):
    """What the tiled kernel computes, from the PTX ISA's m16n8k16 fragment layouts (independent of the
    layout code): scatter each stage to its slots, rebuild the 16x16 A / 16xT B tiles lane by lane, A @ B."""
    vals, pos, ptr = bufs["tc_values"].float(), bufs["tc_pos"].long(), bufs["tc_ptr"].long() * 8
    rg, nst = 16 * rt, -(-K // sc)
    Y = torch.zeros(X.shape[0], O)
    Xp = torch.zeros(X.shape[0], nst * sc)
    Xp[:, :K] = X.float()
    for g in range(-(-O // rg)):
        for s in range(nst):
            lo, hi = ptr[g * nst + s], ptr[g * nst + s + 1]
            assert lo % 8 == 0 and hi % 8 == 0
            sm = torch.zeros(rg * sc + 8)
            sm[pos[lo:hi]] = vals[lo:hi]
            for c in range(sc // 32):
                for r in range(rt):
                    for mm in range(2):
                        A, B = torch.zeros(16, 16), torch.zeros(16, X.shape[0])
                        for lane in range(32):
                            gg, q = lane // 4, lane % 4
                            fr = sm[(((c * rt + r) * 2 + mm) * 32 + lane) * 8:][:8]
                            A[gg, 2 * q:2 * q + 2], A[gg + 8, 2 * q:2 * q + 2] = fr[0:2], fr[2:4]
                            A[gg, 2 * q + 8:2 * q + 10], A[gg + 8, 2 * q + 8:2 * q + 10] = fr[4:6], fr[6:8]
                            k0 = s * sc + c * 32 + q * 8 + mm * 4        # the lane's B fragment: 4 contiguous
                            B[2 * q:2 * q + 2], B[2 * q + 8:2 * q + 10] = Xp[:, k0:k0 + 2].t(), Xp[:, k0 + 2:k0 + 4].t()
                        rows = g * rg + r * 16 + torch.arange(16)
                        ok = rows < O
                        Y[:, rows[ok]] += (A @ B)[ok].t()
    return Y


@pytest.mark.parametrize("rt,sc", [(1, 64), (2, 64), (4, 32), (1, 128)])
def test_tiled_layout_matches_the_mma_fragments(rt, sc):
    from sparsec.backends.cuda.kernels import tiled_layout as TL
    from sparsec.ir.formats import CSR, NM, Bitmap

    g = torch.Generator().manual_seed(rt * sc)
    O_, K_, T_ = 37, 77, 3                                   # not multiples of any tile; an empty row
    w = (torch.randn(O_, K_, generator=g) * (torch.rand(O_, K_, generator=g) > 0.7)).half()
    w[5] = 0
    x = torch.randn(T_, K_, generator=g).half()
    ref = x.float() @ w.float().t()
    for fmt in (Bitmap.from_dense(w, tile=(8, 32)), CSR.from_dense(w)):
        bufs = TL.build(fmt, rt, sc)
        assert bufs["tc_values"].dtype == torch.float16 and bufs["tc_pos"].dtype == torch.int16
        assert int(bufs["tc_pos"].max()) <= 16 * rt * sc       # slots + the trash slot of the padding
        torch.testing.assert_close(_emulate_tiled(bufs, O_, K_, x, rt, sc), ref, atol=1e-4, rtol=1e-4)
    wn = torch.randn(16, 64, generator=g)
    wn[:, 0::4] = 0
    wn[:, 3::4] = 0
    nm = NM.from_dense(wn.half(), n=2, m=4)
    torch.testing.assert_close(_emulate_tiled(TL.build(nm, rt, sc), 16, 64, x[:, :64].contiguous(), rt, sc),
                               x[:, :64].float() @ nm.to_dense().float().t(), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def built_tiled():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import Bitmap

    w = (torch.randn(O, K) * (torch.rand(O, K) > 0.8)).half()
    fmt = Bitmap.from_dense(w, tile=(8, 32))
    funcs = {
        "t_f16": cuda_matmul_primfunc(fmt, TOK, design="tiled", name="t_f16")[0],
        "t_f16_gelu": cuda_matmul_primfunc(fmt, TOK, bias=True, activation="gelu", design="tiled",
                                           name="t_f16_gelu")[0],
        "t_bf16_split": cuda_matmul_primfunc(Bitmap.from_dense(w.bfloat16(), tile=(8, 32)), 40, bias=True,
                                             design="tiled", knobs={"ksplit": 2, "warps": 1, "sc": 32},
                                             name="t_bf16_split")[0],
        "t_aligned": cuda_matmul_primfunc(Bitmap.from_dense(torch.zeros(256, 512, dtype=torch.float16)), 8,
                                          design="tiled", name="t_aligned")[0],
        "t_pipe2": cuda_matmul_primfunc(fmt, 20, design="tiled", knobs={"pipe": 2, "rt": 4}, name="t_pipe2")[0],
    }
    lib = tc.build(tvm.IRModule(funcs), "sm_90")
    ptx = tc.ptx(lib, "sm_90")
    bodies = tc.ptx_entries(ptx)
    return bodies


def test_tiled_kernel_instructions(built_tiled):
    """Tensor-core mma, 16-byte vector loads of the compressed stream and of the A fragments in shared
    memory, shared-memory fp32 atomics for the warps' partial sums, no local-memory spills."""
    for sym in ("t_f16", "t_f16_gelu", "t_aligned", "t_pipe2"):
        body = built_tiled[next(k for k in built_tiled if k.startswith(sym) and not k.endswith("_1"))]
        assert re.search(r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.f16\.f16\.f32", body), sym
        assert re.search(r"ld\.global(\.nc)?\.v4\.(u32|b32)", body), sym          # 8 values / 8 positions
        assert re.search(r"ld\.shared\.v4\.(u32|b32)", body), sym                 # an A fragment
        assert re.search(r"st\.shared\.v4\.(u32|b32)", body), sym                 # zeroing a stage
        assert re.search(r"(atom|red)\.shared(::cta)?\.add\.f32", body), sym
        assert ".local" not in body, f"{sym} spills to local memory"


def test_tiled_split_k_zeroes_y_then_adds_with_bf16_atomics(built_tiled):
    names = [k for k in built_tiled if k.startswith("t_bf16_split")]
    assert len(names) == 2                                    # Y zeroing kernel + main kernel
    main = next(built_tiled[k] for k in names if k.endswith("_1"))
    assert re.search(r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32", main)
    assert re.search(r"(atom|red)(\.global)?\.add\.noftz\.bf16", main)


def test_tiled_kernel_refuses_what_it_cannot_do():
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.kernels.common import KernelError
    from sparsec.ir.formats import Bitmap

    fmt = Bitmap.from_dense(torch.zeros(64, 64, dtype=torch.float16), tile=(8, 32))
    with pytest.raises(KernelError, match="activation"):
        cuda_matmul_primfunc(fmt, 4, activation="relu", knobs={"ksplit": 2}, design="tiled")
    with pytest.raises(KernelError, match="float32"):
        cuda_matmul_primfunc(Bitmap.from_dense(torch.zeros(64, 64), tile=(8, 32)), 4, design="tiled")
    with pytest.raises(KernelError, match="design"):
        cuda_matmul_primfunc(fmt, 4, design="nope")
    func, args, knobs = cuda_matmul_primfunc(fmt, 4, bias=True, design="tiled")
    assert [a.name for a in args] == ["tc_values", "tc_pos", "tc_ptr", "X", "bias", "Y"]
    assert knobs["design"] == "tiled" and len(func.params) == 6


def test_dlight_dense_kernel_tiles_through_shared_memory_on_tensor_cores():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import Dense

    w = Dense.from_dense(torch.zeros(100, 200, dtype=torch.float16))
    func, args, knobs = cuda_matmul_primfunc(w, 130, bias=True, activation="gelu", design="dlight", name="dl")
    assert [a.name for a in args] == ["values", "X", "bias", "Y"] and knobs == {"design": "dlight"}
    ptx = tc.ptx(tc.build(tvm.IRModule({"dl": func}), "sm_90"), "sm_90")
    assert re.search(r"wmma\.mma\.sync\.aligned\.\w+\.\w+\.m16n16k16\.f32\.f32", ptx)
    assert re.search(r"(ld|st)\.shared", ptx) and ".local" not in ptx


# ---------------------------------------------------------------- design="mma" (dense and 2:4 mma.sp)
def _nm24(O_, K_, dtype, seed=0):
    from sparsec.ir.formats import NM

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(O_, K_, generator=g)
    G = K_ // 4
    keep = torch.zeros(O_, G, 4, dtype=torch.bool)
    keep.scatter_(2, torch.rand(O_, G, 4, generator=g).argsort(-1)[..., :2], True)
    keep[0, :3] = False                       # groups with 0 and 1 non-zeros: padding slots in the format
    keep[1, 0, 3] = True
    keep[1, 0, :3] = False
    return NM.from_dense((w * keep.view(O_, K_)).to(dtype), n=2, m=4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mma_layout_encodes_the_format(dtype):
    """sp_values + 2-bit metadata decode (independently of the kernel) to the format's own dense weight."""
    from sparsec.backends.cuda.kernels import mma_layout as ML

    fmt = _nm24(37, 64, dtype)
    lay = ML.build(fmt)
    assert lay["sp_values"].shape == (37, 32) and lay["sp_values"].dtype == dtype
    assert lay["sp_meta"].shape == (3, 4, 8) and lay["sp_meta"].dtype == torch.int32
    assert torch.equal(ML.to_dense(lay, 37, 64), fmt.to_dense().float())
    # every group's two positions are distinct and increasing (what mma.sp requires)
    w = lay["sp_meta"].long() & 0xFFFFFFFF
    nib = (torch.stack([w & 0xFFFF, w >> 16], -1).unsqueeze(-1) >> (torch.arange(4) * 4)) & 0xF
    assert bool(((nib & 3) < (nib >> 2)).all())


@pytest.fixture(scope="module")
def built_mma():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import Dense

    funcs = {}
    for dt, tag in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
        dense = Dense.from_dense(torch.zeros(100, 200, dtype=dt))
        funcs[f"mma_dense_{tag}"] = cuda_matmul_primfunc(dense, 130, bias=True, activation="gelu", design="mma",
                                                         name=f"mma_dense_{tag}")[0]
        funcs[f"mma_nm_{tag}"] = cuda_matmul_primfunc(_nm24(100, 208, dt), 130, design="mma",
                                                      name=f"mma_nm_{tag}")[0]
    lib = tc.build(tvm.IRModule(funcs), "sm_90")
    ptx = tc.ptx(lib, "sm_90")
    bodies = tc.ptx_entries(ptx)
    return bodies


@pytest.mark.parametrize("tag,ptx_t", [("f16", "f16"), ("bf16", "bf16")])
def test_mma_kernels_pipeline_through_shared_memory_on_tensor_cores(built_mma, tag, ptx_t):
    dense = next(b for n, b in built_mma.items() if f"mma_dense_{tag}" in n)
    sp = next(b for n, b in built_mma.items() if f"mma_nm_{tag}" in n)
    for body in (dense, sp):
        assert "cp.async.cg.shared.global" in body and "cp.async.wait_group" in body
        assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in body
        assert ".local" not in body                       # fragments and accumulators stay in registers
    assert re.search(rf"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.{ptx_t}\.{ptx_t}\.f32", dense)
    assert "mma.sp" not in dense
    assert re.search(rf"mma\.sp\.sync\.aligned\.m16n8k16\.row\.col\.f32\.{ptx_t}\.{ptx_t}\.f32", sp)
    assert not re.search(r"mma\.sync", sp)


def test_mma_kernel_arguments_and_refusals():
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.kernels.common import KernelError as KE
    from sparsec.ir.formats import NM, Dense

    func, args, knobs = cuda_matmul_primfunc(_nm24(40, 64, torch.float16), 8, bias=True, design="mma")
    assert [a.name for a in args] == ["sp_values", "sp_meta", "X", "bias", "Y"]
    assert args[1].shape == (3, 4, 8) and knobs["design"] == "mma"
    with pytest.raises(KE, match="multiple of 8"):
        cuda_matmul_primfunc(Dense.from_dense(torch.zeros(16, 20, dtype=torch.float16)), 8, design="mma")
    with pytest.raises(KE, match="multiple of 16"):
        cuda_matmul_primfunc(_nm24(16, 40, torch.float16), 8, design="mma")
    with pytest.raises(KE, match="at most 2 per 4 columns"):           # 4:16 can put 4 non-zeros in 4 columns
        cuda_matmul_primfunc(NM.from_dense(torch.zeros(16, 64, dtype=torch.float16), n=4, m=16), 8, design="mma")
    # 1:4 and 2:8 have at most 2 non-zeros per group of 4: the same mma.sp kernel and layout
    assert cuda_matmul_primfunc(NM.from_dense(torch.zeros(16, 64, dtype=torch.float16), n=1, m=4), 8,
                                design="mma")[1][0].name == "sp_values"
    with pytest.raises(KE, match="float16, bfloat16"):
        cuda_matmul_primfunc(Dense.from_dense(torch.zeros(16, 64)), 8, design="mma")
    with pytest.raises(KE, match="shared memory"):
        cuda_matmul_primfunc(Dense.from_dense(torch.zeros(16, 64, dtype=torch.float16)), 8, design="mma",
                             knobs=dict(bm=128, bn=128, bk=64, stages=5, wm=2, wn=2))
    with pytest.raises(KE, match="unknown knob"):
        cuda_matmul_primfunc(Dense.from_dense(torch.zeros(16, 64, dtype=torch.float16)), 8, design="mma",
                             knobs={"tn": 8})
