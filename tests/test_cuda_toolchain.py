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


def test_pdl_tags_only_the_later_kernels_of_asking_functions(tmp_path):
    """``PDL_ATTR`` on a split-K ``tiled`` ``mma="wg"`` kernel (``pdl=1``): its main kernel (the second launch) gets the
    programmatic-dependent-launch tag and waits (``griddepcontrol.wait``) before it writes Y, its zeroing kernel lets
    it launch (``griddepcontrol.launch_dependents``); the same kernel without the knob is untouched; a function with
    one kernel asking for it is an error, not a silent no-op."""
    import re

    import tvm
    from tvm.script import tirx as T

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels.tiled import generate, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(16, 512, 2048, False, None, "float16")
    on, off = resolve(spec, {"mma": "wg", "ksplit": 4, "pdl": 1}), resolve(spec, {"mma": "wg", "ksplit": 4})
    assert on.knobs()["pdl"] == 1 and "pdl" not in off.knobs()
    assert "pdl" not in resolve(spec, {"mma": "wg", "ksplit": 1, "pdl": 1}).knobs()      # one launch: nothing to hide
    mod = tvm.IRModule({"a": generate(on).with_attr("global_symbol", "a"),
                        "b": generate(off).with_attr("global_symbol", "b")})
    lib = tc.build(mod, "sm_90a")
    so = str(tmp_path / "m.so")
    lib.export_library(so)
    blob = open(so, "rb").read()
    assert blob.count(tc.PDL_TAG.encode()) == 1
    # the tag sits in a_kernel_1's launch parameters (before the dynamic shared memory tag, which stays last)
    j = blob.index(tc.PDL_TAG.encode())
    before = blob[j - 300:j]
    assert b"a_kernel_1" in before and b"b_kernel" not in before[before.rindex(b"a_kernel_1"):]
    assert b"tirx.use_dyn_shared_memory" in blob[j:j + 80]
    bodies = tc.ptx_entries(tc.ptx(lib, "sm_90a"))
    assert "griddepcontrol.wait" in bodies["a_kernel_1"] and "griddepcontrol.launch_dependents" in bodies["a_kernel"]
    assert not any(re.search("griddepcontrol", bodies[n]) for n in ("b_kernel", "b_kernel_1"))

    @T.prim_func
    def one(a: T.Buffer((64,), "float32")):
        for i in T.thread_binding(64, thread="threadIdx.x"):
            a[i] = T.float32(1)

    with pytest.raises(RuntimeError, match="no second kernel"):
        tc.build(tvm.IRModule({"one": one.with_attr("global_symbol", "one").with_attr(tc.PDL_ATTR, True)}), "sm_90a")
