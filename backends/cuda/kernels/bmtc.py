"""The ``bmtc`` CUDA kernel: unstructured sparse weights as a bitmap in mma-fragment order, decoded in registers.

``Y[T, O] = act(X[T, K] @ W[O, K]^T + bias)`` for skinny ``T`` (decode), ``W`` in the layout of
``bmtc_layout.py`` (2 bytes per non-zero + 1 bit per element). No shared-memory scatter: each lane expands
its own A fragment registers from its 16-bit mask and its packed values.

- grid ``(row groups, token tiles, k splits)``, ``warps`` warps per block; the warps of the ``ksplit``
  blocks of a row group split its stages (contiguous ranges); warps synchronise only with ``__syncwarp``
  (warp-private shared buffers reached through a pointer TVM's ThreadSync does not see, as in ``tiled``);
- per stage, the stage's masks (``32 * nw`` words) and packed values (one contiguous run) are copied into
  the warp's shared buffer with 16-byte ``cp.async``; two buffers per warp: the copies of stage ``s + 1`` are
  in flight while stage ``s`` is decoded and multiplied (``cp.async.wait_group 1``);
- decode: per pair of units one shuffle scan (5 ``shfl.up``) of the lanes' popcounts packed in two 16-bit
  fields gives each lane the start of its values; then per A register ``R`` (two halves, mask bits ``R`` and
  ``R + 8``): ``j = popc(m & P_R)`` (P_R: the bits of earlier registers and bit ``R``), two ``ld.shared.u16``
  at ``start + j - 1`` and ``start + j``, and one ``prmt`` whose selector ``0x7632 - 0x22 * (m >> R & 0x101)``
  keeps a half or takes a zero byte pair: ~9 instructions per register, none per non-zero;
- the B fragments (8 contiguous activations per lane and n8 tile) come from global memory (L2), then
  ``mma.sync.m16n8k16`` with fp32 accumulation; warps' partial sums meet in shared memory (fp32 atomics),
  bias + activation with one split, fp16/bf16 atomics into a zeroed ``Y`` with ``ksplit > 1``.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from sparsec.backends.cuda.kernels.staged import warp_reduce_epilogue
from sparsec.backends.kernels.common import Arg, KernelError, MatmulSpec, ceil_div, epilogue, meta_of

KNOBS = {"rt": (1, 2, 4), "sc": (32, 64, 128), "warps": (1, 2, 4, 8, 16), "ksplit": (1, 2, 3, 4, 6, 8, 12, 16),
         "tn": (8, 16, 24, 32), "nbuf": (2, 3, 4, 6)}
MIN_BLOCKS = 792             # default split: at least 6 blocks per H100 SM (132) ...
MIN_PER = 4                  # ... while a warp keeps >= this many stages (pipelining)
SMEM = 48 * 1024


@dataclass(frozen=True)
class BmtcSpec:
    spec: MatmulSpec
    rt: int
    sc: int
    warps: int
    ksplit: int
    tn: int
    nbuf: int = 2

    @property
    def ngroups(self) -> int:
        return ceil_div(self.spec.out_features, 16 * self.rt)

    @property
    def nstages(self) -> int:
        return ceil_div(self.spec.in_features, self.sc)

    @property
    def nu(self) -> int:
        return self.rt * self.sc // 32

    @property
    def nw(self) -> int:
        return (self.nu + 1) // 2

    def knobs(self) -> dict:
        return {"design": "bmtc", "rt": self.rt, "sc": self.sc, "warps": self.warps, "ksplit": self.ksplit,
                "tn": self.tn, "nbuf": self.nbuf}


def buf_halves(rt: int, sc: int) -> int:
    """One stage buffer (halves): masks (32 * nw words), 8 halves of padding, the values of a full stage."""
    nw = (rt * sc // 32 + 1) // 2
    return 64 * nw + 8 + 16 * rt * sc


def smem_bytes(rt, sc, warps, tn, nbuf=2) -> int:
    return warps * nbuf * buf_halves(rt, sc) * 2 + (16 * rt + 4) * tn * 4


def resolve(spec: MatmulSpec, knobs: dict | None) -> BmtcSpec:
    knobs = {k: v for k, v in dict(knobs or {}).items() if k != "design"}
    for k, v in knobs.items():
        if k not in KNOBS:
            raise KernelError(f"cuda bmtc kernel: unknown knob {k!r}; knobs are {', '.join(KNOBS)}")
        if v is not None and v not in KNOBS[k]:
            raise KernelError(f"cuda bmtc kernel: knob {k}={v!r} is not one of {KNOBS[k]}")
    if spec.dtype not in ("float16", "bfloat16"):
        raise KernelError(f"cuda bmtc kernel: dtype {spec.dtype} unsupported (float16, bfloat16)")
    Tt = spec.tokens
    tn = knobs.get("tn") or min(32, ceil_div(Tt, 8) * 8)
    # defaults: the fastest measured variants (H100, 2026-11-23, benchmarks/results/dev/bmtc_run3.*): T <= 8
    # rt=1, sc=64, 4 warps (4 buffers); more tokens rt=2, sc=32, 8 warps (2 buffers)
    rt = knobs.get("rt") or (1 if Tt <= 8 else 2)
    sc = knobs.get("sc") or (64 if Tt <= 8 else 32)
    warps = knobs.get("warps") or (4 if Tt <= 8 else 8)
    nbuf = knobs.get("nbuf") or max(b for b in KNOBS["nbuf"] if smem_bytes(rt, sc, warps, tn, b) <= SMEM or b == 2)
    ngr = ceil_div(spec.out_features, 16 * rt)
    nst = ceil_div(spec.in_features, sc)
    ntt = ceil_div(Tt, tn)
    ks = knobs.get("ksplit")
    if ks is None:
        ks = 1
        if spec.activation is None:
            for cand in KNOBS["ksplit"]:
                if cand > 1 and ceil_div(nst, cand * warps) < MIN_PER:
                    break
                ks = cand
                if ngr * ntt * cand >= MIN_BLOCKS:
                    break
    if spec.activation is not None and ks > 1:
        raise KernelError("cuda bmtc kernel: ksplit > 1 sums partial results with atomics, which an "
                          "activation cannot follow; use ksplit=1")
    smem = smem_bytes(rt, sc, warps, tn, nbuf)
    if smem > SMEM:
        raise KernelError(f"cuda bmtc kernel: {smem} bytes of shared memory (at most 48 KiB): lower warps, rt or sc")
    return BmtcSpec(spec, rt, sc, warps, ks, tn, nbuf)


def bmtc_args(bs: BmtcSpec, dtype: str) -> list[Arg]:
    sp = bs.spec
    args = [Arg("bm_values", dtype, ("n",)), Arg("bm_mask", "int32", (bs.ngroups * bs.nstages * 32 * bs.nw,)),
            Arg("bm_ptr", "int32", (bs.ngroups * bs.nstages + 1,)), Arg("X", dtype, (sp.tokens, sp.in_features))]
    if sp.bias:
        args.append(Arg("bias", dtype, (sp.out_features,)))
    args.append(Arg("Y", dtype, (sp.tokens, sp.out_features)))
    return args


def cuda_bmtc_matmul_primfunc(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                              knobs: dict | None = None, name: str | None = None):
    """TIR of the bmtc kernel: ``(PrimFunc, args, resolved knobs)``; the weight buffers come from
    ``bmtc_layout.build(fmt, knobs['rt'], knobs['sc'])`` (names ``bm_values, bm_mask, bm_ptr``)."""
    meta = meta_of(weight)
    spec = MatmulSpec(int(tokens), meta.rows, meta.cols, bool(bias), activation, meta.dtype)
    bs = resolve(spec, knobs)
    func = generate(bs).with_attr("global_symbol", name or "sparsec_cuda_bmtc_matmul")
    return func, bmtc_args(bs, meta.dtype), bs.knobs()


def generate(bs: BmtcSpec):
    sp = bs.spec
    O, K, TT, dt = sp.out_features, sp.in_features, sp.tokens, sp.dtype
    RT, SC, W, KS, TN = bs.rt, bs.sc, bs.warps, bs.ksplit, bs.tn
    NS = TN // 8
    RG = 16 * RT
    NGR, NST = bs.ngroups, bs.nstages
    NTT = ceil_div(TT, TN)
    NU, NW = bs.nu, bs.nw
    NB = bs.nbuf                        # stage buffers per warp: NB - 1 stages' copies in flight
    D = NB - 1
    MASKH = 64 * NW                     # halves of a stage's masks in the buffer
    BUFH = buf_halves(RT, SC)           # one stage buffer
    VOFF = MASKH + 8                    # values start (halves); the 8 before them make index -1 readable
    NMC = 8 * NW                        # 16-byte mask chunks per stage
    PER = ceil_div(NST, KS * W)         # stages per warp
    NCH = SC // 32
    VECK = K % 8 == 0
    HAS_BIAS = sp.bias
    epi = epilogue(sp.activation)
    ptx_t = "fp16" if dt == "float16" else "bf16"
    zero = T.Cast(dt, T.float32(0))
    ACC = RT * NS * 4
    RS = RG + 4
    NRED = TN * RS
    reduce_store = warp_reduce_epilogue(dt=dt, RT=RT, NS=NS, RS=RS, RG=RG, TN=TN, W=W, O=O, TT=TT, KS=KS,
                                        has_bias=HAS_BIAS, epi=epi)   # red[TN][RS] -> Y (bias, activation)
    FULL = T.uint32(0xFFFFFFFF)
    CP = "cp.async.cg.shared.global"
    NMASK = NGR * NST * 32 * NW

    def s_first(bz, ty):
        return T.min((bz * W + ty) * PER, NST)

    def s_end(bz, ty):
        return T.min(T.min((bz * W + ty) * PER, NST) + PER, NST)

    def xtok(by, tx, ns):
        return by * TN + ns * 8 + tx // 4

    def xk0(s, c, tx):
        return s * SC + c * 32 + (tx % 4) * 8

    def popc(x):
        return T.call_extern("int32", "__popc", x)

    def spread4(x):
        # bits 0..3 of x (x < 16) -> the low bit of bytes 0..3
        return T.bitwise_and(x * T.uint32(0x00204081), T.uint32(0x01010101))

    @T.macro
    def load_x(X, xv, xs, by, tx, s):
        for c in T.unroll(NCH):
            for ns in T.unroll(NS):
                if VECK:
                    if xtok(by, tx, ns) < TT and xk0(s, c, tx) < K:
                        for j in T.vectorized(8):
                            xv[j] = X[xtok(by, tx, ns), xk0(s, c, tx) + j]
                    else:
                        for j in T.unroll(8):
                            xv[j] = zero
                else:
                    for j in T.unroll(8):
                        xv[j] = T.if_then_else(xtok(by, tx, ns) < TT and xk0(s, c, tx) + j < K,
                                               X[T.min(xtok(by, tx, ns), TT - 1), T.min(xk0(s, c, tx) + j, K - 1)],
                                               zero)
                for j in T.unroll(8):
                    xs[(c * NS + ns) * 8 + j] = xv[j]

    def bbase(ty, b):
        return (ty * NB + b) * BUFH

    @T.macro
    def issue(vals, mask, stv, bx, ty, tx, gs_local, b, lo, hi):
        # cp.async of stage (bx, gs_local)'s masks and values into buffer b of warp ty
        if tx < NMC:
            T.ptx[CP](T.address_of(stv[bbase(ty, b) + tx * 8]),
                      T.address_of(mask[(bx * NST + gs_local) * 32 * NW + tx * 4]), 16, T.uint32(16))
        for it in range((hi - lo + 31) // 32):
            if lo + it * 32 + tx < hi:
                T.ptx[CP](T.address_of(stv[bbase(ty, b) + VOFF + (it * 32 + tx) * 8]),
                          T.address_of(vals[(lo + it * 32 + tx) * 8]), 16, T.uint32(16))

    @T.macro
    def compute(stv, stm, xs, af, acc, mw, cw, sw, st, mk, jb, tx, ty, b):
        for w in T.unroll(NW):
            mw[w] = stm[(ty * NB + b) * (BUFH // 2) + tx * NW + w]
        # per mask word: packed popcounts (unit 2w low 16 bits, 2w+1 high), inclusive scan over the lanes
        sw[2] = 0                                     # running base of the unit (halves, in the stage run)
        for w in T.unroll(NW):
            cw[0] = popc(T.bitwise_and(mw[w], T.uint32(0xFFFF)))
            cw[0] = cw[0] + T.shift_left(popc(mw[w]) - cw[0], 16)
            cw[1] = cw[0]
            for d in T.unroll(5):
                cw[2] = T.tvm_warp_shuffle_up(FULL, cw[1], 1 << d, 32, 32)
                if tx >= (1 << d):
                    cw[1] = cw[1] + cw[2]
            cw[2] = T.tvm_warp_shuffle(FULL, cw[1], 31, 32, 32)       # the two units' totals
            cw[1] = cw[1] - cw[0]                                     # exclusive prefix
            for hh in T.unroll(2):
                if 2 * w + hh < NU:
                    st[0] = bbase(ty, b) + VOFF + sw[2] + T.bitwise_and(T.shift_right(cw[1], 16 * hh), 0xFFFF)
                    mk[0] = T.bitwise_and(T.shift_right(mw[w], T.uint32(16 * hh)), T.uint32(0xFFFF))
                    # j_R = (set bits of registers < R) + bit R, for the 8 registers at once, one byte each
                    # (POPC is quarter rate): spread the 4-bit groups of b0 = m & 0xFF, b1 = m >> 8 to bytes,
                    # byte-wise inclusive prefix by multiplying with 0x01010101, minus b1
                    jb[2] = spread4(T.bitwise_and(T.shift_right(mk[0], T.uint32(8)), T.uint32(0xF)))
                    jb[3] = spread4(T.shift_right(mk[0], T.uint32(12)))
                    jb[0] = (spread4(T.bitwise_and(mk[0], T.uint32(0xF))) + jb[2]) * T.uint32(0x01010101)
                    jb[1] = ((spread4(T.bitwise_and(T.shift_right(mk[0], T.uint32(4)), T.uint32(0xF))) + jb[3])
                             + T.shift_right(jb[0], T.uint32(24))) * T.uint32(0x01010101)
                    jb[0] = jb[0] - jb[2]
                    jb[1] = jb[1] - jb[3]
                    for R in T.unroll(8):
                        st[1] = st[0] + T.Cast("int32", T.call_extern("uint32", "__byte_perm", jb[R // 4], T.uint32(0),
                                                                      T.uint32(0x4440 + R % 4)))
                        # lo = the half at j - 1 (element (R, 0) when b0), hi = the one at j ((R, 1) when b1), both
                        # zero-extended: lo half = b0 ? bytes 0,1 : 2,3 (zero); hi half = b1 ? 4,5 : 6,7 (zero)
                        af[R] = T.call_extern(
                            "uint32", "__byte_perm", T.Cast("uint32", stv[st[1] - 1]), T.Cast("uint32", stv[st[1]]),
                            T.uint32(0x7632) - T.bitwise_and(T.shift_right(mk[0], T.uint32(R)), T.uint32(0x101))
                            * T.uint32(0x22))
                    for mm in T.unroll(2):
                        for ns in T.unroll(NS):
                            T.evaluate(T.ptx_legacy.mma("m16n8k16", "row", "col", ptx_t, ptx_t, "fp32",
                                                        af.data, mm * 4, xs.data,
                                                        (((2 * w + hh) // RT) * NS + ns) * 8 + mm * 4,
                                                        acc.data, (((2 * w + hh) % RT) * NS + ns) * 4, False,
                                                        dtype="float32"))
                    if hh == 0:
                        sw[2] = sw[2] + T.bitwise_and(cw[2], 0xFFFF)
                    else:
                        sw[2] = sw[2] + T.shift_right(cw[2], 16)

    @T.macro
    def body(vals, mask, sptr, X, bias, Y, bx, by, bz, ty, tx):
        st_ = T.alloc_buffer((W * NB * BUFH,), "uint16", scope="shared")
        stp: T.let = T.call_extern("handle", "(void*)", T.address_of(st_[0]))
        stv = T.decl_buffer((W * NB * BUFH,), "uint16", data=stp)
        stm = T.decl_buffer((W * NB * BUFH // 2,), "uint32", data=stp)
        red = T.alloc_buffer((NRED,), "float32", scope="shared")
        acc = T.alloc_buffer((ACC,), "float32", scope="local")
        xv = T.alloc_buffer((8,), dt, scope="local")
        xs = T.alloc_buffer((NCH * NS * 8,), dt, scope="local")
        af = T.alloc_buffer((8,), "uint32", scope="local")
        mw = T.alloc_buffer((NW,), "uint32", scope="local")
        cw = T.alloc_buffer((3,), "int32", scope="local")
        sw = T.alloc_buffer((3,), "int32", scope="local")
        st = T.alloc_buffer((2,), "int32", scope="local")
        mk = T.alloc_buffer((1,), "uint32", scope="local")
        jb = T.alloc_buffer((4,), "uint32", scope="local")
        # pv: [0] ptr of the stage being issued, [1] its end, [2] the end of the one after
        pv = T.alloc_buffer((3,), "int32", scope="local")
        for i in T.unroll(ceil_div(NRED, W * 32)):
            if i * W * 32 + ty * 32 + tx < NRED:
                red[i * W * 32 + ty * 32 + tx] = T.float32(0)
        for i in T.unroll(ACC):
            acc[i] = T.float32(0)
        # pv[1], pv[2]: the start and end of the next stage to issue (rolled one stage ahead)
        pv[0] = sptr[bx * NST + s_first(bz, ty)]
        pv[1] = pv[0]
        pv[2] = sptr[bx * NST + T.min(s_first(bz, ty) + 1, NST)]
        for d in T.unroll(D):
            if s_first(bz, ty) + d < s_end(bz, ty):
                issue(vals, mask, stv, bx, ty, tx, s_first(bz, ty) + d, d, pv[1], pv[2])
                pv[1] = pv[2]
                pv[2] = sptr[bx * NST + T.min(s_first(bz, ty) + d + 2, NST)]
            T.ptx["cp.async.commit_group"]()
        for si in range(s_end(bz, ty) - s_first(bz, ty)):
            if si + D < s_end(bz, ty) - s_first(bz, ty):
                issue(vals, mask, stv, bx, ty, tx, s_first(bz, ty) + si + D, (si + D) % NB, pv[1], pv[2])
                pv[1] = pv[2]
                pv[2] = sptr[bx * NST + T.min(s_first(bz, ty) + si + D + 2, NST)]
            T.ptx["cp.async.commit_group"]()
            load_x(X, xv, xs, by, tx, s_first(bz, ty) + si)
            T.ptx["cp.async.wait_group"](D)
            T.evaluate(T.cuda.warp_sync())
            compute(stv, stm, xs, af, acc, mw, cw, sw, st, mk, jb, tx, ty, si % NB)
            T.evaluate(T.cuda.warp_sync())
        T.ptx["cp.async.wait_group"](0)
        reduce_store(red, acc, Y, bias, bx, by, bz, ty, tx)
        if pv[0] < 0:
            # never true (stage pointers are >= 0), but not provably: a read of st_ over its whole extent, so TVM
            # keeps the allocation (its other accesses go through stp; see tiled.py)
            Y[0, 0] = T.Cast(dt, T.Cast("float32", st_[T.max(pv[0], 0) % (W * NB * BUFH)]))

    NY = TT * O
    if KS == 1:
        @T.prim_func
        def kern(a_vals: T.handle, a_mask: T.handle, a_ptr: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            n_ = T.int32()
            vals = T.match_buffer(a_vals, (n_,), dt)
            mask = T.match_buffer(a_mask, (NMASK,), "int32")
            sptr = T.match_buffer(a_ptr, (NGR * NST + 1,), "int32")
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            for bx in T.thread_binding(NGR, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for bz in T.thread_binding(KS, thread="blockIdx.z"):
                        for ty in T.thread_binding(W, thread="threadIdx.y"):
                            for tx in T.thread_binding(32, thread="threadIdx.x"):
                                body(vals, mask, sptr, X, bias, Y, bx, by, bz, ty, tx)
    else:
        @T.prim_func
        def kern(a_vals: T.handle, a_mask: T.handle, a_ptr: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            n_ = T.int32()
            vals = T.match_buffer(a_vals, (n_,), dt)
            mask = T.match_buffer(a_mask, (NMASK,), "int32")
            sptr = T.match_buffer(a_ptr, (NGR * NST + 1,), "int32")
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            Yf = T.decl_buffer((NY,), dt, data=Y.data)
            for zb in T.thread_binding(ceil_div(NY, 256), thread="blockIdx.x"):
                for zt in T.thread_binding(256, thread="threadIdx.x"):
                    if zb * 256 + zt < NY:
                        Yf[zb * 256 + zt] = zero
            for bx in T.thread_binding(NGR, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for bz in T.thread_binding(KS, thread="blockIdx.z"):
                        for ty in T.thread_binding(W, thread="threadIdx.y"):
                            for tx in T.thread_binding(32, thread="threadIdx.x"):
                                body(vals, mask, sptr, X, bias, Y, bx, by, bz, ty, tx)
    if not HAS_BIAS:
        from sparsec.backends.kernels.common import drop_param

        kern = drop_param(kern, "bias")
    return kern
