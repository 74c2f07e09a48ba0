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
