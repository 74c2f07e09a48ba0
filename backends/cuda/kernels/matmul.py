"""CUDA matmul kernel families: "load as sparse, compute as dense" on tensor cores.

Problem (torch layout, no transposes): ``Y[T, O] = act(X[T, K] @ W[O, K]^T + bias[O])``
with ``W`` in one format of ``sparsec.ir.formats``, read from the format's own
buffers. Every family shares one skeleton and differs only in the *loader*
that produces a thread's slice of the dense weight tile in registers:

- grid ``(ceil(O/16), ceil(T/TN))``; a block of ``warps`` warps computes a
  16-row x ``TN``-token output tile; the warps split the reduction into
  contiguous ranges of ``KC = 32`` columns (split-K inside the block, summed
  through shared memory, where the bias/activation epilogue is applied);
- lane ``(g, q) = (lane // 4, lane % 4)`` owns rows ``g`` and ``g + 8`` of the
  tile and the 8 contiguous columns ``k0 = chunk*32 + q*8 ...`` of each chunk:
  the loader writes ``ra[2, 8]`` (zeros outside the matrix);
- the reduction order is permuted so these 8 contiguous columns are exactly the
  columns the ``mma.sync.m16n8k16`` A/B fragments of that lane hold (two
  mma per chunk, A cols ``2q, 2q+1, 2q+8, 2q+9`` <- ``k0 + {0,1,2,3}`` and
  ``k0 + {4..7}``); the B fragment is then 8 contiguous activations
  ``X[token, k0:k0+8]`` (one 16-byte load when ``K % 8 == 0``);
- fp16 / bf16 run on tensor cores (fp32 accumulation); fp32 runs the same
  loaders with SIMT FMAs (``compute="simt"``).

Loaders (what is read per lane and chunk):

- dense: ``W[row, k0:k0+8]`` (one 16-byte load);
- bitmap (tile ``tr x tc``, ``tc % 8 == 0``): the lane's bit byte, the prefix
  popcount of the tile's earlier 32-bit words + ``tile_ptr``, then the 8
  predicated value loads (Flash-LLM / SpInfer style expansion in registers);
- nm (``m`` a power of two): the ``n`` slots of each group the slice covers,
  expanded with ``n`` selects per element (2:4, 1:4, 2:8, 4:16, ...);
- csr / groupquant / bsr: a per-row cursor into the sorted column (group,
  block-column) indices, advanced as the lane walks its columns; groupquant
  dequantises in registers ``(q - zero) * scale``; bsr copies block rows.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from sparsec.backends.kernels.common import (
    Arg, KernelError, Knob, MatmulSpec, WeightMeta, ceil_div, epilogue, meta_of,
)

ROWS = 16        # output rows per block (mma M)
KC = 32          # reduction columns per chunk (two m16n8k16)
L = 8            # contiguous columns per lane and chunk
FORMATS = ("dense", "bitmap", "nm", "csr", "bsr", "groupquant")

KNOBS = (
    Knob("warps", (1, 2, 4, 8), None, "warps per block splitting the reduction (default: by K)"),
    Knob("tn", (8, 16, 32, 64, 128), None, "tokens per block (default: T rounded up to 8, at most 64)"),
)


@dataclass(frozen=True)
class CudaKernelSpec:
    """The problem + resolved knobs of one CUDA matmul kernel."""

    meta: WeightMeta
    spec: MatmulSpec
    warps: int
    tn: int
    compute: str          # "mma" | "simt"

    @property
    def grid(self) -> tuple[int, int]:
        return ceil_div(self.spec.out_features, ROWS), ceil_div(self.spec.tokens, self.tn)


def check_knobs(kind: str, knobs: dict | None, space: tuple) -> dict:
    """``knobs`` as a new dict, after refusing names not in ``space`` (a tuple of ``Knob``) and values not
    among a knob's candidates (``None`` = the default); ``kind`` names the kernel in the errors."""
    knobs = dict(knobs or {})
    by = {k.name: k for k in space}
    for name, v in knobs.items():
        if name not in by:
            raise KernelError(f"{kind} kernel: unknown knob {name!r}; knobs are {', '.join(by)}")
        if v is not None and v not in by[name].candidates:
            raise KernelError(f"{kind} kernel: knob {name}={v!r} is not one of {by[name].candidates}")
    return knobs


