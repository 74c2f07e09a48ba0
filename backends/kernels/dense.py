"""Dense family: ``values[O, K]`` (the baseline every sparse family is compared with).

Algorithm ``tokens`` (T > 1): blocks of ``row_block`` output rows in
parallel; an ``row_block x t_tile`` register tile; per reduction index k one
activation row ``XT[k, t0:t0+t_tile]`` is loaded and reused by the
``row_block`` FMAs (broadcast weights). Rows past O in the last block read a
clamped (valid) weight row and are not stored.

Algorithm ``gemv`` (T = 1): per row, ``lanes`` contiguous weights and
activations per FMA, static tail, horizontal sum.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.common import (
    PARALLEL, STRATEGY, T_TILE, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader, storer, token_tiles,
)


class DenseFamily(MatmulFamily):
    format = "dense"
    knobs = (STRATEGY, T_TILE,
             Knob("row_block", (1, 2, 4, 6, 8), 4, "tokens: output rows per register tile"),
             Knob("lanes", (4, 8, 16, 32), None, "gemv: weights per vector step (default: SIMD width)"),
             PARALLEL)

    def buffer_shapes(self, meta):
        return {"values": (meta.rows, meta.cols)}

    def acc_rows(self, meta, knobs):
        return knobs.get("row_block") or 4

    def algorithm(self, meta, spec, plan):
        O, K, TT = spec.out_features, spec.in_features, spec.tokens
        dt = spec.dtype
        par, vec, unroll = plan.par, plan.vec, plan.unroll
        epi, ld, st = epilogue(spec.activation), loader(dt), storer(dt)
        has_bias = spec.bias

        if plan["strategy"] == "gemv":
            L = min(plan["lanes"], K)
            full, tail = K // L, K % L

            n_chunks, per_chunk = plan.chunks(O)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < O) if n_chunks * per_chunk > O else (lambda i: True)

            @T.prim_func
            def dense_gemv(a_values: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                values = T.match_buffer(a_values, (O, K), dt)
                XT = T.match_buffer(xt, (K, 1), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, 1), dt)
                for o_c in par(n_chunks):
                    for o_i in range(per_chunk):
                        if in_range(o_c * per_chunk + o_i):
                            o = o_c * per_chunk + o_i
                            acc = T.alloc_buffer((L,), "float32", scope="local")
                            s = T.alloc_buffer((1,), "float32", scope="local")
                            for l in vec(L):
                                acc[l] = T.float32(0)
                            for c in range(full):
                                for l in vec(L):
                                    acc[l] = acc[l] + ld(values[o, c * L + l]) * ld(XT[c * L + l, 0])
                            s[0] = T.float32(0)
                            for e in unroll(tail):
                                s[0] = s[0] + ld(values[o, full * L + e]) * ld(XT[full * L + e, 0])
                            for l in unroll(L):
                                s[0] = s[0] + acc[l]
                            if has_bias:
                                YT[o, 0] = st(epi(s[0] + ld(bias[o])))
                            else:
                                YT[o, 0] = st(epi(s[0]))

            func = dense_gemv
        else:
            rb = min(plan["row_block"], O)
            NRB = ceil_div(O, rb)
            row_ok = (lambda i: i < O) if O % rb else (lambda i: True)
            tt = plan["t_tile"]
            ntile, ttail = token_tiles(TT, tt)

            @T.macro
            def row_tile(values, XT, bias, YT, ob, t0, ext):
                acc = T.alloc_buffer((rb, ext), "float32", scope="local")
                for rr in unroll(rb):
                    for t in vec(ext):
                        acc[rr, t] = T.float32(0)
                for k in range(K):
                    for rr in unroll(rb):
                        for t in vec(ext):
                            acc[rr, t] = acc[rr, t] + ld(values[T.min(ob * rb + rr, O - 1), k]) * ld(XT[k, t0 + t])
                for rr in unroll(rb):
                    if row_ok(ob * rb + rr):
                        for t in vec(ext):
                            if has_bias:
                                YT[ob * rb + rr, t0 + t] = st(epi(acc[rr, t] + ld(bias[ob * rb + rr])))
                            else:
                                YT[ob * rb + rr, t0 + t] = st(epi(acc[rr, t]))

            n_chunks, per_chunk = plan.chunks(NRB)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < NRB) if n_chunks * per_chunk > NRB else (lambda i: True)

            @T.prim_func
            def dense_tokens(a_values: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                values = T.match_buffer(a_values, (O, K), dt)
                XT = T.match_buffer(xt, (K, TT), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, TT), dt)
                for ob_c in par(n_chunks):
                    for ob_i in range(per_chunk):
                        if in_range(ob_c * per_chunk + ob_i):
                            ob = ob_c * per_chunk + ob_i
                            for tb in range(ntile):
                                row_tile(values, XT, bias, YT, ob, tb * tt, tt)
                            if ttail > 0:
                                row_tile(values, XT, bias, YT, ob, ntile * tt, ttail)

            func = dense_tokens
        return func if has_bias else drop_param(func, "bias")
