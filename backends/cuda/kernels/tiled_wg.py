"""``tiled`` with ``mma="wg"``: the decode kernel on Hopper warpgroup MMA (sm_90a).

``Y[T, O] = act(X[T, K] @ W[O, K]^T + bias)`` for skinny ``T``, ``W`` in the tiled layout with ``rt=1`` (16-row
strips) and the ``slots="wg"`` slot map (``tiled_layout.wg_slot_of``): a strip's stage of ``sc`` columns is decoded
straight into its 16 rows of a 128B-swizzled K-major ``wgmma`` A operand. What the ``mma.sync`` kernel holds per warp
(activation fragments in registers, loaded by every warp; 32 rows of accumulators) moves to shared memory and to
the warpgroup MMA:

- a block is ``wgs`` warpgroups (``4 wgs`` warps) owning ``64 wgs`` rows (warp ``w`` decodes strip
  ``4 wgs bx + w``; warpgroup ``w // 4`` multiplies rows ``64 (w // 4) ..``) x ``tn`` tokens x a range of
  ``ceil(nstages / ksplit)`` stages; grid (row blocks, token tiles, k splits);
- shared memory (dynamic, 1024-byte aligned): a ring of ``2 + wip`` A stage buffers (per warpgroup 64 rows x
  ``sc``: ``sc/64`` swizzle atoms of 8 KB) and a ring of ``xd + 2`` activation tiles (``tn`` tokens x ``sc``,
  128B-swizzled K-major: the ``wgmma`` B operand, shared by the block's warpgroups), the tiles filled ``xd`` stages
  ahead by ``cp.async`` (zero-filled past T and K);
- per stage, per warp: zero its strip of the A buffer (16-byte stores), ``__syncwarp``, scatter the stage's
  non-zeros (the first ``pb`` batches of 256 entries prefetched into registers ``pf`` stages earlier, ``code="pos"``
  or ``"pos7"``), prefetch those of stage ``si + pf``; then per block: ``cp.async.wait_group``,
  ``fence.proxy.async`` (the scatter and the copies are generic-proxy writes, wgmma reads through the async proxy),
  one barrier, the next activation tile's copies, ``sc/16`` x ``wgmma.mma_async.m64n{tn}k16`` per warpgroup (fp32
  accumulators, ``tn/2`` per thread), ``wgmma.wait_group(wip)``: with ``wip=1`` a stage's wgmma runs during the next
  stage's decode (the A ring has 3 buffers: a buffer is rewritten only after every warp has passed the wait for the
  wgmma that read it, one barrier earlier; ``resolve_wg`` refuses ``wip=1`` with ``pf=2``, which gave wrong results
  on the H100, docs/cuda.md);
- epilogue (``staged.staged_epilogue``, in the then idle rings): the accumulators (+ bias, activation) to a
  ``[tn, 64 wgs + 8]`` tile, then 16-byte rows of Y: stores with one k split, ``red.global.add.noftz.v4`` of
  fp16x2/bf16x2 into Y zeroed by a first launch otherwise (bias from split 0).

Session 9 knobs (H100 measurements in docs/cuda.md): ``ra=1`` (with ``wip=0``) an A ring of one buffer per strip: a
warp rewrites its strip once its own warpgroup's wgmma finished, the only reader; ``clear="unscatter"`` (opt-in,
measured slower) zeros at the slots the strip held ``ra`` stages earlier instead of zeroing it (positions of the
first ``pb`` batches kept in registers; a stage with more batches is zeroed whole the next time); ``xa=1`` (opt-in,
measured slower) the activations as the wgmma A operand from registers (64 tokens, 16-byte loads one stage ahead,
the layout's columns in the lanes' fragment order: ``slots="wgx"``) and the strips as the B operand
(``m64n64k16``), no activation tile in shared memory.

Session 10: ``sp=1`` (``sc`` 128 or 256, ``wip=0``, layout ``tiled_layout.build_wsp``) decodes each stage into the
**2:4 sparse operand** of ``wgmma.mma_async.sp ... m64n{tn}k32``: per row and group of 4 columns the first two non-zeros
go to the group's two slots of a compressed stage of ``sc/2`` columns (one or two swizzle atoms per 64 rows: half the A
tile to zero and
for the wgmma to read, which Nsight Compute showed was half the shared-memory traffic at 90 %), at the positions the
metadata words give (precomputed per strip stage in lane order: one 16-byte load per lane one stage ahead, straight
into the metadata registers, sparsity selector 0). The rest of a group (the *residual*, ~1 % of the non-zeros at
90 %, ~4 % at 80 %, ~8 % at 70 %) is added on CUDA cores from the stage's activation tile: rows of 8 words, word
``q`` for the accumulator rows ``q``/``q + 8`` the lanes ``4q..4q+3`` own, the first ``rp`` rows of a stage loaded
one stage ahead; ``rr=1`` adds them into registers of their own while the wgmma runs, ``rr=0`` into the
accumulators after it. 256-column stages (two atoms) halve the stages and barriers: the planner's 90 % variant below
32 tokens (``s256_run1``). H100 (``benchmarks/results/dev/wsp_run{1,2,3}``, 3 LLM shapes): at 90 % +2-19 % at T=8/16,
0.94-1.02x at T=32; at 70-80 % 0.4-0.95x (the residual's loads and FMAs: +37-53 % instructions at 90 %
already).
``wip=1`` is refused: it gave wrong results on 9216x36864 (likely, not proven: the next stage rewrites the metadata
registers while the previous wgmma may still read them).

Session 15: ``pdl=2`` (the planner's default) launches every kernel of the layer with programmatic dependent launch.
The main kernel runs ``griddepcontrol.launch_dependents`` first, then its prologue reads only the weight (stage
pointers, the first batches, the 2:4 metadata and residual rows), then ``griddepcontrol.wait`` (the previous kernel
on the stream has completed, its writes visible) before the activation copies; Y, the fixup's workspace and
counters are written later still. The zeroing launch of a split waits before it writes Y. H100: 1.02-1.21x in 29
of 36 LLM-shape cells (docs/cuda.md, "A layer's launch overlaps the previous kernel").

Session 16: ``fx=2`` (``ksplit`` 2-8) makes a tile's k splits one thread-block cluster (``toolchain.CLUSTER_ATTR``,
compiled in): every block puts its fp32 accumulators in its shared memory, a cluster barrier, block ``r`` sums its
share of the tile over the cluster (``mapa`` + ``ld.shared::cluster``, split order) and stores it with bias and
activation, a last cluster barrier (``cluster_sum_source``). One launch, no atomics, no workspace. Correct on the
H100 and slower in every measured cell: a cluster's blocks must share a GPC, which costs the near-one-wave grids the
tuner picks a second wave (docs/cuda.md, "The splits of a tile summed across a thread-block cluster").
"""
from __future__ import annotations