def resolve(meta: WeightMeta, spec: MatmulSpec, knobs: dict | None) -> CudaKernelSpec:
    knobs = check_knobs(f"cuda {meta.format}", knobs, KNOBS)
    compute = "simt" if spec.dtype == "float32" else "mma"
    tn = knobs.get("tn")
    if tn is None:
        tn = 8
        while tn < spec.tokens and tn < 64:
            tn *= 2
    if compute == "simt":
        tn = min(tn, 16)
    warps = knobs.get("warps")
    if warps is None:
        nch = ceil_div(spec.in_features, KC)
        if nch >= 16 and knobs.get("tn") is None:
            # split-K warps with 64-token tiles gave wrong results on the H100 (2026-11-23, not yet
            # understood); multi-warp blocks use at most 32 tokens, the configurations verified there
            tn = min(tn, 32)
        blocks = ceil_div(spec.out_features, ROWS) * ceil_div(spec.tokens, tn)
        warps = 8 if nch >= 64 and blocks < 2048 else 4 if nch >= 16 else 1
    return CudaKernelSpec(meta, spec, warps, tn, compute)


def check_format(meta: WeightMeta) -> None:
    """Refuse format parameters the CUDA loaders do not handle."""
    f = meta.format
    if f not in FORMATS:
        raise KernelError(f"cuda: no matmul kernel family for format {f!r}; families: {', '.join(FORMATS)}")
    if f == "bitmap":
        tr, tc = meta.param("tile")
        if tc % 8 or (tr * tc) % 32 or tr * tc > 1024:
            raise KernelError(f"cuda bitmap kernel: tile {tr}x{tc} unsupported (need tc % 8 == 0, "
                              f"tr*tc % 32 == 0, tr*tc <= 1024; e.g. 8x32, 16x32, 8x8)")
    if f == "nm":
        m = meta.param("m")
        if m & (m - 1) or m > 64:
            raise KernelError(f"cuda nm kernel: m={m} unsupported (need a power of two <= 64)")
    if f == "bsr":
        r, c = meta.param("block")
        if not (c % 8 == 0 or 8 % c == 0):
            raise KernelError(f"cuda bsr kernel: block {r}x{c} unsupported (need c % 8 == 0 or c in 1, 2, 4)")
    if f == "groupquant":
        if meta.param("group") % 8:
            raise KernelError(f"cuda groupquant kernel: group {meta.param('group')} unsupported (need % 8 == 0)")


def buffer_shapes(meta: WeightMeta) -> dict[str, tuple]:
    from sparsec.backends.kernels.build import family_for

    return family_for(meta.format).buffer_shapes(meta)


def matmul_args(meta: WeightMeta, spec: MatmulSpec) -> list[Arg]:
    """Argument order: weight buffers (format order), X[T, K], [bias[O]], Y[T, O]."""
    shapes = buffer_shapes(meta)
    args = [Arg(b, meta.bdtype(b), tuple(shapes[b])) for b in meta.buffers]
    args.append(Arg("X", spec.dtype, (spec.tokens, spec.in_features)))
    if spec.bias:
        args.append(Arg("bias", spec.dtype, (spec.out_features,)))
    args.append(Arg("Y", spec.dtype, (spec.tokens, spec.out_features)))
    return args


def _search_steps(n: int) -> int:
    s = 1
    while (1 << s) <= n:
        s += 1
    return s + 1


