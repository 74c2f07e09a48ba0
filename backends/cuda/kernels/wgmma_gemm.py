"""``design="wgmma"``: a Hopper (sm_90a) warpgroup-MMA GEMM, dense and 2:4 weights.

Problem (torch layout): ``Y[T, O] = act(X[T, K] @ W[O, K]^T + bias)``. As in ``mma_gemm``, the weight is
the MMA ``A`` operand (M = O) and ``X`` the ``B`` operand (N = T); both are K-major in global memory and in
shared memory, so neither is transposed (``imm-trans-a = imm-trans-b = 0``).

- grid ``(ceil(O/bm) * ceil(T/bn), ks)``; ``bm / 64`` warpgroups (128 threads each), warpgroup ``g`` owns
  rows ``[64 g, 64 g + 64)`` of the block tile and all ``bn`` tokens: one ``wgmma.mma_async.m64n{bn}k16``
  per 16 reduction columns, fp32 accumulators in registers (``bn / 2`` per thread);
- ``bk = 64``: a tile row is 128 bytes, stored in the **128-byte swizzled K-major** layout the matrix
  descriptor names (16-byte chunk ``c`` of row ``r`` at ``r * 128 + ((c ^ (r % 8)) * 16)``, 8-row groups
  1024 bytes apart: stride byte offset 1024, every tile base 1024-byte aligned). The k16 slices of a tile
  are the same descriptor with the start address advanced by 32 bytes;
- every thread fills a ``stages``-deep ring in **dynamic shared memory** (> 48 KB; TVM's CUDA runtime
  raises ``cudaFuncAttributeMaxDynamicSharedMemorySize`` itself) with 16-byte ``cp.async.cg``
  (``src-size`` 0 zero-fills rows / columns outside the matrix: O, T, K tails). Per k-tile:
  ``cp.async.wait_group``, ``fence.proxy.async.shared::cta`` (cp.async writes are generic-proxy, wgmma
  reads async-proxy), one barrier, the copies of the tile ``stages - 2`` ahead, then ``wgmma.fence``,
  ``bk / 16`` wgmma, ``commit_group`` and ``wait_group 1`` (one k-tile of wgmma in flight: the slot being
  refilled was last read two k-tiles ago);
- epilogue as ``mma_gemm``: accumulators (+ bias, activation) staged through shared memory as
  ``[token, row]``, written as 16-byte rows of ``Y``; split-K (``ks > 1``) zeroes ``Y`` and sums with
  ``red.global.add.noftz.v4`` fp16x2/bf16x2 (no activation).

**TMA producer (``tma=1``, the default with ``ws=1``)**: the host encodes 2-D tensor maps of W (or the 2:4 values),
X and the metadata words once per call (``T.tensormap_encode_tiled`` -> ``runtime.cuTensorMapEncodeTiled``; TVM passes
them as ``const __grid_constant__ CUtensorMap`` kernel parameters); one producer thread per ring slot issues
``mbarrier.arrive.expect_tx`` of the slot's bytes and one ``cp.async.bulk.tensor.2d`` per tile (128B-swizzled
64-column boxes: the layout the wgmma descriptors read; out-of-bounds rows/columns zero-filled), and the full
barrier completes on the bytes. H100 dev run (``benchmarks/results/dev/wgtma_run1.*``, 25/25 checks): dense
T=1024 0.72-0.85x -> 0.83-1.00x cuBLAS, T=128 0.67-0.99x -> 0.72-1.02x; 2:4 +0-6 %.

**Tail split (``tail=N``, opt-in)**: the tiles past the last full wave of ``SMS`` blocks run as N blocks each over a
part of K and add into their tiles of Y (zeroed by a first launch) with vector atomics; the other tiles store as
usual. H100 (``benchmarks/results/dev/wgbig_run7.*``): +4-13 % on 9216x36864 at T=1024, slower elsewhere (docs/cuda.md).

**Stream-K (``sk=1``, opt-in)**: min(132, tiles x k-tiles) persistent blocks, each an equal share of the tile x k-tile
space, one tile segment at a time; cut tiles add into zeroed Y. Correct and slower everywhere on the H100
(``wgbig_run8``: concurrent blocks touch tiles spread over the output, losing L2 locality).

**2:4 weights** (``nm`` 2:4, K a multiple of 128; ``wgmma.mma_async.sp.sync.aligned.m64n{bn}k32``): A is the
``mma`` design's layout (``mma_layout.build``: ``sp_values[O, K/2]``, two kept values per group of 4, and
``sp_meta[ceil(O/16), K/16, 8]``). A k-tile is 128 logical columns: the A tile holds their 64 stored values per
row (one 128-byte swizzled row, the same descriptor as dense; a k32 step advances it 32 bytes), B two 64-column
sub-tiles (a k32 step reads 64 bytes of one), and the ring slot also carries the tile's metadata words
(``bm/16`` row blocks x 8 column blocks x 8 words, copied by ``cp.async`` with the tiles). Metadata operand
(sparsity selector 0): thread ``t`` of the warpgroup gives the word of row block ``t/32`` (its warp's 16 rows),
column block ``2 kk + t % 2`` (threads 0 and 1 of each quad hold the two 16-column halves of the k32 step),
word ``(t % 32) / 4`` (rows g and g + 8 in the low and high 16 bits, 4 bits per group of 4 columns) — the
``mma.sp`` m16n8k16 word of the ``mma`` design, unchanged. TVM 0.27's PTX table has no sparse wgmma: it is an
inline-asm device function (``wgmma_sp_source``) taking the accumulator array by pointer (inlined: registers).

**Values in registers (``ar`` = 2 | 3, opt-in, 2:4 with the TMA producer and ``wip=0``)**: no A tile in the ring; the
consumers load ``mma_layout``'s ``sp_frag`` (the stored values in the A-fragment register order) one k-tile ahead
into ``ar`` register sets, ``wgmma.mma_async.sp`` takes A from registers (``wgmma_sp_rs_source``). Correct on the
H100 and 1.1-1.5x slower at T=1024 (``benchmarks/results/dev/ar_run{1,2}.*``, docs/cuda.md).

**L2 promotion (``l2p``, session 17)**: the weight's tensor maps (values, 2:4 metadata) are encoded with
``CU_TENSOR_MAP_L2_PROMOTION`` 64/128/256 B (``l2p`` 1/2/3; 0, none, the default): a miss of a box row (128 bytes)
brings the next k-tile's bytes of the row into L2 with it. ``select.wgmma_knobs`` gives a dense weight larger than the
L2 ``l2p=3`` up to 32 tokens (H100: 1.02-1.03x; docs/cuda.md "Cache hints on the weight").

Must be compiled for ``sm_90a`` (``toolchain.build(mod, "sm_90a")``): wgmma has no ``sm_90`` encoding.
A wrong descriptor (layout, offsets, swizzle) reads the wrong elements and shows up as a wrong result in
the GPU check (``scripts/gpu/dev_wgmma.py``), not as a crash.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsec.backends.cuda.kernels.staged import (fixup_memory, partial_store_src, partial_sum_src, staged_epilogue,
                                                 zero_fill)
from sparsec.backends.cuda.kernels.mma_layout import tensor_core_weight
from sparsec.backends.kernels.common import Arg, KernelError, Knob, MatmulSpec, ceil_div, epilogue, meta_of

ARCH = "sm_90a"
KNOBS = (
    Knob("bm", (64, 128, 192, 256), None, "weight rows (O) per block: bm/64 consumer warpgroups"),
    Knob("bn", tuple(range(16, 257, 16)), None, "tokens per block (the wgmma N; the default: T rounded up to 16 up "
                                                "to 128 tokens)"),
    Knob("stages", (2, 3, 4, 5, 6, 7, 8), None, "ring depth (ws=0: tiles of copies in flight stages - 1 - wip)"),
    Knob("ks", (1, 2, 3, 4, 6, 8), None, "split-K: blocks per output tile, summed with fp16/bf16 atomics into a "
                                          "zeroed Y (no activation)"),
    Knob("gm", (1, 4, 8, 16), None, "block rasterisation: O tiles per group swept over every token tile"),
    Knob("wip", (0, 1), None, "k-tiles of wgmma left in flight while the next is waited for (1: ptxas may "
                              "serialise the wgmma, warning C7514)"),
    Knob("ws", (0, 1), None, "warp specialisation: 1 = one producer warpgroup fills the ring with cp.async "
                             "(full/empty mbarriers), the bm/64 consumer warpgroups only run wgmma"),
    Knob("tma", (0, 1), None, "ws=1: one producer thread fills each ring slot with TMA (cp.async.bulk.tensor, "
                              "128B-swizzled boxes, mbarrier expect_tx) instead of 128 threads' cp.async"),
    Knob("spk", (64, 128), None, "2:4: logical reduction columns per ring slot; 64 (tma=1 only) halves the slot "
                                 "(A rows of 32 values, 64B-swizzled) for a deeper ring"),
    Knob("sk", (0, 1, 2, 3), None, "stream-K: 1 = min(132, tiles x k-tiles) persistent blocks, each an equal share of "
                                   "the tile x k-tile space; 2 = whole waves of tiles as usual, the k-tiles of the last "
                                   "partial wave shared out equally; tiles cut by a share's ends add with atomics into "
                                   "zeroed Y (ks=1, tail=1, no activation); 3 = the schedule of 2 (of 1 under one "
                                   "wave) with a fixup: a cut tile's partials go to an fp32 workspace and the block "
                                   "holding its last k-tile adds them and stores (no zero launch, no atomics; "
                                   "activations allowed)"),
    Knob("ar", (0, 2, 3), None, "2:4 with tma=1, wip=0: the stored values go from global memory straight into "
                               "registers (ar sets: k-tiles loaded ahead), the sparse wgmma's A operand from "
                               "registers (layout sp_frag): no A tile in shared memory"),
    Knob("ana", (0, 1), None, "ar > 0: 1 = the stored values' loads are not allocated in L1 "
                              "(ld.global.nc.L1::no_allocate)"),
    Knob("tail", (1, 2, 3, 4, 5, 6, 8), None, "ks=1: the tiles of the last, partial wave are split along K into "
                                              "this many blocks each (fp16/bf16 atomics into their zeroed Y tiles; "
                                              "no activation); 1: off"),
    Knob("pdl", (0, 2), None, "2: every launch overlaps the previous kernel on the stream (programmatic dependent "
                              "launch): the TMA producer loads the weight tiles of the first ring slots, then waits "
                              "(griddepcontrol.wait) for the previous kernel before the activation tiles and any "
                              "write of Y (tma=1, the plain grid: no sk, no tail, no ar)"),
    Knob("l2p", (0, 1, 2, 3), None, "tma=1: the L2 promotion of the weight's tensor maps (values, 2:4 metadata): 0 none, "
                                    "1/2/3 = the L2 fetches 64/128/256 bytes around each miss of a TMA box"),
)
BK = 64                          # 128-byte rows of fp16/bf16: the 128B swizzle atom
SMEM_LIMIT = 227 * 1024          # H100 dynamic shared memory per block
ALIGN = 1024                     # 128B-swizzle atoms (8 rows x 128 B) must start 1024-byte aligned
CPAD = 8
SMS = 132
SP_KMUL = 128                    # 2:4: a k-tile is 128 logical columns (64 stored values = one 128-byte row)
# 2:4 at T > 128: (bm, stages, gm, relative throughput per row) -- wgbig_run2/3: per wave, a 192- or 128-row tile
# takes ~0.9 of the 256-row tile's time per row
SPARSE_BIG_TILES = ((256, 3, 4, 1.0), (192, 3, 8, 0.9), (128, 4, 8, 0.9))


@dataclass(frozen=True)
class WgmmaSpec:
    spec: MatmulSpec
    bm: int
    bn: int
    stages: int
    ks: int = 1
    gm: int = 1
    wip: int = 0
    ws: int = 0
    sparse: bool = False
    tma: int = 0
    spk: int = SP_KMUL
    tail: int = 1
    sk: int = 0
    ar: int = 0
    ana: int = 0
    pdl: int = 0
    l2p: int = 0

    def stage_raw(self) -> int:
        """Elements (halves) a ring slot receives: A tile (bm x 64, or when sparse bm x spk/2 stored values), B tile
        (bn x 64, or when sparse spk/64 bn x 64 sub-tiles), metadata (sparse: bm/16 row blocks x spk/16 column
        blocks x 8 words = bm x spk/16 halves)."""
        if self.sparse:
            return (0 if self.ar else self.bm * self.spk // 2) + self.bn * self.spk + self.bm * self.spk // 16
        return (self.bm + self.bn) * BK

    def stage_elems(self) -> int:
        """``stage_raw`` rounded up to whole 1024-byte units: every slot's tiles start 1024-byte aligned."""
        return ceil_div(self.stage_raw(), ALIGN // 2) * (ALIGN // 2)

    def smem_bytes(self) -> int:
        ring = self.stages * self.stage_elems() * 2
        return max(ring, self.bn * (self.bm + CPAD) * 2) + ALIGN


def default_knobs(O: int, K: int, T: int, activation: str | None = None, sparse: bool = False) -> dict:
    """Warp-specialised (ws=1), one k-tile of wgmma in flight (wip=1) everywhere (H100 run 2: fastest or
    within 2 % on every cell). T > 128: 128 x bn tiles, bn up to 256 (128x256 fastest at T=1024 on all four
    LLM shapes); a grid over one wave shares its last partial wave (sk=2), one under a wave splits K or runs
    stream-K with the fixup (sk=3; session 13, 192-512 tokens). T <= 128: 128 x 128 tiles (bn = T rounded up
    to 16), split along K only up to one wave of blocks (ks * tiles <= 132 SMs, >= 8 k-tiles per split, no activation): 4096-row shapes ks=4,
    11008 / 9216 rows ks=1 (ks=2 on 11008x4096 was 40 % slower)."""
    if sparse:
        return default_sparse_knobs(O, K, T, activation)
    nk = ceil_div(K, BK)
    if T > 128:
        nt = ceil_div(T, 256)
        bn = min(256, max(16, ceil_div(ceil_div(T, nt), 16) * 16))
        kn = dict(bm=128, bn=bn, stages=4 if bn > 128 else 5, ks=1)
        tiles = ceil_div(O, 128) * ceil_div(T, bn)
        if activation is None and tiles > SMS and tiles % SMS:
            # whole waves as usual, the last partial wave's k-tiles shared by 132 blocks (session 7,
            # benchmarks/results/dev/wgbig_run9.json: 9216x36864 T=1024 0.89 -> 1.04x cuBLAS, 11008x4096 +2 %)
            kn["sk"] = 2
        elif tiles < SMS:
            # under one wave (e.g. 4096 rows at 192-512 tokens: 32-64 blocks on 132 SMs): split K like T <= 128
            # (no activation, >= 8 k-tiles per split, one wave at most), else stream-K with the fixup (sk=3: every
            # block an equal share, an activation allowed) where the grid is at most half a wave or K is deep.
            # H100, session 13 (benchmarks/results/dev/mid_run1.json, 4 LLM shapes x T 192/256/384/512): the
            # rule's pick is the fastest of 8 variants or within 1 % in all 16 cells; against the old default
            # 4096x4096 0.44-0.62 -> 0.84-1.14x cuBLAS, 4096x11008 0.48-0.82 -> 0.99-1.25x, 9216x36864 at
            # T=192/256 0.61-0.95 -> 0.87-1.07x; 11008x4096 (86 tiles, shallow K) keeps the plain grid, where both
            # were slower
            kn["ks"] = ks = 1 if activation else split_k(nk, tiles, SMS, 8)
            if ks == 1 and (2 * tiles <= SMS or nk >= 256) and tiles * nk >= 8 * SMS:
                kn["sk"] = 3
    else:
        bn = max(16, ceil_div(T, 16) * 16)
        kn = dict(bm=128, bn=bn, stages=5)
        tiles = ceil_div(O, 128) * ceil_div(T, bn)
        kn["ks"] = ks = 1 if activation else split_k(nk, tiles, SMS, 8)
        if ks == 1:
            kn["stages"] = 6
    kn.update(gm=1, wip=1, ws=1, tma=1, spk=SP_KMUL)
    kn.setdefault("sk", 0)
    return kn


def split_k(nk: int, tiles: int, max_blocks: int, min_per: int) -> int:
    """The largest split of ``nk`` k-tiles in (2, 3, 4, 6, 8), taken in order, that keeps ``tiles x split <=
    max_blocks`` and ``>= min_per`` k-tiles per split; 1 if none."""
    ks = 1
    for cand in (2, 3, 4, 6, 8):
        if ceil_div(nk, cand) < min_per or tiles * cand > max_blocks:
            break
        ks = cand
    return ks


def default_sparse_knobs(O: int, K: int, T: int, activation: str | None = None) -> dict:
    """2:4 (``wgmma.mma_async.sp``): a ring slot holds 128 logical columns (A: bm x 64 values, B: bn x 128,
    metadata bm x 16 B). H100 dev run 1 (``benchmarks/results/dev/wgsp_run1.json``, 4 LLM shapes x T 1-1024):

    - T > 128 (``SPARSE_BIG_TILES``, H100 session 7, TMA producer, ``benchmarks/results/dev/wgbig_run{1,2,3}.*``):
      bm x 128 tiles with bm = 256 (3 slots, rasterised 4 row tiles at a time), 192 (3 slots) or 128 (4 slots),
      whichever needs the fewest waves of blocks times rows per block (/ the tile's relative efficiency): at
      T=1024 256x128 ran 1.11-1.28x cuBLAS (128x128: 1.01-1.12x; 128x192 and 128x256 x 2 slots were slower),
      and 192x128 won where 256-row tiles leave a mostly empty last wave (9216x36864: 384 tiles = 2.9 waves,
      1.26-1.35x). Split-K (ks 2-6) was 1.4-2x slower there. wip=0 (a slot is released as soon as its wgmma
      finished: the producer runs two slots ahead of a 3-slot ring) +4-13 % (run 5); half slots (``spk=64``,
      5-6 slots) 5-20 % slower (run 6): the defaults give 1.25-1.58x cuBLAS at T=1024;
    - 32 < T: bn = T rounded up to 16 (at most 128), split-K up to one wave of blocks, two when K is deep (>= 64
      k-tiles: 9216x36864 T=128 ks=3 1.55x cuBLAS vs ks=1 1.39x; 11008x4096 ks=1 1.45x vs ks=3 1.03x; the LLM
      shapes at T=1024 have >= 256 tiles: unsplit);
    - T <= 32 (decode: streaming the weight): a grid of at least half the SMs in blocks runs unsplit with 8
      slots (11008 / 9216 rows: 1.61-1.84x cuBLAS vs 1.43-1.78x split 3 ways); fewer tiles take 4 slots (two
      blocks per SM) and split K up to two waves (4096 rows: 1.59-1.72x vs 1.09-1.54x with 8 slots).
    No split with an activation; >= 4 k-tiles per split."""
    nk = ceil_div(K, 2 * BK)
    bn = max(16, ceil_div(min(T, 128), 16) * 16)
    bm, gm = 128, 1
    if T > 128:
        bm, stages, gm = min(SPARSE_BIG_TILES, key=lambda c: ceil_div(ceil_div(O, c[0]) * ceil_div(T, bn), SMS)
                             * c[0] / c[3])[:3]
    tiles = ceil_div(O, bm) * ceil_div(T, bn)
    per = (128 * BK + 2 * bn * BK + 128 * 8) * 2
    if T <= 32:
        waves, stages = (0, min(8, (SMEM_LIMIT - ALIGN) // per)) if 2 * tiles > SMS else (2, 4)
    else:
        waves = 2 if nk >= 64 and T <= 128 else 1
        if T <= 128:
            stages = max(3, min(8, (SMEM_LIMIT - ALIGN) // per))
    ks = 1 if activation else split_k(nk, tiles, waves * SMS, 4)
    return dict(bm=bm, bn=bn, stages=stages, ks=ks, gm=gm, wip=0 if T > 128 else 1, ws=1, tma=1, spk=SP_KMUL, sk=0,
                ar=0)


def resolve(O: int, K: int, T: int, knobs: dict | None, spec: MatmulSpec, sparse: bool = False) -> WgmmaSpec:
    from sparsec.backends.cuda.kernels.matmul import check_knobs

    knobs = check_knobs("cuda wgmma", knobs, KNOBS)
    kn = default_knobs(O, K, T, spec.activation, sparse)
    kn.update({k: v for k, v in knobs.items() if v is not None})
    if (knobs.get("sk") or (knobs.get("tail") or 1) > 1) and knobs.get("ks") is None:
        kn["ks"] = 1                         # stream-K / tail split replace the default split-K
    if knobs.get("sk") is None and ((knobs.get("ks") or 1) > 1 or (knobs.get("tail") or 1) > 1
                                    or knobs.get("ws") == 0):
        kn["sk"] = 0                         # an explicit split (or the cp.async main loop) replaces the default sk
    nk = ceil_div(K, kn["spk"] if sparse else BK)
    ks = ceil_div(nk, ceil_div(nk, kn["ks"]))
    if not kn["ws"] and knobs.get("tma") is None:
        kn["tma"] = 0                        # the default TMA producer needs the producer warpgroup
    ar = kn.get("ar") or 0
    if ar and knobs.get("wip") is None:
        kn["wip"] = 0
    ws = WgmmaSpec(spec, kn["bm"], kn["bn"], kn["stages"], ks, kn["gm"], kn["wip"], kn["ws"], sparse, kn["tma"],
                   kn["spk"] if sparse else SP_KMUL, kn.get("tail") or 1, kn.get("sk") or 0, ar, kn.get("ana") or 0)
    if ar and knobs.get("stages") is None:
        from dataclasses import replace

        # no A tile in a slot: as many slots as fit, up to 8
        ws = replace(ws, stages=max(2, min(8, (SMEM_LIMIT - ALIGN) // (ws.stage_elems() * 2))))
    if kn.get("pdl"):
        from dataclasses import replace

        ws = replace(ws, pdl=int(kn["pdl"]))
        if not (ws.tma and ws.ws) or ws.sk or ws.tail > 1 or ws.ar:
            raise KernelError(f"cuda wgmma kernel: pdl={ws.pdl} needs the TMA producer (ws=1, tma=1) on the plain "
                              f"grid (got ws={ws.ws}, tma={ws.tma}, sk={ws.sk}, tail={ws.tail}, ar={ws.ar})")
    if ws.ana and not ws.ar:
        raise KernelError("cuda wgmma kernel: ana=1 is a knob of the register-operand values (ar > 0)")
    if kn.get("l2p"):
        from dataclasses import replace

        ws = replace(ws, l2p=int(kn["l2p"]))
        if not ws.tma:
            raise KernelError(f"cuda wgmma kernel: l2p={ws.l2p} is the TMA tensor map's L2 promotion: it needs tma=1")
    if ws.ar and not (sparse and ws.tma and ws.ws and ws.wip == 0 and ws.spk == SP_KMUL):
        raise KernelError(f"cuda wgmma kernel: ar={ws.ar} (the stored values in registers) needs 2:4 weights, ws=1, "
                          f"tma=1, wip=0 and spk={SP_KMUL} (got ws={ws.ws}, tma={ws.tma}, wip={ws.wip}, spk={ws.spk}"
                          f"{'' if sparse else ', a dense weight'})")
    if ws.sk in (1, 2) and (ws.ks > 1 or ws.tail > 1 or spec.activation is not None):
        raise KernelError(f"cuda wgmma kernel: sk={ws.sk} (stream-K) adds the cut tiles with atomics: it needs ks=1, "
                          "tail=1 and no activation (sk=3 takes an activation)")
    if ws.sk == 3 and (ws.ks > 1 or ws.tail > 1 or not ws.ws):
        raise KernelError(f"cuda wgmma kernel: sk=3 (stream-K with a fixup) needs ks=1, tail=1 and ws=1 (got ks={ws.ks}, "
                          f"tail={ws.tail}, ws={ws.ws})")
    if ws.tail > 1:
        from dataclasses import replace

        ws = replace(ws, tail=ceil_div(nk, ceil_div(nk, ws.tail)))     # every tail block gets >= 1 k-tile
    if ws.tail > 1 and (ws.ks > 1 or spec.activation is not None):
        raise KernelError(f"cuda wgmma kernel: tail={ws.tail} splits the last wave's tiles along K with atomics: it "
                          "needs ks=1 and no activation")
    if ws.spk != SP_KMUL and not ws.tma:
        raise KernelError(f"cuda wgmma kernel: spk={ws.spk} needs tma=1 (the 64B-swizzled A tile is a TMA box)")
    if ws.tma and not ws.ws:
        raise KernelError("cuda wgmma kernel: tma=1 needs ws=1 (the producer warpgroup issues the TMA copies)")
    if ws.ks > 1 and spec.activation is not None:
        raise KernelError("cuda wgmma kernel: ks > 1 sums partial results with atomics, which an activation "
                          "cannot follow; use ks=1")
    if ws.bm % 64 or ws.bn % 16 or not 16 <= ws.bn <= 256:
        raise KernelError(f"cuda wgmma kernel: bm={ws.bm} must be a multiple of 64 and bn={ws.bn} a multiple "
                          "of 16 in [16, 256]")
    if ws.bm // 64 * ws.bn // 2 > 128 * 2:
        raise KernelError(f"cuda wgmma kernel: bm={ws.bm}, bn={ws.bn}: too many accumulators")
    if ws.ws and (ws.bm // 64 + 1) * 128 * (ws.bn // 2 + 26) > 65536:
        raise KernelError(f"cuda wgmma kernel: ws=1 with bm={ws.bm}, bn={ws.bn}: too few registers per thread "
                          "for the accumulators (one more warpgroup)")
    if ws.stages - 1 - ws.wip < 1 and not ws.ws:
        raise KernelError(f"cuda wgmma kernel: stages={ws.stages} leaves no copies in flight with wip={ws.wip}")
    if ws.smem_bytes() > SMEM_LIMIT:
        raise KernelError(f"cuda wgmma kernel: {ws.smem_bytes()} bytes of shared memory > {SMEM_LIMIT} "
                          f"(bm={ws.bm}, bn={ws.bn}, stages={ws.stages})")
    return ws


def cuda_wgmma_matmul_primfunc(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                               knobs: dict | None = None, name: str | None = None):
    """``(PrimFunc, args, knobs)``. Dense: ``values[O, K], X[T, K], [bias[O]], Y[T, O]``; 2:4 (``nm`` 2:4
    weights, ``wgmma.mma_async.sp``): ``sp_values[O, K/2], sp_meta[ceil(O/16), K/16, 8], X, [bias], Y`` from
    ``mma_layout.build(fmt)`` (the ``mma`` design's 2:4 layout), K a multiple of 128. fp16/bf16.
    Build the module with ``arch="sm_90a"``."""
    meta = meta_of(weight)
    sparse = tensor_core_weight(meta, "wgmma")
    spec = MatmulSpec(int(tokens), meta.rows, meta.cols, bool(bias), activation, meta.dtype)
    O, K, TT = spec.out_features, spec.in_features, spec.tokens
    if sparse and (K % SP_KMUL or K < SP_KMUL):
        raise KernelError(f"cuda wgmma kernel: 2:4 weights need K a multiple of {SP_KMUL} (got K={K}: whole "
                          "128-column k-tiles, no metadata tail); design='mma' takes K % 16 == 0")
    if K % 8 or K < 8:
        raise KernelError(f"cuda wgmma kernel: K={K} must be a multiple of 8 (16-byte rows)")
    ws = resolve(O, K, TT, knobs, spec, sparse)
    sym = name or ("sparsec_cuda_wgmma_nm_matmul" if sparse else "sparsec_cuda_wgmma_dense_matmul")
    func = _generate(ws).with_attr("global_symbol", sym)
    if ws.pdl:
        from sparsec.backends.cuda.toolchain import PDL_ATTR

        func = func.with_attr(PDL_ATTR, ws.pdl)       # every launch of it with programmatic dependent launch
    dt = spec.dtype
    if sparse and ws.ar:
        args = [Arg("sp_frag", dt, (ceil_div(O, 16), K // 32, 32, 8)),
                Arg("sp_meta", "int32", (ceil_div(O, 16), K // 16, 8))]
    elif sparse:
        args = [Arg("sp_values", dt, (O, K // 2)), Arg("sp_meta", "int32", (ceil_div(O, 16), K // 16, 8))]
    else:
        args = [Arg("values", dt, (O, K))]
    args.append(Arg("X", dt, (TT, K)))
    if bias:
        args.append(Arg("bias", dt, (O,)))
    args.append(Arg("Y", dt, (TT, O)))
    return func, args, resolved_knobs(ws)


def resolved_knobs(ws: WgmmaSpec) -> dict:
    """The knobs a kernel of ``ws`` reports (what ``cuda_wgmma_matmul_primfunc`` returns; passed back as knobs,
    they resolve to the same kernel)."""
    return {"design": "wgmma", "bm": ws.bm, "bn": ws.bn, "bk": ws.spk if ws.sparse else BK,
            "stages": ws.stages, "ks": ws.ks, "gm": ws.gm, "wip": ws.wip, "ws": ws.ws,
            **({"tma": 1} if ws.tma else {}), **({"tail": ws.tail} if tail_split(ws) else {}),
            **({"sk": ws.sk} if ws.sk else {}), **({"ar": ws.ar} if ws.ar else {}),
            **({"ana": 1} if ws.ana else {}), **({"pdl": ws.pdl} if ws.pdl else {}),
            **({"l2p": ws.l2p} if ws.l2p else {})}


def tail_split(ws: WgmmaSpec) -> tuple[int, int] | None:
    """``(full tiles, tail tiles)`` when ``ws.tail`` splits the tiles past the last full wave of ``SMS`` blocks
    (None when off or when the tiles fill whole waves)."""
    tiles = ceil_div(ws.spec.out_features, ws.bm) * ceil_div(ws.spec.tokens, ws.bn)
    full = tiles // SMS * SMS
    if ws.tail <= 1 or tiles == full:
        return None
    return full, tiles - full


def stream_k_segments(shared_tiles: int, nk: int, blocks: int, fixup: bool = False) -> list[list[tuple]]:
    """The stream-K schedule (``sk`` 1-3) in Python, mirrored by the kernel's index arithmetic: block ``c`` of
    ``blocks`` takes k-tile units ``[c U / G, (c+1) U / G)`` of the ``U = shared_tiles * nk`` units, one tile segment
    at a time. Per block, its segments in the order it runs them, each ``(tile, s0, s1, role, a, b)`` with units
    ``[s0, s1)`` of ``tile`` and the role:

    - ``"whole"``: the whole tile (a plain store);
    - ``"add"`` (sk 1-2): a cut segment added with atomics into Y zeroed first;
    - with ``fixup`` (sk=3) the segments run last to first, and a cut tile is finished by the block holding its
      last k-tile: ``"part"`` (the block's last segment ends inside a tile: its fp32 partial to workspace slot
      ``a = c``, then the tile's arrival counter is raised) or ``"finish"`` (waits until the partials of blocks
      ``a .. b - 1`` arrived, adds them, stores). A finisher only waits on lower-index blocks, whose partial is
      the first segment they run."""
    u = shared_tiles * nk
    g = min(blocks, u)
    out = []
    for c in range(g):
        lo, hi = c * u // g, (c + 1) * u // g
        segs = []
        for t in range(lo // nk, (hi - 1) // nk + 1):
            s0, s1 = max(lo, t * nk), min(hi, (t + 1) * nk)
            if s0 == t * nk and s1 == (t + 1) * nk:
                segs.append((t, s0, s1, "whole", 0, 0))
            elif not fixup:
                segs.append((t, s0, s1, "add", 0, 0))
            elif s1 < (t + 1) * nk:
                segs.append((t, s0, s1, "part", c, 0))
            else:
                segs.append((t, s0, s1, "finish", sk_first_part(t, nk, u, g), c))
        out.append(segs[::-1] if fixup else segs)
    return out


def sk_first_part(t: int, nk: int, u: int, g: int):
    """The first block whose share ends inside tile ``t`` (its units ``t nk + 1 ..``): the smallest ``c`` with
    ``(c + 1) u // g > t nk``, i.e. ``ceil((t nk + 1) g / u) - 1``. Python ints or TIR expressions."""
    return ((t * nk + 1) * g + u - 1) // u - 1


def sk_fixup_source(ws: "WgmmaSpec", ws_vec4: int, tiles: int, nacc: int, ntc: int) -> tuple[str, str]:
    """``(name, CUDA source)`` of the ``sk=3`` fixup helper and its static device memory (one workspace and one
    counter array per kernel spec, zero at module load): ``op`` 0 stores the consumer thread ``tid``'s ``nacc`` fp32
    accumulators into workspace slot ``a`` (``ntc`` consumer threads, 16-byte stores interleaved by thread: each
    warp's stores are contiguous; ``st.cg``), 1 fences them (``__threadfence``), 2 raises tile ``a``'s arrival counter,
    3 waits (``ld.acquire.gpu``) until it reached ``b`` and resets it for the next launch, 4 adds slots ``a .. b - 1``
    into the accumulators (``ld.cg``: L2, never a stale L1 line). ``op`` is a constant at every call: the branches
    fold when inlined. The memory is per kernel: two launches of one kernel must not run concurrently (the
    executor runs a model's launches in order on one stream)."""
    name, wsn, fl, decls = fixup_memory(ws, "sk", ws_vec4, tiles)
    nq = nacc // 4
    src = f"""
{decls}
__forceinline__ __device__ void {name}(int op, float* acc, int a, int b, int tid) {{
  if (op == 0) {{
{partial_store_src(wsn, nq, ntc)}
  }} else if (op == 1) {{
    __threadfence();
  }} else if (op == 2) {{
    atomicAdd(&{fl}[a], 1u);
  }} else if (op == 3) {{
    unsigned int v;
    do {{
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(&{fl}[a]) : "memory");
    }} while (v < (unsigned int)b);
    {fl}[a] = 0u;
    __threadfence();
  }} else {{
    {partial_sum_src(wsn, nq, ntc, "b")}
  }}
}}"""
    return name, src


def _wgmma_sp_device_function(name: str, bn: int, pt: str, params: str, a_regs: int, ins: str, tail: str) -> str:
    """CUDA source of an inline-asm device function issuing one ``wgmma.mma_async.sp ... m64n{bn}k32``: fp32
    accumulators ``d[0 .. bn/2)`` (in/out, by pointer: inlined into registers), then the A operand (a descriptor, or
    ``a_regs`` registers), the B descriptor and the metadata word; ``tail``: the immediates after them."""
    n = bn // 2
    regs = ", ".join(f"%{i}" for i in range(n))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(n))
    a = f"%{n}" if a_regs == 0 else "{" + ", ".join(f"%{n + i}" for i in range(a_regs)) + "}"
    k = n + max(a_regs, 1)
    return (f"__forceinline__ __device__ void {name}(float* d, {params}) {{\n"
            f'  asm volatile("wgmma.mma_async.sp.sync.aligned.m64n{bn}k32.f32.{pt}.{pt} {{{regs}}}, {a}, %{k}, '
            f'%{k + 1}, {tail};"\n'
            f'               : {outs}\n'
            f'               : {ins} : "memory");\n}}')


def wgmma_sp_source(bn: int, pt: str) -> tuple[str, str]:
    """``(name, CUDA source)`` of the device function issuing one ``wgmma.mma_async.sp ... m64n{bn}k32`` (TVM
    0.27's PTX table has no sparse wgmma): fp32 accumulators ``d[0 .. bn/2)`` (in/out), A and B shared-memory
    descriptors, the thread's 32-bit metadata word; sparsity selector 0 (threads 0 and 1 of each quad supply
    the metadata), scale-d 1, no negation, no transposes."""
    name = f"sparsec_wgmma_sp_m64n{bn}k32_{pt}"
    return name, _wgmma_sp_device_function(name, bn, pt, "unsigned long long da, unsigned long long db, unsigned int e",
                                           0, '"l"(da), "l"(db), "r"(e)', "0, 1, 1, 1, 0, 0")


def wgmma_sp_rs_source(bn: int, pt: str) -> tuple[str, str]:
    """``wgmma_sp_source`` with the A operand from registers: four 32-bit registers of two stored values each (the
    ``mma.m16n8k16`` A fragment of the warp's 16 rows over the k32 step's 16 stored columns; ``mma_layout``'s
    ``sp_frag`` order), B a shared-memory descriptor; sparsity selector 0, scale-d 1, no negation, B not
    transposed."""
    name = f"sparsec_wgmma_sp_rs_m64n{bn}k32_{pt}"
    params = "unsigned int a0, unsigned int a1, unsigned int a2, unsigned int a3, unsigned long long db, unsigned int e"
    return name, _wgmma_sp_device_function(name, bn, pt, params, 4,
                                           '"r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "r"(e)', "0, 1, 1, 1, 0")


MBAR_SRC = {   # device helpers, one source per function (TVM emits each function's source once)
    "sparsec_ld_na_v4": r"""
__forceinline__ __device__ void sparsec_ld_na_v4(unsigned int* r, const unsigned int* p) {
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "l"(p));
}""",
    "sparsec_tma2d": r"""
__forceinline__ __device__ void sparsec_tma2d(unsigned int smem, unsigned long long tmap, int c0, int c1,
                                              unsigned int mbar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
               :: "r"(smem), "l"(tmap), "r"(c0), "r"(c1), "r"(mbar) : "memory");
}""",
    "sparsec_mbar_expect_tx": r"""
__forceinline__ __device__ void sparsec_mbar_expect_tx(unsigned int addr, unsigned int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(addr), "r"(bytes) : "memory");
}""",
    "sparsec_mbar_init": r"""
__forceinline__ __device__ void sparsec_mbar_init(unsigned int addr, unsigned int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(addr), "r"(count) : "memory");
}""",
    "sparsec_mbar_arrive": r"""
__forceinline__ __device__ void sparsec_mbar_arrive(unsigned int addr) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.shared::cta.b64 st, [%0]; }" :: "r"(addr) : "memory");
}""",
    "sparsec_cp_async_arrive": r"""
__forceinline__ __device__ void sparsec_cp_async_arrive(unsigned int addr) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(addr) : "memory");
}""",
    "sparsec_mbar_wait": r"""
__forceinline__ __device__ void sparsec_mbar_wait(unsigned int addr, unsigned int parity) {
  asm volatile("{ .reg .pred P1; SPARSEC_WAIT: mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1; "
               "@P1 bra.uni SPARSEC_DONE; bra.uni SPARSEC_WAIT; SPARSEC_DONE: }" :: "r"(addr), "r"(parity) : "memory");
}""",
}


def swizzled_chunk(r, c):
    """16-byte chunk slot of chunk ``c`` of tile row ``r`` (128-byte rows, tile 1024-byte aligned): the
    128B swizzle (byte address bits [4, 7) ^= bits [7, 10)). Python ints or TIR expressions."""
    return c ^ (r % 8)


def smem_descriptor(addr_expr, swizzle: int = 128):
    """64-bit wgmma matrix descriptor of a K-major 128B-swizzled tile at shared address ``addr_expr``
    (uint32): start address >> 4 in bits [0, 14), leading byte offset 1 (unused when swizzled), stride byte
    offset 1024 B (>> 4 = 64) in bits [32, 46), layout type 1 (128B swizzle) in bits [62, 64).
    ``swizzle=64``: 64-byte rows, 64B swizzle (layout type 2), 8-row groups 512 B apart."""
    from tvm import tirx

    const = ((1 << 62) | (64 << 32) | (1 << 16)) if swizzle == 128 else ((2 << 62) | (32 << 32) | (1 << 16))
    return tirx.Cast("uint64", (addr_expr >> 4) & tirx.const(0x3FFF, "uint32")) + tirx.const(const, "uint64")


def _generate(ws: WgmmaSpec):
    from tvm.script import tirx as T

    spec = ws.spec
    O, K, TT, dt = spec.out_features, spec.in_features, spec.tokens, spec.dtype
    BM, BN, S, KS = ws.bm, ws.bn, ws.stages, ws.ks
    NWG = BM // 64                          # consumer warpgroups
    WS = bool(ws.ws)
    NT = 128 * (NWG + WS)                   # + the producer warpgroup (index NWG) when warp-specialised
    NP = 128 if WS else NT                  # threads issuing the copies
    NACC = BN // 2                          # fp32 accumulators per thread (m64 x bn over 128 threads)
    SP = ws.sparse                          # 2:4: A = the stored values (K/2 columns), wgmma.mma_async.sp
    TMA = bool(ws.tma)                      # the producer's copies are TMA boxes (host-encoded tensor maps)
    tW = T.Var("w_tmap", ty=T.handle("tensormap").ty)
    tX = T.Var("x_tmap", ty=T.handle("tensormap").ty)
    tM = T.Var("m_tmap", ty=T.handle("tensormap").ty)
    BKL = ws.spk if SP else BK              # logical reduction columns per k-tile
    ABK = BKL // 2 if SP else BK            # A columns per k-tile (sparse: stored values; 32 = 64-byte rows)
    ASW = 128 if ABK == BK else 64          # the A tile's swizzle (bytes per row)
    KA = K // 2 if SP else K                # stored columns of A
    NK = ceil_div(K, BKL)
    NKS = ceil_div(NK, KS)
    WIP = ws.wip                            # k-tiles of wgmma left in flight
    LA = S - 1 - WIP                        # k-tiles of copies in flight ahead of the one computed
    CH = BK // 8                            # 16-byte chunks per tile row (8)
    AR = ws.ar                              # register sets of stored values (k-tiles loaded ahead); 0: A in the slot
    ARS = bool(AR)
    ANA = bool(ws.ana)                      # ar: the values' loads not allocated in L1
    L2P = ws.l2p                            # the weight's tensor maps: L2 promotion (CUtensorMapL2promotion)
    ASZ = 0 if AR else BM * ABK             # elements per A stage
    BSZ = BN * BKL                          # B: one bn x 64 tile, or BKL/64 when sparse
    MSZ = BM * BKL // 16 if SP else 0       # sparse: metadata words [BM/16 blocks][BKL/16 col blocks][8] (as halves)
    RAW = ASZ + BSZ + MSZ                   # elements a stage receives (the TMA transaction bytes / 2)
    STG = ws.stage_elems()                  # elements per stage (RAW rounded to 1024 bytes: tiles stay aligned)
    MW = BKL // 2                           # metadata words per 16-row block per k-tile
    RB = ceil_div(O, 16)
    CST = BM + CPAD
    SMN = max(S * STG, BN * CST) + ALIGN // 2   # + alignment slack (elements)
    HAS_BIAS = spec.bias
    epi = epilogue(spec.activation)
    pt = {"float16": "f16", "bfloat16": "bf16"}[dt]
    WG = f"wgmma.mma_async.sync.aligned.m64n{BN}k16.f32.{pt}.{pt}"
    SPN, SPSRC = wgmma_sp_source(BN, pt)
    SPRN, SPRSRC = wgmma_sp_rs_source(BN, pt)
    NS32 = K // 32                          # ar: k32 steps per 16-row block of sp_frag
    CP = "cp.async.cg.shared.global"
    grid_m, grid_n = ceil_div(O, BM), ceil_div(TT, BN)
    GM = min(ws.gm, grid_m)
    PDL2 = ws.pdl == 2                      # the weight's first slots before griddepcontrol.wait (see KNOBS)
    zero_y = zero_fill(dt, TT * O, pdl=PDL2, wait=PDL2)

    def cvt(e):
        return T.Cast(dt, e)

    # the staged epilogue (accumulators -> shared tile -> 16-byte rows of Y), shared with the other GEMM
    stage, store = staged_epilogue(dt=dt, BM=BM, BN=BN, CST=CST, O=O, TT=TT, KS=KS, NT=NT, has_bias=HAS_BIAS,
                                   epi=epi)
    TS = tail_split(ws)                     # (full tiles, tail tiles): the tail tiles split along K into ws.tail
    HAS_TAIL = TS is not None
    TILES = grid_m * grid_n
    # sk=2: FULL2 tiles (whole waves) data-parallel, the k-tiles of the NT2 tiles after them shared out (sk=1: all)
    FULL2 = TILES // SMS * SMS
    NT2 = TILES - FULL2
    HYB = ws.sk in (2, 3) and FULL2 > 0 and NT2 > 0
    SK = ws.sk == 1 or (ws.sk == 3 and FULL2 == 0 and NT2 > 0)     # sk=3 under one wave: every tile shared
    FIX = ws.sk == 3 and NT2 > 0          # stream-K with the fixup: cut tiles summed through a workspace, no atomics
    # stream-K (sk=1 / sk=3 under one wave: every tile; sk=2 / 3: the tiles after the FULL2 of whole waves): SHG blocks
    # share the SHN tiles' k-tiles (stream_k_segments is the same schedule in Python)
    SHB, SHN = (FULL2, NT2) if HYB else (0, TILES)      # first shared tile, shared tiles
    SHU = max(SHN * NK, 1)
    SHG = min(SMS, SHU)
    SHSEG = ceil_div(ceil_div(SHU, SHG), NK) + 1        # tiles a block's share can touch
    SKN, SKSRC = sk_fixup_source(ws, SHG * (NWG * 128) * (NACC // 4), max(SHN, 1), NACC, NWG * 128)
    if not HAS_TAIL:
        FULLT = NTAIL = TAIL = NKT = 0
    if HAS_TAIL:
        FULLT, NTAIL = TS
        TAIL = ws.tail
        NKT = ceil_div(NK, TAIL)            # k-tiles per tail block
    if HAS_TAIL or ws.sk:
        stage_r, store_r = staged_epilogue(dt=dt, BM=BM, BN=BN, CST=CST, O=O, TT=TT, KS=2, NT=NT, has_bias=HAS_BIAS,
                                           epi=epi)     # the split blocks' epilogue: atomics, bias from part 0

    @T.macro
    def cp_tile(Sm, base, src, row0, col0, NR, NROWS, tid, KW):
        for it in T.unroll(ceil_div(NROWS * CH, NP)):
            e = it * NP + tid
            if e < NROWS * CH:
                r = e // CH
                c = e % CH
                row = row0 + r
                kc = col0 + c * 8
                T.ptx[CP](T.address_of(Sm[base + r * BK + swizzled_chunk(r, c) * 8]),
                          T.address_of(src[T.min(row, NR - 1), T.min(kc, KW - 8)]), 16,
                          T.if_then_else(row < NR and kc < KW, T.uint32(16), T.uint32(0)))

    @T.macro
    def cp_meta(Sm, base, Wm, bx, kt, tid):
        # the tile's BM/16 row blocks x 8 column blocks of 8 metadata words: 16 x 16 bytes per row block
        # (row blocks past O read the last one: valid metadata for the zero-filled rows)
        for it in T.unroll(ceil_div(BM, NP)):
            e = it * NP + tid
            if e < BM:
                rbl = e // 16
                c = e % 16
                T.ptx[CP](T.address_of(Sm[base + (rbl * 64 + c * 4) * 2]),
                          T.address_of(Wm[T.min(bx * (BM // 16) + rbl, RB - 1), kt * 8 + c // 2, (c % 2) * 4]), 16,
                          T.uint32(16))

    @T.macro
    def cp_stage(Sm, W, Wm, X, sb0, bx, by, kt, tid):
        cp_tile(Sm, sb0, W, bx * BM, kt * BK, O, BM, tid, KA)
        if SP:
            cp_tile(Sm, sb0 + ASZ, X, by * BN, kt * BKL, TT, BN, tid, K)
            cp_tile(Sm, sb0 + ASZ + BN * BK, X, by * BN, kt * BKL + BK, TT, BN, tid, K)
            cp_meta(Sm, sb0 + ASZ + BSZ, Wm, bx, kt, tid)
        else:
            cp_tile(Sm, sb0 + ASZ, X, by * BN, kt * BK, TT, BN, tid, K)

    @T.macro
    def mma_tile(Su, acc, sbase, sb0, wg, lt):
        # one k-tile of the slot at element offset sb0: dense 4 x wgmma k16, sparse 4 x wgmma.sp k32
        sa = sbase + T.Cast("uint32", (sb0 + wg * 64 * ABK) * 2)
        sb = sbase + T.Cast("uint32", (sb0 + ASZ) * 2)
        if SP:
            for kk in T.unroll(BKL // 32):
                T.cuda.func_call(SPN, T.address_of(acc[0]), smem_descriptor(sa + T.uint32(kk * 32), ASW),
                                 smem_descriptor(sb + T.uint32((kk // 2) * BN * BK * 2 + (kk % 2) * 64)),
                                 Su[(sb0 + ASZ + BSZ) // 2 + (wg * 4 + lt // 32) * MW + (2 * kk + lt % 2) * 8
                                    + (lt % 32) // 4], source_code=SPSRC)
        else:
            for kk in T.unroll(BK // 16):
                T.ptx[WG](*[acc[j] for j in range(NACC)],
                          smem_descriptor(sa + T.uint32(kk * 32)), smem_descriptor(sb + T.uint32(kk * 32)),
                          True, 1, 1, 0, 0)

    @T.macro
    def load_a(W, af, u, rb, kt, lt):
        # ar: the lane's 16 bytes of each of k-tile kt's BKL/32 k32 steps (sp_frag[rb, 4 kt + kk, lane]) into set u
        Wu = T.decl_buffer((RB * NS32 * 128,), "uint32", data=W.data)
        for kk in T.unroll(BKL // 32):
            if ANA:
                T.cuda.func_call("sparsec_ld_na_v4", T.address_of(af[u * 16 + kk * 4]),
                                 T.address_of(Wu[((rb * NS32 + kt * (BKL // 32) + kk) * 32 + lt % 32) * 4]),
                                 source_code=MBAR_SRC["sparsec_ld_na_v4"])
            else:
                for e in T.vectorized(4):
                    af[u * 16 + kk * 4 + e] = Wu[((rb * NS32 + kt * (BKL // 32) + kk) * 32 + lt % 32) * 4 + e]

    @T.macro
    def mma_regs(Su, acc, af, u, sbase, sb0, wg, lt):
        # ar: one k-tile, BKL/32 x wgmma.sp with A from register set u, B (and the metadata words) from the slot
        sb = sbase + T.Cast("uint32", sb0 * 2)
        for kk in T.unroll(BKL // 32):
            T.cuda.func_call(SPRN, T.address_of(acc[0]), af[u * 16 + kk * 4], af[u * 16 + kk * 4 + 1],
                             af[u * 16 + kk * 4 + 2], af[u * 16 + kk * 4 + 3],
                             smem_descriptor(sb + T.uint32((kk // 2) * BN * BK * 2 + (kk % 2) * 64)),
                             Su[(sb0 + BSZ) // 2 + (wg * 4 + lt // 32) * MW + (2 * kk + lt % 2) * 8 + (lt % 32) // 4],
                             source_code=SPRSRC)

    @T.macro
    def mainloop_sync(Sm, Su, W, Wm, X, acc, sbase, off, bx, by, k0, nkz, wg, tid):
        # every thread copies; one barrier per k-tile
        for s0 in T.unroll(LA):
            if s0 < nkz:
                cp_stage(Sm, W, Wm, X, off + s0 * STG, bx, by, k0 + s0, tid)
            T.ptx["cp.async.commit_group"]()
        for i in range(nkz):
            T.ptx["cp.async.wait_group"](LA - 1)
            T.ptx["fence.proxy.async.shared::cta"]()
            T.tvm_storage_sync("shared")
            if i + LA < nkz:
                cp_stage(Sm, W, Wm, X, off + ((i + LA) % S) * STG, bx, by, k0 + i + LA, tid)
            T.ptx["cp.async.commit_group"]()
            T.ptx["wgmma.fence.sync.aligned"]()
            mma_tile(Su, acc, sbase, off + (i % S) * STG, wg, tid % 128)
            T.ptx["wgmma.commit_group.sync.aligned"]()
            T.ptx["wgmma.wait_group.sync.aligned"](WIP)
        T.ptx["wgmma.wait_group.sync.aligned"](0)
        T.ptx["cp.async.wait_group"](0)
        T.tvm_storage_sync("shared")

    @T.macro
    def mbar_wait(Mb, k, parity):
        T.cuda.func_call("sparsec_mbar_wait", T.cuda.cvta_generic_to_shared(T.address_of(Mb[k])), parity,
                         source_code=MBAR_SRC["sparsec_mbar_wait"])

    @T.macro
    def tma2d(sbase, el, tmap, c0, c1, mb):
        T.cuda.func_call("sparsec_tma2d", sbase + T.Cast("uint32", el * 2), T.address_of(tmap), c0, c1, mb,
                         source_code=MBAR_SRC["sparsec_tma2d"])

    @T.macro
    def tensor_maps(W, Wm, X):
        # host side: the 2-D tensor maps of the weight, the activations (128B-swizzled 64-column boxes: the
        # layout the descriptors read) and, for 2:4, the metadata words (64-word rows, unswizzled)
        if not ARS:
            T.Bind(T.tvm_stack_alloca("tensormap", 1), var=tW)
            T.tensormap_encode_tiled(tW, W.data, KA, O, KA * 2, ABK, BM, 1, 1, descriptor_dtype=dt, rank=2,
                                     swizzle=3 if ASW == 128 else 2, l2_promotion=L2P)
        T.Bind(T.tvm_stack_alloca("tensormap", 1), var=tX)
        T.tensormap_encode_tiled(tX, X.data, K, TT, K * 2, BK, BN, 1, 1, descriptor_dtype=dt, rank=2, swizzle=3)
        if SP:
            T.Bind(T.tvm_stack_alloca("tensormap", 1), var=tM)
            T.tensormap_encode_tiled(tM, Wm.data, K // 2, RB, K * 2, MW, BM // 16, 1, 1, descriptor_dtype="int32",
                                     rank=2, swizzle=0, l2_promotion=L2P)

    @T.macro
    def mainloop_ws(Sm, Su, W, Wm, X, acc, sbase, off, bx, by, k0, nkz, wg, lt):
        # full[s] = Mb[s] (128 producer arrivals: cp.async.mbarrier.arrive.noinc, when the thread's copies land),
        # empty[s] = Mb[S + s] (every consumer thread arrives once its wgmma finished reading the slot)
        Mb = T.alloc_buffer((2 * S,), "uint64", scope="shared")
        if wg == 0 and lt == 0:
            for k in T.unroll(S):
                T.cuda.func_call("sparsec_mbar_init", T.cuda.cvta_generic_to_shared(T.address_of(Mb[k])),
                                 T.uint32(1 if TMA else 128), source_code=MBAR_SRC["sparsec_mbar_init"])
                T.cuda.func_call("sparsec_mbar_init", T.cuda.cvta_generic_to_shared(T.address_of(Mb[S + k])),
                                 T.uint32(128 * NWG), source_code=MBAR_SRC["sparsec_mbar_init"])
        T.tvm_storage_sync("shared")
        if wg == NWG:
            if TMA:
                # one thread: per slot an expect_tx of the slot's bytes, then the TMA boxes complete them
                if lt == 0:
                    if PDL2:
                        # the weight (and 2:4 metadata) boxes of the first S slots while the previous kernel may
                        # still run; the activation boxes complete those slots once it has finished
                        for i in T.unroll(S):
                            if i < nkz:
                                mb = T.cuda.cvta_generic_to_shared(T.address_of(Mb[i]))
                                T.cuda.func_call("sparsec_mbar_expect_tx", mb, T.uint32(RAW * 2),
                                                 source_code=MBAR_SRC["sparsec_mbar_expect_tx"])
                                tma2d(sbase, off + i * STG, tW, (k0 + i) * ABK, bx * BM, mb)
                                if SP:
                                    tma2d(sbase, off + i * STG + ASZ + BSZ, tM, (k0 + i) * MW, bx * (BM // 16), mb)
                        T.ptx["griddepcontrol.wait"]()
                        for i in T.unroll(S):
                            if i < nkz:
                                mb = T.cuda.cvta_generic_to_shared(T.address_of(Mb[i]))
                                if SP:
                                    for h in T.unroll(BKL // BK):
                                        tma2d(sbase, off + i * STG + ASZ + h * BN * BK, tX, (k0 + i) * BKL + h * BK,
                                              by * BN, mb)
                                else:
                                    tma2d(sbase, off + i * STG + ASZ, tX, (k0 + i) * BK, by * BN, mb)
                    for i in range(S if PDL2 else 0, nkz):
                        st = i % S
                        if i >= S:
                            mbar_wait(Mb, S + st, T.Cast("uint32", (i // S - 1) % 2))
                        mb = T.cuda.cvta_generic_to_shared(T.address_of(Mb[st]))
                        T.cuda.func_call("sparsec_mbar_expect_tx", mb, T.uint32(RAW * 2),
                                         source_code=MBAR_SRC["sparsec_mbar_expect_tx"])
                        sb0 = off + st * STG
                        if not ARS:
                            tma2d(sbase, sb0, tW, (k0 + i) * ABK, bx * BM, mb)
                        if SP:
                            for h in T.unroll(BKL // BK):
                                tma2d(sbase, sb0 + ASZ + h * BN * BK, tX, (k0 + i) * BKL + h * BK, by * BN, mb)
                            tma2d(sbase, sb0 + ASZ + BSZ, tM, (k0 + i) * MW, bx * (BM // 16), mb)
                        else:
                            tma2d(sbase, sb0 + ASZ, tX, (k0 + i) * BK, by * BN, mb)
            else:
                for i in range(nkz):
                    st = i % S
                    if i >= S:
                        mbar_wait(Mb, S + st, T.Cast("uint32", (i // S - 1) % 2))
                    cp_stage(Sm, W, Wm, X, off + st * STG, bx, by, k0 + i, lt)
                    T.cuda.func_call("sparsec_cp_async_arrive", T.cuda.cvta_generic_to_shared(T.address_of(Mb[st])),
                                     source_code=MBAR_SRC["sparsec_cp_async_arrive"])
                T.ptx["cp.async.commit_group"]()
                T.ptx["cp.async.wait_group"](0)
        elif ARS:
            # the stored values of k-tile i + AR - 1 load into the register set wgmma i - 1 read (finished: wip=0)
            # while k-tile i's wgmma runs from the set loaded AR - 1 k-tiles earlier; the loop is unrolled by AR so
            # every set index is a constant (registers, not local memory)
            af = T.alloc_buffer((AR * 16,), "uint32", scope="local")
            rb = T.min(bx * (BM // 16) + wg * 4 + lt // 32, RB - 1)     # rows past O: never stored
            for u in T.unroll(AR - 1):
                if u < nkz:
                    load_a(W, af, u, rb, k0 + u, lt)
            for i0 in range((nkz + AR - 1) // AR):
                for u in T.unroll(AR):
                    if i0 * AR + u < nkz:
                        if i0 * AR + u + AR - 1 < nkz:
                            load_a(W, af, (u + AR - 1) % AR, rb, k0 + i0 * AR + u + AR - 1, lt)
                        mbar_wait(Mb, (i0 * AR + u) % S, T.Cast("uint32", ((i0 * AR + u) // S) % 2))
                        T.ptx["wgmma.fence.sync.aligned"]()
                        mma_regs(Su, acc, af, u, sbase, off + ((i0 * AR + u) % S) * STG, wg, lt)
                        T.ptx["wgmma.commit_group.sync.aligned"]()
                        T.ptx["wgmma.wait_group.sync.aligned"](0)
                        T.cuda.func_call("sparsec_mbar_arrive",
                                         T.cuda.cvta_generic_to_shared(T.address_of(Mb[S + (i0 * AR + u) % S])),
                                         source_code=MBAR_SRC["sparsec_mbar_arrive"])
        else:
            for i in range(nkz):
                st = i % S
                mbar_wait(Mb, st, T.Cast("uint32", (i // S) % 2))
                if not TMA:     # cp.async wrote the slot through the generic proxy; TMA writes are async-proxy
                    T.ptx["fence.proxy.async.shared::cta"]()
                T.ptx["wgmma.fence.sync.aligned"]()
                mma_tile(Su, acc, sbase, off + st * STG, wg, lt)
                T.ptx["wgmma.commit_group.sync.aligned"]()
                T.ptx["wgmma.wait_group.sync.aligned"](WIP)
                if WIP == 0:
                    T.cuda.func_call("sparsec_mbar_arrive", T.cuda.cvta_generic_to_shared(T.address_of(Mb[S + st])),
                                     source_code=MBAR_SRC["sparsec_mbar_arrive"])
                else:
                    if i > 0:
                        T.cuda.func_call("sparsec_mbar_arrive",
                                         T.cuda.cvta_generic_to_shared(T.address_of(Mb[S + (i + S - 1) % S])),
                                         source_code=MBAR_SRC["sparsec_mbar_arrive"])
            T.ptx["wgmma.wait_group.sync.aligned"](0)
        T.tvm_storage_sync("shared")

    @T.macro
    def tile(Sm, W, Wm, X, bias, Y, bx, by, bz, tid, k_first, k_span, red, fix, pa, pb):
        Su = T.decl_buffer((SMN // 2,), "uint32", data=Sm.data, scope="shared.dyn")
        acc = T.alloc_buffer((NACC,), "float32", scope="local")
        cv = T.alloc_buffer((8,), dt, scope="local")
        cu = T.alloc_buffer((4,), "uint32", scope="local")
        # 1024-byte aligned start of the ring inside the dynamic shared memory (in elements)
        sbase = T.cuda.cvta_generic_to_shared(T.address_of(Sm[0]))
        off = T.Cast("int32", ((T.uint32(ALIGN) - (sbase % T.uint32(ALIGN))) % T.uint32(ALIGN)) // T.uint32(2))
        wg = tid // 128
        lt = tid % 128
        k0 = k_first
        nkz = T.min(k_span, NK - k0)
        if SK or HYB or FIX:
            # the previous segment's epilogue read this memory through the generic proxy; TMA writes it next
            T.ptx["fence.proxy.async.shared::cta"]()
        if PDL2:
            T.ptx["griddepcontrol.launch_dependents"]()   # the next kernel's blocks may start their own prologue
        for i in T.unroll(NACC):
            acc[i] = T.float32(0)
        if WS:
            mainloop_ws(Sm, Su, W, Wm, X, acc, sbase, off, bx, by, k0, nkz, wg, lt)
        else:
            mainloop_sync(Sm, Su, W, Wm, X, acc, sbase, off, bx, by, k0, nkz, wg, tid)
        if PDL2:
            # every thread past the previous kernel's end before Y is written (the producer waited for it)
            T.ptx["griddepcontrol.wait"]()
        # staged epilogue: d[4j + 2h + e] = (row 16 w + lane/4 + 8h, token 8j + 2 (lane%4) + e)
        if red:
            if wg < NWG:
                for j in T.unroll(BN // 8):
                    for h in T.unroll(2):
                        for e in T.unroll(2):
                            stage_r(Sm, bias, bx, bz, wg * 64 + (lt // 32) * 16 + (lt % 32) // 4 + 8 * h,
                                    j * 8 + (lt % 4) * 2 + e, acc[j * 4 + h * 2 + e])
            store_r(Sm, Su, cv, cu, Y, bx, by, tid)
        elif FIX and fix == 1:
            # sk=3, a cut tile's partial (the block's last segment): fp32 accumulators to workspace slot pa, then
            # (every thread's stores fenced, one barrier) the arrival counter of the tile (bz: its index among the
            # shared tiles) is raised
            if wg < NWG:
                T.cuda.func_call(SKN, 0, T.address_of(acc[0]), pa, 0, tid, source_code=SKSRC)
                T.cuda.func_call(SKN, 1, T.address_of(acc[0]), 0, 0, tid, source_code=SKSRC)
            T.tvm_storage_sync("shared")
            if tid == 0:
                T.cuda.func_call(SKN, 2, T.address_of(acc[0]), bz, 0, tid, source_code=SKSRC)
        else:
            if FIX and fix == 2:
                # sk=3, the segment holding the tile's last k-tile: wait for the partials of blocks pa .. pb - 1 (lower
                # block indices, each its first segment: never a wait), add them, store as a whole tile
                if tid == 0:
                    T.cuda.func_call(SKN, 3, T.address_of(acc[0]), bz, pb - pa, tid, source_code=SKSRC)
                T.tvm_storage_sync("shared")
                if wg < NWG:
                    T.cuda.func_call(SKN, 4, T.address_of(acc[0]), pa, pb, tid, source_code=SKSRC)
            if wg < NWG:
                for j in T.unroll(BN // 8):
                    for h in T.unroll(2):
                        for e in T.unroll(2):
                            ol = wg * 64 + (lt // 32) * 16 + (lt % 32) // 4 + 8 * h
                            tl = j * 8 + (lt % 4) * 2 + e
                            v = acc[j * 4 + h * 2 + e]
                            stage(Sm, bias, bx, bz, ol, tl, v)
            store(Sm, Su, cv, cu, Y, bx, by, tid)

    @T.macro
    def body(W, Wm, X, bias, Y):
        if KS > 1:
            zero_y(Y)    # split-K sums into Y with atomics: zero it first (a launch of its own)
        for bz in T.thread_binding(KS, thread="blockIdx.y"):
            for lin in T.thread_binding(grid_m * grid_n, thread="blockIdx.x"):
                for tid in T.thread_binding(NT, thread="threadIdx.x"):
                    gsz = T.min(GM, grid_m - (lin // (GM * grid_n)) * GM)
                    r = lin % (GM * grid_n)
                    # the dynamic shared memory is one `extern __shared__` array per module and name: a
                    # fp16 and a bf16 kernel declaring it under one name with two types do not compile
                    if dt == "float16":
                        wgmma_smem_f16 = T.alloc_buffer((SMN,), dt, scope="shared.dyn")
                        tile(wgmma_smem_f16, W, Wm, X, bias, Y, (lin // (GM * grid_n)) * GM + r % gsz, r // gsz, bz,
                             tid, bz * NKS, NKS, False, 0, 0, 0)
                    else:
                        wgmma_smem_bf16 = T.alloc_buffer((SMN,), dt, scope="shared.dyn")
                        tile(wgmma_smem_bf16, W, Wm, X, bias, Y, (lin // (GM * grid_n)) * GM + r % gsz, r // gsz,
                             bz, tid, bz * NKS, NKS, False, 0, 0, 0)

    def raster(lin):
        """(row tile, token tile) of linear tile index ``lin``: groups of GM row tiles swept over the token tiles."""
        gsz = T.min(GM, grid_m - (lin // (GM * grid_n)) * GM)
        r = lin % (GM * grid_n)
        return (lin // (GM * grid_n)) * GM + r % gsz, r // gsz

    ZB = ceil_div(BN * (BM // 8), 256)      # 256-thread blocks zeroing one tail tile of Y

    @T.macro
    def zero_tail(Y, lin, e):
        # 16-byte chunk e of the tail tile lin of Y (tokens by*BN.., rows bx*BM..) to zero
        if e < BN * (BM // 8):
            if (raster(lin)[1] * BN + e // (BM // 8) < TT and raster(lin)[0] * BM + (e % (BM // 8)) * 8 < O):
                if O % 8 == 0:
                    for jj in T.vectorized(8):
                        Y[raster(lin)[1] * BN + e // (BM // 8), raster(lin)[0] * BM + (e % (BM // 8)) * 8 + jj] = \
                            T.Cast(dt, T.float32(0))
                else:
                    for jj in T.unroll(8):
                        if raster(lin)[0] * BM + (e % (BM // 8)) * 8 + jj < O:
                            Y[raster(lin)[1] * BN + e // (BM // 8), raster(lin)[0] * BM + (e % (BM // 8)) * 8 + jj] = \
                                T.Cast(dt, T.float32(0))


    @T.macro
    def seg(Sm, W, Wm, X, bias, Y, t, s0, s1, c, tid):
        if FIX:
            # whole tile: a store; ends inside the tile: this block's partial (slot c); else the tile's finisher
            tile(Sm, W, Wm, X, bias, Y, raster(SHB + t)[0], raster(SHB + t)[1], t, tid, s0 - t * NK, s1 - s0, False,
                 T.if_then_else(s1 < (t + 1) * NK, 1, T.if_then_else(s0 == t * NK, 0, 2)),
                 T.if_then_else(s1 < (t + 1) * NK, c, sk_first_part(t, NK, SHU, SHG)), c)
        else:
            tile(Sm, W, Wm, X, bias, Y, raster(SHB + t)[0], raster(SHB + t)[1], T.if_then_else(s0 == t * NK, 0, 1),
                 tid, s0 - t * NK, s1 - s0, s1 - s0 < NK, 0, 0, 0)

    @T.macro
    def share(Sm, W, Wm, X, bias, Y, c, tid):
        # block c: its share [c U / G, (c+1) U / G) of the shared k-tiles, one tile segment [s0, s1) at a time (a
        # whole tile stores, a cut one adds; the bias from the segment that starts the tile)
        # (sk=3: last segment first, so that a block's partial is the first thing it computes)
        for jr in range(SHSEG):
            j = (SHSEG - 1 - jr) if FIX else jr
            if T.max(c * SHU // SHG, (c * SHU // SHG // NK + j) * NK) < T.min((c + 1) * SHU // SHG,
                                                                             (c * SHU // SHG // NK + j + 1) * NK):
                seg(Sm, W, Wm, X, bias, Y, c * SHU // SHG // NK + j, T.max(c * SHU // SHG, (c * SHU // SHG // NK + j) * NK),
                    T.min((c + 1) * SHU // SHG, (c * SHU // SHG // NK + j + 1) * NK), c, tid)

    @T.macro
    def block(Sm, W, Wm, X, bias, Y, item, tid):
        # one block of the sk / tail launches (the dynamic shared memory declared by the caller per element type)
        if SK:
            share(Sm, W, Wm, X, bias, Y, item, tid)
        elif HYB:
            if item < FULL2:
                tile(Sm, W, Wm, X, bias, Y, raster(item)[0], raster(item)[1], 0, tid, 0, NK, False, 0, 0, 0)
            else:
                share(Sm, W, Wm, X, bias, Y, item - FULL2, tid)
        else:
            # tail: the first FULLT tiles as usual; each of the NTAIL after them as TAIL blocks of NKT k-tiles
            tile(Sm, W, Wm, X, bias, Y,
                 raster(T.if_then_else(item < FULLT, item, FULLT + (item - FULLT) // TAIL))[0],
                 raster(T.if_then_else(item < FULLT, item, FULLT + (item - FULLT) // TAIL))[1],
                 T.if_then_else(item < FULLT, 0, (item - FULLT) % TAIL), tid,
                 T.if_then_else(item < FULLT, 0, (item - FULLT) % TAIL * NKT),
                 T.if_then_else(item < FULLT, NK, NKT), item >= FULLT, 0, 0, 0)

    @T.macro
    def body_split(W, Wm, X, bias, Y):
        # first zero the Y tiles that several blocks add into, then the blocks
        if HAS_TAIL:
            for zb in T.thread_binding(NTAIL * ZB, thread="blockIdx.x"):
                for zt in T.thread_binding(256, thread="threadIdx.x"):
                    zero_tail(Y, FULLT + zb // ZB, (zb % ZB) * 256 + zt)
        elif not FIX:
            # the tiles cut by a share's ends
            for zb in T.thread_binding(max(SHG - 1, 1) * ZB, thread="blockIdx.x"):
                for zt in T.thread_binding(256, thread="threadIdx.x"):
                    if (zb // ZB + 1) * SHU // SHG % NK != 0 and zb // ZB + 1 < SHG:
                        zero_tail(Y, SHB + (zb // ZB + 1) * SHU // SHG // NK, (zb % ZB) * 256 + zt)
        for item in T.thread_binding(FULLT + NTAIL * TAIL if HAS_TAIL else (FULL2 if HYB else 0) + SHG,
                                     thread="blockIdx.x"):
            for tid in T.thread_binding(NT, thread="threadIdx.x"):
                if dt == "float16":
                    wgmma_smem_f16 = T.alloc_buffer((SMN,), dt, scope="shared.dyn")
                    block(wgmma_smem_f16, W, Wm, X, bias, Y, item, tid)
                else:
                    wgmma_smem_bf16 = T.alloc_buffer((SMN,), dt, scope="shared.dyn")
                    block(wgmma_smem_bf16, W, Wm, X, bias, Y, item, tid)

    if SP:
        @T.prim_func(check_well_formed=not TMA)
        def kern(a_values: T.handle, a_meta: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            W = T.match_buffer(a_values, (RB, K // 32, 32, 8) if ARS else (O, KA), dt)
            Wm = T.match_buffer(a_meta, (RB, K // 16, 8), "int32")
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            if TMA:
                tensor_maps(W, Wm, X)
            if HYB or SK or HAS_TAIL:
                body_split(W, Wm, X, bias, Y)
            else:
                body(W, Wm, X, bias, Y)
    else:
        @T.prim_func(check_well_formed=not TMA)
        def kern(a_values: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            W = T.match_buffer(a_values, (O, K), dt)
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            if TMA:
                tensor_maps(W, W, X)
            if HYB or SK or HAS_TAIL:
                body_split(W, W, X, bias, Y)
            else:
                body(W, W, X, bias, Y)

    if not HAS_BIAS:
        from sparsec.backends.kernels.common import drop_param

        kern = drop_param(kern, "bias")
    return kern