from tvm.script import tirx as T

from sparsec.backends.cuda.kernels.staged import zero_fill
from sparsec.backends.kernels.common import ceil_div, epilogue

ALIGN = 1024                 # 128B-swizzle atoms start 1024-byte aligned
# ldw: PTX cache qualifiers of the weight stream's loads (values, positions, 2:4 metadata): 0 = as TVM emits them
# (ld.global.nc); .L2::256B asks the L2 to fetch the whole 256-byte block around each miss (a strip's next bytes,
# which its next batch or stage reads); .L1::no_allocate keeps the streamed weight out of L1
LDW_HINTS = {1: ".L2::256B", 2: ".L1::no_allocate.L2::256B", 3: ".L1::no_allocate"}
# l2f: one bulk prefetch into L2 per warp and weight array (cp.async.bulk.prefetch.L2, sm_90) of its strip's bytes for
# the block's stages, issued first (with pdl=2 before griddepcontrol.wait: while the previous kernel runs)
L2F_SRC = r"""
__forceinline__ __device__ void sparsec_l2_prefetch(const void* p, unsigned int bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(p), "r"(bytes) : "memory");
}"""
ATOM = 4096                  # halves per 64-row x 64-column atom (8 KB)
SMEM_LIMIT = 227 * 1024


def smem_elems(sc: int, tn: int, wip: int, xd: int, wgs: int = 1, ra: int = 0, xa: int = 0, sp: int = 0,
               fx: int = 0) -> int:
    """Halves of dynamic shared memory: the A ring (``ra`` buffers, default ``2 + wip``; with ``sp=1`` a stage is
    ``sc/2`` compressed columns), the activation ring (none with ``xa=1``: the activations go to registers) and the
    alignment slack (the staged epilogue reuses the rings: at least its ``tn x (64 wgs + 8)`` tile; with ``fx=2`` the
    block's fp32 partials, ``128 wgs`` threads x ``tn / 2``)."""
    rings = ((ra or 2 + wip) * wgs * (sc // (128 if sp else 64)) * ATOM
             + (0 if xa else (xd + 2) * (sc // 64) * tn * 64))
    return max(rings, tn * (64 * wgs + 8), 128 * wgs * tn if fx == 2 else 0) + ALIGN // 2


def ldw_source(ldw: int, nbytes: int) -> tuple[str, str]:
    """``(name, CUDA source)`` of a ``nbytes``-byte (16 or 8) read-only global load with the cache qualifiers
    ``LDW_HINTS[ldw]``: ``name(dst, src)`` copies ``nbytes`` from ``src`` (global, aligned) to the registers at
    ``dst``."""
    hint = LDW_HINTS[ldw]
    name = f"sparsec_ldw{ldw}_b{nbytes}"
    if nbytes == 16:
        body = (f'uint4 r;\n  asm("ld.global.nc{hint}.v4.u32 {{%0, %1, %2, %3}}, [%4];" : "=r"(r.x), "=r"(r.y), '
                f'"=r"(r.z), "=r"(r.w) : "l"(s));')
    elif nbytes == 8:
        body = f'uint2 r;\n  asm("ld.global.nc{hint}.v2.u32 {{%0, %1}}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(s));'
    else:
        raise ValueError(f"ldw_source: {nbytes}-byte loads (16 or 8)")
    # the registers reach the caller's array (halves, int16 or int32) by memcpy, not a store through another type's
    # pointer (C++'s aliasing rules); the caller passes the array as a tvm_access_ptr with its extent (load_batch)
    return name, f"""
__forceinline__ __device__ void {name}(void* d, const void* s) {{
  {body}
  __builtin_memcpy(d, &r, {nbytes});
}}"""


def split_fixup_source(ts, ws_vec4: int, tiles: int, nacc: int, nt: int, ks: int) -> tuple[str, str]:
    """``(name, CUDA source)`` of ``fx=1``'s helpers and static device memory (one workspace and one counter per
    output tile, per kernel spec; zero at module load): ``name(0, acc, slot, tid)`` stores thread ``tid``'s ``nacc``
    fp32 accumulators in workspace ``slot`` (16-byte ``st.cg``, interleaved by thread) and fences them;
    ``name(1, acc, first, tid)`` sets the accumulators to the sum of slots ``first .. first + ks - 1`` in that order
    (``ld.cg``); ``name_last(tile)`` raises the tile's counter and returns 1 for the block that completes it, which
    resets it for the next launch (the CUDA threadFenceReduction pattern: every block's partial is fenced before
    its count). Two launches of one kernel must not overlap (the executor runs a model on one stream)."""
    from sparsec.backends.cuda.kernels.staged import fixup_memory, partial_store_src, partial_sum_src

    name, wsn, cnt, decls = fixup_memory(ts, "tfx", ws_vec4, tiles)
    nq = nacc // 4
    src = f"""
{decls}
__forceinline__ __device__ void {name}(int op, float* acc, int a, int tid) {{
  if (op == 0) {{
{partial_store_src(wsn, nq, nt)}
    __threadfence();
  }} else {{
#pragma unroll
    for (int i = 0; i < {nacc}; ++i) acc[i] = 0.f;
    {partial_sum_src(wsn, nq, nt, f"a + {ks}")}
  }}
}}
__forceinline__ __device__ int {name}_last(int t) {{
  unsigned int old = atomicAdd(&{cnt}[t], 1u);
  if (old == {ks - 1}u) {{
    {cnt}[t] = 0u;
    __threadfence();
    return 1;
  }}
  return 0;
}}"""
    return name, src


def cluster_sum_source(ts, nacc: int, nt: int, ks: int) -> tuple[str, str]:
    """``(name, CUDA source)`` of ``fx=2``'s helper. The ``ks`` blocks of a tile's k splits are one thread-block
    cluster (``toolchain.CLUSTER_ATTR``, rank = split); ``sm`` is the block's 16-byte aligned shared scratch.
    ``name(0, acc, sm, tid)``: thread ``tid`` stores its ``nacc`` fp32 accumulators there (float4 ``i`` at
    ``i * nt + tid``), then a cluster barrier (release / acquire: every block's partials visible to the cluster).
    ``name(1, out, sm, q)``: ``out[0..3]`` = float4 ``q`` summed over the cluster's blocks in rank order
    (``mapa`` + ``ld.shared::cluster``; the same order on every run). ``name(2, 0, sm, 0)``: a cluster barrier, so
    that no block exits while another still reads its shared memory."""
    import hashlib

    name = "sparsec_tcl_" + hashlib.sha1(repr(ts).encode()).hexdigest()[:12]
    nq = nacc // 4
    src = f"""
__forceinline__ __device__ void {name}(int op, float* acc, void* sm, int a) {{
  if (op == 0) {{
    float4* p = reinterpret_cast<float4*>(sm);
#pragma unroll
    for (int i = 0; i < {nq}; ++i)
      p[i * {nt} + a] = make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]);
  }}
  if (op == 1) {{
    unsigned int s = (unsigned int)__cvta_generic_to_shared(sm) + (unsigned int)a * 16u;
    float v[{ks}][4];
#pragma unroll
    for (int r = 0; r < {ks}; ++r) {{
      unsigned int ra;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(s), "r"(r));
      asm volatile("ld.shared::cluster.v4.f32 {{%0, %1, %2, %3}}, [%4];"
                   : "=f"(v[r][0]), "=f"(v[r][1]), "=f"(v[r][2]), "=f"(v[r][3]) : "r"(ra));
    }}
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[e] = 0.f;
#pragma unroll
    for (int r = 0; r < {ks}; ++r) {{
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[e] += v[r][e];
    }}
  }} else {{
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
  }}
}}"""
    return name, src


def generate_wg(ts):
    from sparsec.backends.cuda.kernels.staged import staged_epilogue
    from sparsec.backends.cuda.kernels.wgmma_gemm import smem_descriptor, wgmma_sp_source

    sp = ts.spec
    O, K, TT, dt = sp.out_features, sp.in_features, sp.tokens, sp.dtype
    SC, KS, BN = ts.sc, ts.ksplit, ts.tn
    NWG = ts.wgs                        # warpgroups per block (rows 64 * NWG, one activation tile)
    NWP = 4 * NWG                       # warps per block
    NT = 128 * NWG
    BM = 64 * NWG
    NAT = SC // 64                      # swizzle atoms per stage (of the activation tile)
    SP = bool(ts.sp)                    # the 2:4 sparse wgmma operand (sc/2 compressed columns) + a residual
    RR = bool(ts.rr)                    # sp: the residual into registers of its own during the wgmma
    NATA = NAT // 2 if SP else NAT      # swizzle atoms per A stage buffer (per warpgroup)
    NK = SC // 32                       # sp: k32 steps per stage (metadata words per lane)
    RP = ts.rp                          # sp: residual rows of a stage loaded into registers one stage ahead
    PDL = ts.pdl == 1 and KS > 1        # the main kernel launched with programmatic dependent launch (toolchain)
    PDL2 = ts.pdl == 2                  # every launch overlaps the previous one: the weight prologue before the wait
    FX = ts.fx == 1 and KS > 1          # the splits' fp32 partials summed by the last block (no zero launch, atomics)
    CL = ts.fx == 2 and KS > 1          # ... summed across the cluster of the tile's KS blocks (distributed smem)
    NGR, NST = ts.ngroups, ts.nstages   # 16-row strips, stages
    NBX = ceil_div(NGR, NWP)
    NTT = ceil_div(TT, BN)
    PER = ceil_div(NST, KS)             # stages per block
    PF = ts.pf                          # the first PB batches of a stage are loaded PF stages ahead
    PB = ts.pb
    SHFL = PER <= 31                    # a warp's stage pointers fit one per lane
    WIP = ts.wip
    RA = ts.ra or 2 + WIP               # A ring (ra=1 with wip=0: a warp rewrites its strip right after its own
    #                                     warpgroup's wgmma finished; only that wgmma reads the strip)
    XD = ts.xd                          # activation tiles in flight ahead
    RX = XD + 2                         # activation ring
    ASZ = NWG * NATA * ATOM             # halves per A stage buffer: [warpgroup][atom][64 rows][64 columns]
    XSZ = NAT * BN * 64
    XA = bool(ts.xa)                    # activations as the wgmma A operand, from registers; the weight as B
    SMN = smem_elems(SC, BN, WIP, XD, NWG, RA, ts.xa, ts.sp, fx=2 if CL else 0)
    NQ = SC // 32                       # xa: 16-byte activation chunks per token row and stage (per lane)
    P7 = ts.code == "pos7"
    PL = 2 if P7 else 8
    UNS = ts.clear == "unscatter"       # clear a stage buffer by storing zeros at the slots it held RA stages ago
    UW = PL * PB                        # position words of one stage's first PB batches (a retained set)
    PR_DT = "int32" if P7 else "int16"
    NACC = 32 if XA else BN // 2        # xa: D is 64 tokens x 64 weight rows per warpgroup
    ZIT = 1024 // 8 // 32               # 16-byte zero stores per lane and atom of a strip (4)
    XIT = ceil_div(BN * 8, NT)          # 16-byte activation copies per thread and atom
    CST = BM + 8
    LDW = bool(ts.ldw)                  # cache qualifiers on the weight stream's loads (LDW_HINTS[ts.ldw])
    L2F = bool(ts.l2f)                  # the block's weight bytes prefetched into L2 first (one bulk prefetch per warp)
    LD16 = ldw_source(ts.ldw, 16) if LDW else None
    LD8 = ldw_source(ts.ldw, 8) if LDW else None
    pt = {"float16": "f16", "bfloat16": "bf16"}[dt]
    WG = f"wgmma.mma_async.sync.aligned.m64n{64 if XA else BN}k16.f32.{pt}.{pt}"
    CP = "cp.async.cg.shared.global"
    SPN, SPSRC = wgmma_sp_source(BN, pt)
    FULL = T.uint32(0xFFFFFFFF)
    zero = T.Cast(dt, T.float32(0))
    # accumulators -> a [BN, BM + 8] tile in shared memory -> 16-byte rows of Y (red.global.add.v4 with a split)
    epi = epilogue(sp.activation)
    stage_acc, store_acc = staged_epilogue(dt=dt, BM=BM, BN=BN, CST=CST, O=O, TT=TT, KS=1 if FX else KS, NT=NT,
                                           has_bias=sp.bias, epi=epi)
    if FX:
        FXN, FXSRC = split_fixup_source(ts, NBX * NTT * KS * NT * NACC // 4, NBX * NTT, NACC, NT, KS)
    if CL:
        CLN, CLSRC = cluster_sum_source(ts, NACC, NT, KS)
    CLQ = NT * NACC // 4                # fx=2: the tile's float4 partials (chunk-major: q = chunk * NT + thread)
    CLP = ceil_div(CLQ, KS)             # ... of which the block of cluster rank r sums [r CLP, (r + 1) CLP)

    def s_first(bz):
        return T.min(bz * PER, NST)

    def s_end(bz):
        return T.min(T.min(bz * PER, NST) + PER, NST)

    def gbase(bx, ty):
        return T.min(bx * NWP + ty, NGR - 1) * NST

    def strip0(ty):
        # element of warp ty's strip in atom 0 of a stage buffer
        return (ty // 4) * NATA * ATOM + (ty % 4) * 1024

    def elem(p, ty, offset=False):
        # slot p of warp ty's strip -> element of the stage buffer (offset: p is already the element offset in the
        # strip's part, code="pos": tiled_layout.wg_offset_of_slot)
        if NATA == 1 or offset:
            return strip0(ty) + p
        # (p >> 10) * ATOM + (p & 1023), one shift and one multiply-add fewer
        return p + T.shift_right(p, 10) * (ATOM - 1024) + strip0(ty)

    def xel(e):
        # element of 16-byte chunk e (token e // 8, chunk e % 8) of an activation atom: the 128B swizzle
        return (e // 8) * 64 + ((e % 8) ^ ((e // 8) % 8)) * 8

    @T.macro
    def load_batch(vals, pos, v, p, chunk, b):
        # batch b of a register set: 8 values (16 bytes) and their positions from chunk `chunk`
        if LDW:
            # the destinations as access pointers with their extents (write): TVM sizes the register arrays by the
            # regions it sees accessed, and an address_of would show it one element (session 17: cut-down arrays,
            # wrong results on the H100)
            T.cuda.func_call(LD16[0], T.tvm_access_ptr(T.type_annotation(dt), v.data, b * 8, 8, 2),
                             T.address_of(vals[chunk * 8]), source_code=LD16[1])
            if P7:
                T.cuda.func_call(LD8[0], T.tvm_access_ptr(T.type_annotation(PR_DT), p.data, b * 2, 2, 2),
                                 T.address_of(pos[chunk * 2]), source_code=LD8[1])
            else:
                T.cuda.func_call(LD16[0], T.tvm_access_ptr(T.type_annotation(PR_DT), p.data, b * 8, 8, 2),
                                 T.address_of(pos[chunk * 8]), source_code=LD16[1])
        else:
            for j in T.vectorized(8):
                v[b * 8 + j] = vals[chunk * 8 + j]
            if P7:
                for j in T.vectorized(2):
                    p[b * 2 + j] = pos[chunk * 2 + j]
            else:
                for j in T.vectorized(8):
                    p[b * 8 + j] = pos[chunk * 8 + j]

    def slot7b(p, b, j, o=0):
        return (T.shift_right(p[o + b * 2], 21) & 0x780) + (T.shift_right(p[o + b * 2 + j // 4], (j % 4) * 7) & 127)

    @T.macro
    def scatter(st, ab, v, p, ty, b):
        if P7:
            for j in T.unroll(8):
                st[ab + elem(slot7b(p, b, j), ty)] = v[b * 8 + j]
        else:
            for j in T.unroll(8):
                st[ab + elem(T.Cast("int32", p[b * 8 + j]), ty, True)] = v[b * 8 + j]

    @T.macro
    def unscatter(st, ab, u, ty, b):
        # zeros at the slots of batch b of the oldest retained set (the stage that last used this buffer)
        if P7:
            for j in T.unroll(8):
                st[ab + elem(slot7b(u, b, j, (RA - 1) * UW), ty)] = zero
        else:
            for j in T.unroll(8):
                st[ab + elem(T.Cast("int32", u[(RA - 1) * UW + b * 8 + j]), ty, True)] = zero

    @T.macro
    def zero_strip(sw, ab, ty, tx):
        # 16-byte stores of integer zeros through the uint32 view (a dtype zero is 8 conversions per store)
        for a in T.unroll(NATA):
            for i in T.unroll(ZIT):
                for j in T.vectorized(4):
                    sw[(ab + strip0(ty) + a * ATOM + (i * 32 + tx) * 8) // 2 + j] = T.uint32(0)

    @T.macro
    def load_x(st, X, xb, by, k0, tid):
        # the activation tile of the stage at column k0: tn tokens x sc columns, 128B-swizzled per 64-column atom
        for a in T.unroll(NAT):
            for it in T.unroll(XIT):
                if it * NT + tid < BN * 8:
                    T.ptx[CP](T.address_of(st[xb + a * BN * 64 + xel(it * NT + tid)]),
                              T.address_of(X[T.min(by * BN + (it * NT + tid) // 8, TT - 1),
                                             T.min(k0 + a * 64 + ((it * NT + tid) % 8) * 8, K - 8)]), 16,
                              T.if_then_else(by * BN + (it * NT + tid) // 8 < TT
                                             and k0 + a * 64 + ((it * NT + tid) % 8) * 8 < K,
                                             T.uint32(16), T.uint32(0)))

    @T.macro
    def load_xr(X, xn, by, k0, ty, tx):
        # xa: the lane's activations of a stage: per 32-column chunk q and token row (lane/4 and lane/4 + 8 of the
        # warp's 16 tokens) the 8 columns 32q + 8 (lane % 4) .. + 7 (the layout's column order, slots="wgx", makes
        # them the lane's A fragment pairs of the chunk's two k16 slices): one 16-byte load each, zeros past T and K
        Xw = T.decl_buffer((TT * K // 2,), "uint32", data=X.data)               # X as 32-bit words
        for q in T.unroll(NQ):
            for hh in T.unroll(2):
                if (by * 64 + (ty % 4) * 16 + tx // 4 + 8 * hh < TT) and (k0 + q * 32 + (tx % 4) * 8 < K):
                    for e in T.vectorized(4):
                        xn[(q * 2 + hh) * 4 + e] = Xw[((by * 64 + (ty % 4) * 16 + tx // 4 + 8 * hh) * K
                                                       + k0 + q * 32 + (tx % 4) * 8) // 2 + e]
                else:
                    for e in T.vectorized(4):
                        xn[(q * 2 + hh) * 4 + e] = T.uint32(0)

    @T.macro
    def load_meta(meta, mn, s, bx, ty, tx):
        # sp: lane 4g + e (e < 2) loads its metadata words of stage s (one per k32 step: rows g, g + 8, 16-column
        # block 2 kk + e), sparsity selector 0; lanes 4g + 2, 4g + 3 supply none
        if tx % 4 < 2:
            for h in T.unroll(NK // 4):
                if LDW:
                    T.cuda.func_call(LD16[0], T.tvm_access_ptr(T.type_annotation("int32"), mn.data, h * 4, 4, 2),
                                     T.address_of(meta[((T.min(bx * NWP + ty, NGR - 1) * NST + s) * 16 + (tx // 4) * 2
                                                        + tx % 2) * NK + h * 4]), source_code=LD16[1])
                else:
                    for e in T.vectorized(4):
                        mn[h * 4 + e] = meta[((T.min(bx * NWP + ty, NGR - 1) * NST + s) * 16 + (tx // 4) * 2
                                              + tx % 2) * NK + h * 4 + e]

    @T.macro
    def res_row(st, rw, ra_, xb, tx):
        # sp: one residual row (its word for the quad q = lane/4: rows q, q + 8 by bit 8) on CUDA cores, the lane's
        # tokens 8j + 2 (lane % 4) + e from the stage's activation tile
        rv = T.Cast("float32", T.reinterpret(dt, T.Cast("uint16", T.shift_right(rw, 16) & 0xFFFF)))
        r1 = T.if_then_else(T.bitwise_and(T.shift_right(rw, 8), 1) == 1, rv, T.float32(0))
        r0 = rv - r1
        cc = rw & 255
        for j in T.unroll(BN // 8):
            for e in T.unroll(2):
                xv = T.Cast("float32", st[xb + T.shift_right(cc, 6) * (BN * 64) + (j * 8 + (tx % 4) * 2 + e) * 64
                                          + T.shift_left(T.bitwise_xor(T.shift_right(cc & 63, 3), (tx % 4) * 2 + e), 3)
                                          + (cc & 7)])
                ra_[j * 4 + e] = ra_[j * 4 + e] + r0 * xv
                ra_[j * 4 + 2 + e] = ra_[j * 4 + 2 + e] + r1 * xv

    @T.macro
    def residual(st, res, rq, rw, ra_, xb, tx):
        # sp: the stage's entries past the 2:4 part: its first RP rows from registers (loaded a stage ahead), the
        # rest from global memory
        for k in T.unroll(RP):
            if k < rq[1]:
                res_row(st, rw[k], ra_, xb, tx)
        for i in range(T.max(rq[1] - RP, 0)):
            res_row(st, res[(rq[2] + RP + i) * 8 + tx // 4], ra_, xb, tx)

    @T.macro
    def res_next(res, rptr, rq, rw, s, bx, bz, ty, tx):
        # sp: rows and first row of the block's stage s (rq[3], rq[4]; none for a strip past the weight) and its
        # first RP rows' words (zeros past its rows)
        if SHFL:
            rq[4] = T.tvm_warp_shuffle(FULL, rq[0], T.min(s, 31), 32, 32)
            rq[3] = T.tvm_warp_shuffle(FULL, rq[0], T.min(s + 1, 31), 32, 32) - rq[4]
        else:
            rq[4] = rptr[gbase(bx, ty) + s_first(bz) + s]
            rq[3] = rptr[gbase(bx, ty) + s_first(bz) + s + 1] - rq[4]
        if bx * NWP + ty >= NGR:
            rq[3] = 0
        for k in T.unroll(RP):
            if k < rq[3]:
                rw[RP + k] = res[(rq[4] + k) * 8 + tx // 4]

    @T.macro
    def stage(vals, pos, sptr, X, xr, xn, st, sw, dsc, acc, cv, cp, v2, p2, u, sv, sbase, off, si, nb, bx, by,
              bz, ty, tx, meta, res, rptr, mr, mn, rq, rw, racc):
        # one stage: cv/cp hold its first PB batches (loaded PF stages earlier) and receive those of si + PF
        tid = ty * 32 + tx
        ab = off + (si % RA) * ASZ
        if SP:
            # this stage's metadata (loaded one stage ahead), the next stage's; the stage's residual rows
            for e in T.unroll(NK):
                mr[e] = mn[e]
            if si + 1 < nb:
                load_meta(meta, mn, s_first(bz) + si + 1, bx, ty, tx)
            rq[1] = rq[3]
            rq[2] = rq[4]
            for k in T.unroll(RP):
                rw[k] = rw[RP + k]
            if si + 1 < nb:
                res_next(res, rptr, rq, rw, si + 1, bx, bz, ty, tx)
        if XA:
            # this stage's activations (loaded one stage ahead) to the operand registers, the next stage's loads
            for j in T.unroll(NQ * 8):
                xr[j] = xn[j]
            if si + 1 < nb:
                load_xr(X, xn, by, (s_first(bz) + si + 1) * SC, ty, tx)
        if SHFL:
            sv[1] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si, 31), 32, 32)
            sv[2] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + 1, 31), 32, 32)
            sv[3] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + PF, 31), 32, 32)
            sv[4] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + PF + 1, 31), 32, 32)
        else:
            sv[1] = sptr[gbase(bx, ty) + s_first(bz) + si]
            sv[2] = sptr[gbase(bx, ty) + T.min(s_first(bz) + si + 1, s_end(bz))]
            sv[3] = sptr[gbase(bx, ty) + T.min(s_first(bz) + si + PF, s_end(bz))]
            sv[4] = sptr[gbase(bx, ty) + T.min(s_first(bz) + si + PF + 1, s_end(bz))]
        # the warp's strip of this stage's A buffer: zero (or, with clear="unscatter", zeros at the slots of the
        # stage RA earlier, unless that stage had more than PB batches), then the non-zeros
        if UNS:
            if T.shift_right(sv[5], RA - 1) & 1 == 1:
                zero_strip(sw, ab, ty, tx)
            else:
                for b in T.unroll(PB):
                    unscatter(st, ab, u, ty, b)
        else:
            zero_strip(sw, ab, ty, tx)
        T.evaluate(T.cuda.warp_sync())
        if bx * NWP + ty < NGR:
            for b in T.unroll(PB):
                if sv[1] + b * 32 + tx < sv[2]:
                    scatter(st, ab, cv, cp, ty, b)
            for it in range(PB, (sv[2] - sv[1] + 31) // 32):
                if sv[1] + it * 32 + tx < sv[2]:
                    load_batch(vals, pos, v2, p2, sv[1] + it * 32 + tx, 0)
                    scatter(st, ab, v2, p2, ty, 0)
            if UNS:
                # retain this stage's positions (lanes idle in a batch keep older slots of their strip: harmless
                # zeros) and whether it had batches past the first PB (then its buffer is zeroed whole)
                for r in T.unroll(RA - 1):
                    for j in T.unroll(UW):
                        u[(RA - 1 - r) * UW + j] = u[(RA - 2 - r) * UW + j]
                for j in T.unroll(UW):
                    u[j] = cp[j]
                sv[5] = (T.shift_left(sv[5], 1) | T.Cast("int32", (sv[2] - sv[1] + 31) // 32 > PB)) & ((1 << RA) - 1)
            # the first PB batches of stage si + PF (in flight during the barrier, the wgmma and PF - 1 more stages)
            if si + PF < nb:
                for b in T.unroll(PB):
                    if sv[3] + b * 32 + tx < sv[4]:
                        load_batch(vals, pos, cv, cp, sv[3] + b * 32 + tx, b)
        if not XA:
            T.ptx["cp.async.wait_group"](XD - 1)
        T.ptx["fence.proxy.async.shared::cta"]()
        T.tvm_storage_sync("shared")
        if not XA:
            # the activation tile XD stages ahead, into the slot the wgmma of stage si - 2 read (done: every warp
            # passed its wgmma.wait_group(<= 1) before this barrier)
            if si + XD < nb:
                load_x(st, X, off + RA * ASZ + ((si + XD) % RX) * XSZ, by, (s_first(bz) + si + XD) * SC, tid)
            T.ptx["cp.async.commit_group"]()
        T.ptx["wgmma.fence.sync.aligned"]()
        # the stage's descriptors once (the warpgroup's strips; the activation tile); each k16 slice adds its byte
        # offset >> 4 to the start-address field (shared addresses < 256 KB: the 14-bit field never carries)
        dsc[0] = smem_descriptor(sbase + T.Cast("uint32", (ab + (ty // 4) * NATA * ATOM) * 2))
        if not XA:
            dsc[1] = smem_descriptor(sbase + T.Cast("uint32", (off + RA * ASZ + (si % RX) * XSZ) * 2))
        if SP:
            # k32 step ks: 16 compressed columns (32 bytes of the A atom's rows), 32 activation columns (64 bytes of
            # the B atom ks // 2), the lane's metadata word ks
            for ks in T.unroll(NK):
                T.cuda.func_call(SPN, T.address_of(acc[0]),
                                 dsc[0] + T.Cast("uint64", (ks // 4 * ATOM * 2 + (ks % 4) * 32) // 16),
                                 dsc[1] + T.Cast("uint64", ((ks // 2) * BN * 64 * 2 + (ks % 2) * 64) // 16),
                                 T.Cast("uint32", mr[ks]), source_code=SPSRC)
        for a in T.unroll(0 if SP else NAT):
            for kk in T.unroll(4):
                if XA:
                    # the strips as the B operand (N = the warpgroup's 64 rows), the activations from registers
                    T.ptx[WG](*[acc[j] for j in range(NACC)],
                              *[xr[((a * 4 + kk) // 2 * 2 + hh) * 4 + 2 * ((a * 4 + kk) % 2) + e2]
                                for e2 in range(2) for hh in range(2)],
                              dsc[0] + T.Cast("uint64", (a * ATOM * 2 + kk * 32) // 16),
                              True, 1, 1, 0)
                else:
                    T.ptx[WG](*[acc[j] for j in range(NACC)],
                              dsc[0] + T.Cast("uint64", (a * ATOM * 2 + kk * 32) // 16),
                              dsc[1] + T.Cast("uint64", (a * BN * 64 * 2 + kk * 32) // 16),
                              True, 1, 1, 0, 0)
        T.ptx["wgmma.commit_group.sync.aligned"]()
        if SP and RR:
            # during the wgmma: the residual into its own registers (the activation tile stays until stage si + 2)
            residual(st, res, rq, rw, racc, off + RA * ASZ + (si % RX) * XSZ, tx)
        T.ptx["wgmma.wait_group.sync.aligned"](WIP)
        if SP and not RR:
            # after it (wip=0): into the accumulators (the next wgmma.fence orders them before the next wgmma)
            residual(st, res, rq, rw, acc, off + RA * ASZ + (si % RX) * XSZ, tx)

    def cl_row(q, h):
        # fx=2: row of the tile of component (h, e) of float4 q (chunk q // NT of thread q % NT: warp w, lane l)
        w, ln = (q % NT) // 32, q % 32
        return (w // 4) * 64 + (w % 4) * 16 + ln // 4 + 8 * h

    def cl_tok(q, e):
        return (q // NT) * 8 + (q % 4) * 2 + e

    @T.macro
    def cl_store(cls, bias, Y, bx, by, q):
        # fx=2: the summed float4 q (bias, activation) to its four outputs of Y, one split's plain stores
        for h in T.unroll(2):
            for e in T.unroll(2):
                if bx * BM + cl_row(q, h) < O and by * BN + cl_tok(q, e) < TT:
                    if sp.bias:
                        Y[by * BN + cl_tok(q, e), bx * BM + cl_row(q, h)] = T.Cast(dt, epi(
                            cls[h * 2 + e] + T.Cast("float32", bias[bx * BM + cl_row(q, h)])))
                    else:
                        Y[by * BN + cl_tok(q, e), bx * BM + cl_row(q, h)] = T.Cast(dt, epi(cls[h * 2 + e]))

    @T.macro
    def body(vals, pos, sptr, X, bias, Y, bx, by, bz, ty, tx, Sm, meta, res, rptr):
        tid = ty * 32 + tx
        sbase = T.cuda.cvta_generic_to_shared(T.address_of(Sm[0]))
        off = T.Cast("int32", ((T.uint32(ALIGN) - (sbase % T.uint32(ALIGN))) % T.uint32(ALIGN)) // T.uint32(2))
        # the main loop's accesses go through a pointer without the shared scope: TVM's ThreadSync does not see
        # them (the barriers are placed by hand); nvcc still emits ld/st.shared
        stp: T.let = T.call_extern("handle", "(void*)", T.address_of(Sm[0]))
        st = T.decl_buffer((SMN,), dt, data=stp)
        sw = T.decl_buffer((SMN // 2,), "uint32", data=stp)
        Su = T.decl_buffer((SMN // 2,), "uint32", data=Sm.data, scope="shared.dyn")
        acc = T.alloc_buffer((NACC,), "float32", scope="local")
        dsc = T.alloc_buffer((2,), "uint64", scope="local")       # the stage's wgmma descriptors (A, B)
        xr = T.alloc_buffer((NQ * 8 if XA else 1,), "uint32", scope="local")   # xa: this stage's A fragments
        xn = T.alloc_buffer((NQ * 8 if XA else 1,), "uint32", scope="local")   # xa: the next stage's
        cv = T.alloc_buffer((8 * PB,), dt, scope="local")
        cp = T.alloc_buffer((PL * PB,), PR_DT, scope="local")
        c2v = T.alloc_buffer((8 * PB,), dt, scope="local")
        c2p = T.alloc_buffer((PL * PB,), PR_DT, scope="local")
        v2 = T.alloc_buffer((8,), dt, scope="local")
        p2 = T.alloc_buffer((PL,), PR_DT, scope="local")
        ev = T.alloc_buffer((8,), dt, scope="local")
        eu = T.alloc_buffer((4,), "uint32", scope="local")
        # [0] the stage pointer of the lane's stage, [1] this stage's first chunk, [2] the next's, [3] / [4] the
        # first chunks of stages si + PF and si + PF + 1
        sv = T.alloc_buffer((6,), "int32", scope="local")    # [5]: clear="unscatter" flags (bit r: stage si-1-r)
        u = T.alloc_buffer((RA * UW,), PR_DT, scope="local")  # clear="unscatter": positions of the last RA stages
        mr = T.alloc_buffer((NK if SP else 1,), "int32", scope="local")     # sp: the stage's metadata words
        mn = T.alloc_buffer((NK if SP else 1,), "int32", scope="local")     # sp: the next stage's
        # sp: [0] the residual row pointer of the lane's stage, [1] / [2] this stage's rows and first row, [3] / [4]
        # the next stage's
        rq = T.alloc_buffer((5,), "int32", scope="local")
        rw = T.alloc_buffer((2 * RP if SP else 1,), "int32", scope="local")   # sp: this / the next stage's rows
        racc = T.alloc_buffer((NACC if RR else 1,), "float32", scope="local")   # sp, rr=1: residual sums
        fxt = T.alloc_buffer((1,), "int32", scope="shared")    # fx: whether this block sums the tile's splits
        fxl = T.alloc_buffer((1,), "int32", scope="local")
        cls = T.alloc_buffer((4,), "float32", scope="local")      # fx=2: one float4 of the tile, summed
        pe = T.alloc_buffer((1,), "int32", scope="local")        # l2f: the strip's end chunk for the block
        nb = s_end(bz) - s_first(bz)                    # the block's stages (every warp of the block)
        if PDL2:
            T.ptx["griddepcontrol.launch_dependents"]()  # the next kernel's blocks may start their own prologue
        for i in T.unroll(NACC):
            acc[i] = T.float32(0)
        if RR:
            for i in T.unroll(NACC):
                racc[i] = T.float32(0)
        if SP:
            for e in T.unroll(NK):
                mn[e] = 0x44444444
            if nb > 0:
                load_meta(meta, mn, s_first(bz), bx, ty, tx)
            if SHFL:
                rq[0] = rptr[gbase(bx, ty) + T.min(s_first(bz) + tx, s_end(bz))]
            rq[3] = 0
            rq[4] = 0
            if nb > 0:
                res_next(res, rptr, rq, rw, 0, bx, bz, ty, tx)
        if UNS:
            # the ring starts zeroed; retained sets and prefetch registers start at slot 0 (a harmless clear)
            for rb in T.unroll(RA):
                zero_strip(sw, off + rb * ASZ, ty, tx)
            for j in T.unroll(RA * UW):
                u[j] = T.Cast(PR_DT, 0)
            for j in T.unroll(UW):
                cp[j] = T.Cast(PR_DT, 0)
                c2p[j] = T.Cast(PR_DT, 0)
            sv[5] = 0
        if SHFL:
            sv[0] = sptr[gbase(bx, ty) + T.min(s_first(bz) + tx, s_end(bz))]
            sv[1] = T.tvm_warp_shuffle(FULL, sv[0], 0, 32, 32)
            sv[2] = T.tvm_warp_shuffle(FULL, sv[0], 1, 32, 32)
            sv[3] = T.tvm_warp_shuffle(FULL, sv[0], 2, 32, 32)
        else:
            sv[1] = sptr[gbase(bx, ty) + s_first(bz)]
            sv[2] = sptr[gbase(bx, ty) + T.min(s_first(bz) + 1, s_end(bz))]
            sv[3] = sptr[gbase(bx, ty) + T.min(s_first(bz) + 2, s_end(bz))]
        if L2F:
            # the strip's chunks of the block's stages [sv[1], end) are contiguous: values 16 bytes a chunk, positions
            # 16 (pos) or 8 (pos7, the range cut to whole 16-byte units inside it)
            if SHFL:
                pe[0] = T.tvm_warp_shuffle(FULL, sv[0], nb, 32, 32)
            else:
                pe[0] = sptr[gbase(bx, ty) + s_end(bz)]
            if bx * NWP + ty < NGR and tx == 0 and pe[0] > sv[1]:
                T.cuda.func_call("sparsec_l2_prefetch", T.address_of(vals[sv[1] * 8]),
                                 T.Cast("uint32", (pe[0] - sv[1]) * 16), source_code=L2F_SRC)
                if P7:
                    if pe[0] // 2 > (sv[1] + 1) // 2:
                        T.cuda.func_call("sparsec_l2_prefetch", T.address_of(pos[((sv[1] + 1) // 2) * 4]),
                                         T.Cast("uint32", (pe[0] // 2 - (sv[1] + 1) // 2) * 16), source_code=L2F_SRC)
                else:
                    T.cuda.func_call("sparsec_l2_prefetch", T.address_of(pos[sv[1] * 8]),
                                     T.Cast("uint32", (pe[0] - sv[1]) * 16), source_code=L2F_SRC)
        if bx * NWP + ty < NGR:
            for b in T.unroll(PB):
                if nb > 0 and sv[1] + b * 32 + tx < sv[2]:
                    load_batch(vals, pos, cv, cp, sv[1] + b * 32 + tx, b)
                if PF == 2:
                    if nb > 1 and sv[2] + b * 32 + tx < sv[3]:
                        load_batch(vals, pos, c2v, c2p, sv[2] + b * 32 + tx, b)
        if PDL2:
            # everything above read the weight only; X (the previous kernel's output in a model), Y, the split
            # workspace and its counters are touched once the previous launch on the stream has completed
            T.ptx["griddepcontrol.wait"]()
        if XA:
            if nb > 0:
                load_xr(X, xn, by, s_first(bz) * SC, ty, tx)
        else:
            for d in T.unroll(XD):
                if d < nb:
                    load_x(st, X, off + RA * ASZ + d * XSZ, by, (s_first(bz) + d) * SC, tid)
                T.ptx["cp.async.commit_group"]()
        if PF == 1:
            for si in range(nb):
                stage(vals, pos, sptr, X, xr, xn, st, sw, dsc, acc, cv, cp, v2, p2, u, sv, sbase, off, si, nb, bx, by, bz, ty, tx,
                      meta, res, rptr, mr, mn, rq, rw, racc)
        else:
            # two register sets: stage 2i scatters cv/cp and refills them with stage 2i + 2, stage 2i + 1 c2v/c2p
            for si2 in range((nb + 1) // 2):
                stage(vals, pos, sptr, X, xr, xn, st, sw, dsc, acc, cv, cp, v2, p2, u, sv, sbase, off, 2 * si2, nb, bx, by, bz, ty, tx,
                      meta, res, rptr, mr, mn, rq, rw, racc)
                if 2 * si2 + 1 < nb:
                    stage(vals, pos, sptr, X, xr, xn, st, sw, dsc, acc, c2v, c2p, v2, p2, u, sv, sbase, off, 2 * si2 + 1, nb, bx, by, bz,
                          ty, tx, meta, res, rptr, mr, mn, rq, rw, racc)
        T.ptx["wgmma.wait_group.sync.aligned"](0)
        if not XA:
            T.ptx["cp.async.wait_group"](0)
        T.tvm_storage_sync("shared")
        if RR:
            for i in T.unroll(NACC):
                acc[i] = acc[i] + racc[i]
        # staged epilogue: d[4j + 2h + e] = (row 16 (w % 4) + lane/4 + 8h of warpgroup w / 4, token 8j + 2 (lane % 4) + e)
        # (xa: the other way round: token 16 (w % 4) + lane/4 + 8h, row 8j + 2 (lane % 4) + e of warpgroup w / 4)
        if CL:
            # the tile's KS splits are one cluster: every block puts its fp32 partial in its shared memory, then
            # block r sums float4s [r CLP, (r + 1) CLP) of the tile over the cluster in split order (deterministic)
            # and stores them as one split would (bias, activation); a last cluster barrier keeps every block's
            # shared memory alive until the others have read it
            T.cuda.func_call(CLN, 0, T.address_of(acc[0]), T.address_of(Sm[off]), tid, source_code=CLSRC)
            for m in T.unroll(ceil_div(CLP, NT)):
                if m * NT + tid < CLP and bz * CLP + m * NT + tid < CLQ:
                    T.cuda.func_call(CLN, 1, T.address_of(cls[0]), T.address_of(Sm[off]), bz * CLP + m * NT + tid,
                                     source_code=CLSRC)
                    cl_store(cls, bias, Y, bx, by, bz * CLP + m * NT + tid)
            T.cuda.func_call(CLN, 2, T.address_of(cls[0]), T.address_of(Sm[off]), 0, source_code=CLSRC)
        elif FX:
            # every split writes its fp32 partial (slot (bx, by, bz)); the last block of the tile to raise its counter
            # sums the KS partials in split order (deterministic) and stores as one split would (bias, activation)
            T.cuda.func_call(FXN, 0, T.address_of(acc[0]), (bx * NTT + by) * KS + bz, tid, source_code=FXSRC)
            T.tvm_storage_sync("shared")
            if tid == 0:
                fxt[0] = T.call_extern("int32", FXN + "_last", bx * NTT + by)
            T.tvm_storage_sync("shared")
            fxl[0] = fxt[0]
            if fxl[0] == 1:
                T.cuda.func_call(FXN, 1, T.address_of(acc[0]), (bx * NTT + by) * KS, tid, source_code=FXSRC)
                for j in T.unroll(BN // 8):
                    for h in T.unroll(2):
                        for e in T.unroll(2):
                            stage_acc(Sm, bias, bx, bz, (ty // 4) * 64 + (ty % 4) * 16 + tx // 4 + 8 * h,
                                      j * 8 + (tx % 4) * 2 + e, acc[j * 4 + h * 2 + e])
                store_acc(Sm, Su, ev, eu, Y, bx, by, tid)
        else:
            if XA:
                for j in T.unroll(8):
                    for h in T.unroll(2):
                        for e in T.unroll(2):
                            stage_acc(Sm, bias, bx, bz, (ty // 4) * 64 + j * 8 + (tx % 4) * 2 + e,
                                      (ty % 4) * 16 + tx // 4 + 8 * h, acc[j * 4 + h * 2 + e])
            else:
                for j in T.unroll(BN // 8):
                    for h in T.unroll(2):
                        for e in T.unroll(2):
                            stage_acc(Sm, bias, bx, bz, (ty // 4) * 64 + (ty % 4) * 16 + tx // 4 + 8 * h,
                                      j * 8 + (tx % 4) * 2 + e, acc[j * 4 + h * 2 + e])
            if PDL:
                # launched while the zeroing kernel may still run: Y is zero (and visible) once it completed
                T.ptx["griddepcontrol.wait"]()
            store_acc(Sm, Su, ev, eu, Y, bx, by, tid)
        if sv[1] < 0:
            # never true (stage pointers are >= 0), but not provably: a read of the buffer over its whole extent,
            # so that TVM keeps the allocation whole (the main loop reaches it through stp only)
            Y[0, 0] = Sm[T.max(sv[1], 0) % SMN]

    @T.macro
    def blocks(vals, pos, sptr, X, bias, Y, meta, res, rptr):
        for bx in T.thread_binding(NBX, thread="blockIdx.x"):
            for by in T.thread_binding(NTT, thread="blockIdx.y"):
                for bz in T.thread_binding(KS, thread="blockIdx.z"):
                    for ty in T.thread_binding(NWP, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            # one `extern __shared__` array per module, name and type
                            if dt == "float16":
                                tiledwg_smem_f16 = T.alloc_buffer((SMN,), dt, scope="shared.dyn")
                                body(vals, pos, sptr, X, bias, Y, bx, by, bz, ty, tx, tiledwg_smem_f16, meta, res, rptr)
                            else:
                                tiledwg_smem_bf16 = T.alloc_buffer((SMN,), dt, scope="shared.dyn")
                                body(vals, pos, sptr, X, bias, Y, bx, by, bz, ty, tx, tiledwg_smem_bf16, meta, res, rptr)

    POS_DT = "int32" if P7 else "int16"
    zero_y = zero_fill(dt, TT * O, pdl=PDL or PDL2, wait=PDL2)

    @T.prim_func
    def kern(a_vals: T.handle, a_pos: T.handle, a_ptr: T.handle, x: T.handle, b: T.handle, y: T.handle):
        T.func_attr({"tirx.noalias": True})
        n_ = T.int32()
        m_ = T.int32()
        vals = T.match_buffer(a_vals, (n_,), dt)
        pos = T.match_buffer(a_pos, (m_,), POS_DT)
        sptr = T.match_buffer(a_ptr, (NGR * NST + 1,), "int32")
        X = T.match_buffer(x, (TT, K), dt)
        bias = T.match_buffer(b, (O,), dt)
        Y = T.match_buffer(y, (TT, O), dt)
        if KS > 1 and not FX and not CL:
            zero_y(Y)       # the splits add into Y with atomics: zero it first (a launch of its own)
        blocks(vals, pos, sptr, X, bias, Y, sptr, sptr, sptr)

    @T.prim_func
    def kern_sp(a_vals: T.handle, a_pos: T.handle, a_ptr: T.handle, a_meta: T.handle, a_res: T.handle,
                a_rptr: T.handle, x: T.handle, b: T.handle, y: T.handle):
        T.func_attr({"tirx.noalias": True})
        n_ = T.int32()
        m_ = T.int32()
        r_ = T.int32()
        vals = T.match_buffer(a_vals, (n_,), dt)
        pos = T.match_buffer(a_pos, (m_,), POS_DT)
        sptr = T.match_buffer(a_ptr, (NGR * NST + 1,), "int32")
        meta = T.match_buffer(a_meta, (NGR * NST * 16 * NK,), "int32")
        res = T.match_buffer(a_res, (r_,), "int32")
        rptr = T.match_buffer(a_rptr, (NGR * NST + 1,), "int32")
        X = T.match_buffer(x, (TT, K), dt)
        bias = T.match_buffer(b, (O,), dt)
        Y = T.match_buffer(y, (TT, O), dt)
        if KS > 1 and not FX and not CL:
            zero_y(Y)
        blocks(vals, pos, sptr, X, bias, Y, meta, res, rptr)

    return kern_sp if SP else kern