def cuda_matmul_primfunc(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                         knobs: dict | None = None, name: str | None = None, design: str = "fragment"):
    """TIR for ``Y[T, O] = act(X @ W^T + bias)`` on CUDA: ``(PrimFunc, args, knobs)``.

    ``design="fragment"`` (default): the loaders above, reading the format's own buffers.
    ``design="tiled"``: ``tiled.py`` (decode once per stage into shared memory; skinny T, unstructured
    formats); its weight arguments are the kernel-private buffers ``tc_values, tc_pos, tc_ptr`` made by
    ``tiled_layout.build(weight, knobs["rt"], knobs["sc"])`` with the *returned* knobs.
    ``design="dlight"``: dense weights, many tokens (``dense_dlight.py``: TVM's shared-memory wmma GEMM
    schedule); same arguments as the fragment dense kernel.
    ``design="mma"``: dense or 2:4 weights, many tokens (``mma_gemm.py``: cp.async-pipelined shared-memory
    tiles, ldmatrix, ``mma.sync`` / ``mma.sp`` for 2:4); 2:4 weights are passed as the kernel-private
    ``sp_values, sp_meta`` of ``mma_layout.build(weight)``.
    """
    if design == "tiled":
        from sparsec.backends.cuda.kernels.tiled import cuda_tiled_matmul_primfunc

        return cuda_tiled_matmul_primfunc(weight, tokens, bias=bias, activation=activation, knobs=knobs,
                                          name=name or f"sparsec_cuda_tiled_{meta_of(weight).format}_matmul")
    if design == "dlight":
        from sparsec.backends.cuda.kernels.dense_dlight import cuda_dlight_dense_primfunc

        return cuda_dlight_dense_primfunc(weight, tokens, bias=bias, activation=activation, knobs=knobs,
                                          name=name or "sparsec_cuda_dlight_dense_matmul")
    if design == "mma":
        from sparsec.backends.cuda.kernels.mma_gemm import cuda_mma_matmul_primfunc

        return cuda_mma_matmul_primfunc(weight, tokens, bias=bias, activation=activation, knobs=knobs, name=name)
    if design == "wgmma":   # Hopper wgmma.mma_async, dense; the module must be built for arch "sm_90a"
        from sparsec.backends.cuda.kernels.wgmma_gemm import cuda_wgmma_matmul_primfunc

        return cuda_wgmma_matmul_primfunc(weight, tokens, bias=bias, activation=activation, knobs=knobs, name=name)
    if design == "bmtc":
        # bitmap in mma-fragment order, decoded in registers (bmtc.py); weight arguments
        # bm_values, bm_mask, bm_ptr from bmtc_layout.build(weight, knobs["rt"], knobs["sc"]) (returned knobs)
        from sparsec.backends.cuda.kernels.bmtc import cuda_bmtc_matmul_primfunc

        return cuda_bmtc_matmul_primfunc(weight, tokens, bias=bias, activation=activation, knobs=knobs,
                                         name=name or f"sparsec_cuda_bmtc_{meta_of(weight).format}_matmul")
    if design != "fragment":
        raise KernelError(f"cuda kernel design {design!r} unknown; designs: fragment, tiled, dlight, mma, wgmma")
    meta = meta_of(weight)
    spec = MatmulSpec(int(tokens), meta.rows, meta.cols, bool(bias), activation, meta.dtype)
    check_format(meta)
    ks = resolve(meta, spec, knobs)
    func = _generate(ks)
    func = func.with_attr("global_symbol", name or f"sparsec_cuda_{meta.format}_matmul")
    return func, matmul_args(meta, spec), {"warps": ks.warps, "tn": ks.tn, "compute": ks.compute}


