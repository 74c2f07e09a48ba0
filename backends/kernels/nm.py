"""N:M family (any 1 <= n < m): ``values[O, G*n]`` and ``indices[O, G*n]`` (position in group).

Slot ``q`` of row ``o`` holds the weight at column ``(q // n) * m + indices[o, q]``;
padding slots hold value 0 at a valid position, so every slot is computed
(no branch) and adds nothing. The partial last group's positions are < K by
the format's invariant, so no bound checks are needed.

Algorithm ``tokens`` (T > 1): rows in parallel; per row a token-tile
accumulator; per group the ``n`` slots unrolled, each a broadcast of the
value and an FMA with ``XT[col, t0:t0+t_tile]``.

Algorithm ``gemv`` (T = 1): the ``G*n`` slots of a row (a constant count)
consumed ``lanes`` at a time: vector loads of values and positions, a gather
of ``x``; a static tail; a horizontal sum.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.common import (
    PARALLEL, STRATEGY, T_TILE, KernelError, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader,
    storer, token_tiles,
)


class NMFamily(MatmulFamily):
    format = "nm"
    knobs = (STRATEGY, T_TILE,
             Knob("lanes", (4, 8, 16, 32), None, "gemv: slots per vector step (default: SIMD width)"),
             Knob("unroll_groups", (1, 2, 4, 8), 1, "tokens: groups per unrolled step"),
             PARALLEL)

    def check(self, meta):
        if meta.bdtype("indices") not in ("uint8", "int8", "int16", "int32", "int64"):
            raise KernelError(f"nm kernel: indices dtype {meta.bdtype('indices')} is not an integer type")

    def buffer_shapes(self, meta):
        q = ceil_div(meta.cols, meta.param("m")) * meta.param("n")
        return {"values": (meta.rows, q), "indices": (meta.rows, q)}

    def algorithm(self, meta, spec, plan):
        O, K, TT = spec.out_features, spec.in_features, spec.tokens
        n, m = meta.param("n"), meta.param("m")
        G = ceil_div(K, m)
        Q = G * n
        idt, dt = meta.bdtype("indices"), spec.dtype
        par, vec, unroll = plan.par, plan.vec, plan.unroll
        epi, ld, st = epilogue(spec.activation), loader(dt), storer(dt)
        has_bias = spec.bias

        if plan["strategy"] == "gemv":
            L = min(plan["lanes"], Q)
            full, tail = Q // L, Q % L

            @T.prim_func
            def nm_gemv(a_values: T.handle, a_indices: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                values = T.match_buffer(a_values, (O, Q), dt)
                indices = T.match_buffer(a_indices, (O, Q), idt)
                XT = T.match_buffer(xt, (K, 1), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, 1), dt)
                for o in par(O):
                    acc = T.alloc_buffer((L,), "float32", scope="local")
                    s = T.alloc_buffer((1,), "float32", scope="local")
                    for l in vec(L):
                        acc[l] = T.float32(0)
                    for c in range(full):
                        for l in vec(L):
                            acc[l] = acc[l] + ld(values[o, c * L + l]) * ld(
                                XT[(c * L + l) // n * m + T.Cast("int32", indices[o, c * L + l]), 0])
                    s[0] = T.float32(0)
                    for q in unroll(tail):
                        s[0] = s[0] + ld(values[o, full * L + q]) * ld(
                            XT[(full * L + q) // n * m + T.Cast("int32", indices[o, full * L + q]), 0])
                    for l in unroll(L):
                        s[0] = s[0] + acc[l]
                    if has_bias:
                        YT[o, 0] = st(epi(s[0] + ld(bias[o])))
                    else:
                        YT[o, 0] = st(epi(s[0]))

            func = nm_gemv
        else:
            tt = plan["t_tile"]
            ntile, ttail = token_tiles(TT, tt)
            ug = plan["unroll_groups"]
            gfull, gtail = G // ug, G % ug

            @T.macro
            def group(values, indices, XT, acc, o, g, t0, ext):
                for s in unroll(n):
                    for t in vec(ext):
                        acc[t] = acc[t] + ld(values[o, g * n + s]) * ld(
                            XT[g * m + T.Cast("int32", indices[o, g * n + s]), t0 + t])

            @T.macro
            def row_tile(values, indices, XT, bias, YT, o, t0, ext):
                acc = T.alloc_buffer((ext,), "float32", scope="local")
                for t in vec(ext):
                    acc[t] = T.float32(0)
                for gb in range(gfull):
                    for gi in unroll(ug):
                        group(values, indices, XT, acc, o, gb * ug + gi, t0, ext)
                for gi in unroll(gtail):
                    group(values, indices, XT, acc, o, gfull * ug + gi, t0, ext)
                for t in vec(ext):
                    if has_bias:
                        YT[o, t0 + t] = st(epi(acc[t] + ld(bias[o])))
                    else:
                        YT[o, t0 + t] = st(epi(acc[t]))

            @T.prim_func
            def nm_tokens(a_values: T.handle, a_indices: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                values = T.match_buffer(a_values, (O, Q), dt)
                indices = T.match_buffer(a_indices, (O, Q), idt)
                XT = T.match_buffer(xt, (K, TT), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, TT), dt)
                for o in par(O):
                    for tb in range(ntile):
                        row_tile(values, indices, XT, bias, YT, o, tb * tt, tt)
                    if ttail > 0:
                        row_tile(values, indices, XT, bias, YT, o, ntile * tt, ttail)

            func = nm_tokens
        return func if has_bias else drop_param(func, "bias")
