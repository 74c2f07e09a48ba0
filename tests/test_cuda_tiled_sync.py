"""The ``tiled`` CUDA kernel's warp-private stages (``sync="warp"``, the default): built here (no GPU), the
generated source checked. The GPU result check is ``scripts/gpu/dev_tiled.py`` / ``scripts/gpu_check.sh``."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")


def _source(knobs, dtype=torch.float16, O=200, K=1000, T=3):
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import Bitmap

    w = (torch.randn(O, K) * (torch.rand(O, K) > 0.8)).to(dtype)
    func = cuda_matmul_primfunc(Bitmap.from_dense(w, tile=(8, 32)), T, bias=True, design="tiled", knobs=knobs,
                                name="t")[0]
    lib = tc.build(tvm.IRModule({"t": func}), "sm_90")
    src = tc.device_source(lib)
    return src, tc.ptx(src, "sm_90")


@pytest.mark.parametrize("dtype,knobs", [(torch.float16, {}), (torch.bfloat16, {"warps": 1, "ksplit": 1}),
                                         (torch.float16, {"pipe": 2, "warps": 2}),
                                         (torch.bfloat16, {"pipe": 3, "warps": 2})])
def test_tiled_stages_sync_per_warp_and_keep_their_own_shared_memory(dtype, knobs):
    """Per stage only __syncwarp (3 of them); block barriers only around the warps' partial sums; the stage
    buffers stay shared-memory accesses in the PTX; and the partial-sum buffer `red` is a separate
    allocation (TVM does not see the stage buffer's accesses, so it once reused it for `red`: a race)."""
    src, ptx = _source(knobs, dtype)
    body = src[src.rindex('extern "C" __global__'):]
    assert body.count("tvm_builtin_cuda_warp_sync();") == 3 * knobs.get("pipe", 1)
    assert body.count("__syncthreads();") == 2
    shared = re.findall(r"__shared__ alignas\(\d+\) (\w+) (\w+)\[(\d+)\]", body)
    assert {name for _, name, _ in shared} == {"st__ptr", "red_ptr"}, shared
    w = knobs.get("warps", 8)
    assert dict((n, int(s)) for _, n, s in shared)["st__ptr"] == w * (16 * 2 * 64 + 8)   # rt=2, sc=64 at T <= 32
    assert "(float*)st__ptr" not in body
    assert re.search(r"st\.shared\.u16", ptx) and re.search(r"ld\.shared\.v4\.(u32|b32)", ptx)
    assert not re.search(r"\b(ld|st)\.(u16|v4\.u32|b16)\b", ptx)          # no generic-address stage accesses
    assert "bar.warp.sync" in ptx


def test_tiled_block_sync_variant_is_still_available():
    src, _ = _source({"sync": "block"})
    body = src[src.rindex('extern "C" __global__'):]
    assert "tvm_builtin_cuda_warp_sync();" not in body and body.count("__syncthreads();") == 5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tiled_unscatter_clears_once_then_writes_zeros_back_to_the_scattered_slots(dtype):
    """clear="unscatter": the stage buffer is zeroed once before the stage loop (one more __syncwarp), then each
    stage stores zeros at its own slots (16-bit scattered stores) instead of zeroing the whole buffer with
    16-byte stores per stage; the first batch's slots are kept in a register array ``sp``."""
    src, ptx = _source({"clear": "unscatter"}, dtype)
    zero_src, _ = _source({}, dtype)
    body = src[src.rindex('extern "C" __global__'):]
    zbody = zero_src[zero_src.rindex('extern "C" __global__'):]
    assert body.count("tvm_builtin_cuda_warp_sync();") == 4 and body.count("__syncthreads();") == 2
    assert "sp_ptr" not in zbody
    # zeros written back (through the warp-private pointer): 8 slots of the first batch (kept in sp) and 8 per
    # further batch (slots re-read into p2)
    st = r"\(\(\w+\*\)stp\)\["
    back = st + r"\(+\(\(int\)threadIdx\.y\) \* \d+\) \+ \(\(int\)(sp|p2)_ptr\[\d\]\)\)\] = __float2\w*_rn\(0"
    zback = st + r"[^\]]*\] = __float2\w*_rn\(0"
    assert [m.group(1) for m in re.finditer(back, body)] == ["sp"] * 8 + ["p2"] * 8
    assert not re.findall(zback, zbody)
    assert re.search(r"st\.shared\.u16", ptx) and "bar.warp.sync" in ptx


def test_tiled_unscatter_needs_pipe_1():
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(4, 256, 512, False, None, "float16")
    assert resolve(spec, None).clear == "zero" and resolve(spec, {"clear": "unscatter"}).knobs()["clear"] == "unscatter"
    with pytest.raises(KernelError):
        resolve(spec, {"clear": "unscatter", "pipe": 2})
