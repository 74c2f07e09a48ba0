"""Kernel families for ``Y = act(X @ W^T + bias)`` with a sparse weight, in TVM TIR.

One family per weight format (``FAMILIES``), each an algorithm instantiated
with a per-target schedule plan (``schedules``). Entry points:

- ``matmul_primfunc(weight, tokens, *, bias, activation, target, knobs)`` ->
  ``(PrimFunc, args, knobs)``: the TIR the executor puts into one module with
  the other ops; ``args`` lists the argument order
  (weight buffers in the format's order, ``XT[K, T]``, [``bias[O]``], ``YT[O, T]``).
- ``build_matmul(...) -> CompiledKernel``: built and cached, with ``.run`` for
  tests and benchmarks (takes and returns torch tensors in the ``[T, K]`` /
  ``[T, O]`` layout and does the transposes) and ``.run_t`` / ``.func`` for
  callers that keep the feature-major layout.
- ``conv2d``: the im2col route (``build_conv2d``).
"""
from __future__ import annotations

from sparsec.backends.kernels.common import (  # noqa: F401
    ACTIVATIONS, X_LAYOUT, Y_LAYOUT, Arg, KernelError, Knob, MatmulFamily, MatmulSpec, WeightMeta,
)
from sparsec.backends.kernels.build import (  # noqa: F401
    FAMILIES, CompiledKernel, build_matmul, family_for, matmul_primfunc,
)
from sparsec.backends.kernels.conv import CompiledConv, build_conv2d, im2col_primfunc  # noqa: F401
