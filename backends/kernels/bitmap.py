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
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.kernels.parallelism import resolve_in_plan
from sparsec.backends.kernels.common import (
    PARALLEL, T_TILE, Knob, MatmulFamily, ceil_div, drop_param, epilogue, loader, storer, token_tiles,
)

WORD = 32   # bits per extracted word (5 bytes cover any 32-bit window)


class BitmapFamily(MatmulFamily):
    format = "bitmap"
    knobs = (T_TILE,
             Knob("unroll_rows", (True, False), None,
                  "unroll the tr rows of a tile row so bit offsets are constants (default: tr <= 16)"),
             PARALLEL)

    def buffer_shapes(self, meta):
        tr, tc = meta.param("tile")
        nti, ntj = ceil_div(meta.rows, tr), ceil_div(meta.cols, tc)
        return {"bits": (nti, ntj, ceil_div(tr * tc, 8)), "tile_ptr": (nti * ntj + 1,), "values": ("nnz",)}

    def resolve_knobs(self, meta, spec, knobs, lanes):
        resolve_in_plan(meta, spec, knobs)      # parallel=None given a meta only: the size rule
        if knobs.get("unroll_rows") is None:
            knobs["unroll_rows"] = meta.param("tile")[0] <= 16

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
                            tile_row(bits, tile_ptr, values, XT, bias, YT, ti, tb * tt, tt)
                        if ttail > 0:
                            tile_row(bits, tile_ptr, values, XT, bias, YT, ti, ntile * tt, ttail)

        func = bitmap_matmul
        return func if has_bias else drop_param(func, "bias")
