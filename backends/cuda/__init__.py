"""CUDA backend: tensor-core matmul kernel families per weight format, whole-graph compile, GPU executor.

``toolchain`` is the one place that knows how CUDA is generated and compiled
without a GPU (stub driver, nvcc callback, arch). See docs/cuda.md.
"""
