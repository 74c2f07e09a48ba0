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

from sparsec.backends.kernels.common import Arg, KernelError, Knob, MatmulSpec, ceil_div, epilogue, meta_of

KNOBS = (
    Knob("bm", (32, 64, 128), None, "weight rows (O) per block"),
    Knob("bn", (32, 64, 128), None, "tokens per block"),
    Knob("bk", (32, 64), None, "reduction columns per pipeline stage"),
    Knob("wm", (1, 2, 4), None, "warps along O"),
    Knob("wn", (1, 2, 4), None, "warps along T"),
    Knob("stages", (2, 3, 4, 5), None, "cp.async pipeline depth"),
)
SMEM_LIMIT = 48 * 1024          # static shared memory per block


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

    def smem_bytes(self) -> int:
        a = self.bm * self.bk * (1 if self.sparse else 2)
        m = self.bm * self.bk // 8 if self.sparse else 0
        return self.stages * (a + self.bn * self.bk * 2 + m)


def default_knobs(O: int, K: int, T: int, sparse: bool = False) -> dict:
    """Tile defaults: large tiles when there are enough blocks to fill 132 SMs, smaller ones otherwise."""
    if T >= 512:
        kn = dict(bm=128, bn=128, bk=32, wm=2, wn=4, stages=3)
        if ceil_div(O, 128) * ceil_div(T, 128) < 132:
            kn = dict(bm=64, bn=128, bk=32, wm=2, wn=4, stages=4)
    elif T > 32:
        kn = dict(bm=64, bn=64, bk=32, wm=2, wn=2, stages=4)
        if ceil_div(O, 64) * ceil_div(T, 64) < 132:
            kn = dict(bm=32, bn=64, bk=64, wm=1, wn=4, stages=4)
    else:
        kn = dict(bm=32, bn=32, bk=64, wm=2, wn=2, stages=4)
    if sparse and kn["bk"] == 32 and kn["bm"] == 32:
        kn["bk"] = 64
    return kn


def resolve(O: int, K: int, T: int, sparse: bool, knobs: dict | None, spec: MatmulSpec) -> MmaSpec:
    knobs = dict(knobs or {})
    space = {k.name: k for k in KNOBS}
    for name, v in knobs.items():
        if name not in space:
            raise KernelError(f"cuda mma kernel: unknown knob {name!r}; knobs are {', '.join(space)}")
        if v is not None and v not in space[name].candidates:
            raise KernelError(f"cuda mma kernel: knob {name}={v!r} is not one of {space[name].candidates}")
    kn = default_knobs(O, K, T, sparse)
    kn.update({k: v for k, v in knobs.items() if v is not None})
    ms = MmaSpec(spec, sparse, kn["bm"], kn["bn"], kn["bk"], kn["wm"], kn["wn"], kn["stages"])
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
    if meta.format == "dense":
        sparse = False
    elif meta.format == "nm" and (meta.param("n"), meta.param("m")) == (2, 4):
        sparse = True
    else:
        raise KernelError(f"cuda mma kernel: dense or 2:4 weights only (got {meta.format!r}"
                          + (f" {meta.param('n')}:{meta.param('m')}" if meta.format == "nm" else "") + ")")
    if meta.dtype not in ("float16", "bfloat16"):
        raise KernelError(f"cuda mma kernel: dtype {meta.dtype} unsupported (float16, bfloat16)")
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
                        "stages": ms.stages}


