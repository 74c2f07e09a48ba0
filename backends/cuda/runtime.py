"""Loading and calling CUDA kernel libraries with the TVM *runtime* only (no compiler).

On a GPU machine with the runtime bundle (``make_tvm_runtime_bundle.sh``),
``load_runtime()`` imports ``tvm`` in runtime-only mode and loads
``libtvm_runtime_cuda.so`` itself (runtime-only mode skips backend autoload;
without it a fatbin module has no loader). Tensors are torch CUDA tensors,
passed to the kernels through DLPack (zero copy); ``on_torch_stream()`` makes
TVM launch on torch's current stream (also inside CUDA-graph capture).
"""
from __future__ import annotations

import ctypes
import importlib.util
import os


def load_runtime():
    """Import tvm (runtime only when the compiler library is absent) with its CUDA runtime loaded."""
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    spec = importlib.util.find_spec("tvm")
    if spec is None:
        raise ImportError("tvm (or the runtime bundle) is not on PYTHONPATH")
    import tvm

    if tvm.get_global_func("ffi.Module.load_from_bytes.cuda", True) is None:
        lib = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so")
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    return tvm


def load_library(path: str):
    tvm = load_runtime()
    return tvm.runtime.load_module(path)


def on_torch_stream(context=None):
    """Context: TVM kernels launch on torch's current stream (or inside ``torch.cuda.graph(g)``)."""
    import tvm_ffi

    return tvm_ffi.use_torch_stream(context)


def as_dl(t):
    import tvm

    return tvm.runtime.from_dlpack(t)
