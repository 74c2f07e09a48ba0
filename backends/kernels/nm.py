"""N:M family (any 1 <= n < m): ``values[O, G*n]`` and ``indices[O, G*n]`` (position in group).

Slot ``q`` of row ``o`` holds the weight at column ``(q // n) * m + indices[o, q]``;
padding slots hold value 0 at a valid position, so every slot is computed
(no branch) and adds nothing. The partial last group's positions are < K by
the format's invariant, so no bound checks are needed.

Algorithm ``tokens`` (T > 1): blocks of ``row_block`` output rows in
parallel, a ``row_block x t_tile`` register tile; the loop runs over groups
and, inside a group, over the block's rows and the ``n`` slots (all
unrolled), each slot a broadcast of the value and an FMA with
``XT[g*m + idx, t0:t0+t_tile]``. The block's rows read the same <= m
activation rows of a group one after the other, so all but the first read
hit L1, and the weight streams (values and positions of ``row_block`` rows)
are read once per token tile. Measured on znver5 (1 thread, CPU time,
3072x768 2:4): 1 row per tile (the previous kernel) ran at 28 useful GFLOP/s
at T = 16 and 55 at T = 128; 8 rows at 79 and 98. The limit is then ~1 FMA
per cycle: each FMA needs its own activation vector load (the row a slot
names is data-dependent, so the loaded vector cannot be reused by another
row's FMA as the dense kernel does), where dense does 2 FMAs per cycle from
one load per ``row_block`` FMAs. Rows past O in the last block read a
clamped (valid) row and are not stored.

Algorithm ``gemv`` (T = 1): the ``G*n`` slots of a row (a constant count)
consumed ``lanes`` at a time: vector loads of values and positions, a gather
of ``x``; a static tail; a horizontal sum.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.parallelism import resolve_in_plan
from sparsec.backends.kernels.common import (
    PARALLEL, STRATEGY, T_TILE, KernelError, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader,
    storer, token_tiles,
)


class NMFamily(MatmulFamily):
    format = "nm"
    knobs = (STRATEGY, T_TILE,
             Knob("lanes", (4, 8, 16, 32), None, "gemv: slots per vector step (default: SIMD width)"),
             Knob("unroll_groups", (1, 2, 4, 8), 1, "tokens: groups per unrolled step"),
             Knob("row_block", (1, 2, 4, 6, 8), None, "tokens: output rows per register tile (default: by n)"),
             PARALLEL)

    def check(self, meta):
        if meta.bdtype("indices") not in ("uint8", "int8", "int16", "int32", "int64"):
            raise KernelError(f"nm kernel: indices dtype {meta.bdtype('indices')} is not an integer type")

    def acc_rows(self, meta, knobs):
        return knobs.get("row_block") or self.default_row_block(meta)

    @staticmethod
    def default_row_block(meta):
        # 8 rows x 2 vectors (T >= 32) or 8 x 1 (T = 16): best of 1/2/4/6/8 rows x
        # 16/32/64/128 tokens on 2:4 BERT shapes (4 x 128 ties at T = 128 but spills)
        return 8

    def preferred_tile(self, meta, spec, knobs, lanes):
        """With AVX-512 (32 vector registers) and T > 16: 4 rows x up to 8 vectors (128
        tokens), so one token tile covers T = 128 and the weight streams are read once
        (8 rows x 32 tokens reads a 2:4 3072x768 weight, 5.9 MB, 4 times: at 2 threads
        3072x768 T = 128 took 2.1-2.7 ms vs 1.6-1.7 ms, 768x3072 2.4-4.0 vs 2.3 ms).
        Elsewhere (16 registers with AVX2, T <= 16) the default 8-row tile."""
        if lanes < 8 and knobs.get("row_block") is None:
            knobs["row_block"] = self.narrow_row_block(spec, lanes)    # sizes the token tile too
            return None
        if lanes != 16 or spec.tokens <= lanes or knobs.get("row_block") not in (None, 4):
            return None
        from sparsec.backends.kernels.schedules.llvm import auto_t_tile
        t = auto_t_tile(spec.tokens, 2, lanes)      # 16 // 2 = 8 vectors per row
        # only 2, 4 or 8 whole vectors and no tail tile (a 3-vector tile, e.g. 48 tokens,
        # measured 6x slower: LLVM legalises the odd-width vectors badly)
        if t not in (2 * lanes, 4 * lanes, 8 * lanes) or spec.tokens % t:
            return None
        knobs["row_block"] = 4
        return t

    @staticmethod
    def narrow_row_block(spec, lanes):
        """128-bit SIMD (NEON): llvm-mca on a 2:4 128x128 weight, cycles vs dense for
        1/2/4/8 rows per tile: T = 64 and 128 Neoverse-N1 0.63/0.72/0.83/1.12, Cortex-A76
        0.57/0.64/0.78/1.04; T = 16 N1 1.00/0.84/0.82/1.16, A76 0.69/0.81/0.72/1.04."""
        return 4 if spec.tokens <= 4 * lanes else 1

    def resolve_knobs(self, meta, spec, knobs, lanes):
        resolve_in_plan(meta, spec, knobs)      # parallel=None given a meta only: the size rule
        if knobs.get("row_block") is None:
            knobs["row_block"] = self.default_row_block(meta) if lanes >= 8 else self.narrow_row_block(spec, lanes)

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

            n_chunks, per_chunk = plan.chunks(O)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < O) if n_chunks * per_chunk > O else (lambda i: True)

            @T.prim_func
            def nm_gemv(a_values: T.handle, a_indices: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                values = T.match_buffer(a_values, (O, Q), dt)
                indices = T.match_buffer(a_indices, (O, Q), idt)
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
            rb = min(plan["row_block"], O)
            NRB = ceil_div(O, rb)
            row_ok = (lambda i: i < O) if O % rb else (lambda i: True)
            tt = plan["t_tile"]
            ntile, ttail = token_tiles(TT, tt)
            ug = plan["unroll_groups"]
            gfull, gtail = G // ug, G % ug

            @T.macro
            def group(values, indices, XT, acc, ob, g, t0, ext):
                # the block's rows x the group's n slots, unrolled: each slot one
                # broadcast value and an FMA with the activation row it names; the
                # group's <= m activation rows are shared by the block's rows (L1 hits)
                for r in unroll(rb):
                    for s in unroll(n):
                        for t in vec(ext):
                            acc[r, t] = acc[r, t] + ld(values[T.min(ob * rb + r, O - 1), g * n + s]) * ld(
                                XT[g * m + T.Cast("int32", indices[T.min(ob * rb + r, O - 1), g * n + s]), t0 + t])

            @T.macro
            def row_tile(values, indices, XT, bias, YT, ob, t0, ext):
                acc = T.alloc_buffer((rb, ext), "float32", scope="local")
                for r in unroll(rb):
                    for t in vec(ext):
                        acc[r, t] = T.float32(0)
                for gb in range(gfull):
                    for gi in unroll(ug):
                        group(values, indices, XT, acc, ob, gb * ug + gi, t0, ext)
                for gi in unroll(gtail):
                    group(values, indices, XT, acc, ob, gfull * ug + gi, t0, ext)
                for r in unroll(rb):
                    if row_ok(ob * rb + r):
                        for t in vec(ext):
                            if has_bias:
                                YT[ob * rb + r, t0 + t] = st(epi(acc[r, t] + ld(bias[ob * rb + r])))
                            else:
                                YT[ob * rb + r, t0 + t] = st(epi(acc[r, t]))

            n_chunks, per_chunk = plan.chunks(NRB)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < NRB) if n_chunks * per_chunk > NRB else (lambda i: True)

            @T.prim_func
            def nm_tokens(a_values: T.handle, a_indices: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                values = T.match_buffer(a_values, (O, Q), dt)
                indices = T.match_buffer(a_indices, (O, Q), idt)
                XT = T.match_buffer(xt, (K, TT), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, TT), dt)
                for ob_c in par(n_chunks):
                    for ob_i in range(per_chunk):
                        if in_range(ob_c * per_chunk + ob_i):
                            ob = ob_c * per_chunk + ob_i
                            for tb in range(ntile):
                                row_tile(values, indices, XT, bias, YT, ob, tb * tt, tt)
                            if ttail > 0:
                                row_tile(values, indices, XT, bias, YT, ob, ntile * tt, ttail)

            func = nm_tokens
        return func if has_bias else drop_param(func, "bias")
