"""Dense ``Y[T, O] = act(X @ W^T + bias)`` for many tokens (T >= 64): TVM's own GPU GEMM schedule.

The fragment kernel (``matmul.py``) re-reads the weights once per token tile and keeps nothing in
shared memory, which leaves it 3-10x behind cuBLAS at T >= 128. Here the matmul is written as a
``te.compute`` (fp32 accumulation, bias + activation fused as its epilogue) and scheduled by
``tvm.s_tir.dlight.gpu.Matmul``: shared-memory tiles of X and W (reused across the block's rows and
tokens), ``wmma`` tensor-core fragments, a software pipeline over K. Argument order is that of the
fragment dense kernel: ``values[O, K], X[T, K], [bias[O]], Y[T, O]``.
"""
from __future__ import annotations

from sparsec.backends.kernels.common import Arg, KernelError, MatmulSpec, epilogue, meta_of


def cuda_dlight_dense_primfunc(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                               knobs: dict | None = None, name: str | None = None, arch: str = "sm_90"):
    import tvm
    from tvm import te
    from tvm.s_tir import dlight as dl

    from sparsec.backends.cuda.toolchain import cuda_target

    meta = meta_of(weight)
    if meta.format != "dense":
        raise KernelError(f"cuda dlight kernel: dense weights only (got {meta.format!r})")
    if meta.dtype not in ("float16", "bfloat16"):
        raise KernelError(f"cuda dlight kernel: dtype {meta.dtype} unsupported (float16, bfloat16)")
    if knobs:
        raise KernelError(f"cuda dlight kernel: no knobs (got {', '.join(knobs)})")
    spec = MatmulSpec(int(tokens), meta.rows, meta.cols, bool(bias), activation, meta.dtype)
    O, K, TT, dt = spec.out_features, spec.in_features, spec.tokens, spec.dtype
    epi = epilogue(activation)
    W = te.placeholder((O, K), dt, name="values")
    X = te.placeholder((TT, K), dt, name="X")
    k = te.reduce_axis((0, K), name="k")
    acc = te.compute((TT, O), lambda t, o: te.sum(X[t, k].astype("float32") * W[o, k].astype("float32"), axis=k),
                     name="acc")
    params = [W, X]
    if bias:
        B = te.placeholder((O,), dt, name="bias")
        params.append(B)
        Y = te.compute((TT, O), lambda t, o: epi(acc[t, o] + B[o].astype("float32")).astype(dt), name="Y")
    else:
        Y = te.compute((TT, O), lambda t, o: epi(acc[t, o]).astype(dt), name="Y")
    params.append(Y)
    sym = name or "sparsec_cuda_dlight_dense_matmul"
    mod = tvm.IRModule({sym: te.create_prim_func(params).with_attr("global_symbol", sym)})
    with cuda_target(arch):
        mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.Fallback())(mod)
    func = mod[sym]
    if not func.attrs or not func.attrs.get("tirx.is_scheduled"):
        raise KernelError("cuda dlight kernel: dlight did not schedule the matmul")
    args = [Arg("values", dt, (O, K)), Arg("X", dt, (TT, K))]
    if bias:
        args.append(Arg("bias", dt, (O,)))
    args.append(Arg("Y", dt, (TT, O)))
    return func, args, {"design": "dlight"}
