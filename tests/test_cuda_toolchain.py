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

    # pdl=2: every launch of the layer overlaps the previous kernel on the stream, whatever the split
    assert resolve(spec, {"mma": "wg", "ksplit": 1, "pdl": 2}).knobs()["pdl"] == 2
    assert resolve(spec, {"mma": "wg", "ksplit": 4, "pdl": 2, "fx": 1}).knobs()["pdl"] == 2

    @T.prim_func
    def one(a: T.Buffer((64,), "float32")):
        for i in T.thread_binding(64, thread="threadIdx.x"):
            a[i] = T.float32(1)

    with pytest.raises(RuntimeError, match="no second kernel"):
        tc.build(tvm.IRModule({"one": one.with_attr("global_symbol", "one").with_attr(tc.PDL_ATTR, True)}), "sm_90a")


def test_pdl2_overlaps_the_weight_prologue_with_the_previous_kernel(tmp_path):
    """``pdl=2`` (``tiled`` ``mma="wg"``): every kernel of the layer is launched with programmatic dependent launch,
    the first included. The main kernel lets the next launch begin (``launch_dependents``) and reads only the weight
    (global loads) before ``griddepcontrol.wait``; the activation copies (``cp.async``), the split workspace and the
    stores of Y come after it. A split's zeroing kernel waits before it writes Y."""
    import re

    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels.tiled import generate, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(16, 512, 2048, False, None, "float16")
    kinds = {"one": {"ksplit": 1}, "split": {"ksplit": 4}, "fixup": {"ksplit": 4, "fx": 1},
             "sp": {"ksplit": 2, "sp": 1, "sc": 256, "code": "pos7", "pb": 2, "wgs": 1, "rr": 1, "ra": 1, "xd": 1}}
    mod = tvm.IRModule({n: generate(resolve(spec, {"mma": "wg", "pdl": 2, **kn})).with_attr("global_symbol", n)
                        for n, kn in kinds.items()})
    lib = tc.build(mod, "sm_90a")
    so = str(tmp_path / "m.so")
    lib.export_library(so)
    blob = open(so, "rb").read()
    assert blob.count(tc.PDL_TAG.encode()) == 6      # one, split and sp (zeroing + main), fixup: every launch
    bodies = tc.ptx_entries(tc.ptx(lib, "sm_90a"))
    mains = {"one": "one_kernel", "split": "split_kernel_1", "fixup": "fixup_kernel", "sp": "sp_kernel_1"}
    for n, k in mains.items():
        b = bodies[k]
        launch, wait = b.index("griddepcontrol.launch_dependents"), b.index("griddepcontrol.wait")
        assert launch < wait and b.count("griddepcontrol.wait") == 1, n
        assert b.index("cp.async") > wait, n                       # the activation tile after the wait
        assert re.search(r"ld\.global", b[:wait]), n                # the weight's pointers and first batch before
        for store in (r"st\.global", r"red\.global", r"atom\.global", r"st\.cg"):
            m = re.search(store, b)
            assert m is None or m.start() > wait, (n, store)
    for z in ("split_kernel", "sp_kernel"):
        b = bodies[z]
        assert b.index("griddepcontrol.wait") < b.index("st.global"), z
    assert "fixup_kernel_1" not in bodies                          # the fixup: one launch


def test_wgmma_l2p_is_the_weight_tensor_maps_l2_promotion():
    """``l2p``: the weight's tensor maps (dense values; 2:4 values and metadata) are encoded with that
    ``CUtensorMapL2promotion``, the activations' without one; refused without the TMA producer."""
    import re

    from sparsec.backends.cuda.kernels.wgmma_gemm import cuda_wgmma_matmul_primfunc
    from sparsec.backends.kernels.common import KernelError, WeightMeta

    dense = WeightMeta("dense", 1024, 1024, "float16", (), (("values", "float16"),))
    nm = WeightMeta("nm", 1024, 1024, "float16", (("n", 2), ("m", 4)), (("values", "float16"), ("indices", "uint8")))
    for meta, maps in ((dense, {"w_tmap": 3, "x_tmap": 0}), (nm, {"w_tmap": 3, "m_tmap": 3, "x_tmap": 0})):
        f, _, knobs = cuda_wgmma_matmul_primfunc(meta, 32, knobs={"l2p": 3}, name="g")
        assert knobs["l2p"] == 3
        enc = {m.group(1): int(m.group(2)) for m in
               re.finditer(r"tensormap_encode_tiled\((\w+),.*?l2_promotion=(\d)", f.script())}
        assert enc == maps, enc
        _, _, plain = cuda_wgmma_matmul_primfunc(meta, 32, knobs={"l2p": 0}, name="g")
        assert "l2p" not in plain
    with pytest.raises(KernelError, match="l2p=2 .* needs tma=1"):
        cuda_wgmma_matmul_primfunc(dense, 32, knobs={"l2p": 2, "ws": 0}, name="g")


