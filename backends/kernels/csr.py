"""CSR family: ``YT[o, :] = act(sum_p values[p] * XT[indices[p], :] + bias[o])``.

Algorithm ``tokens`` (T > 1): one output row per outer iteration (rows in
parallel); for each stored non-zero of the row, broadcast its value and FMA
it into a token-tile accumulator ``acc[t_tile]`` with the activation row
``XT[col, t0:t0+t_tile]`` (contiguous: vector loads). The row is walked once
per token tile; the tile is sized so ``acc`` stays in vector registers. The
row's non-zeros are dealt round robin to ``chains`` accumulator sets (summed at
the end) so a narrow tile (T = 16: one vector) is not one dependent FMA chain.

Algorithm ``gemv`` (T = 1): the row's non-zeros are consumed ``lanes`` at a
time: a vector load of values, a vector of indices and a gather of
``x[indices]`` into a ``lanes``-wide accumulator, then a scalar tail and a
horizontal sum.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.parallelism import resolve_in_plan
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
             Knob("chains", (1, 2, 4, 8), None,
                  "tokens: independent accumulator sets a row's non-zeros are dealt to, round robin "
                  "(default: enough for 8 vector registers of accumulators)"),
             PARALLEL)

    def acc_rows(self, meta, knobs):
        # the C accumulator sets share the registers with the token tile
        return knobs.get("chains") or 1

    @staticmethod
    def default_chains(tile: int, lanes: int) -> int:
        """Accumulator sets for a token tile of ``tile``: about 8 vector registers of
        accumulators in all (the FMA latency x throughput: 4 cycles x 2 per cycle), at most 4.
        One row at T = 16 with one set is a single dependent FMA chain: on the 2-vCPU EPYC
        (AVX-512) 768x768 90% T = 16 took 36.7 us serial / 54 us parallel with 1 set,
        26 / 35 us with 2, 4 or 8 (``benchmarks/autotune_headroom.py``); at T = 128 (8
        vectors already) 2 sets changed nothing beyond noise."""
        nvec = -(-tile // max(1, lanes))
        return max(1, min(4, 8 // nvec))

    def preferred_tile(self, meta, spec, knobs, lanes):
        if knobs.get("chains") is not None or spec.tokens == 1:
            return None
        from sparsec.backends.kernels.schedules.llvm import auto_t_tile
        # the tile the registers allow with one set, then the sets that tile leaves room for
        return auto_t_tile(spec.tokens, self.default_chains(auto_t_tile(spec.tokens, 1, lanes), lanes), lanes)

    def resolve_knobs(self, meta, spec, knobs, lanes):
        resolve_in_plan(meta, spec, knobs)      # parallel=None given a meta only: the size rule
        if knobs.get("chains") is None:
            knobs["chains"] = 1 if spec.tokens == 1 else self.default_chains(knobs["t_tile"], lanes)

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
            C = plan["chains"]

            @T.macro
            def row_tile(indptr, indices, values, XT, bias, YT, o, t0, ext):
                start = indptr[o]
                n = indptr[o + 1] - start
                # C accumulator sets, non-zero p of the row into set p % C: the FMA latency
                # chain through one set is C times shorter (one vector register at T = 16)
                acc = T.alloc_buffer((C, ext), "float32", scope="local")
                for c in unroll(C):
                    for t in vec(ext):
                        acc[c, t] = T.float32(0)
                for q in range(n // C):
                    for c in unroll(C):
                        for t in vec(ext):
                            acc[c, t] = acc[c, t] + ld(values[start + q * C + c]) * ld(
                                XT[indices[start + q * C + c], t0 + t])
                if C > 1:
                    for p in range(n % C):
                        for t in vec(ext):
                            acc[0, t] = acc[0, t] + ld(values[start + n // C * C + p]) * ld(
                                XT[indices[start + n // C * C + p], t0 + t])
                    for c in unroll(C - 1):
                        for t in vec(ext):
                            acc[0, t] = acc[0, t] + acc[c + 1, t]
                for t in vec(ext):
                    if has_bias:
                        YT[o, t0 + t] = st(epi(acc[0, t] + ld(bias[o])))
                    else:
                        YT[o, t0 + t] = st(epi(acc[0, t]))

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
