"""CSR family: ``YT[o, :] = act(sum_p values[p] * XT[indices[p], :] + bias[o])``.

Algorithm ``tokens`` (T > 1): one output row per outer iteration (rows in
parallel); for each stored non-zero of the row, broadcast its value and FMA
it into a token-tile accumulator ``acc[t_tile]`` with the activation row
``XT[col, t0:t0+t_tile]`` (contiguous: vector loads). The row is walked once
per token tile; the tile is sized so ``acc`` stays in vector registers.

Algorithm ``gemv`` (T = 1): the row's non-zeros are consumed ``lanes`` at a
time: a vector load of values, a vector of indices and a gather of
``x[indices]`` into a ``lanes``-wide accumulator, then a scalar tail and a
horizontal sum.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.common import (
    PARALLEL, STRATEGY, T_TILE, Knob, MatmulFamily, drop_param, epilogue, loader, pow2_at_least, storer,
    token_tiles,
)
from sparsec.backends.kernels.tir_util import tree_sum


class CSRFamily(MatmulFamily):
    format = "csr"
    knobs = (STRATEGY, T_TILE,
             Knob("lanes", (4, 8, 16, 32), None, "gemv: non-zeros per vector step (default: SIMD width)"),
             Knob("gather", (True, False), True,
                  "gemv: vector gather of x (True) or `lanes` unrolled scalar chains (False)"),
             PARALLEL)

    def buffer_shapes(self, meta):
        return {"indptr": (meta.rows + 1,), "indices": ("nnz",), "values": ("nnz",)}

    def algorithm(self, meta, spec, plan):
        O, K, TT = spec.out_features, spec.in_features, spec.tokens
        idt, dt = meta.bdtype("indptr"), spec.dtype
        par, vec, unroll = plan.par, plan.vec, plan.unroll
        epi, ld, st = epilogue(spec.activation), loader(dt), storer(dt)
        has_bias = spec.bias

        if plan["strategy"] == "gemv":
            L = pow2_at_least(plan["lanes"])
            # gather: one vector FMA over L gathered activations; else L independent
            # scalar FMA chains (no lane inserts: fewer uops per non-zero)
            gvec = vec if plan["gather"] else unroll

            n_chunks, per_chunk = plan.chunks(O)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < O) if n_chunks * per_chunk > O else (lambda i: True)

            @T.prim_func
            def csr_gemv(a_indptr: T.handle, a_indices: T.handle, a_values: T.handle, xt: T.handle,
                         b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                nnz = T.int32()
                indptr = T.match_buffer(a_indptr, (O + 1,), idt)
                indices = T.match_buffer(a_indices, (nnz,), idt)
                values = T.match_buffer(a_values, (nnz,), dt)
                XT = T.match_buffer(xt, (K, 1), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, 1), dt)
                for o_c in par(n_chunks):
                    for o_i in range(per_chunk):
                        if in_range(o_c * per_chunk + o_i):
                            o = o_c * per_chunk + o_i
                            start = indptr[o]
                            n = indptr[o + 1] - start
                            acc = T.alloc_buffer((L,), "float32", scope="local")
                            for l in vec(L):
                                acc[l] = T.float32(0)
                            for c in range(n // L):
                                for l in gvec(L):
                                    acc[l] = acc[l] + ld(values[start + c * L + l]) * ld(
                                        XT[indices[start + c * L + l], 0])
                            if n % L > 0:
                                # masked vector tail: lanes past the row read its last entry, weighted 0
                                for l in gvec(L):
                                    acc[l] = acc[l] + T.if_then_else(
                                        n // L * L + l < n,
                                        ld(values[start + T.min(n // L * L + l, n - 1)]) * ld(
                                            XT[indices[start + T.min(n // L * L + l, n - 1)], 0]),
                                        T.float32(0))
                            tree_sum(acc, L)
                            if has_bias:
                                YT[o, 0] = st(epi(acc[0] + ld(bias[o])))
                            else:
                                YT[o, 0] = st(epi(acc[0]))

            func = csr_gemv
        else:
            tt = plan["t_tile"]
            full, tail = token_tiles(TT, tt)

            @T.macro
            def row_tile(indptr, indices, values, XT, bias, YT, o, t0, ext):
                start = indptr[o]
                acc = T.alloc_buffer((ext,), "float32", scope="local")
                for t in vec(ext):
                    acc[t] = T.float32(0)
                for p in range(indptr[o + 1] - start):
                    for t in vec(ext):
                        acc[t] = acc[t] + ld(values[start + p]) * ld(XT[indices[start + p], t0 + t])
                for t in vec(ext):
                    if has_bias:
                        YT[o, t0 + t] = st(epi(acc[t] + ld(bias[o])))
                    else:
                        YT[o, t0 + t] = st(epi(acc[t]))

            n_chunks, per_chunk = plan.chunks(O)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < O) if n_chunks * per_chunk > O else (lambda i: True)

            @T.prim_func
            def csr_tokens(a_indptr: T.handle, a_indices: T.handle, a_values: T.handle, xt: T.handle,
                           b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                nnz = T.int32()
                indptr = T.match_buffer(a_indptr, (O + 1,), idt)
                indices = T.match_buffer(a_indices, (nnz,), idt)
                values = T.match_buffer(a_values, (nnz,), dt)
                XT = T.match_buffer(xt, (K, TT), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, TT), dt)
                for o_c in par(n_chunks):
                    for o_i in range(per_chunk):
                        if in_range(o_c * per_chunk + o_i):
                            o = o_c * per_chunk + o_i
                            for tb in range(full):
                                row_tile(indptr, indices, values, XT, bias, YT, o, tb * tt, tt)
                            if tail > 0:
                                row_tile(indptr, indices, values, XT, bias, YT, o, full * tt, tail)

            func = csr_tokens
        return func if has_bias else drop_param(func, "bias")
