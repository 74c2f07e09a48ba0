"""Bitmap family (any tr x tc tile): ``bits[nti, ntj, ceil(tr*tc/8)]`` (LSB first),
``tile_ptr[nti*ntj+1]``, ``values[nnz]`` (tile order, row-major inside a tile).

Algorithm (one for every T): tile rows in parallel. A tile row keeps one
value cursor per tile, ``cur[tj] = tile_ptr[ti*ntj + tj]``; its ``tr`` output
rows are computed one after the other, and row ``a`` of tile ``tj`` consumes
the next ``popcount`` values of that tile (row-major order inside a tile
makes this exact, with no prefix popcounts). For a row, the row's bits of
each tile are read as words of up to 32 bits (assembled from the bytes,
shifted by the row's bit offset; bits of elements outside the matrix are 0 in
the format), and a loop over the set bits (``lowest = w & -w``, position =
``popcount(lowest - 1)``, ``w &= w - 1``) does one FMA of the value with the
activation row ``XT[k, t0:t0+t_tile]`` (vectorised over tokens; a scalar FMA
when T = 1). Empty words cost one compare: the skipping that makes bitmaps
cheap at high sparsity.

``walk="tile"`` (the default for tiles at most 8 columns wide): one tile at a time instead of one
row at a time. The tile's bitmap is read as 64-bit words and one loop runs over all of its set bits;
bit ``pos`` (row-major, the values' order) adds ``value * XT[tj*tc + pos % tc]`` to accumulator row
``pos // tc`` (the tile row's ``tr x t_tile`` accumulators live in a local array). The row walk ends
one data-dependent loop per (row, tile) word: at 90 % sparsity an 8x8 tile's row word holds 0.8 set
bits, and the loop's exit branch is mispredicted about once a word (768x768 at T=1: 73 k words; a small
matrix called again and again looks fast because the branch predictor learns its whole bit pattern).
The tile walk has one such loop per tile and reads each tile's bits once. Measured (768x768, znver5,
2 threads, loaded box, 2026-11-23), tile walk vs row walk: 8x8 and 4x4 tiles 2.2-5.8x faster at
T <= 16 and 1.0-1.4x at T = 128 (90/70/50 % sparsity); 16x16 0.8-1.3x; 8x32 0.6-1.1x (a 32-bit
row word holds enough bits for the row walk's loop, whose accumulators stay in registers).
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.parallelism import resolve_in_plan
from sparsec.backends.kernels.common import (
    PARALLEL, T_TILE, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader, storer, token_tiles,
)

WORD = 32   # bits per extracted word (5 bytes cover any 32-bit window)
TILE_WALK_MAX_TC = 8     # walk="tile" by default for tiles at most this wide (measured, docstring)


class BitmapFamily(MatmulFamily):
    format = "bitmap"
    knobs = (T_TILE,
             Knob("unroll_rows", (True, False), None,
                  "unroll the tr rows of a tile row so bit offsets are constants (default: tr <= 16)"),
             Knob("walk", ("rows", "tile"), None,
                  "rows: a loop over each row's bits per tile; tile: one loop over a tile's set bits into "
                  "tr accumulator rows (default: tile when the tile is at most 8 columns wide)"),
             PARALLEL)

    def buffer_shapes(self, meta):
        tr, tc = meta.param("tile")
        nti, ntj = ceil_div(meta.rows, tr), ceil_div(meta.cols, tc)
        return {"bits": (nti, ntj, ceil_div(tr * tc, 8)), "tile_ptr": (nti * ntj + 1,), "values": ("nnz",)}

    def resolve_knobs(self, meta, spec, knobs, lanes):
        resolve_in_plan(meta, spec, knobs)      # parallel=None given a meta only: the size rule
        if knobs.get("unroll_rows") is None:
            knobs["unroll_rows"] = meta.param("tile")[0] <= 16
        if knobs.get("walk") is None:
            knobs["walk"] = "tile" if meta.param("tile")[1] <= TILE_WALK_MAX_TC else "rows"

    def algorithm(self, meta, spec, plan):
        O, K, TT = spec.out_features, spec.in_features, spec.tokens
        tr, tc = meta.param("tile")
        nti, ntj = ceil_div(O, tr), ceil_div(K, tc)
        NB = ceil_div(tr * tc, 8)
        nch = ceil_div(tc, WORD)
        pdt, dt = meta.bdtype("tile_ptr"), spec.dtype
        par, vec, unroll = plan.par, plan.vec, plan.unroll
        urows = plan.unroll if plan["unroll_rows"] else plan.serial
        epi, ld, st = epilogue(spec.activation), loader(dt), storer(dt)
        has_bias = spec.bias
        row_ok = (lambda i: i < O) if O % tr else (lambda i: True)
        tt = plan["t_tile"]
        ntile, ttail = token_tiles(TT, tt)

        def byte(bits, ti, tj, j):
            """Byte ``j`` of a tile's bitmap as uint64 (0 past the end)."""
            return T.if_then_else(j < NB, T.Cast("uint64", bits[ti, tj, T.min(j, NB - 1)]), T.uint64(0))

        def word(bits, ti, tj, sb, nbits):
            """Bits ``sb .. sb+nbits-1`` (nbits <= 32) of a tile's bitmap, bit 0 first."""
            b0 = sb // 8
            w = (byte(bits, ti, tj, b0) | (byte(bits, ti, tj, b0 + 1) << T.uint64(8))
                 | (byte(bits, ti, tj, b0 + 2) << T.uint64(16)) | (byte(bits, ti, tj, b0 + 3) << T.uint64(24))
                 | (byte(bits, ti, tj, b0 + 4) << T.uint64(32)))
            return (w >> T.Cast("uint64", sb % 8)) & ((T.uint64(1) << T.Cast("uint64", nbits)) - T.uint64(1))

        @T.macro
        def tile_row(bits, tile_ptr, values, XT, bias, YT, ti, t0, ext):
            cur = T.alloc_buffer((ntj,), pdt, scope="local")
            for tj in range(ntj):
                cur[tj] = tile_ptr[ti * ntj + tj]
            for a in urows(tr):
                if row_ok(ti * tr + a):
                    acc = T.alloc_buffer((ext,), "float32", scope="local")
                    w = T.alloc_buffer((1,), "uint64", scope="local")
                    for t in vec(ext):
                        acc[t] = T.float32(0)
                    for tj in range(ntj):
                        for ch in unroll(nch):
                            w[0] = word(bits, ti, tj, a * tc + ch * WORD, T.min(WORD, tc - ch * WORD))
                            while w[0] != T.uint64(0):
                                k = tj * tc + ch * WORD + T.Cast(
                                    "int32", T.popcount((w[0] & (~w[0] + T.uint64(1))) - T.uint64(1)))
                                v = ld(values[cur[tj]])
                                for t in vec(ext):
                                    acc[t] = acc[t] + v * ld(XT[k, t0 + t])
                                cur[tj] = cur[tj] + T.Cast(pdt, 1)
                                w[0] = w[0] & (w[0] - T.uint64(1))
                    for t in vec(ext):
                        if has_bias:
                            YT[ti * tr + a, t0 + t] = st(epi(acc[t] + ld(bias[ti * tr + a])))
                        else:
                            YT[ti * tr + a, t0 + t] = st(epi(acc[t]))

        NQ = ceil_div(NB, 8)                     # 64-bit words of one tile's bitmap

        def word64(bits, ti, tj, q):
            """Bytes ``8q .. 8q+7`` of a tile's bitmap as one uint64 (0 past the end)."""
            w = byte(bits, ti, tj, q * 8)
            for j in range(1, min(8, NB - 8 * q) if isinstance(q, int) else 8):
                w = w | (byte(bits, ti, tj, q * 8 + j) << T.uint64(8 * j))
            return w

        @T.macro
        def tile_walk(bits, tile_ptr, values, XT, bias, YT, ti, t0, ext):
            acc = T.alloc_buffer((tr, ext), "float32", scope="local")
            w = T.alloc_buffer((1,), "uint64", scope="local")
            p = T.alloc_buffer((1,), pdt, scope="local")
            for a in range(tr):
                for t in vec(ext):
                    acc[a, t] = T.float32(0)
            for tj in range(ntj):
                p[0] = tile_ptr[ti * ntj + tj]
                for q in unroll(NQ):
                    w[0] = word64(bits, ti, tj, q)
                    while w[0] != T.uint64(0):
                        pos = q * 64 + T.Cast("int32", T.popcount((w[0] & (~w[0] + T.uint64(1))) - T.uint64(1)))
                        v = ld(values[p[0]])
                        for t in vec(ext):
                            acc[pos // tc, t] = acc[pos // tc, t] + v * ld(XT[tj * tc + pos % tc, t0 + t])
                        p[0] = p[0] + T.Cast(pdt, 1)
                        w[0] = w[0] & (w[0] - T.uint64(1))
            for a in urows(tr):
                if row_ok(ti * tr + a):
                    for t in vec(ext):
                        if has_bias:
                            YT[ti * tr + a, t0 + t] = st(epi(acc[a, t] + ld(bias[ti * tr + a])))
                        else:
                            YT[ti * tr + a, t0 + t] = st(epi(acc[a, t]))

        walk = tile_walk if plan["walk"] == "tile" else tile_row
        n_chunks, per_chunk = plan.chunks(nti)   # see Plan.chunks: one allocation per chunk
        in_range = (lambda i: i < nti) if n_chunks * per_chunk > nti else (lambda i: True)

        @T.prim_func
        def bitmap_matmul(a_bits: T.handle, a_tile_ptr: T.handle, a_values: T.handle, xt: T.handle,
                          b: T.handle, yt: T.handle):
            T.func_attr({"tirx.noalias": True})
            nnz = T.int32()
            bits = T.match_buffer(a_bits, (nti, ntj, NB), "uint8")
            tile_ptr = T.match_buffer(a_tile_ptr, (nti * ntj + 1,), pdt)
            values = T.match_buffer(a_values, (nnz,), dt)
            XT = T.match_buffer(xt, (K, TT), dt)
            bias = T.match_buffer(b, (O,), dt)
            YT = T.match_buffer(yt, (O, TT), dt)
            for ti_c in par(n_chunks):
                for ti_i in range(per_chunk):
                    if in_range(ti_c * per_chunk + ti_i):
                        ti = ti_c * per_chunk + ti_i
                        for tb in range(ntile):
                            walk(bits, tile_ptr, values, XT, bias, YT, ti, tb * tt, tt)
                        if ttail > 0:
                            walk(bits, tile_ptr, values, XT, bias, YT, ti, ntile * tt, ttail)

        func = bitmap_matmul
        return func if has_bias else drop_param(func, "bias")
