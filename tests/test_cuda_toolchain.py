"""CUDA without a GPU: the stub driver, the nvcc callback and the embedded fatbin (backends/cuda/toolchain)."""
from __future__ import annotations

import os
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")


def test_stub_exports_every_driver_symbol_tvm_imports(tmp_path):
    import subprocess

    from sparsec.backends.cuda import toolchain as tc

    so = tc.build_stub_libcuda(str(tmp_path))
    syms = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True).stdout
    need = tc._cu_symbols(os.path.join(tc.tvm_lib_dir(), "libtvm_runtime_cuda.so"))
    assert need and all(s in syms for s in need)


def test_codegen_embeds_a_fatbin_not_source(tmp_path):
    import tvm
    from tvm.script import tirx as T

    from sparsec.backends.cuda import toolchain as tc

    @T.prim_func
    def add_one(a: T.handle, b: T.handle):
        T.func_attr({"tirx.noalias": True, "global_symbol": "add_one"})
        A = T.match_buffer(a, (256,), "float32")
        B = T.match_buffer(b, (256,), "float32")
        for i in T.thread_binding(2, thread="blockIdx.x"):
            for j in T.thread_binding(128, thread="threadIdx.x"):
                B[i * 128 + j] = A[i * 128 + j] + T.float32(1)

    tc.ensure_cuda_codegen()
    lib = tc.build(tvm.IRModule({"add_one": add_one}), "sm_90")
    so = str(tmp_path / "k.so")
    lib.export_library(so)
    assert tc.fatbin_embedded(so)
    assert ".target sm_90" in tc.ptx(lib, "sm_90")


def test_arch_is_checked():
    from sparsec.backends.cuda import toolchain as tc
    from sparsec.ir.errors import ParameterError

    with pytest.raises(ParameterError, match="sm_7"):
        tc.check_arch("sm_7")
    assert tc.gencode_flags("sm_80")[1] == "arch=compute_80,code=sm_80"