def _generate(ks: CudaKernelSpec):
    meta, spec = ks.meta, ks.spec
    FMT = meta.format
    O, K, TT = spec.out_features, spec.in_features, spec.tokens
    dt = spec.dtype
    W, TN = ks.warps, ks.tn
    MMA = ks.compute == "mma"
    NS = TN // 8                              # n8 sub-tiles per block
    NRT, NTT = ks.grid
    NCH = ceil_div(K, KC)
    PER = ceil_div(NCH, W)                    # chunks per warp
    VECK = K % L == 0                         # 16-byte row slices are aligned and in bounds
    HAS_BIAS = spec.bias
    epi = epilogue(spec.activation)
    ptx_t = {"float16": "fp16", "bfloat16": "bf16"}.get(dt, "fp16")
    zero = T.Cast(dt, T.float32(0)) if dt != "float32" else T.float32(0)
    NRED = W if MMA else W * 4
    SHAPES = buffer_shapes(meta)
    # format-specific constants
    if FMT == "bitmap":
        tr, tc = meta.param("tile")
        nti, ntj = ceil_div(O, tr), ceil_div(K, tc)
        NB = ceil_div(tr * tc, 8)
        NW = (tr * tc) // 32                  # 32-bit words per tile
        pdt = meta.bdtype("tile_ptr")
        FAST8x32 = (tr, tc) == (8, 32)
    if FMT == "nm":
        n_, m_ = meta.param("n"), meta.param("m")
        G = ceil_div(K, m_)
        SL = (L // m_) * n_ if m_ <= L else n_      # slots one lane slice covers

        def select_slot(sv, si, j, k0):
            """Element j of the slice: the value of the slot at its position, else 0."""
            if m_ <= L:
                base, pos = (j // m_) * n_, j % m_
            else:
                base, pos = 0, k0 % m_ + j
            e = zero
            for s_ in reversed(range(n_)):
                e = T.if_then_else(si[base + s_] == pos, sv[base + s_], e)
            return e
    if FMT in ("csr", "bsr", "groupquant"):
        idt = meta.bdtype("indptr")
    if FMT == "bsr":
        br_, bc_ = meta.param("block")
        NBR, NBC = ceil_div(O, br_), ceil_div(K, bc_)
        SUB = max(1, L // bc_)                # block columns one lane slice touches
        CW = min(bc_, L)                      # columns per block and slice
    if FMT == "groupquant":
        grp, qb = meta.param("group"), meta.param("bits")
        NGR = ceil_div(K, grp)
        QB = ceil_div(grp * qb, 8)
    if FMT == "csr":
        KEY_MAX = K
    elif FMT == "bsr":
        KEY_MAX = NBC
    else:
        KEY_MAX = NGR if FMT == "groupquant" else 1
    SEARCH = _search_steps(KEY_MAX)

    def cvt(e):
        return T.Cast(dt, e) if dt != "float32" else e

    def f32(e):
        return T.Cast("float32", e) if dt != "float32" else e

    # ------------------------------------------------------------------ loaders
    @T.macro
    def load_dense(values, ra, r, row, k0):
        if row < O:
            if VECK:
                for j in T.vectorized(L):
                    ra[r * L + j] = values[row, k0 + j]
            else:
                for j in T.unroll(L):
                    ra[r * L + j] = T.if_then_else(k0 + j < K, values[row, T.min(k0 + j, K - 1)], zero)
        else:
            for j in T.unroll(L):
                ra[r * L + j] = zero

    @T.macro
    def load_bitmap(bits32, tile_ptr, values, ra, r, row, k0, tmp):
        # tmp: [0] prefix popcount, [1] the lane's byte; a slice starting past K has no tile (tc < 32)
        if row < O and k0 < K:
            ti = row // tr
            tj = k0 // tc
            e = (row % tr) * tc + k0 % tc               # first bit of the slice in the tile (e % 8 == 0)
            tbase = (ti * ntj + tj) * (NB // 4)
            tmp[0] = T.uint32(0)
            for w in T.unroll(NW):
                if w < e // 32:
                    tmp[0] = tmp[0] + T.Cast("uint32", T.popcount(bits32[tbase + w]))
            wd = bits32[tbase + e // 32]
            tmp[0] = tmp[0] + T.Cast("uint32", T.popcount(wd & ((T.uint32(1) << T.Cast("uint32", e % 32))
                                                                  - T.uint32(1))))
            tmp[1] = (wd >> T.Cast("uint32", e % 32)) & T.uint32(255)
            tmp[0] = tmp[0] + T.Cast("uint32", tile_ptr[ti * ntj + tj])
            for j in T.unroll(L):
                ra[r * L + j] = T.if_then_else((tmp[1] >> T.uint32(j)) & T.uint32(1) == T.uint32(1),
                                               values[tmp[0]], zero)
                tmp[0] = tmp[0] + ((tmp[1] >> T.uint32(j)) & T.uint32(1))
        else:
            for j in T.unroll(L):
                ra[r * L + j] = zero

    @T.macro
    def load_bitmap8x32(bits32, tile_ptr, values, ra, r, row, k0, tmp, lane):
        # tile 8x32: the lane's row word is word (row % 8) = lane // 4 of tile (row // 8, chunk); the
        # exclusive prefix of the tile's row popcounts comes from an inclusive scan over the 8 row
        # groups of the warp (lanes 4 apart), executed by every lane (rows past O read 0)
        tmp[2] = T.if_then_else(row < O, bits32[((row // 8) * ntj + k0 // 32) * 8 + row % 8], T.uint32(0))
        tmp[0] = T.Cast("uint32", T.popcount(tmp[2]))
        tmp[3] = tmp[0]
        for d in T.unroll(3):
            tmp[1] = T.tvm_warp_shuffle_up(T.uint32(4294967295), tmp[3], 4 << d, 32, 32)
            if lane >= (4 << d):
                tmp[3] = tmp[3] + tmp[1]
        if row < O:
            tmp[0] = tmp[3] - tmp[0] + T.Cast("uint32", T.popcount(
                tmp[2] & ((T.uint32(1) << T.Cast("uint32", k0 % 32)) - T.uint32(1))))
            tmp[0] = tmp[0] + T.Cast("uint32", tile_ptr[(row // 8) * ntj + k0 // 32])
            tmp[1] = (tmp[2] >> T.Cast("uint32", k0 % 32)) & T.uint32(255)
            for j in T.unroll(L):
                ra[r * L + j] = T.if_then_else((tmp[1] >> T.uint32(j)) & T.uint32(1) == T.uint32(1),
                                               values[tmp[0]], zero)
                tmp[0] = tmp[0] + ((tmp[1] >> T.uint32(j)) & T.uint32(1))
        else:
            for j in T.unroll(L):
                ra[r * L + j] = zero

    @T.macro
    def load_nm(values, indices, ra, r, row, k0, sv, si):
        # the slots of the groups the slice covers, loaded once (contiguous), then n selects per element
        if row < O and k0 < K:
            for s in T.unroll(SL):
                sv[s] = T.if_then_else((k0 // m_) * n_ + s < G * n_,
                                       values[row, T.min((k0 // m_) * n_ + s, G * n_ - 1)], zero)
                si[s] = T.if_then_else((k0 // m_) * n_ + s < G * n_,
                                       T.Cast("int32", indices[row, T.min((k0 // m_) * n_ + s, G * n_ - 1)]), -1)
            for j in T.unroll(L):
                ra[r * L + j] = select_slot(sv, si, j, k0)
        else:
            for j in T.unroll(L):
                ra[r * L + j] = zero

    # cursor formats: cur[r] = position in the index array, cend[r] = its end
    @T.macro
    def seek(idx, cur, cend, r, lo, key):
        # lower_bound of key in idx[lo:cend[r]] (fixed step count)
        cur[r] = lo
        span = T.alloc_buffer((1,), idt, scope="local")
        span[0] = cend[r] - lo
        for _s in T.unroll(SEARCH):
            if span[0] > T.Cast(idt, 0):
                half = span[0] // T.Cast(idt, 2)
                if T.Cast("int32", idx[cur[r] + half]) < key:
                    cur[r] = cur[r] + half + T.Cast(idt, 1)
                    span[0] = span[0] - half - T.Cast(idt, 1)
                else:
                    span[0] = half

    @T.macro
    def load_csr(indices, values, ra, cur, cend, r, row, k0):
        if row < O:
            while cur[r] < cend[r] and T.Cast("int32", indices[T.min(cur[r], cend[r] - T.Cast(idt, 1))]) < k0:
                cur[r] = cur[r] + T.Cast(idt, 1)
            for j in T.unroll(L):
                hit = cur[r] < cend[r] and T.Cast("int32", indices[T.min(cur[r], cend[r] - T.Cast(idt, 1))]) == k0 + j
                ra[r * L + j] = T.if_then_else(hit, values[T.min(cur[r], cend[r] - T.Cast(idt, 1))], zero)
                if hit:
                    cur[r] = cur[r] + T.Cast(idt, 1)
        else:
            for j in T.unroll(L):
                ra[r * L + j] = zero

    @T.macro
    def load_bsr(indices, blocks, ra, cur, cend, r, row, k0):
        if row < O:
            for sb in T.unroll(SUB):
                key = (k0 + sb * CW) // bc_
                while cur[r] < cend[r] and T.Cast("int32", indices[T.min(cur[r], cend[r] - T.Cast(idt, 1))]) < key:
                    cur[r] = cur[r] + T.Cast(idt, 1)
                hit = cur[r] < cend[r] and T.Cast("int32", indices[T.min(cur[r], cend[r] - T.Cast(idt, 1))]) == key
                pb = T.min(cur[r], cend[r] - T.Cast(idt, 1))
                for j in T.unroll(CW):
                    ra[r * L + sb * CW + j] = T.if_then_else(
                        hit, blocks[pb, row % br_, (k0 + sb * CW + j) % bc_], zero)
        else:
            for j in T.unroll(L):
                ra[r * L + j] = zero

    @T.macro
    def load_gq(group_idx, qvalues, scales, zeros, ra, cur, cend, r, row, k0):
        if row < O:
            key = k0 // grp
            while cur[r] < cend[r] and T.Cast("int32", group_idx[T.min(cur[r], cend[r] - T.Cast(idt, 1))]) < key:
                cur[r] = cur[r] + T.Cast(idt, 1)
            pg = T.min(cur[r], cend[r] - T.Cast(idt, 1))
            hit = cur[r] < cend[r] and T.Cast("int32", group_idx[pg]) == key
            sc = scales[pg]
            zp = T.Cast("float32", zeros[pg])
            for j in T.unroll(L):
                e = (k0 % grp) + j
                if qb == 8:
                    code = T.Cast("float32", qvalues[pg, e])
                else:
                    code = T.Cast("float32", (qvalues[pg, e // 2] >> T.Cast("uint8", (e % 2) * 4)) & T.uint8(15))
                ra[r * L + j] = T.if_then_else(hit, cvt((code - zp) * sc), zero)
        else:
            for j in T.unroll(L):
                ra[r * L + j] = zero

    # ------------------------------------------------------------------ skeleton
    @T.macro
    def chunk_compute(X, ra, af, xv, xb, acc, by, g, k0):
        if MMA:
            # A fragments of the two mma: rows (g, g+8) x cols (k0+4i .. k0+4i+3), PTX register order
            for i in T.unroll(2):
                for h in T.unroll(2):
                    af[i * 8 + h] = ra[4 * i + h]
                    af[i * 8 + 2 + h] = ra[L + 4 * i + h]
                    af[i * 8 + 4 + h] = ra[4 * i + 2 + h]
                    af[i * 8 + 6 + h] = ra[L + 4 * i + 2 + h]
            for ns in T.unroll(NS):
                if VECK:
                    if by * TN + ns * 8 + g < TT and k0 < K:
                        for j in T.vectorized(L):
                            xv[j] = X[by * TN + ns * 8 + g, k0 + j]
                    else:
                        for j in T.unroll(L):
                            xv[j] = zero
                else:
                    for j in T.unroll(L):
                        xv[j] = T.if_then_else(by * TN + ns * 8 + g < TT and k0 + j < K,
                                               X[T.min(by * TN + ns * 8 + g, TT - 1), T.min(k0 + j, K - 1)], zero)
                # the mma reads its B fragments through a pointer into xb, which is only ever accessed
                # element-wise: a buffer accessed only by vectors (xv, when no bound check is needed) is
                # retyped uint4[1] by storage rewrite, and "+4 elements" would then mean "+4 uint4"
                for j in T.unroll(L):
                    xb[j] = xv[j]
                for i in T.unroll(2):
                    T.evaluate(T.ptx_legacy.mma("m16n8k16", "row", "col", ptx_t, ptx_t, "fp32",
                                                af.data, i * 8, xb.data, i * 4, acc.data, ns * 4, False,
                                                dtype="float32"))
        else:
            for n in T.unroll(TN):
                tok = by * TN + n
                for j in T.unroll(L):
                    xv[j] = T.if_then_else(tok < TT and k0 + j < K, X[T.min(tok, TT - 1), T.min(k0 + j, K - 1)],
                                           zero)
                for r in T.unroll(2):
                    for j in T.unroll(L):
                        acc[r * TN + n] = acc[r * TN + n] + ra[r * L + j] * xv[j]

    @T.macro
    def store_acc(red, acc, ty, g, q):
        if MMA:
            for ns in T.unroll(NS):
                for h in T.unroll(2):
                    red[ty, g, ns * 8 + 2 * q + h] = acc[ns * 4 + h]
                    red[ty, g + 8, ns * 8 + 2 * q + h] = acc[ns * 4 + 2 + h]
        else:
            for r in T.unroll(2):
                for n in T.unroll(TN):
                    red[ty * 4 + q, g + 8 * r, n] = acc[r * TN + n]

    @T.macro
    def finish(red, bias, Y, bx, by, ty, tx):
        T.tvm_storage_sync("shared")
        for it in range(ceil_div(ROWS * TN, W * 32)):
            e = it * (W * 32) + ty * 32 + tx
            rr = e % ROWS
            n = e // ROWS
            row = bx * ROWS + rr
            tok = by * TN + n
            if n < TN and row < O and tok < TT:
                s = T.alloc_buffer((1,), "float32", scope="local")
                s[0] = T.float32(0)
                for w in T.unroll(NRED):
                    s[0] = s[0] + red[w, rr, n]
                if HAS_BIAS:
                    Y[tok, row] = cvt(epi(s[0] + f32(bias[row])))
                else:
                    Y[tok, row] = cvt(epi(s[0]))

    ACC = NS * 4 if MMA else 2 * TN
    RA_DT = dt

    if FMT == "dense":
        @T.prim_func
        def kern(a_values: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            values = T.match_buffer(a_values, (O, K), dt)
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            for bx in T.thread_binding(NRT, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for ty in T.thread_binding(W, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red = T.alloc_buffer((NRED, ROWS, TN), "float32", scope="shared")
                            acc = T.alloc_buffer((ACC,), "float32", scope="local")
                            ra = T.alloc_buffer((2 * L,), RA_DT, scope="local")
                            af = T.alloc_buffer((16,), RA_DT, scope="local")
                            xv = T.alloc_buffer((L,), RA_DT, scope="local")
                            xb = T.alloc_buffer((L,), RA_DT, scope="local")
                            for i in T.unroll(ACC):
                                acc[i] = T.float32(0)
                            for c in range(ty * PER, T.min(ty * PER + PER, NCH)):
                                for r in T.unroll(2):
                                    load_dense(values, ra, r, bx * ROWS + tx // 4 + 8 * r, c * KC + (tx % 4) * L)
                                chunk_compute(X, ra, af, xv, xb, acc, by, tx // 4, c * KC + (tx % 4) * L)
                            store_acc(red, acc, ty, tx // 4, tx % 4)
                            finish(red, bias, Y, bx, by, ty, tx)
    elif FMT == "bitmap":
        NBYTES = nti * ntj * NB

        @T.prim_func
        def kern(a_bits: T.handle, a_tile_ptr: T.handle, a_values: T.handle, x: T.handle, b: T.handle,
                 y: T.handle):
            T.func_attr({"tirx.noalias": True})
            nnz = T.int32()
            bits = T.match_buffer(a_bits, (nti, ntj, NB), "uint8")
            tile_ptr = T.match_buffer(a_tile_ptr, (nti * ntj + 1,), pdt)
            values = T.match_buffer(a_values, (nnz,), dt)
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            bits32 = T.decl_buffer((NBYTES // 4,), "uint32", data=bits.data)
            for bx in T.thread_binding(NRT, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for ty in T.thread_binding(W, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red = T.alloc_buffer((NRED, ROWS, TN), "float32", scope="shared")
                            acc = T.alloc_buffer((ACC,), "float32", scope="local")
                            ra = T.alloc_buffer((2 * L,), RA_DT, scope="local")
                            af = T.alloc_buffer((16,), RA_DT, scope="local")
                            xv = T.alloc_buffer((L,), RA_DT, scope="local")
                            xb = T.alloc_buffer((L,), RA_DT, scope="local")
                            tmp = T.alloc_buffer((4,), "uint32", scope="local")
                            for i in T.unroll(ACC):
                                acc[i] = T.float32(0)
                            for c in range(ty * PER, T.min(ty * PER + PER, NCH)):
                                for r in T.unroll(2):
                                    if FAST8x32:
                                        load_bitmap8x32(bits32, tile_ptr, values, ra, r, bx * ROWS + tx // 4 + 8 * r,
                                                        c * KC + (tx % 4) * L, tmp, tx)
                                    else:
                                        load_bitmap(bits32, tile_ptr, values, ra, r, bx * ROWS + tx // 4 + 8 * r,
                                                    c * KC + (tx % 4) * L, tmp)
                                chunk_compute(X, ra, af, xv, xb, acc, by, tx // 4, c * KC + (tx % 4) * L)
                            store_acc(red, acc, ty, tx // 4, tx % 4)
                            finish(red, bias, Y, bx, by, ty, tx)
    elif FMT == "nm":
        idx_dt = meta.bdtype("indices")

        @T.prim_func
        def kern(a_values: T.handle, a_indices: T.handle, x: T.handle, b: T.handle, y: T.handle):  # noqa: F811
            T.func_attr({"tirx.noalias": True})
            values = T.match_buffer(a_values, (O, G * n_), dt)
            indices = T.match_buffer(a_indices, (O, G * n_), idx_dt)
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            for bx in T.thread_binding(NRT, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for ty in T.thread_binding(W, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red = T.alloc_buffer((NRED, ROWS, TN), "float32", scope="shared")
                            acc = T.alloc_buffer((ACC,), "float32", scope="local")
                            ra = T.alloc_buffer((2 * L,), RA_DT, scope="local")
                            af = T.alloc_buffer((16,), RA_DT, scope="local")
                            xv = T.alloc_buffer((L,), RA_DT, scope="local")
                            xb = T.alloc_buffer((L,), RA_DT, scope="local")
                            sv = T.alloc_buffer((SL,), RA_DT, scope="local")
                            si = T.alloc_buffer((SL,), "int32", scope="local")
                            for i in T.unroll(ACC):
                                acc[i] = T.float32(0)
                            for c in range(ty * PER, T.min(ty * PER + PER, NCH)):
                                for r in T.unroll(2):
                                    load_nm(values, indices, ra, r, bx * ROWS + tx // 4 + 8 * r, c * KC + (tx % 4) * L,
                                            sv, si)
                                chunk_compute(X, ra, af, xv, xb, acc, by, tx // 4, c * KC + (tx % 4) * L)
                            store_acc(red, acc, ty, tx // 4, tx % 4)
                            finish(red, bias, Y, bx, by, ty, tx)
    elif FMT == "csr":
        @T.prim_func
        def kern(a_indptr: T.handle, a_indices: T.handle, a_values: T.handle, x: T.handle, b: T.handle,
                 y: T.handle):
            T.func_attr({"tirx.noalias": True})
            nnz = T.int32()
            indptr = T.match_buffer(a_indptr, (O + 1,), idt)
            indices = T.match_buffer(a_indices, (nnz,), idt)
            values = T.match_buffer(a_values, (nnz,), dt)
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            for bx in T.thread_binding(NRT, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for ty in T.thread_binding(W, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red = T.alloc_buffer((NRED, ROWS, TN), "float32", scope="shared")
                            acc = T.alloc_buffer((ACC,), "float32", scope="local")
                            ra = T.alloc_buffer((2 * L,), RA_DT, scope="local")
                            af = T.alloc_buffer((16,), RA_DT, scope="local")
                            xv = T.alloc_buffer((L,), RA_DT, scope="local")
                            xb = T.alloc_buffer((L,), RA_DT, scope="local")
                            cur = T.alloc_buffer((2,), idt, scope="local")
                            cend = T.alloc_buffer((2,), idt, scope="local")
                            for i in T.unroll(ACC):
                                acc[i] = T.float32(0)
                            for r in T.unroll(2):
                                row = T.min(bx * ROWS + tx // 4 + 8 * r, O - 1)
                                cend[r] = indptr[row + 1]
                                seek(indices, cur, cend, r, indptr[row], ty * PER * KC)
                            for c in range(ty * PER, T.min(ty * PER + PER, NCH)):
                                for r in T.unroll(2):
                                    load_csr(indices, values, ra, cur, cend, r, bx * ROWS + tx // 4 + 8 * r, c * KC + (tx % 4) * L)
                                chunk_compute(X, ra, af, xv, xb, acc, by, tx // 4, c * KC + (tx % 4) * L)
                            store_acc(red, acc, ty, tx // 4, tx % 4)
                            finish(red, bias, Y, bx, by, ty, tx)
    elif FMT == "bsr":
        @T.prim_func
        def kern(a_indptr: T.handle, a_indices: T.handle, a_blocks: T.handle, x: T.handle, b: T.handle,
                 y: T.handle):
            T.func_attr({"tirx.noalias": True})
            nnzb = T.int32()
            indptr = T.match_buffer(a_indptr, (NBR + 1,), idt)
            indices = T.match_buffer(a_indices, (nnzb,), idt)
            blocks = T.match_buffer(a_blocks, (nnzb, br_, bc_), dt)
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            for bx in T.thread_binding(NRT, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for ty in T.thread_binding(W, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red = T.alloc_buffer((NRED, ROWS, TN), "float32", scope="shared")
                            acc = T.alloc_buffer((ACC,), "float32", scope="local")
                            ra = T.alloc_buffer((2 * L,), RA_DT, scope="local")
                            af = T.alloc_buffer((16,), RA_DT, scope="local")
                            xv = T.alloc_buffer((L,), RA_DT, scope="local")
                            xb = T.alloc_buffer((L,), RA_DT, scope="local")
                            cur = T.alloc_buffer((2,), idt, scope="local")
                            cend = T.alloc_buffer((2,), idt, scope="local")
                            for i in T.unroll(ACC):
                                acc[i] = T.float32(0)
                            for r in T.unroll(2):
                                brow = T.min(bx * ROWS + tx // 4 + 8 * r, O - 1) // br_
                                cend[r] = indptr[brow + 1]
                                seek(indices, cur, cend, r, indptr[brow], (ty * PER * KC) // bc_)
                            for c in range(ty * PER, T.min(ty * PER + PER, NCH)):
                                for r in T.unroll(2):
                                    load_bsr(indices, blocks, ra, cur, cend, r, bx * ROWS + tx // 4 + 8 * r, c * KC + (tx % 4) * L)
                                chunk_compute(X, ra, af, xv, xb, acc, by, tx // 4, c * KC + (tx % 4) * L)
                            store_acc(red, acc, ty, tx // 4, tx % 4)
                            finish(red, bias, Y, bx, by, ty, tx)
    else:  # groupquant
        @T.prim_func
        def kern(a_indptr: T.handle, a_group_idx: T.handle, a_qvalues: T.handle, a_scales: T.handle,
                 a_zeros: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            ngk = T.int32()
            indptr = T.match_buffer(a_indptr, (O + 1,), idt)
            group_idx = T.match_buffer(a_group_idx, (ngk,), idt)
            qvalues = T.match_buffer(a_qvalues, (ngk, QB), "uint8")
            scales = T.match_buffer(a_scales, (ngk,), "float32")
            zeros = T.match_buffer(a_zeros, (ngk,), "uint8")
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            for bx in T.thread_binding(NRT, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for ty in T.thread_binding(W, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red = T.alloc_buffer((NRED, ROWS, TN), "float32", scope="shared")
                            acc = T.alloc_buffer((ACC,), "float32", scope="local")
                            ra = T.alloc_buffer((2 * L,), RA_DT, scope="local")
                            af = T.alloc_buffer((16,), RA_DT, scope="local")
                            xv = T.alloc_buffer((L,), RA_DT, scope="local")
                            xb = T.alloc_buffer((L,), RA_DT, scope="local")
                            cur = T.alloc_buffer((2,), idt, scope="local")
                            cend = T.alloc_buffer((2,), idt, scope="local")
                            for i in T.unroll(ACC):
                                acc[i] = T.float32(0)
                            for r in T.unroll(2):
                                row = T.min(bx * ROWS + tx // 4 + 8 * r, O - 1)
                                cend[r] = indptr[row + 1]
                                seek(group_idx, cur, cend, r, indptr[row], (ty * PER * KC) // grp)
                            for c in range(ty * PER, T.min(ty * PER + PER, NCH)):
                                for r in T.unroll(2):
                                    load_gq(group_idx, qvalues, scales, zeros, ra, cur, cend, r,
                                            bx * ROWS + tx // 4 + 8 * r, c * KC + (tx % 4) * L)
                                chunk_compute(X, ra, af, xv, xb, acc, by, tx // 4, c * KC + (tx % 4) * L)
                            store_acc(red, acc, ty, tx // 4, tx % 4)
                            finish(red, bias, Y, bx, by, ty, tx)
    if not HAS_BIAS:
        from sparsec.backends.kernels.common import drop_param

        kern = drop_param(kern, "bias")
    return kern