def _generate(ms: MmaSpec):
    from tvm.script import tirx as T

    spec = ms.spec
    O, K, TT, dt = spec.out_features, spec.in_features, spec.tokens, spec.dtype
    SP = ms.sparse
    BM, BN, BK, WM, WN, S = ms.bm, ms.bn, ms.bk, ms.wm, ms.wn, ms.stages
    NT = 32 * WM * WN
    WTM, WTN = BM // WM, BN // WN
    MF, NF = WTM // 16, WTN // 8
    NK = ceil_div(K, BK)
    KA = K // 2 if SP else K                 # A row length (compressed for 2:4)
    BKA = BK // 2 if SP else BK              # A tile row length
    CHA, CHB = BKA // 8, BK // 8             # 16-byte chunks per tile row
    A_CP, B_CP = BM * CHA, BN * CHB          # 16-byte copies per stage
    A_IT, B_IT = ceil_div(A_CP, NT), ceil_div(B_CP, NT)
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
    ASZ = S * BM * BKA
    BSZ = S * BN * BK
    MSZ = S * MW if SP else 1
    grid_m, grid_n = ceil_div(O, BM), ceil_div(TT, BN)

    def cvt(e):
        return T.Cast(dt, e)

    @T.macro
    def load_stage(Wv, Wm, X, As, Bs, Ms, tid, bx, by, kt, st):
        # weight (A) tile: BM rows x CHA chunks; 2:4 rows are compressed (K/2 long)
        for it in T.unroll(A_IT):
            e = it * NT + tid
            if e < A_CP:
                r = e // CHA
                c = e % CHA
                row = bx * BM + r
                kc = kt * BKA + c * 8
                T.ptx[CP](T.address_of(As[st * BM * BKA + r * BKA + (c ^ _swz(r, CHA)) * 8]),
                          T.address_of(Wv[T.min(row, O - 1), T.min(kc, KA - 8)]), 16,
                          T.if_then_else(row < O and kc < KA, T.uint32(16), T.uint32(0)))
        for it in T.unroll(B_IT):
            e = it * NT + tid
            if e < B_CP:
                r = e // CHB
                c = e % CHB
                tok = by * BN + r
                kc = kt * BK + c * 8
                T.ptx[CP](T.address_of(Bs[st * BN * BK + r * BK + (c ^ _swz(r, CHB)) * 8]),
                          T.address_of(X[T.min(tok, TT - 1), T.min(kc, K - 8)]), 16,
                          T.if_then_else(tok < TT and kc < K, T.uint32(16), T.uint32(0)))
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
    def compute_stage(As, Bs, Ms, af, bf, acc, mt, lane, wmi, wni, st):
        for kk in T.unroll(BK // 16):
            # A fragments
            for mf in T.unroll(MF):
                if SP:
                    if kk % 2 == 0:
                        ra = wmi * WTM + mf * 16 + lane % 16
                        ca = (kk // 2) * 2 + lane // 16
                        T.ptx[LDX4](af[mf * 4 + 0], af[mf * 4 + 1], af[mf * 4 + 2], af[mf * 4 + 3],
                                    T.address_of(As[st * BM * BKA + ra * BKA + (ca ^ _swz(ra, CHA)) * 8]))
                    mt[mf] = Ms[st * MW + ((wmi * WTM + mf * 16) // 16) * (BK // 16) * 8 + kk * 8 + lane // 4]
                else:
                    ra = wmi * WTM + mf * 16 + lane % 16
                    ca = kk * 2 + lane // 16
                    T.ptx[LDX4](af[mf * 4 + 0], af[mf * 4 + 1], af[mf * 4 + 2], af[mf * 4 + 3],
                                T.address_of(As[st * BM * BKA + ra * BKA + (ca ^ _swz(ra, CHA)) * 8]))
            # B fragments, two n8 tiles per ldmatrix.x4
            for nf2 in T.unroll(NF // 2):
                rb = wni * WTN + nf2 * 16 + (lane // 16) * 8 + lane % 8
                cb = kk * 2 + (lane // 8) % 2
                T.ptx[LDX4](bf[nf2 * 4 + 0], bf[nf2 * 4 + 1], bf[nf2 * 4 + 2], bf[nf2 * 4 + 3],
                            T.address_of(Bs[st * BN * BK + rb * BK + (cb ^ _swz(rb, CHB)) * 8]))
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
    def body(Wv, Wm, X, bias, Y):
        for by in T.thread_binding(grid_n, thread="blockIdx.y"):
            for bx in T.thread_binding(grid_m, thread="blockIdx.x"):
                for tid in T.thread_binding(NT, thread="threadIdx.x"):
                    As = T.alloc_buffer((ASZ,), dt, scope="shared")
                    Bs = T.alloc_buffer((BSZ,), dt, scope="shared")
                    Ms = T.alloc_buffer((MSZ,), "uint32", scope="shared")
                    af = T.alloc_buffer((MF * 4,), "uint32", scope="local")
                    bf = T.alloc_buffer((NF * 2,), "uint32", scope="local")
                    mt = T.alloc_buffer((MF,), "uint32", scope="local")
                    acc = T.alloc_buffer((MF * NF * 4,), "float32", scope="local")
                    lane = tid % 32
                    wmi = (tid // 32) % WM
                    wni = tid // (32 * WM)
                    for i in T.unroll(MF * NF * 4):
                        acc[i] = T.float32(0)
                    for s0 in T.unroll(S - 1):
                        if s0 < NK:
                            load_stage(Wv, Wm, X, As, Bs, Ms, tid, bx, by, s0, s0)
                        T.ptx["cp.async.commit_group"]()
                    for kt in range(NK):
                        T.ptx["cp.async.wait_group"](S - 2)
                        T.tvm_storage_sync("shared")
                        if kt + S - 1 < NK:
                            load_stage(Wv, Wm, X, As, Bs, Ms, tid, bx, by, kt + S - 1, (kt + S - 1) % S)
                        T.ptx["cp.async.commit_group"]()
                        compute_stage(As, Bs, Ms, af, bf, acc, mt, lane, wmi, wni, kt % S)
                    # epilogue: c0,c1 = (row g, tokens 2q, 2q+1), c2,c3 = (row g+8, ...)
                    for mf in T.unroll(MF):
                        for nf in T.unroll(NF):
                            for h in T.unroll(2):
                                for j in T.unroll(2):
                                    o = bx * BM + wmi * WTM + mf * 16 + lane // 4 + 8 * h
                                    t = by * BN + wni * WTN + nf * 8 + (lane % 4) * 2 + j
                                    if o < O and t < TT:
                                        if HAS_BIAS:
                                            Y[t, o] = cvt(epi(acc[(mf * NF + nf) * 4 + h * 2 + j]
                                                              + T.Cast("float32", bias[o])))
                                        else:
                                            Y[t, o] = cvt(epi(acc[(mf * NF + nf) * 4 + h * 2 + j]))

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