def test_wgmma_pdl2_loads_the_weight_slots_before_the_wait(tmp_path):
    """``pdl=2`` on the wgmma GEMM (dense and 2:4): both launches of a split tagged, the producer's weight boxes of
    the first ring slots before ``griddepcontrol.wait`` and the activation boxes after it, every thread waiting again
    before the epilogue; refused where the producer is not TMA or the grid is stream-K."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels.wgmma_gemm import cuda_wgmma_matmul_primfunc
    from sparsec.backends.kernels.common import KernelError, WeightMeta

    dense = WeightMeta("dense", 1024, 1024, "float16", (), (("values", "float16"),))
    nm = WeightMeta("nm", 1024, 1024, "float16", (("n", 2), ("m", 4)), (("values", "float16"), ("indices", "uint8")))
    funcs = {}
    for n, meta, kn in (("d", dense, {"ks": 2, "pdl": 2}), ("s", nm, {"ks": 1, "pdl": 2})):
        f, _, knobs = cuda_wgmma_matmul_primfunc(meta, 16, knobs=kn, name=n)
        assert knobs["pdl"] == 2
        funcs[n] = f
    lib = tc.build(tvm.IRModule(funcs), "sm_90a")
    so = str(tmp_path / "m.so")
    lib.export_library(so)
    assert open(so, "rb").read().count(tc.PDL_TAG.encode()) == 3       # d: zeroing + main; s: main
    bodies = tc.ptx_entries(tc.ptx(lib, "sm_90a"))
    for k in ("d_kernel_1", "s_kernel"):
        b = bodies[k]
        wait = b.index("griddepcontrol.wait")
        assert b.index("griddepcontrol.launch_dependents") < wait
        assert b.count("griddepcontrol.wait") == 2, k
        tma = [i for i in range(len(b)) if b.startswith("cp.async.bulk.tensor", i)]
        assert any(i < wait for i in tma) and any(i > wait for i in tma), k
    assert bodies["d_kernel"].index("griddepcontrol.wait") < bodies["d_kernel"].index("st.global")
    for bad in ({"pdl": 2, "tma": 0}, {"pdl": 2, "sk": 3}, {"pdl": 2, "ws": 0}):
        with pytest.raises(KernelError, match="pdl=2"):
            cuda_wgmma_matmul_primfunc(dense, 256, knobs=bad)


def test_cluster_dims_are_compiled_into_the_asking_kernels_only():
    """``CLUSTER_ATTR``: the kernels of a PrimFunc that asks get ``__cluster_dims__`` (PTX ``.reqnctapercluster``), the
    others none; more than the portable 8 blocks is refused before anything is built."""
    import re

    import tvm
    from tvm.script import tirx as T

    from sparsec.backends.cuda import toolchain as tc

    @T.prim_func
    def f(a: T.Buffer((64,), "float32")):
        for b in T.thread_binding(4, thread="blockIdx.x"):
            for i in T.thread_binding(16, thread="threadIdx.x"):
                a[b * 16 + i] = T.float32(1)

    mod = tvm.IRModule({"c": f.with_attr("global_symbol", "c").with_attr(tc.CLUSTER_ATTR, "2,1,1"),
                        "d": f.with_attr("global_symbol", "d")})
    ptx = tc.ptx(tc.build(mod, "sm_90a"), "sm_90a")
    heads = dict(re.findall(r"\.entry (\w+)\(([^{]*)", ptx))
    assert re.search(r"\.reqnctapercluster 2, 1, 1", heads["c_kernel"])
    assert "cluster" not in heads["d_kernel"]
    with pytest.raises(ValueError, match="at most 8 blocks"):
        tc.build(tvm.IRModule({"c": f.with_attr("global_symbol", "c").with_attr(tc.CLUSTER_ATTR, "1,1,9")}), "sm_90a")
