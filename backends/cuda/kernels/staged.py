"""Epilogues shared by the CUDA matmul kernels: the staged epilogue of the ``mma`` and ``wgmma`` GEMMs
(``staged_epilogue``) and the warp-partial reduction of the decode kernels ``tiled`` and ``bmtc``
(``warp_reduce_epilogue``).

After the main loop, each thread writes its fp32 accumulators (+ bias, activation) as ``dt`` into a
``[BN, CST]`` tile of shared memory (token-major, ``CST = BM + pad``), and the block then writes that tile
to ``Y[T, O]`` as 16-byte row chunks: ``st.global.v4`` with one k split, ``red.global.add.v4.{f16,bf16}x2``
atomics with ``KS > 1`` (Y zeroed by a first launch; the bias is added by split 0 only, the activation is
refused), element-wise stores / ``atomicAdd`` when ``O % 8 != 0`` (rows not 16-byte aligned).
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.common import ceil_div


def staged_epilogue(*, dt: str, BM: int, BN: int, CST: int, O: int, TT: int, KS: int, NT: int, has_bias: bool, epi):
    """``(stage, store)`` macros: ``stage(Sm, bias, bx, bz, ol, tl, v)`` puts accumulator ``v`` of row ``ol`` and
    token ``tl`` of the block's tile into the staged tile; ``store(Sm, Su, cv, cu, Y, bx, by, tid)`` (after every
    thread staged) writes the tile to ``Y`` (``Su``: the same shared buffer as uint32, ``cv``/``cu``: 8 x dt and
    4 x uint32 locals, ``NT`` threads)."""
    pt = {"float16": "f16", "bfloat16": "bf16"}[dt]
    RED = f"red.global.add.noftz.v4.{pt}x2"
    C_CP = BN * (BM // 8)                    # 16-byte chunks of the staged tile
    VEC = O % 8 == 0                         # Y rows 16-byte aligned: whole chunks as one store / red

    def cvt(e):
        return T.Cast(dt, e)

    @T.macro
    def stage(Sm, bias, bx, bz, ol, tl, v):
        if has_bias:
            if KS == 1:
                Sm[tl * CST + ol] = cvt(epi(v + T.Cast("float32", bias[T.min(bx * BM + ol, O - 1)])))
            else:
                Sm[tl * CST + ol] = cvt(v + T.if_then_else(
                    bz == 0, T.Cast("float32", bias[T.min(bx * BM + ol, O - 1)]), T.float32(0)))
        else:
            Sm[tl * CST + ol] = cvt(epi(v))

    @T.macro
    def store(Sm, Su, cv, cu, Y, bx, by, tid):
        T.tvm_storage_sync("shared")
        for it in T.unroll(ceil_div(C_CP, NT)):
            e = it * NT + tid
            if e < C_CP:
                n = e // (BM // 8)
                c = e % (BM // 8)
                t = by * BN + n
                o = bx * BM + c * 8
                if t < TT and o < O:
                    if VEC:
                        if KS == 1:
                            for jj in T.vectorized(8):
                                cv[jj] = Sm[n * CST + c * 8 + jj]
                            for jj in T.vectorized(8):
                                Y[t, o + jj] = cv[jj]
                        else:
                            for jj in T.vectorized(4):
                                cu[jj] = Su[(n * CST + c * 8) // 2 + jj]
                            T.ptx[RED](T.address_of(Y[t, o]), cu[0], cu[1], cu[2], cu[3])
                    else:
                        for jj in T.unroll(8):
                            if o + jj < O:
                                if KS == 1:
                                    Y[t, o + jj] = Sm[n * CST + c * 8 + jj]
                                else:
                                    T.evaluate(T.call_extern(dt, "atomicAdd", T.address_of(Y[t, o + jj]),
                                                             Sm[n * CST + c * 8 + jj]))

    return stage, store


def fixup_memory(spec, prefix: str, ws_vec4: int, counters: int) -> tuple[str, str, str, str]:
    """``(helper name, workspace, counter array, declarations)`` of a split fixup's static device memory, named
    ``sparsec_<prefix>..._<tag>`` after a digest of the kernel spec: one ``float4`` workspace and one ``unsigned``
    counter array per spec (zero at module load; two layers of one spec share them). Shared by ``tiled_wg``
    (``fx``) and ``wgmma_gemm`` (``sk=3``)."""
    import hashlib

    tag = hashlib.sha1(repr(spec).encode()).hexdigest()[:12]
    ws, cnt = f"sparsec_{prefix}ws_{tag}", f"sparsec_{prefix}ct_{tag}"
    return (f"sparsec_{prefix}_{tag}", ws, cnt,
            f"__device__ float4 {ws}[{ws_vec4}];\n__device__ unsigned int {cnt}[{counters}];")


def partial_store_src(ws: str, nq: int, nt: int) -> str:
    """CUDA statements storing thread ``tid``'s ``4 nq`` fp32 accumulators ``acc`` in slot ``a`` of the ``float4``
    workspace ``ws`` (``nt`` threads; 16-byte ``st.cg``, interleaved by thread so that a warp's stores are
    contiguous). Shared by the fixups of ``tiled_wg`` (``fx``) and ``wgmma_gemm`` (``sk=3``)."""
    return (f"#pragma unroll\n"
            f"    for (int i = 0; i < {nq}; ++i)\n"
            f"      __stcg(&{ws}[(a * {nq} + i) * {nt} + tid], make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], "
            f"acc[4 * i + 3]));")


def partial_sum_src(ws: str, nq: int, nt: int, end: str) -> str:
    """CUDA statements adding slots ``a .. end - 1`` of ``ws`` (``partial_store_src``'s layout) into ``acc`` in
    slot order (``ld.cg``: from L2, never a stale L1 line)."""
    return (f"for (int s = a; s < {end}; ++s) {{\n"
            f"#pragma unroll\n"
            f"      for (int i = 0; i < {nq}; ++i) {{\n"
            f"        float4 v = __ldcg(&{ws}[(s * {nq} + i) * {nt} + tid]);\n"
            f"        acc[4 * i] += v.x; acc[4 * i + 1] += v.y; acc[4 * i + 2] += v.z; acc[4 * i + 3] += v.w;\n"
            f"      }}\n"
            f"    }}")


def zero_fill(dt: str, n: int, pdl: bool = False, wait: bool = False):
    """Macro ``zero(Y)``: a launch of its own that zeroes the ``n`` elements of ``Y`` (split-K GEMMs add their
    partial tiles into it with atomics): 8 elements per thread, one 16-byte store when ``n % 8 == 0`` (a
    multiple of 8 keeps every thread's chunk 16-byte aligned), else element stores. ``pdl``: first of all it lets
    the next kernel launch (``griddepcontrol.launch_dependents``; the next kernel, launched with programmatic
    dependent launch, waits with ``griddepcontrol.wait`` before it touches ``Y``). ``wait``: this launch itself
    overlaps the previous one on the stream (programmatic dependent launch): it waits for it to complete
    (``griddepcontrol.wait``) before it writes ``Y``, which the previous kernel may still read or write."""
    zero = T.Cast(dt, T.float32(0))

    @T.macro
    def zero_y(Y):
        Yf = T.decl_buffer((n,), dt, data=Y.data)
        for zb in T.thread_binding(ceil_div(n, 256 * 8), thread="blockIdx.x"):
            for zt in T.thread_binding(256, thread="threadIdx.x"):
                if pdl:
                    T.ptx["griddepcontrol.launch_dependents"]()
                if wait:
                    T.ptx["griddepcontrol.wait"]()
                if n % 8 == 0:
                    if (zb * 256 + zt) * 8 < n:
                        for jj in T.vectorized(8):
                            Yf[(zb * 256 + zt) * 8 + jj] = zero
                else:
                    for jj in T.unroll(8):
                        if (zb * 256 + zt) * 8 + jj < n:
                            Yf[(zb * 256 + zt) * 8 + jj] = zero

    return zero_y


def warp_reduce_epilogue(*, dt: str, RT: int, NS: int, RS: int, RG: int, TN: int, W: int, O: int, TT: int, KS: int,
                         has_bias: bool, epi):
    """``reduce_store(red, acc, Y, bias, bx, by, bz, ty, tx)`` for the decode kernels (``tiled``, ``bmtc``): every
    warp adds its ``m16n8`` accumulators (``RT`` row tiles x ``NS`` token tiles) into the block's fp32 tile
    ``red[TN][RS]`` with shared ``atomicAdd``, then the block writes rows ``bx*RG ..`` and tokens ``by*TN ..`` of
    ``Y``: bias + activation with one k split, fp16/bf16 ``atomicAdd`` into a zeroed ``Y`` with ``KS > 1`` (the
    bias from split 0)."""
    EIT = ceil_div(RG * TN, W * 32)

    @T.macro
    def reduce_store(red, acc, Y, bias, bx, by, bz, ty, tx):
        T.tvm_storage_sync("shared")
        # partial sums of the warps -> red[row, tok]
        for r in T.unroll(RT):
            for ns in T.unroll(NS):
                for h in T.unroll(4):
                    T.evaluate(T.call_extern("float32", "atomicAdd",
                                             T.address_of(red[(ns * 8 + 2 * (tx % 4) + h % 2) * RS
                                                              + r * 16 + tx // 4 + 8 * (h // 2)]),
                                             acc[(r * NS + ns) * 4 + h]))
        T.tvm_storage_sync("shared")
        for it in T.unroll(EIT):
            e = it * (W * 32) + ty * 32 + tx
            rr = e % RG
            n = e // RG
            row = bx * RG + rr
            tok = by * TN + n
            if n < TN and row < O and tok < TT:
                if KS == 1:
                    if has_bias:
                        Y[tok, row] = T.Cast(dt, epi(red[n * RS + rr] + T.Cast("float32", bias[row])))
                    else:
                        Y[tok, row] = T.Cast(dt, epi(red[n * RS + rr]))
                else:
                    if has_bias:
                        T.evaluate(T.call_extern(dt, "atomicAdd", T.address_of(Y[tok, row]), T.Cast(
                            dt, red[n * RS + rr] + T.if_then_else(bz == 0, T.Cast("float32", bias[row]),
                                                                  T.float32(0)))))
                    else:
                        T.evaluate(T.call_extern(dt, "atomicAdd", T.address_of(Y[tok, row]),
                                                 T.Cast(dt, red[n * RS + rr])))

    return reduce_store
