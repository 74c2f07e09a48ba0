"""BSR family (any r x c block): ``indptr[nbr+1]``, ``indices[nnzb]``, ``blocks[nnzb, r, c]``.

Algorithm ``tokens`` (T > 1): block rows in parallel; an ``r x t_tile``
register tile of accumulators; per stored block and per block column ``cc``
one activation row ``XT[col*c + cc, t0:t0+t_tile]`` is loaded and reused by
the ``r`` FMAs of that column (the block is the register blocking: it is why
BSR beats CSR at equal density). Columns past K in right-edge blocks are
read as 0 through a select on a clamped index (only emitted when
``K % c != 0``); rows past O in bottom-edge blocks are not stored.

Algorithm ``gemv`` (T = 1): per block row ``chains`` independent ``r x c``
accumulators (consecutive blocks go to different ones, so the FMA latency
chain is ``chains`` times shorter), the ``c`` columns of a block vectorised
(``x[col*c : col*c+c]`` is contiguous) or, for ``c == 1``, the ``r`` rows (one
r-wide FMA with a broadcast ``x[col]`` per block); a horizontal sum per row at
the end. 3072x768 at 90%, 8x1 blocks, 1 thread: 64 us with one scalar
accumulator per row (~8 cycles per block), see docs/kernels_cpu.md.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.parallelism import resolve_in_plan
from sparsec.backends.kernels.common import (
    PARALLEL, STRATEGY, T_TILE, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader, storer, token_tiles,
)


class BSRFamily(MatmulFamily):
    format = "bsr"
    knobs = (STRATEGY, T_TILE,
             Knob("unroll_block", (True, False), None, "unroll the r x c block body (default: r*c <= 64)"),
             Knob("chains", (1, 2, 4, 8), None, "gemv: independent accumulator sets (default: 4 if r*c <= 32)"),
             PARALLEL)

    def buffer_shapes(self, meta):
        r, c = meta.param("block")
        return {"indptr": (ceil_div(meta.rows, r) + 1,), "indices": ("nnzb",), "blocks": ("nnzb", r, c)}

    def acc_rows(self, meta, knobs):
        return meta.param("block")[0]

    def resolve_knobs(self, meta, spec, knobs, lanes):
        resolve_in_plan(meta, spec, knobs)      # parallel=None given a meta only: the size rule
        if knobs.get("unroll_block") is None:
            r, c = meta.param("block")
            knobs["unroll_block"] = r * c <= 64
        if knobs.get("chains") is None:
            r, c = meta.param("block")
            knobs["chains"] = 4 if r * c <= 32 else 1

    def algorithm(self, meta, spec, plan):
        O, K, TT = spec.out_features, spec.in_features, spec.tokens
        r, c = meta.param("block")
        NBR = ceil_div(O, r)
        idt, dt = meta.bdtype("indptr"), spec.dtype
        par, vec = plan.par, plan.vec
        ucol = plan.unroll if plan["unroll_block"] else plan.serial
        urow = plan.unroll if plan["unroll_block"] or r <= 8 else plan.serial
        epi, ld, st = epilogue(spec.activation), loader(dt), storer(dt)
        has_bias = spec.bias
        kedge = K % c != 0          # right-edge blocks reach past K
        # bottom-edge blocks reach past O: guard their stores (a static True otherwise)
        row_ok = (lambda i: i < O) if O % r else (lambda i: True)

        if kedge:
            def xload(XT, k, t):
                return T.if_then_else(k < K, ld(XT[T.min(k, K - 1), t]), T.float32(0))
        else:
            def xload(XT, k, t):
                return ld(XT[k, t])

        if plan["strategy"] == "gemv":
            U = plan["chains"]
            # c == 1: the r values of a block are contiguous, vectorise over rows
            # (one r-wide FMA per block with a broadcast x); else over the c columns
            vrow = vec if c == 1 else urow
            vcol = plan.serial if c == 1 else vec

            @T.macro
            def block_fma(indices, blocks, XT, acc, u, p):
                for rr in vrow(r):
                    for cc in vcol(c):
                        acc[u, rr, cc] = acc[u, rr, cc] + ld(blocks[p, rr, cc]) * xload(
                            XT, indices[p] * c + cc, 0)

            n_chunks, per_chunk = plan.chunks(NBR)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < NBR) if n_chunks * per_chunk > NBR else (lambda i: True)

            @T.prim_func
            def bsr_gemv(a_indptr: T.handle, a_indices: T.handle, a_blocks: T.handle, xt: T.handle,
                         b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                nnzb = T.int32()
                indptr = T.match_buffer(a_indptr, (NBR + 1,), idt)
                indices = T.match_buffer(a_indices, (nnzb,), idt)
                blocks = T.match_buffer(a_blocks, (nnzb, r, c), dt)
                XT = T.match_buffer(xt, (K, 1), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, 1), dt)
                for br_c in par(n_chunks):
                    for br_i in range(per_chunk):
                        if in_range(br_c * per_chunk + br_i):
                            br = br_c * per_chunk + br_i
                            start = indptr[br]
                            nb = indptr[br + 1] - start
                            # U independent accumulator sets: the FMA latency chain is U times shorter
                            acc = T.alloc_buffer((U, r, c), "float32", scope="local")
                            s = T.alloc_buffer((1,), "float32", scope="local")
                            for u in plan.unroll(U):
                                for rr in vrow(r):
                                    for cc in vcol(c):
                                        acc[u, rr, cc] = T.float32(0)
                            for p in range(nb // U):
                                for u in plan.unroll(U):
                                    block_fma(indices, blocks, XT, acc, u, start + p * U + u)
                            for p in range(nb % U):
                                block_fma(indices, blocks, XT, acc, 0, start + nb // U * U + p)
                            for u in plan.unroll(U - 1):
                                for rr in vrow(r):
                                    for cc in vcol(c):
                                        acc[0, rr, cc] = acc[0, rr, cc] + acc[u + 1, rr, cc]
                            for rr in urow(r):
                                if row_ok(br * r + rr):
                                    s[0] = T.float32(0)
                                    for cc in plan.unroll(c):
                                        s[0] = s[0] + acc[0, rr, cc]
                                    if has_bias:
                                        YT[br * r + rr, 0] = st(epi(s[0] + ld(bias[br * r + rr])))
                                    else:
                                        YT[br * r + rr, 0] = st(epi(s[0]))

            func = bsr_gemv
        else:
            tt = plan["t_tile"]
            ntile, ttail = token_tiles(TT, tt)

            @T.macro
            def row_tile(indptr, indices, blocks, XT, bias, YT, br, t0, ext):
                start = indptr[br]
                acc = T.alloc_buffer((r, ext), "float32", scope="local")
                for rr in urow(r):
                    for t in vec(ext):
                        acc[rr, t] = T.float32(0)
                for p in range(indptr[br + 1] - start):
                    for cc in ucol(c):
                        for rr in urow(r):
                            for t in vec(ext):
                                acc[rr, t] = acc[rr, t] + ld(blocks[start + p, rr, cc]) * xload(
                                    XT, indices[start + p] * c + cc, t0 + t)
                for rr in urow(r):
                    if row_ok(br * r + rr):
                        for t in vec(ext):
                            if has_bias:
                                YT[br * r + rr, t0 + t] = st(epi(acc[rr, t] + ld(bias[br * r + rr])))
                            else:
                                YT[br * r + rr, t0 + t] = st(epi(acc[rr, t]))

            n_chunks, per_chunk = plan.chunks(NBR)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < NBR) if n_chunks * per_chunk > NBR else (lambda i: True)

            @T.prim_func
            def bsr_tokens(a_indptr: T.handle, a_indices: T.handle, a_blocks: T.handle, xt: T.handle,
                           b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                nnzb = T.int32()
                indptr = T.match_buffer(a_indptr, (NBR + 1,), idt)
                indices = T.match_buffer(a_indices, (nnzb,), idt)
                blocks = T.match_buffer(a_blocks, (nnzb, r, c), dt)
                XT = T.match_buffer(xt, (K, TT), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, TT), dt)
                for br_c in par(n_chunks):
                    for br_i in range(per_chunk):
                        if in_range(br_c * per_chunk + br_i):
                            br = br_c * per_chunk + br_i
                            for tb in range(ntile):
                                row_tile(indptr, indices, blocks, XT, bias, YT, br, tb * tt, tt)
                            if ttail > 0:
                                row_tile(indptr, indices, blocks, XT, bias, YT, br, ntile * tt, ttail)

            func = bsr_tokens
        return func if has_bias else drop_param(func, "bias")
