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
    bodies = {}
    for m in re.finditer(r"\.entry (\w+)\(", ptx):
        start = m.end()
        nxt = ptx.find(".entry ", start)
        bodies[m.group(1)] = ptx[start: nxt if nxt > 0 else len(ptx)]
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
