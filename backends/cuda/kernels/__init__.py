"""CUDA matmul kernel families (see ``matmul``) and their build helpers."""
from sparsec.backends.cuda.kernels.matmul import (  # noqa: F401
    FORMATS, KNOBS, CudaKernelSpec, check_format, cuda_matmul_primfunc, matmul_args,
)
