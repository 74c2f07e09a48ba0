"""``design="mma"``: a hand-tiled tensor-core GEMM for many tokens, dense and 2:4 (``mma.sp``).

Problem (torch layout): ``Y[T, O] = act(X[T, K] @ W[O, K]^T + bias)``. The weight is the mma ``A``
operand (M = O, the only operand ``mma.sp`` lets be sparse), ``X`` is ``B`` in "col" layout (its rows
are the B fragments' columns), so neither operand is transposed anywhere.

- grid ``(ceil(O/bm), ceil(T/bn))``; ``wm x wn`` warps, each owning a ``bm/wm x bn/wn`` output tile
  of ``m16n8`` accumulators (fp32);
- a ``stages``-deep ring of shared-memory tiles of ``W`` (``bm x bk``) and ``X`` (``bn x bk``) filled
  with 16-byte ``cp.async.cg`` (``src-size`` 0 zero-fills rows/columns outside the matrix, which is
  the predication for O, T and K not multiples of the tile); ``cp.async.wait_group stages-2`` + one
  barrier per k-tile, the next tile's copies issued before the current tile's math;
- 16-byte chunks of a row are XOR-swizzled (chunk ``c`` of row ``r`` at ``c ^ (r / max(1, 8/CH)) % CH``)
  so the 8 row addresses of every ``ldmatrix`` hit distinct banks;
- ``ldmatrix.x4`` into A/B fragments, ``mma.sync.m16n8k16`` (fp16/bf16, fp32 accumulate);
  bias + activation fused in the epilogue, straight from the accumulators.

2:4 (``nm`` with n=2, m=4): ``A`` is the compressed weight ``sp_values[O, K/2]`` and the 2-bit
position metadata ``sp_meta`` (``mma_layout.build``), multiplied by ``mma.sp.sync.m16n8k16`` on the
sparse tensor cores: 0.5625x the weight bytes of dense, half the A fragments and half the mma work.
The metadata of each 16x16 A block is one 32-bit word per row pair (rows g and g+8, 16 bits each:
4 groups x two 2-bit positions), stored ``[ceil(O/16), K/16, 8]`` so a block's words are contiguous and
come through shared memory with the values.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsec.backends.cuda.kernels.staged import staged_epilogue, zero_fill
from sparsec.backends.cuda.kernels.mma_layout import tensor_core_weight
from sparsec.backends.kernels.common import Arg, KernelError, Knob, MatmulSpec, ceil_div, epilogue, meta_of

KNOBS = (
    Knob("bm", (32, 64, 128), None, "weight rows (O) per block"),
    Knob("bn", (32, 64, 128), None, "tokens per block"),
    Knob("bk", (32, 64), None, "reduction columns per pipeline stage"),
    Knob("wm", (1, 2, 4), None, "warps along O"),
    Knob("wn", (1, 2, 4), None, "warps along T"),
    Knob("stages", (2, 3, 4, 5), None, "cp.async pipeline depth"),
    Knob("ks", (1, 2, 3, 4, 6, 8), None, "split-K: blocks per output tile, each a K range, summed with fp16/bf16 "
                                          "atomics into a zeroed Y (no activation)"),
    Knob("gm", (1, 4, 8, 16), None, "block rasterisation: O tiles per group swept over every token tile"),
)
SMEM_LIMIT = 48 * 1024          # static shared memory per block
CPAD = 8                        # staged epilogue: row pitch bm + 8 halves (conflict-free fragment stores)
SMS = 132                       # H100 SMs


@dataclass(frozen=True)
class MmaSpec:
    spec: MatmulSpec
    sparse: bool
    bm: int
    bn: int
    bk: int
    wm: int
    wn: int
    stages: int
    ks: int = 1
    gm: int = 8

    def smem_bytes(self) -> int:
        a = self.bm * self.bk * (1 if self.sparse else 2)
        m = self.bm * self.bk // 8 if self.sparse else 0
        ring = self.stages * (a + self.bn * self.bk * 2)
        return max(ring, self.bn * (self.bm + CPAD) * 2) + self.stages * m


def default_knobs(O: int, K: int, T: int, sparse: bool = False, activation: str | None = None) -> dict:
    """Tile defaults. T >= 512: 128x128 tiles (64x128 when they leave SMs idle). 32 < T < 512: 128-row
    tiles split along K (ks <= 8, >= 8 k-tiles each) until ~4 blocks per SM (split-K needs no activation; with one, the
    smaller tiles of the previous rule). T <= 32: 32x32 tiles."""
    if T >= 512:
        kn = dict(bm=128, bn=128, bk=32, wm=2, wn=4, stages=3)
        if ceil_div(O, 128) * ceil_div(T, 128) < SMS:
            kn = dict(bm=64, bn=128, bk=32, wm=2, wn=4, stages=4)
    elif T > 32:
        bn = 128 if T > 64 else 64
        kn = dict(bm=128, bn=bn, bk=32, wm=2, wn=4 if bn == 128 else 2, stages=3 if bn == 128 else 4)
        tiles = ceil_div(O, 128) * ceil_div(T, bn)
        nk = ceil_div(K, 32)
        ks = 1
        for cand in (1, 2, 3, 4, 6, 8):
            if ceil_div(nk, cand) < 8:
                break
            ks = cand
            if tiles * cand >= 4 * SMS:       # H100: ks=8 fastest on the four LLM shapes (run 1)
                break
        kn["ks"] = ks
        if activation is not None or tiles * ks < SMS:
            kn = dict(bm=64, bn=64, bk=32, wm=2, wn=2, stages=4)
            if ceil_div(O, 64) * ceil_div(T, 64) < SMS:
                kn = dict(bm=32, bn=64, bk=64, wm=1, wn=4, stages=4)
    else:
        kn = dict(bm=32, bn=32, bk=64, wm=2, wn=2, stages=4)
    if sparse and kn["bk"] == 32 and kn["bm"] == 32:
        kn["bk"] = 64
    kn.setdefault("ks", 1)
    kn.setdefault("gm", 1)      # H100 T=1024: gm=1 (token tiles fastest) 0-20 % faster than gm=8 on 3 of 4 shapes
    return kn


def resolve(O: int, K: int, T: int, sparse: bool, knobs: dict | None, spec: MatmulSpec) -> MmaSpec:
    from sparsec.backends.cuda.kernels.matmul import check_knobs

    knobs = check_knobs("cuda mma", knobs, KNOBS)
    kn = default_knobs(O, K, T, sparse, spec.activation)
    kn.update({k: v for k, v in knobs.items() if v is not None})
    nk = ceil_div(K, kn["bk"])
    ks = ceil_div(nk, ceil_div(nk, kn["ks"]))          # no empty K range
    ms = MmaSpec(spec, sparse, kn["bm"], kn["bn"], kn["bk"], kn["wm"], kn["wn"], kn["stages"], ks, kn["gm"])
    if ms.ks > 1 and spec.activation is not None:
        raise KernelError("cuda mma kernel: ks > 1 sums partial results with atomics, which an activation "
                          "cannot follow; use ks=1")
    wtm, wtn = ms.bm // ms.wm, ms.bn // ms.wn
    if ms.bm % ms.wm or wtm % 16 or ms.bn % ms.wn or wtn % 16:
        raise KernelError(f"cuda mma kernel: warp tile {ms.bm}/{ms.wm} x {ms.bn}/{ms.wn} must be multiples of 16")
    nt = 32 * ms.wm * ms.wn
    if (ms.bm * ms.bk // (16 if sparse else 8)) % nt and (ms.bm * ms.bk // (16 if sparse else 8)) > nt:
        raise KernelError(f"cuda mma kernel: {nt} threads do not divide the {ms.bm}x{ms.bk} weight tile copies")
    if ms.smem_bytes() > SMEM_LIMIT:
        raise KernelError(f"cuda mma kernel: {ms.smem_bytes()} bytes of shared memory > {SMEM_LIMIT} "
                          f"(bm={ms.bm}, bn={ms.bn}, bk={ms.bk}, stages={ms.stages})")
    return ms


def _swz(r, ch: int):
    """XOR key of row ``r`` for rows of ``ch`` 16-byte chunks (8 consecutive rows -> distinct banks)."""
    return (r // max(1, 8 // ch)) % ch


def cuda_mma_matmul_primfunc(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                             knobs: dict | None = None, name: str | None = None):
    """``(PrimFunc, args, knobs)``. Dense: ``values[O, K], X, [bias], Y``; 2:4 (``nm`` 2:4 weights):
    ``sp_values[O, K/2], sp_meta[ceil(O/16), K/16, 8], X, [bias], Y`` from ``mma_layout.build(fmt)``."""
    meta = meta_of(weight)
    sparse = tensor_core_weight(meta, "mma")
    spec = MatmulSpec(int(tokens), meta.rows, meta.cols, bool(bias), activation, meta.dtype)
    O, K, TT = spec.out_features, spec.in_features, spec.tokens
    kmul = 16 if sparse else 8
    if K % kmul or K < kmul:
        raise KernelError(f"cuda mma kernel: K={K} must be a multiple of {kmul} (16-byte rows"
                          + (", whole 2:4 metadata blocks" if sparse else "") + ")")
    ms = resolve(O, K, TT, sparse, knobs, spec)
    sym = name or ("sparsec_cuda_mma_nm_matmul" if sparse else "sparsec_cuda_mma_dense_matmul")
    func = _generate(ms).with_attr("global_symbol", sym)
    dt = spec.dtype
    if sparse:
        args = [Arg("sp_values", dt, (O, K // 2)), Arg("sp_meta", "int32", (ceil_div(O, 16), K // 16, 8))]
    else:
        args = [Arg("values", dt, (O, K))]
    args.append(Arg("X", dt, (TT, K)))
    if bias:
        args.append(Arg("bias", dt, (O,)))
    args.append(Arg("Y", dt, (TT, O)))
    return func, args, {"design": "mma", "bm": ms.bm, "bn": ms.bn, "bk": ms.bk, "wm": ms.wm, "wn": ms.wn,
                        "stages": ms.stages, "ks": ms.ks, "gm": ms.gm}


def _generate(ms: MmaSpec):
    from tvm.script import tirx as T

    spec = ms.spec
    O, K, TT, dt = spec.out_features, spec.in_features, spec.tokens, spec.dtype
    SP = ms.sparse
    BM, BN, BK, WM, WN, S, KS = ms.bm, ms.bn, ms.bk, ms.wm, ms.wn, ms.stages, ms.ks
    NT = 32 * WM * WN
    WTM, WTN = BM // WM, BN // WN
    MF, NF = WTM // 16, WTN // 8
    NK = ceil_div(K, BK)
    NKS = ceil_div(NK, KS)                   # k-tiles per split (the last split may have fewer)
    KA = K // 2 if SP else K                 # A row length (compressed for 2:4)
    BKA = BK // 2 if SP else BK              # A tile row length
    CHA, CHB = BKA // 8, BK // 8             # 16-byte chunks per tile row
    KB16 = K // 16
    NRT16 = ceil_div(O, 16)
    M_CP = (BM // 16) * (BK // 16) * 2      # 16-byte copies of metadata per stage (8 words per 16x16 block)
    M_IT = ceil_div(M_CP, NT)
    MW = (BM // 16) * (BK // 16) * 8        # metadata words per stage
    HAS_BIAS = spec.bias
    epi = epilogue(spec.activation)
    pt = {"float16": "f16", "bfloat16": "bf16"}[dt]
    MMA = f"mma.sync.aligned.m16n8k16.row.col.f32.{pt}.{pt}.f32"
    MMASP = f"mma.sp.sync.aligned.m16n8k16.row.col.f32.{pt}.{pt}.f32"
    CP = "cp.async.cg.shared.global"
    LDX4 = "ldmatrix.sync.aligned.m8n8.x4.shared.b16"
    ASZ = S * BM * BKA                       # A ring at [0, ASZ), B ring at [ASZ, ASZ + BSZ) of one buffer
    BSZ = S * BN * BK
    CST = BM + CPAD                          # staged epilogue tile [BN, CST] over the ring (after the loop)
    SMN = max(ASZ + BSZ, BN * CST)
    MSZ = S * MW if SP else 1
    grid_m, grid_n = ceil_div(O, BM), ceil_div(TT, BN)
    GM = min(ms.gm, grid_m)
    zero_y = zero_fill(dt, TT * O)

    def cvt(e):
        return T.Cast(dt, e)

    # the staged epilogue (accumulators -> shared tile -> 16-byte rows of Y), shared with the other GEMM
    stage, store = staged_epilogue(dt=dt, BM=BM, BN=BN, CST=CST, O=O, TT=TT, KS=KS, NT=NT, has_bias=HAS_BIAS,
                                   epi=epi)

    @T.macro
    def cp_tile(Sm, base, src, row0, col0, NR, NC, CH, NROWS, tid):
        # NROWS x CH 16-byte chunks of src[row0:, col0:] -> Sm[base:] (rows of CH chunks, XOR-swizzled);
        # src-size 0 zero-fills chunks outside the NR x NC matrix
        for it in T.unroll(ceil_div(NROWS * CH, NT)):
            e = it * NT + tid
            if e < NROWS * CH:
                r = e // CH
                c = e % CH
                row = row0 + r
                kc = col0 + c * 8
                T.ptx[CP](T.address_of(Sm[base + r * CH * 8 + (c ^ _swz(r, CH)) * 8]),
                          T.address_of(src[T.min(row, NR - 1), T.min(kc, NC - 8)]), 16,
                          T.if_then_else(row < NR and kc < NC, T.uint32(16), T.uint32(0)))

    @T.macro
    def load_stage(Wv, Wm, X, Sm, Ms, tid, bx, by, kt, st):
        cp_tile(Sm, st * BM * BKA, Wv, bx * BM, kt * BKA, O, KA, CHA, BM, tid)      # weight (A), 2:4 compressed
        cp_tile(Sm, ASZ + st * BN * BK, X, by * BN, kt * BK, TT, K, CHB, BN, tid)   # activations (B)
        if SP:
            # metadata: per 16-row block of the tile, BK/16 blocks of 8 words (two 16-byte copies each)
            for it in T.unroll(M_IT):
                e = it * NT + tid
                if e < M_CP:
                    rb = e // ((BK // 16) * 2)
                    j = e % ((BK // 16) * 2)
                    grb = bx * (BM // 16) + rb
                    kb = kt * (BK // 16) + j // 2
                    T.ptx[CP](T.address_of(Ms[st * MW + rb * (BK // 16) * 8 + j * 4]),
                              T.address_of(Wm[T.min(grb, NRT16 - 1), T.min(kb, KB16 - 1), (j % 2) * 4]), 16,
                              T.if_then_else(grb < NRT16 and kb < KB16, T.uint32(16), T.uint32(0)))

    @T.macro
    def compute_stage(Sm, Ms, af, bf, acc, mt, lane, wmi, wni, st):
        for kk in T.unroll(BK // 16):
            # A fragments
            for mf in T.unroll(MF):
                if SP:
                    if kk % 2 == 0:
                        ra = wmi * WTM + mf * 16 + lane % 16
                        ca = (kk // 2) * 2 + lane // 16
                        T.ptx[LDX4](af[mf * 4 + 0], af[mf * 4 + 1], af[mf * 4 + 2], af[mf * 4 + 3],
                                    T.address_of(Sm[st * BM * BKA + ra * BKA + (ca ^ _swz(ra, CHA)) * 8]))
                    mt[mf] = Ms[st * MW + ((wmi * WTM + mf * 16) // 16) * (BK // 16) * 8 + kk * 8 + lane // 4]
                else:
                    ra = wmi * WTM + mf * 16 + lane % 16
                    ca = kk * 2 + lane // 16
                    T.ptx[LDX4](af[mf * 4 + 0], af[mf * 4 + 1], af[mf * 4 + 2], af[mf * 4 + 3],
                                T.address_of(Sm[st * BM * BKA + ra * BKA + (ca ^ _swz(ra, CHA)) * 8]))
            # B fragments, two n8 tiles per ldmatrix.x4
            for nf2 in T.unroll(NF // 2):
                rb = wni * WTN + nf2 * 16 + (lane // 16) * 8 + lane % 8
                cb = kk * 2 + (lane // 8) % 2
                T.ptx[LDX4](bf[nf2 * 4 + 0], bf[nf2 * 4 + 1], bf[nf2 * 4 + 2], bf[nf2 * 4 + 3],
                            T.address_of(Sm[ASZ + st * BN * BK + rb * BK + (cb ^ _swz(rb, CHB)) * 8]))
            for mf in T.unroll(MF):
                for nf in T.unroll(NF):
                    ai = (mf * NF + nf) * 4
                    if SP:
                        h = (kk % 2) * 2
                        T.ptx[MMASP](acc[ai], acc[ai + 1], acc[ai + 2], acc[ai + 3],
                                     af[mf * 4 + h], af[mf * 4 + h + 1], bf[nf * 2], bf[nf * 2 + 1],
                                     acc[ai], acc[ai + 1], acc[ai + 2], acc[ai + 3], mt[mf], 0)
                    else:
                        T.ptx[MMA](acc[ai], acc[ai + 1], acc[ai + 2], acc[ai + 3],
                                   af[mf * 4], af[mf * 4 + 1], af[mf * 4 + 2], af[mf * 4 + 3],
                                   bf[nf * 2], bf[nf * 2 + 1], acc[ai], acc[ai + 1], acc[ai + 2], acc[ai + 3])

    @T.macro
    def tile(Wv, Wm, X, bias, Y, bx, by, bz, tid):
        Sm = T.alloc_buffer((SMN,), dt, scope="shared")
        Su = T.decl_buffer((SMN // 2,), "uint32", data=Sm.data, scope="shared")
        Ms = T.alloc_buffer((MSZ,), "uint32", scope="shared")
        af = T.alloc_buffer((MF * 4,), "uint32", scope="local")
        bf = T.alloc_buffer((NF * 2,), "uint32", scope="local")
        mt = T.alloc_buffer((MF,), "uint32", scope="local")
        acc = T.alloc_buffer((MF * NF * 4,), "float32", scope="local")
        cv = T.alloc_buffer((8,), dt, scope="local")
        cu = T.alloc_buffer((4,), "uint32", scope="local")
        lane = tid % 32
        wmi = (tid // 32) % WM
        wni = tid // (32 * WM)
        k0 = bz * NKS                                   # this split's first k-tile
        nkz = T.min(NKS, NK - k0)                       # and its k-tile count (>= 1)
        for i in T.unroll(MF * NF * 4):
            acc[i] = T.float32(0)
        for s0 in T.unroll(S - 1):
            if s0 < nkz:
                load_stage(Wv, Wm, X, Sm, Ms, tid, bx, by, k0 + s0, s0)
            T.ptx["cp.async.commit_group"]()
        for i in range(nkz):
            T.ptx["cp.async.wait_group"](S - 2)
            T.tvm_storage_sync("shared")
            if i + S - 1 < nkz:
                load_stage(Wv, Wm, X, Sm, Ms, tid, bx, by, k0 + i + S - 1, (i + S - 1) % S)
            T.ptx["cp.async.commit_group"]()
            compute_stage(Sm, Ms, af, bf, acc, mt, lane, wmi, wni, i % S)
        # staged epilogue: accumulators (+ bias, activation) -> Sm[token, row] -> 16-byte rows of Y.
        # c0,c1 = (row g, tokens 2q, 2q+1), c2,c3 = (row g+8, ...)
        T.ptx["cp.async.wait_group"](0)
        T.tvm_storage_sync("shared")
        for mf in T.unroll(MF):
            for nf in T.unroll(NF):
                for h in T.unroll(2):
                    for j in T.unroll(2):
                        ol = wmi * WTM + mf * 16 + lane // 4 + 8 * h
                        tl = wni * WTN + nf * 8 + (lane % 4) * 2 + j
                        v = acc[(mf * NF + nf) * 4 + h * 2 + j]
                        stage(Sm, bias, bx, bz, ol, tl, v)
        store(Sm, Su, cv, cu, Y, bx, by, tid)

    @T.macro
    def body(Wv, Wm, X, bias, Y):
        if KS > 1:
            zero_y(Y)    # split-K sums into Y with atomics: zero it first (a launch of its own)
        for bz in T.thread_binding(KS, thread="blockIdx.y"):
            for lin in T.thread_binding(grid_m * grid_n, thread="blockIdx.x"):
                for tid in T.thread_binding(NT, thread="threadIdx.x"):
                    # rasterisation: groups of GM row tiles, each swept over every token tile (L2 reuse)
                    gsz = T.min(GM, grid_m - (lin // (GM * grid_n)) * GM)
                    r = lin % (GM * grid_n)
                    tile(Wv, Wm, X, bias, Y, (lin // (GM * grid_n)) * GM + r % gsz, r // gsz, bz, tid)

    if SP:
        @T.prim_func
        def kern(a_values: T.handle, a_meta: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            Wv = T.match_buffer(a_values, (O, KA), dt)
            Wm = T.match_buffer(a_meta, (NRT16, KB16, 8), "int32")
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            body(Wv, Wm, X, bias, Y)
    else:
        @T.prim_func
        def kern(a_values: T.handle, x: T.handle, b: T.handle, y: T.handle):  # noqa: F811
            T.func_attr({"tirx.noalias": True})
            Wv = T.match_buffer(a_values, (O, KA), dt)
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            body(Wv, Wv, X, bias, Y)
    if not HAS_BIAS:
        from sparsec.backends.kernels.common import drop_param

        kern = drop_param(kern, "bias")
    return kern
