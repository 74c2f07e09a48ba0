"""Per-target schedules of the kernel families.

A schedule turns (family, weight meta, spec, knobs, target) into a *plan*: the
loop kinds (parallel / vectorized / unrolled) and the resolved factors the
family's algorithm is instantiated with. ``llvm`` is the CPU schedule; other
targets (aarch64 NEON through the same LLVM plan with a 128-bit vector,
CUDA with thread bindings) add a module here.
"""
from sparsec.backends.kernels.schedules.llvm import Plan, llvm_plan  # noqa: F401
