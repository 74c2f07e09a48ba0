"""CUDA matmul kernel families (see ``matmul``, ``tiled``, ``mma_gemm``) and their build helpers.

Imported lazily: ``tiled_layout`` (pure torch) must load on a GPU machine that has only the TVM
runtime, where ``tvm.script`` is absent.
"""
_MATMUL = ("FORMATS", "KNOBS", "CudaKernelSpec", "check_format", "cuda_matmul_primfunc", "matmul_args", "resolve")
_TILED = ("cuda_tiled_matmul_primfunc",)
_MMA = ("cuda_mma_matmul_primfunc",)
_BMTC = ("cuda_bmtc_matmul_primfunc",)
_WGMMA = ("cuda_wgmma_matmul_primfunc",)


def __getattr__(name):
    if name in _MATMUL:
        from sparsec.backends.cuda.kernels import matmul

        return getattr(matmul, name)
    if name in _TILED:
        from sparsec.backends.cuda.kernels import tiled

        return getattr(tiled, name)
    if name in _MMA:
        from sparsec.backends.cuda.kernels import mma_gemm

        return getattr(mma_gemm, name)
    if name in _WGMMA:
        from sparsec.backends.cuda.kernels import wgmma_gemm

        return getattr(wgmma_gemm, name)
    if name in _BMTC:
        from sparsec.backends.cuda.kernels import bmtc

        return getattr(bmtc, name)
    raise AttributeError(name)
