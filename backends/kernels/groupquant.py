"""GroupQuant family (group size g, 4 or 8 bits): CSR over kept groups
(``indptr[O+1]``, ``group_idx[ngk]``), ``qvalues[ngk, ceil(g*bits/8)]`` (4-bit:
element 2i in the low nibble of byte i), ``scales[ngk]`` f32, ``zeros[ngk]`` u8.

Weights are dequantised in registers, never in memory:
``w = (code - zero) * scale``.

Algorithm ``tokens`` (T > 1): rows in parallel; per kept group its scale,
zero point and base column are loaded once; the ``g`` elements (unrolled
when g <= 64) each dequantise one scalar weight and FMA it with
``XT[col, t0:t0+t_tile]``. Columns past K in a partial last group (only
when ``K % g != 0``) read 0 through a select on a clamped index.

Algorithm ``gemv`` (T = 1): the group's elements are vectorised
(``lanes`` at a time): codes unpacked as a vector, dequantised, FMA with the
contiguous ``x[col : col+lanes]``; static tail; horizontal sum.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.parallelism import resolve_in_plan
from sparsec.backends.kernels.common import (
    PARALLEL, STRATEGY, T_TILE, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader, storer, token_tiles,
)


class GroupQuantFamily(MatmulFamily):
    format = "groupquant"
    knobs = (STRATEGY, T_TILE,
             Knob("lanes", (4, 8, 16, 32), None, "gemv: group elements per vector step (default: SIMD width)"),
             Knob("unroll_group", (True, False), None, "tokens: unroll a group's elements (default: g <= 64)"),
             PARALLEL)

    def buffer_shapes(self, meta):
        g, bits = meta.param("group"), meta.param("bits")
        return {"indptr": (meta.rows + 1,), "group_idx": ("ngk",), "qvalues": ("ngk", ceil_div(g * bits, 8)),
                "scales": ("ngk",), "zeros": ("ngk",)}

    def resolve_knobs(self, meta, spec, knobs, lanes):
        resolve_in_plan(meta, spec, knobs)      # parallel=None given a meta only: the size rule
        if knobs.get("unroll_group") is None:
            knobs["unroll_group"] = meta.param("group") <= 64

    def algorithm(self, meta, spec, plan):
        O, K, TT = spec.out_features, spec.in_features, spec.tokens
        g, nbits = meta.param("group"), meta.param("bits")
        W = ceil_div(g * nbits, 8)
        idt, dt = meta.bdtype("indptr"), spec.dtype
        par, vec, unroll = plan.par, plan.vec, plan.unroll
        ue = plan.unroll if plan["unroll_group"] else plan.serial
        epi, ld, st = epilogue(spec.activation), loader(dt), storer(dt)
        has_bias = spec.bias

        if nbits == 4:
            def code(q, p, e):
                return T.Cast("float32", (T.Cast("int32", q[p, e // 2]) >> ((e % 2) * 4)) & 15)
        else:
            def code(q, p, e):
                return T.Cast("float32", q[p, e])

        if K % g:
            def xload(XT, k, t):
                return T.if_then_else(k < K, ld(XT[T.min(k, K - 1), t]), T.float32(0))
        else:
            def xload(XT, k, t):
                return ld(XT[k, t])

        if plan["strategy"] == "gemv":
            L = min(plan["lanes"], g)
            full, tail = g // L, g % L

            n_chunks, per_chunk = plan.chunks(O)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < O) if n_chunks * per_chunk > O else (lambda i: True)

            @T.prim_func
            def gq_gemv(a_indptr: T.handle, a_group_idx: T.handle, a_qvalues: T.handle, a_scales: T.handle,
                        a_zeros: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                ngk = T.int32()
                indptr = T.match_buffer(a_indptr, (O + 1,), idt)
                group_idx = T.match_buffer(a_group_idx, (ngk,), idt)
                qvalues = T.match_buffer(a_qvalues, (ngk, W), "uint8")
                scales = T.match_buffer(a_scales, (ngk,), "float32")
                zeros = T.match_buffer(a_zeros, (ngk,), "uint8")
                XT = T.match_buffer(xt, (K, 1), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, 1), dt)
                for o_c in par(n_chunks):
                    for o_i in range(per_chunk):
                        if in_range(o_c * per_chunk + o_i):
                            o = o_c * per_chunk + o_i
                            start = indptr[o]
                            acc = T.alloc_buffer((L,), "float32", scope="local")
                            s = T.alloc_buffer((1,), "float32", scope="local")
                            for l in vec(L):
                                acc[l] = T.float32(0)
                            s[0] = T.float32(0)
                            for p in range(indptr[o + 1] - start):
                                col = group_idx[start + p] * g
                                sc = scales[start + p]
                                z = T.Cast("float32", zeros[start + p])
                                for c in range(full):
                                    for l in vec(L):
                                        acc[l] = acc[l] + (code(qvalues, start + p, c * L + l) - z) * sc * xload(
                                            XT, col + c * L + l, 0)
                                for e in unroll(tail):
                                    s[0] = s[0] + (code(qvalues, start + p, full * L + e) - z) * sc * xload(
                                        XT, col + full * L + e, 0)
                            for l in unroll(L):
                                s[0] = s[0] + acc[l]
                            if has_bias:
                                YT[o, 0] = st(epi(s[0] + ld(bias[o])))
                            else:
                                YT[o, 0] = st(epi(s[0]))

            func = gq_gemv
        else:
            tt = plan["t_tile"]
            ntile, ttail = token_tiles(TT, tt)

            @T.macro
            def row_tile(indptr, group_idx, qvalues, scales, zeros, XT, bias, YT, o, t0, ext):
                start = indptr[o]
                acc = T.alloc_buffer((ext,), "float32", scope="local")
                for t in vec(ext):
                    acc[t] = T.float32(0)
                for p in range(indptr[o + 1] - start):
                    col = group_idx[start + p] * g
                    sc = scales[start + p]
                    z = T.Cast("float32", zeros[start + p])
                    for e in ue(g):
                        w = (code(qvalues, start + p, e) - z) * sc
                        for t in vec(ext):
                            acc[t] = acc[t] + w * xload(XT, col + e, t0 + t)
                for t in vec(ext):
                    if has_bias:
                        YT[o, t0 + t] = st(epi(acc[t] + ld(bias[o])))
                    else:
                        YT[o, t0 + t] = st(epi(acc[t]))

            n_chunks, per_chunk = plan.chunks(O)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < O) if n_chunks * per_chunk > O else (lambda i: True)

            @T.prim_func
            def gq_tokens(a_indptr: T.handle, a_group_idx: T.handle, a_qvalues: T.handle, a_scales: T.handle,
                          a_zeros: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                ngk = T.int32()
                indptr = T.match_buffer(a_indptr, (O + 1,), idt)
                group_idx = T.match_buffer(a_group_idx, (ngk,), idt)
                qvalues = T.match_buffer(a_qvalues, (ngk, W), "uint8")
                scales = T.match_buffer(a_scales, (ngk,), "float32")
                zeros = T.match_buffer(a_zeros, (ngk,), "uint8")
                XT = T.match_buffer(xt, (K, TT), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, TT), dt)
                for o_c in par(n_chunks):
                    for o_i in range(per_chunk):
                        if in_range(o_c * per_chunk + o_i):
                            o = o_c * per_chunk + o_i
                            for tb in range(ntile):
                                row_tile(indptr, group_idx, qvalues, scales, zeros, XT, bias, YT, o, tb * tt, tt)
                            if ttail > 0:
                                row_tile(indptr, group_idx, qvalues, scales, zeros, XT, bias, YT, o, ntile * tt, ttail)

            func = gq_tokens
        return func if has_bias else drop_param(func, "bias")
