"""Dense family: ``values[O, K]`` (the baseline every sparse family is compared with).

Algorithm ``tokens`` (T > 1): blocks of ``row_block`` output rows in
parallel; an ``row_block x t_tile`` register tile; per reduction index k one
activation row ``XT[k, t0:t0+t_tile]`` is loaded and reused by the
``row_block`` FMAs (broadcast weights). Rows past O in the last block read a
clamped (valid) weight row and are not stored. The default tile (``tile_for``)
fills ~24 of the 32 AVX-512 registers with at least 8 independent FMA chains:
8 x 16 tokens at T = 16, 12 x 32 at T = 32, 6 x 64 at T >= 64.

Algorithm ``gemv`` (T = 1): ``row_block`` rows at a time (default 4), each
with a ``lanes``-wide accumulator: per step one activation vector
``XT[c*lanes : (c+1)*lanes]`` feeds ``row_block`` independent FMAs (one row per
accumulator chain was bound by the 4-cycle FMA latency); static tail,
horizontal sum per row.
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.parallelism import resolve_in_plan
from sparsec.backends.kernels.common import (
    PARALLEL, STRATEGY, T_TILE, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader, storer, token_tiles,
)


class DenseFamily(MatmulFamily):
    format = "dense"
    knobs = (STRATEGY, T_TILE,
             Knob("row_block", (1, 2, 4, 6, 8, 12, 16), None,
                  "output rows per register tile (default: tile_for; gemv: 4)"),
             Knob("lanes", (4, 8, 16, 32), None, "gemv: weights per vector step (default: SIMD width)"),
             PARALLEL)

    # Accumulator vectors of the default tile: 24 of AVX-512's 32 registers (the rest hold the
    # activation vectors, the broadcast weights and addresses); 12 with 16 registers (AVX2).
    ACC_VECTORS = {16: 24}
    SMALL_ACC_VECTORS = 12
    # The activation panel XT[K, t_tile] one row block streams is re-read by every row block:
    # keep it within half of a 1 MB L2 (768x3072 T = 128, 1 thread: 6 x 64 3902 us, 12 x 32 3314 us).
    XT_PANEL_BYTES = 512 * 1024

    def buffer_shapes(self, meta):
        return {"values": (meta.rows, meta.cols)}

    def acc_rows(self, meta, knobs):
        return knobs.get("row_block") or 4

    @classmethod
    def tile_for(cls, tokens: int, lanes: int, row_block: int | None = None, k: int = 0) -> tuple[int, int]:
        """Default ``(row_block, t_tile)`` of the tokens algorithm.

        Token tiles of 1, 2 or 4 whole vectors (odd vector counts legalise badly, see nm.py),
        rows so that ``row_block x vectors`` fills ``ACC_VECTORS`` with >= 8 FMA chains.
        1 thread, CPU time, 768x3072 / 3072x768 / 768x768 (us; old default 4 x 16 / 4 x 64):
        T = 16: 4 x 16 717/726/169, 8 x 16 458/465/104, 12 x 16 504/451/104, 16 x 16 655/549/123;
        T = 128: 4 x 64 4426/3335/735, 8 x 32 3725/3125/683, 12 x 32 3314/3021/687,
        6 x 64 -/3026/678 (full-block BSR 16x1 of the same weight: 3682/3299/743).
        """
        budget = cls.ACC_VECTORS.get(lanes, cls.SMALL_ACC_VECTORS)
        vmax = 4 if budget >= 24 else 2
        vecs = -(-tokens // lanes)
        if row_block is not None:
            v = max(1, min(vmax, budget // row_block))
        else:
            v = 1 if vecs <= 1 else 2 if vecs <= 3 or vmax == 2 else 4
        v = 1 << (v.bit_length() - 1)            # 1, 2 or 4 vectors
        while v > 1 and k * v * lanes * 4 > cls.XT_PANEL_BYTES:
            v //= 2                                # the XT[K, tile] panel stays in L2
        tile = min(tokens, v * lanes)
        if tokens > tile:                          # balance the tiles so the tail is not tiny
            n = -(-tokens // tile)
            tile = min(tile, -(-(-(-tokens // n)) // lanes) * lanes)
        if row_block is None:
            row_block = cls.rows_for(tile, lanes)
        return row_block, tile

    @classmethod
    def rows_for(cls, t_tile: int, lanes: int) -> int:
        """Rows of the register tile for a token tile: ``ACC_VECTORS`` accumulators (at most 8
        rows for one vector: 16 weight streams measured slower, see tile_for)."""
        budget = cls.ACC_VECTORS.get(lanes, cls.SMALL_ACC_VECTORS)
        v = -(-t_tile // lanes)
        cap = min(8 if v == 1 else 12, max(1, budget // v))
        return max(r for r in (1, 2, 4, 6, 8, 12) if r <= cap)

    def preferred_tile(self, meta, spec, knobs, lanes):
        rb, tile = self.tile_for(spec.tokens, lanes, knobs.get("row_block"), spec.in_features)
        if knobs.get("row_block") is None and spec.tokens > 1:
            knobs["row_block"] = rb
        return tile

    def resolve_knobs(self, meta, spec, knobs, lanes):
        resolve_in_plan(meta, spec, knobs)      # parallel=None given a meta only: the size rule
        if knobs.get("row_block") is None:
            knobs["row_block"] = 4 if spec.tokens == 1 else self.rows_for(knobs["t_tile"], lanes)

    def algorithm(self, meta, spec, plan):
        O, K, TT = spec.out_features, spec.in_features, spec.tokens
        dt = spec.dtype
        par, vec, unroll = plan.par, plan.vec, plan.unroll
        epi, ld, st = epilogue(spec.activation), loader(dt), storer(dt)
        has_bias = spec.bias

        if plan["strategy"] == "gemv":
            L = min(plan["lanes"], K)
            full, tail = K // L, K % L
            R = min(plan["row_block"], O)
            NRB = ceil_div(O, R)
            row_ok = (lambda i: i < O) if O % R else (lambda i: True)

            n_chunks, per_chunk = plan.chunks(NRB)   # see Plan.chunks: one allocation per chunk
            in_range = (lambda i: i < NRB) if n_chunks * per_chunk > NRB else (lambda i: True)

            @T.prim_func
            def dense_gemv(a_values: T.handle, xt: T.handle, b: T.handle, yt: T.handle):
                T.func_attr({"tirx.noalias": True})
                values = T.match_buffer(a_values, (O, K), dt)
                XT = T.match_buffer(xt, (K, 1), dt)
                bias = T.match_buffer(b, (O,), dt)
                YT = T.match_buffer(yt, (O, 1), dt)
                for ob_c in par(n_chunks):
                    for ob_i in range(per_chunk):
                        if in_range(ob_c * per_chunk + ob_i):
                            ob = ob_c * per_chunk + ob_i
                            # R rows, one L-wide accumulator each: R independent FMA chains per x vector
                            acc = T.alloc_buffer((R, L), "float32", scope="local")
                            s = T.alloc_buffer((R,), "float32", scope="local")
                            for rr in unroll(R):
                                for l in vec(L):
                                    acc[rr, l] = T.float32(0)
                            for c in range(full):
                                for rr in unroll(R):
                                    for l in vec(L):
                                        acc[rr, l] = acc[rr, l] + ld(
                                            values[T.min(ob * R + rr, O - 1), c * L + l]) * ld(XT[c * L + l, 0])
                            for rr in unroll(R):
                                s[rr] = T.float32(0)
                                for e in unroll(tail):
                                    s[rr] = s[rr] + ld(values[T.min(ob * R + rr, O - 1), full * L + e]) * ld(
                                        XT[full * L + e, 0])
                                for l in unroll(L):
                                    s[rr] = s[rr] + acc[rr, l]
                                if row_ok(ob * R + rr):
                                    if has_bias:
                                        YT[ob * R + rr, 0] = st(epi(s[rr] + ld(bias[ob * R + rr])))
                                    else:
                                        YT[ob * R + rr, 0] = st(epi(s[rr]))

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
