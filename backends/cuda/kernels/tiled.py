"""The ``tiled`` CUDA kernel: unstructured sparse weights decoded once per stage into shared memory.

``Y[T, O] = act(X[T, K] @ W[O, K]^T + bias)`` for skinny ``T`` (decode), with ``W`` in the
kernel-private tiled-CSR layout of ``tiled_layout.py`` (16-bit in-stage positions). Designed to be
bound by memory, not by instructions: the work per stage is *per stored non-zero* (one 16-byte load
of 8 values, one of 8 positions, 8 shared stores), plus a fixed cost per stage (zeroing it with
16-byte stores, one 16-byte shared load per A fragment, the mma).

- grid ``(row groups, token tiles, k splits)``; a block of ``warps`` warps owns ``16*rt`` rows and
  ``TN`` tokens; the warps of all ``ksplit`` blocks of a row group split its stages (contiguous
  ranges); each warp owns a private shared-memory stage buffer;
- per warp: the stage pointers of its whole range are loaded once (one per lane) and broadcast by
  shuffles (when a warp has at most 31 stages); the first batch of 256 (value, position) pairs of the next stage is loaded into
  registers while the current stage is multiplied (software pipelining of the compressed stream);
  the stage's activations (the B fragments, 8 contiguous halves per lane and n8 tile) are loaded
  before the scatter, so their latency overlaps it;
- per stage: zero the buffer, barrier, scatter the non-zeros to their fragment slots, barrier, then per 32-column chunk and row tile two ``ld.shared.v4`` + ``mma.sync.m16n8k16``
  (fp32 accumulation), barrier. With ``sync="warp"`` (default) the barriers are ``__syncwarp``: the stage
  buffer is warp-private and reached through a pointer TVM's ThreadSync does not see (it would make them
  ``__syncthreads``), so warps run ahead of each other; ``sync="block"`` is the previous kernel
  (H100, 2026-11-23: warp is 1.02-1.25x faster in every decode cell, ``benchmarks/results/spmm_gpu_tiled_warp.*``);
- ``clear="unscatter"`` (opt-in): the stage buffer is zeroed once; after its mma each stage writes zeros back
  to the slots it scattered (first batch's slots kept in registers, further batches' re-read) instead of the
  next stage zeroing the whole buffer. H100, 2026-11-23 (``benchmarks/results/dev/tiled_clear.*``): faster at
  90 % (1.07-1.15x on the three LLM shapes at T <= 16, T = 32 0.93-1.06x), slower at 70 % (0.77-0.94x) and
  mostly at 80 % (0.88-1.02x); the kernel does not know
  the density, so the caller picks it (one 256-entry batch per stage, i.e. density <= 12.5 % at rt=2, sc=64);
- ``code="bitmap"`` (opt-in; ``tiled_layout.build_bitmap``): a stage arrives as bank-owned bitmaps (lane j owns the
  S/32 halves of shared-memory bank j: NW = S/1024 words per lane) + the values packed lane by lane; per stage the
  warp copies the values to a warp-private staging area (16-byte copies; a stage with more values than the area
  holds is read from global memory), each lane finds its first value by a shuffle scan of the popcounts and walks
  its set bits (``31 - clz``, one ``st.shared.u16`` per non-zero: the 32 lanes' stores never share a bank).
  0.125 B per element + 2 per non-zero (0.73 B/element at 70 %, ``pos``: 1.21), but H100, 2026-11-23
  (``benchmarks/results/dev/tiledbm_run1.*``): slower than ``pos`` in every cell of 3 LLM shapes x T 1-32 x
  70/80/90 % (the fastest bitmap variant beat pos's default only at 4096x11008 70 % T <= 16, by a higher split,
  where pos at a higher split was faster still; docs/cuda.md): the walk is issue-bound (a ``while`` per word runs
  as long as the warp's fullest lane: 63 % lane efficiency at 70 %, 45 % at 90 %; 18 PTX instructions per step),
  not memory-bound. A pair-major value order (ballot + popc per step, conflict-free
  4-byte staged loads, no scan; commit dee83fe, ``tiledbm_run2.*``) was slower still: more instructions per step;
- ``code="pos7"`` (opt-in; ``tiled_layout.build_pos7``, buffers ``tc_values, tc_code, tc_ptr``; needs
  16*rt*sc <= 2048): everything of ``pos`` but 3-byte entries. A stage's S slots are S/128 groups; entries come
  in chunks of 8 (one lane's 16-byte value load) of one group, and a chunk's 8 positions are one 8-byte code word
  (int32 ``lo, hi``: 7-bit in-group fields, the group in ``lo``'s bits 28..31), loaded with one
  ``ld.global.v2.u32``; slot_j = ``((lo >> 21) & 0x780) + ((word >> 7(j%4)) & 127)`` (no field straddles the two
  words: 5 PTX integer instructions per entry incl. the address, ``pos`` 4). Pads repeat an entry of their chunk
  (same slot, same value), so ``clear="unscatter"``, pipe 2/3 and split-K work unchanged. 0.98 / 0.68 / 0.39 B per
  element at 70 / 80 / 90 % (``pos``: 1.21 / 0.81 / 0.41). H100, 2026-11-23 (``benchmarks/results/dev/tiledp7_run1.*``,
  28/28 checks): faster than ``pos`` at the same knobs in all 24 cells of 3 LLM shapes x T 1-32 at 70 and 80 %
  (geomean 1.09x, 1.01-1.18x; 70 %: 9216x36864 T=1/8 1.60/1.57x cuBLAS, 11008x4096 1.54/1.51x), slower in all 12 at
  90 % (0.86-0.97x: a group's padding adds ~26 % entries, so 54 % of the stages need a second, non-prefetched
  256-entry batch, pos 0 %); on 4096x4096 (L2-resident) geomean 0.98-0.99x at 70-80 %. The winner depends on the
  density, which the kernel does not know: ``pos`` stays the default, the caller picks pos7 (measured: density >= 0.2);
- ``split="rows"`` (opt-in): the block's warps take ``warps`` row groups over one K range (``ksplit`` blocks per row
  group, each warp all of its range's stages: at most ``MAX_PER_ROWS`` by default) and store their own rows (no shared
  reduction), so the 8 warps read the same activation slices (L1). Meant for T >= 16, where Nsight Compute showed
  ~660 MB of activation loads on 9216x36864 at T=32; H100, 2026-11-23 (``benchmarks/results/dev/tiledrows_run1.*``):
  correct (28/28) but slower than ``split="k"`` in all 27 cells (0.39-0.92x: each warp walks 2-8x more stages in
  sequence, and the per-element Y atomics of the larger split cost more than the L1 reuse saves);
- ``xpipe=1`` (opt-in, pipe=1): the next stage's activation fragments are loaded during this stage (two register
  sets); H100 (``benchmarks/results/dev/tiledxp_run1.*``): neutral at T=8, 0.59-1.01x at T=16/32 (registers);
- ``minb`` (opt-in): ``__launch_bounds__(threads, minb)`` (applied by ``toolchain.build``), capping registers for
  ``minb`` blocks per SM (Nsight Compute: 117-123 registers at T=32 leave 2 blocks, 24 % of the warp slots). H100
  (``DEV_TILED_MODE=minb``, ``benchmarks/results/dev/minb_run1.*``, 28/28 checks): ``minb=3`` with pos7 is +0-14 % at
  T=8 (9/9 cells), neutral at T=16, and at T=32 +25 % on 11008x4096 but -3 to -30 % elsewhere (spills); ``minb=4``
  mostly slower. Not a default (T=1 not measured);
- ``mma="wg"`` (sm_90a; ``tiled_wg.py``, layout ``slots="wg"``, rt=1): the same compressed stream decoded per 16-row
  strip straight into the 128B-swizzled A operand of ``wgmma.mma_async``, one activation tile per block shared by its
  ``wgs`` warpgroups, a staged epilogue with vector reductions. H100 session 8 (docs/cuda.md): the fastest tiled
  variant at 8-128 tokens on the large LLM shapes (70 % T=32 1.34-1.51x cuBLAS against 0.82-1.01x); ``resolve_wg``
  has its knobs and defaults;
  session 10 knobs (H100, docs/cuda.md): ``sp=1`` the stage decoded into the 2:4 sparse wgmma operand (``rr``:
  its residual during the wgmma, ``rp``: residual rows prefetched; the planner's variant at 90 % below 32 tokens),
  ``pdl=1`` (opt-in, measured neutral) split-K's main kernel launched with programmatic dependent launch so the
  zeroing launch overlaps it, ``wgs`` 3 / 4 (opt-in, slower except 70 % on 9216x36864); session 15: ``pdl=2``
  (the planner's) every launch of the layer overlaps the previous kernel on the stream, the weight read before
  ``griddepcontrol.wait`` and X, Y and the split workspace after it (``tiled_wg.py``); session 17 (opt-in, H100 in
  docs/cuda.md "Cache hints on the weight"): ``ldw`` PTX cache qualifiers on the weight stream's loads
  (``tiled_wg.LDW_HINTS``), ``l2f=1`` one bulk L2 prefetch per warp of its strip's bytes for the block, issued first;
- the warps' partial sums meet in shared memory (fp32 ``atomicAdd``); with one k split the block
  applies bias + activation and stores Y; with ``ksplit > 1`` (no activation) a first kernel zeroes
  Y and every block adds its partial result with fp16/bf16 ``atomicAdd`` (bias by split 0).
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from sparsec.backends.cuda.kernels.staged import warp_reduce_epilogue
from sparsec.backends.kernels.common import Arg, KernelError, MatmulSpec, ceil_div, epilogue, meta_of

KNOBS = {"rt": (1, 2, 4), "sc": (32, 64, 128, 256), "warps": (1, 2, 4, 8, 16),
         "ksplit": tuple(range(1, 65)),
         "tn": (8, 16, 24, 32, 40, 48, 56, 64, 96, 128), "pipe": (1, 2, 3), "sync": ("warp", "block"),
         "clear": ("zero", "unscatter"), "code": ("pos", "bitmap", "pos7"), "vsrc": ("smem", "global"),
         "split": ("k", "rows"), "xpipe": (0, 1), "minb": (0, 2, 3, 4, 5, 6),
         "mma": ("sync", "wg"), "wip": (0, 1), "xd": (1, 2, 3), "wgs": (1, 2, 3, 4), "pf": (1, 2), "pb": (1, 2), "ra": (1, 2, 3),
         "xa": (0, 1), "sp": (0, 1), "rr": (0, 1),
         "rp": (1, 2, 4, 8), "pdl": (0, 1, 2), "fx": (0, 1, 2), "ldw": (0, 1, 2, 3), "l2f": (0, 1)}
WG_TN = (8, 16, 24, 32, 40, 48, 56, 64, 96, 128)   # mma="wg": tokens per block (the wgmma N)
WG_KSPLIT = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
WG_MINB_THREADS = 1024       # mma="wg": minb x threads per block at most this (>= 64 registers per thread)
WG_CLUSTER_MAX = 8           # mma="wg", fx=2: the splits of a tile are one thread-block cluster (portable size)
WG_MAX_PER = 24              # mma="wg" default split: at most this many stages per block ...
WG_MIN_BLOCKS = 3 * 132      # ... and about 3 blocks (12 warps) per H100 SM
KSPLIT_K = (1, 2, 3, 4, 6, 8, 12, 16)   # split="k": the default split's candidates
KSPLIT_ROWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)   # split="rows": the default split's candidates
MAX_PER_ROWS = 24                        # split="rows": default split keeps a warp's stages <= this
MAX_PER = 12                 # default split: at most this many stages per warp ...
MIN_WARPS = 1024             # ... and about a block of 8 warps per H100 SM (132)


@dataclass(frozen=True)
class TiledSpec:
    spec: MatmulSpec
    rt: int
    sc: int
    warps: int
    ksplit: int
    tn: int
    pipe: int = 1
    sync: str = "warp"
    clear: str = "zero"
    code: str = "pos"
    vsrc: str = "smem"
    split: str = "k"
    xpipe: int = 0
    minb: int = 0
    mma: str = "sync"
    wip: int = 1
    xd: int = 2
    wgs: int = 1
    pf: int = 1
    pb: int = 1
    ra: int = 0
    xa: int = 0
    sp: int = 0
    rr: int = 0
    rp: int = 2
    pdl: int = 0
    fx: int = 0          # mma="wg", ksplit > 1: the splits' fp32 partials summed by the last block (1) or across
    #                      the thread-block cluster of the splits, through distributed shared memory (2); no atomics
    ldw: int = 0         # mma="wg": cache hints on the weight stream's loads (tiled_wg.LDW_HINTS)
    l2f: int = 0         # mma="wg": each warp bulk-prefetches its strip's weight bytes for the block into L2 first

    @property
    def ngroups(self) -> int:
        return ceil_div(self.spec.out_features, 16 * self.rt)

    @property
    def nstages(self) -> int:
        return ceil_div(self.spec.in_features, self.sc)

    def knobs(self) -> dict:
        if self.mma == "wg":
            return {"design": "tiled", "mma": "wg", "rt": 1, "sc": self.sc, "warps": 4, "ksplit": self.ksplit,
                    "tn": self.tn, "code": self.code, "wip": self.wip, "xd": self.xd, "wgs": self.wgs, "pf": self.pf,
                    "pb": self.pb,
                    **({"clear": self.clear} if self.clear != "zero" else {}),
                    **({"ra": self.ra} if self.ra else {}),
                    **({"xa": self.xa} if self.xa else {}),
                    **({"sp": self.sp, "rr": self.rr, "rp": self.rp} if self.sp else {}),
                    **({"pdl": self.pdl} if self.pdl else {}),
                    **({"fx": self.fx} if self.fx else {}),
                    **({"ldw": self.ldw} if self.ldw else {}),
                    **({"l2f": self.l2f} if self.l2f else {}),
                    **({"minb": self.minb} if self.minb else {})}
        return {"design": "tiled", "rt": self.rt, "sc": self.sc, "warps": self.warps, "ksplit": self.ksplit,
                "tn": self.tn, "pipe": self.pipe, "sync": self.sync, "clear": self.clear,
                **({"code": self.code, "vsrc": self.vsrc} if self.code == "bitmap" else {}),
                **({"code": self.code} if self.code == "pos7" else {}),
                **({"split": self.split} if self.split == "rows" else {}),
                **({"xpipe": self.xpipe} if self.xpipe else {}),
                **({"minb": self.minb} if self.minb else {})}

    @property
    def nwords(self) -> int:
        """code="bitmap": uint32 bitmap words per lane per stage (S/1024)."""
        return 16 * self.rt * self.sc // 1024

    @property
    def cap(self) -> int:
        """code="bitmap": halves of a warp's staging area (a stage with more non-zeros reads them from global
        memory directly); what fits in 48 KiB next to the stage buffers and the reduction buffer."""
        free = 48 * 1024 - (16 * self.rt + 4) * self.tn * 4
        return min(16 * self.rt * self.sc, (free // self.warps - (16 * self.rt * self.sc + 8) * 2) // 2 // 8 * 8)


def resolve(spec: MatmulSpec, knobs: dict | None) -> TiledSpec:
    knobs = {k: v for k, v in dict(knobs or {}).items() if k != "design"}
    for k, v in knobs.items():
        if k not in KNOBS:
            raise KernelError(f"cuda tiled kernel: unknown knob {k!r}; knobs are {', '.join(KNOBS)}")
        if v is not None and v not in KNOBS[k]:
            raise KernelError(f"cuda tiled kernel: knob {k}={v!r} is not one of {KNOBS[k]}")
    if spec.dtype not in ("float16", "bfloat16"):
        raise KernelError(f"cuda tiled kernel: dtype {spec.dtype} unsupported (float16, bfloat16)")
    if (knobs.get("mma") or "sync") == "wg":
        return resolve_wg(spec, knobs)
    if knobs.get("fx"):
        raise KernelError(f"cuda tiled kernel: fx={knobs['fx']} (the splits summed without atomics) needs mma='wg'")
    if knobs.get("sc") == 256:
        raise KernelError("cuda tiled kernel: sc=256 needs mma='wg' with sp=1")
    for k in ("wip", "xd", "wgs", "pf", "pb", "ra", "xa", "sp", "rr", "rp", "pdl", "ldw", "l2f"):
        if knobs.get(k) is not None:
            raise KernelError(f"cuda tiled kernel: knob {k} needs mma='wg'")
    Tt = spec.tokens
    tn = knobs.get("tn") or min(32, ceil_div(Tt, 8) * 8)
    if tn > 32:
        raise KernelError(f"cuda tiled kernel: tn={tn} needs mma='wg' (the mma.sync kernel takes tn <= 32)")
    rt = knobs.get("rt") or (2 if Tt <= 32 else 4)
    sc = knobs.get("sc") or (64 if rt <= 2 else 32)
    ngr = ceil_div(spec.out_features, 16 * rt)
    nst = ceil_div(spec.in_features, sc)
    ntt = ceil_div(Tt, tn)
    warps = knobs.get("warps") or 8
    ks = knobs.get("ksplit")
    split = knobs.get("split") or "k"
    if split == "rows":
        if (knobs.get("code") or "pos") == "bitmap":
            raise KernelError("cuda tiled kernel: split='rows' supports code='pos' and 'pos7'")
        if ks is None:
            # every warp walks all the block's stages for its own row group: split K until a warp has
            # <= MAX_PER_ROWS stages and the grid has a block per SM (no split with an activation)
            ks = 1
            if spec.activation is None:
                for cand in KSPLIT_ROWS:
                    if cand > nst:
                        break
                    ks = cand
                    if ceil_div(nst, cand) <= MAX_PER_ROWS and ceil_div(ngr, warps) * ntt * cand >= MIN_WARPS // 8:
                        break
    if ks is None:
        # H100, 2026-11-23 (benchmarks/results/spmm_gpu.md): a split costs a Y-zeroing launch and fp16
        # atomics, so split only to keep a warp's stages <= MAX_PER (latency) and to give every SM a block
        ks = 1
        max_per = MAX_PER if Tt <= 32 else 31        # more tokens: the atomics of a split cost more
        if spec.activation is None:
            for cand in KSPLIT_K:
                if cand * warps > nst:
                    break
                ks = cand
                if ceil_div(nst, cand * warps) <= max_per and ngr * ntt * cand * warps >= MIN_WARPS:
                    break
    if spec.activation is not None and ks > 1:
        raise KernelError("cuda tiled kernel: ksplit > 1 sums partial results with atomics, which an "
                          "activation cannot follow; use ksplit=1")
    smem = warps * (16 * rt * sc + 8) * 2 + ((16 * rt + 4) * tn * 4 if split == "k" else 0)
    if smem > 48 * 1024:
        raise KernelError(f"cuda tiled kernel: {smem} bytes of shared memory (at most 48 KiB): lower warps, rt or sc")
    pipe, clear = knobs.get("pipe") or 1, knobs.get("clear") or "zero"
    if clear == "unscatter" and pipe != 1:
        raise KernelError("cuda tiled kernel: clear='unscatter' needs pipe=1")
    code = knobs.get("code") or "pos"
    if code == "bitmap":
        if pipe != 1 or clear != "zero":
            raise KernelError("cuda tiled kernel: code='bitmap' supports pipe=1 and clear='zero' only")
        if 16 * rt * sc < 1024:
            raise KernelError("cuda tiled kernel: code='bitmap' needs 16*rt*sc >= 1024 (32 bits per lane)")
        ts = TiledSpec(spec, rt, sc, warps, ks, tn, pipe, knobs.get("sync") or "warp", clear, code,
                       knobs.get("vsrc") or "smem")
        if ts.vsrc == "smem" and ts.cap < 256:
            raise KernelError(f"cuda tiled kernel: code='bitmap' staging area of {ts.cap} halves per warp (at least "
                              "256 must fit in 48 KiB): lower warps, rt or sc")
        return ts
    if code == "pos7" and 16 * rt * sc > 2048:
        raise KernelError("cuda tiled kernel: code='pos7' needs 16*rt*sc <= 2048 (at most 16 groups of 128 slots "
                          "per stage: a 4-bit group field)")
    xpipe = knobs.get("xpipe") or 0
    if xpipe and pipe != 1:
        raise KernelError("cuda tiled kernel: xpipe=1 needs pipe=1")
    return TiledSpec(spec, rt, sc, warps, ks, tn, pipe, knobs.get("sync") or "warp", clear, code, split=split,
                     xpipe=xpipe, minb=knobs.get("minb") or 0)


def resolve_wg(spec: MatmulSpec, knobs: dict) -> TiledSpec:
    """``mma="wg"`` (``tiled_wg.py``, sm_90a): one warpgroup per block, 64 rows (four 16-row strips: rt=1),
    ``tn`` tokens, ``ceil(nstages / ksplit)`` stages. Default split: the smallest that keeps a block's stages
    <= ``WG_MAX_PER`` and gives >= ``WG_MIN_BLOCKS`` blocks (none with an activation)."""
    from sparsec.backends.cuda.kernels.tiled_wg import SMEM_LIMIT, smem_elems

    bad = {"rt": (1,), "warps": (4,), "pipe": (1,), "sync": ("warp",), "clear": ("zero", "unscatter"),
           "code": ("pos", "pos7"),
           "split": ("k",), "xpipe": (0,), "sc": (64, 128, 256)}
    for k, ok in bad.items():
        if knobs.get(k) is not None and knobs[k] not in ok:
            raise KernelError(f"cuda tiled kernel: mma='wg' supports {k} in {ok} (got {knobs[k]!r})")
    if spec.in_features % 8:
        raise KernelError(f"cuda tiled kernel: mma='wg' needs K % 8 == 0 (16-byte activation rows), got "
                          f"K={spec.in_features}")
    Tt = spec.tokens
    # every token in one tile where it fits (a second token tile decodes the weight again)
    xa = knobs.get("xa") or 0
    if xa and (knobs.get("tn") or 64) != 64:
        raise KernelError(f"cuda tiled kernel: mma='wg' with xa=1 takes 64 tokens per block (the wgmma M; got "
                          f"tn={knobs['tn']})")
    tn = 64 if xa else knobs.get("tn") or next((t for t in WG_TN if t >= Tt), WG_TN[-1])
    if tn not in WG_TN:
        raise KernelError(f"cuda tiled kernel: mma='wg' needs tn in {WG_TN} (got {tn})")
    sp = knobs.get("sp") or 0
    sc = knobs.get("sc") or (128 if sp else 64)
    wip = knobs.get("wip") or 0
    xd = knobs.get("xd") or 2
    wgs = knobs.get("wgs") or 2
    # H100 dev run 3 (benchmarks/results/dev/wg_run3.json): the first two batches one stage ahead (pb=2, pf=1) beat one
    # batch two stages ahead (pb=1, pf=2) at 70 % in all 12 cells (T=32 1.24-1.39 -> 1.40-1.51x cuBLAS), ties at 80-90 %
    pf = knobs.get("pf") or 1
    pb = knobs.get("pb") or 2
    if wip and pf > 1:
        # H100 dev run 2 (benchmarks/results/dev/wg_run2.json): wrong results (rel. error 0.1) on 9216x36864 at
        # T >= 16 with wip=1, pf=2, wgs=1, correct at T <= 8 and on the other shapes; not understood, so refused
        raise KernelError("cuda tiled kernel: mma='wg' with wip=1 needs pf=1 (wip=1 with pf=2 gave wrong results "
                          "on the H100)")
    ra = knobs.get("ra") or 0
    if xa and wip:
        raise KernelError("cuda tiled kernel: mma='wg' with xa=1 needs wip=0 (the activation registers are rewritten "
                          "once the stage's wgmma finished)")
    if ra and ra != 2 + wip and not (ra == 1 and wip == 0):
        raise KernelError(f"cuda tiled kernel: mma='wg' needs an A ring (ra) of 1 or 2 with wip=0, 3 with wip=1 "
                          f"(got ra={ra}, wip={wip})")
    ra = 0 if ra == 2 + wip else ra
    rr = knobs.get("rr")
    if sp:
        # the 2:4 sparse operand: a stage of 128 / 256 columns is one / two 64-column compressed swizzle atoms
        if sc not in (128, 256):
            raise KernelError(f"cuda tiled kernel: mma='wg' with sp=1 needs sc=128 or 256 (got sc={sc})")
        if xa or (knobs.get("clear") or "zero") != "zero":
            raise KernelError("cuda tiled kernel: mma='wg' with sp=1 supports xa=0 and clear='zero' only")
        if wip:
            # H100 dev run 3 (benchmarks/results/dev/wsp_run3.*): wrong results on 9216x36864 at T = 8-32 (correct on
            # the other shapes; slower everywhere). Likely cause, not proven: the next stage rewrites the metadata
            # registers while the previous stage's wgmma, which reads its register operands asynchronously, may run
            raise KernelError("cuda tiled kernel: mma='wg' with sp=1 needs wip=0 (wip=1 gave wrong results on the "
                              "H100; likely the metadata registers are rewritten while the previous wgmma reads them)")
        rr = 0 if rr is None else rr
    elif sc == 256:
        raise KernelError("cuda tiled kernel: mma='wg' takes sc=256 only with sp=1 (two compressed atoms per stage)")
    elif rr is not None or knobs.get("rp") is not None:
        raise KernelError("cuda tiled kernel: knobs rr and rp need sp=1")
    ngr, nst = ceil_div(spec.out_features, 16), ceil_div(spec.in_features, sc)
    nblk = ceil_div(ngr, 4 * wgs) * ceil_div(Tt, tn)
    # fx=1 (the default under an activation): a split's blocks write fp32 partials and the last to finish sums them
    # in split order, then bias, activation and a plain store: no zero launch, no atomics into Y
    fx = knobs.get("fx")
    fx = (1 if spec.activation is not None else 0) if fx is None else fx
    ks = knobs.get("ksplit")
    if ks is None:
        ks = 1
        if spec.activation is None or fx:
            for cand in WG_KSPLIT:
                if cand > nst or (fx == 2 and cand > WG_CLUSTER_MAX):
                    break
                ks = cand
                if ceil_div(nst, cand) <= WG_MAX_PER and nblk * cand >= WG_MIN_BLOCKS:
                    break
    if spec.activation is not None and ks > 1 and not fx:
        raise KernelError("cuda tiled kernel: ksplit > 1 sums partial results with atomics, which an "
                          "activation cannot follow; use ksplit=1 or fx=1")
    if smem_elems(sc, tn, wip, xd, wgs, ra, xa, sp, fx=fx if ks > 1 else 0) * 2 > SMEM_LIMIT:
        raise KernelError(f"cuda tiled kernel: mma='wg' with sc={sc}, tn={tn}: too much shared memory")
    minb = knobs.get("minb") or 0
    if minb and minb * 128 * wgs > WG_MINB_THREADS:
        # __launch_bounds__(threads, minb) caps the registers at 65536 / (threads x minb); under 64 ptxas cannot
        # allocate the wgmma accumulators and descriptors (it failed at a cap of 40: 256 threads x 6 blocks)
        raise KernelError(f"cuda tiled kernel: mma='wg' with minb={minb} and wgs={wgs} ({128 * wgs} threads) leaves "
                          f"under 64 registers per thread; minb x threads must be <= {WG_MINB_THREADS}")
    fx = fx if ks > 1 else 0
    if fx and xa:
        raise KernelError(f"cuda tiled kernel: fx={fx} needs xa=0 (the partials are in the wgmma accumulator order)")
    if fx == 2 and ks > WG_CLUSTER_MAX:
        raise KernelError(f"cuda tiled kernel: fx=2 sums the splits across a thread-block cluster of ksplit blocks, "
                          f"at most {WG_CLUSTER_MAX} (the portable cluster size); got ksplit={ks}")
    return TiledSpec(spec, 1, sc, 4, ks, tn, code=knobs.get("code") or "pos", minb=knobs.get("minb") or 0,
                     clear=knobs.get("clear") or "zero", mma="wg", wip=wip, xd=xd, wgs=wgs, pf=pf, pb=pb,
                     ra=ra, xa=xa, sp=sp, rr=rr or 0, rp=knobs.get("rp") or 2,
                     pdl=2 if knobs.get("pdl") == 2 else (knobs.get("pdl") or 0) if ks > 1 and not fx else 0, fx=fx,
                     ldw=knobs.get("ldw") or 0, l2f=knobs.get("l2f") or 0)


def tiled_args(ts: TiledSpec, dtype: str) -> list[Arg]:
    sp = ts.spec
    code = (Arg("tc_bits", "int32", (ts.ngroups * ts.nstages * 32 * ts.nwords,)) if ts.code == "bitmap"
            else Arg("tc_code", "int32", ("m",)) if ts.code == "pos7"
            else Arg("tc_pos", "int16", ("n",)))
    args = [Arg("tc_values", dtype, ("n",)), code, Arg("tc_ptr", "int32", (ts.ngroups * ts.nstages + 1,))]
    if ts.sp:
        # tiled_layout.build_wsp: metadata words, residual rows, residual row pointers
        args += [Arg("tc_meta", "int32", (ts.ngroups * ts.nstages * 16 * (ts.sc // 32),)),
                 Arg("tc_res", "int32", ("r",)), Arg("tc_rptr", "int32", (ts.ngroups * ts.nstages + 1,))]
    args.append(Arg("X", dtype, (sp.tokens, sp.in_features)))
    if sp.bias:
        args.append(Arg("bias", dtype, (sp.out_features,)))
    args.append(Arg("Y", dtype, (sp.tokens, sp.out_features)))
    return args


def cuda_tiled_matmul_primfunc(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                               knobs: dict | None = None, name: str | None = None):
    """TIR of the tiled kernel: ``(PrimFunc, args, resolved knobs)``; the weight buffers come from
    ``tiled_layout.build(fmt, knobs['rt'], knobs['sc'])`` (names ``tc_values, tc_pos, tc_ptr``)."""
    meta = meta_of(weight)
    spec = MatmulSpec(int(tokens), meta.rows, meta.cols, bool(bias), activation, meta.dtype)
    ts = resolve(spec, knobs)
    func = generate(ts).with_attr("global_symbol", name or "sparsec_cuda_tiled_matmul")
    return func, tiled_args(ts, meta.dtype), ts.knobs()


def generate(ts: TiledSpec):
    if ts.mma == "wg":
        from sparsec.backends.cuda.kernels.tiled_wg import generate_wg

        kern = generate_wg(ts)
        if not ts.spec.bias:
            from sparsec.backends.kernels.common import drop_param

            kern = drop_param(kern, "bias")
        if ts.minb:
            kern = kern.with_attr("tirx.launch_bounds_min_blocks_per_sm", ts.minb)
        if ts.pdl == 2 or (ts.pdl and ts.ksplit > 1):
            from sparsec.backends.cuda.toolchain import PDL_ATTR

            # pdl=1: the main kernel overlaps the launch of the zeroing one; pdl=2: every launch overlaps the
            # previous one on the stream
            kern = kern.with_attr(PDL_ATTR, ts.pdl)
        if ts.fx == 2:
            from sparsec.backends.cuda.toolchain import CLUSTER_ATTR

            kern = kern.with_attr(CLUSTER_ATTR, f"1,1,{ts.ksplit}")    # the splits of a tile: grid z = ksplit
        return kern
    sp = ts.spec
    O, K, TT, dt = sp.out_features, sp.in_features, sp.tokens, sp.dtype
    RT, SC, W, KS, TN = ts.rt, ts.sc, ts.warps, ts.ksplit, ts.tn
    NS = TN // 8
    RG = 16 * RT
    NGR, NST = ts.ngroups, ts.nstages
    NTT = ceil_div(TT, TN)
    STG = RG * SC                       # slots per stage
    SW = STG + 8                        # + trash slot (padding entries), keeps 16-byte alignment
    NZ = SW // 8                        # 16-byte zero stores per stage
    ZIT = ceil_div(NZ, 32)
    ROWS = ts.split == "rows"           # the block's warps take W row groups over one K range (else: one row
                                        # group, the warps splitting its K range)
    PER = ceil_div(NST, KS) if ROWS else ceil_div(NST, KS * W)   # stages per warp
    NBX = ceil_div(NGR, W) if ROWS else NGR                     # blocks along the row groups
    SHFL = PER <= 31                    # the warp's stage pointers fit one per lane
    PIPE = ts.pipe
    XPIPE = bool(ts.xpipe)              # the next stage's activation fragments are loaded during this stage
    WSYNC = ts.sync == "warp"
    UNSC = ts.clear == "unscatter"      # clear a stage by writing zeros back to the slots it scattered (else:
                                        # zero the whole stage buffer before the scatter)
    NCH = SC // 32
    VECK = K % 8 == 0
    HAS_BIAS = sp.bias
    epi = epilogue(sp.activation)
    ptx_t = "fp16" if dt == "float16" else "bf16"
    zero = T.Cast(dt, T.float32(0))
    ACC = RT * NS * 4
    RS = RG + 4                         # red is [TN][RG + 4]: the 32 lanes' atomics hit 32 distinct banks
    NRED = TN * RS
    reduce_store = warp_reduce_epilogue(dt=dt, RT=RT, NS=NS, RS=RS, RG=RG, TN=TN, W=W, O=O, TT=TT, KS=KS,
                                        has_bias=HAS_BIAS, epi=epi)   # red[TN][RS] -> Y (bias, activation)
    FULL = T.uint32(0xFFFFFFFF)
    BM = ts.code == "bitmap"            # bank-owned bitmap stages (tiled_layout.build_bitmap)
    NW = ts.nwords if BM else 0         # bitmap words per lane per stage
    CAPW = ts.cap if BM and ts.vsrc == "smem" else 0    # staging halves per warp (vsrc="global": none, the
                                                        # walk reads the values straight from global memory)
    SWT = SW + CAPW                     # a warp's shared memory: stage buffer (+ staging area)
    NBITS = NGR * NST * 32 * NW
    VW = min(NW, 4)                     # bitmap words per vector load
    POS_DT = "int32" if BM or ts.code == "pos7" else "int16"
    P7 = ts.code == "pos7"              # 3-byte entries: per chunk of 8 one 64-bit code word (tiled_layout.build_pos7)
    PL = 2 if P7 else 8                 # position registers per lane and batch (int32 words | int16 slots)
    PR_DT = "int32" if P7 else "int16"

    def pos_shape(n_, m_):
        return (NBITS,) if BM else (m_,) if P7 else (n_,)

    # index helpers (plain Python: an assignment inside TVMScript becomes a local variable, which hides
    # the 16-byte alignment of the vector loads from TVM's analysis)
    if ROWS:
        def s_first(bz, ty):
            return T.min(bz * PER, NST)

        def s_end(bz, ty):
            # a warp past the last row group (last block) repeats the last one's stages (gbase clamps); its rows
            # are >= O, so its results are never stored
            return T.min(T.min(bz * PER, NST) + PER, NST)
    else:
        def s_first(bz, ty):
            return T.min((bz * W + ty) * PER, NST)

        def s_end(bz, ty):
            return T.min(T.min((bz * W + ty) * PER, NST) + PER, NST)

    def gbase(bx, ty):
        """First stage-pointer index of the warp's row group."""
        return (T.min(bx * W + ty, NGR - 1) if ROWS else bx) * NST

    def xtok(by, tx, ns):
        return by * TN + ns * 8 + tx // 4

    def xk0(s, c, tx):
        return s * SC + c * 32 + (tx % 4) * 8

    def slot7(cw, j):
        # code="pos7": slot of entry j of a chunk whose code word is cw[0] (entries 0-3 in bits 7j, the group in
        # bits 28..31) | cw[1] (entries 4-7 in bits 7(j-4)): group * 128 + the entry's 7-bit field
        return (T.shift_right(cw[0], 21) & 0x780) + (T.shift_right(cw[j // 4], (j % 4) * 7) & 127)

    @T.macro
    def load_x(X, xv, xs, by, tx, s):
        # B fragments of every chunk of stage s: X[tok, k0 .. k0+8), k0 = s*SC + c*32 + q*8
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
                for j in T.unroll(8):           # element-wise copy: see matmul.py (fragment retyping)
                    xs[(c * NS + ns) * 8 + j] = xv[j]

    def active(bz, ty, si):
        return s_first(bz, ty) + si < s_end(bz, ty)

    @T.macro
    def load_pos(pos, p, vb, cb):
        # a lane's batch positions: 8 int16 slots from entry vb, or (pos7) its chunk cb's two code words
        if P7:
            for j in T.vectorized(2):
                p[j] = pos[cb * 2 + j]
        else:
            for j in T.vectorized(8):
                p[j] = pos[vb + j]

    @T.macro
    def load_batch(vals, pos, v, p, vb, cb):
        # a lane's batch: 8 values from entry vb (16 bytes) and their positions
        for j in T.vectorized(8):
            v[j] = vals[vb + j]
        load_pos(pos, p, vb, cb)

    @T.macro
    def sync_stage():
        if WSYNC:
            T.evaluate(T.cuda.warp_sync())
        else:
            T.tvm_storage_sync("shared")

    @T.macro
    def stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, cv, cp, nv, np_, v2, p2, si, by, bz, ty, tx, bx,
              sp, xn):
        # one stage of the warp: cv/cp hold its first batch (loaded earlier); nv/np_ receive the next one
        if SHFL:
            sv[1] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si, 31), 32, 32)
            sv[2] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + 1, 31), 32, 32)
            sv[3] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + 2, 31), 32, 32)
            if PIPE == 3:
                sv[4] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + 3, 31), 32, 32)
        else:
            sv[1] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + si, s_end(bz, ty))]
            sv[2] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + si + 1, s_end(bz, ty))]
            sv[3] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + si + 2, s_end(bz, ty))]
            if PIPE == 3:
                sv[4] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + si + 3, s_end(bz, ty))]
        if active(bz, ty, si):
            if PIPE == 2:
                if active(bz, ty, si + 1) and sv[2] + tx < sv[3]:
                    load_batch(vals, pos, nv, np_, sv[2] * 8 + tx * 8, sv[2] + tx)
            if PIPE == 3:
                # two stages ahead: nv/np_ receive the first batch of stage si + 2
                if active(bz, ty, si + 2) and sv[3] + tx < sv[4]:
                    load_batch(vals, pos, nv, np_, sv[3] * 8 + tx * 8, sv[3] + tx)
            if XPIPE:
                # xs was filled during the previous stage; xn receives the next stage's fragments
                if active(bz, ty, si + 1):
                    load_x(X, xv, xn, by, tx, s_first(bz, ty) + si + 1)
            else:
                load_x(X, xv, xs, by, tx, s_first(bz, ty) + si)
            if not UNSC:
                for i in T.unroll(ZIT):
                    if i * 32 + tx < NZ:
                        for j in T.vectorized(8):
                            st[ty * SW + (i * 32 + tx) * 8 + j] = zero
        sync_stage()
        if active(bz, ty, si):
            if sv[1] + tx < sv[2]:
                if P7:
                    for j in T.unroll(8):
                        st[ty * SW + slot7(cp, j)] = cv[j]
                else:
                    for j in T.unroll(8):
                        st[ty * SW + T.Cast("int32", cp[j])] = cv[j]
                if UNSC:
                    for j in T.unroll(PL):
                        sp[j] = cp[j]
            for it in range(1, (sv[2] - sv[1] + 31) // 32):
                if sv[1] + it * 32 + tx < sv[2]:
                    load_batch(vals, pos, v2, p2, sv[1] * 8 + it * 256 + tx * 8, sv[1] + it * 32 + tx)
                    if P7:
                        for j in T.unroll(8):
                            st[ty * SW + slot7(p2, j)] = v2[j]
                    else:
                        for j in T.unroll(8):
                            st[ty * SW + T.Cast("int32", p2[j])] = v2[j]
            if PIPE == 1:
                # the first batch of the next stage (overlaps this stage's mma)
                if active(bz, ty, si + 1) and sv[2] + tx < sv[3]:
                    load_batch(vals, pos, nv, np_, sv[2] * 8 + tx * 8, sv[2] + tx)
        sync_stage()
        if active(bz, ty, si):
            for c in T.unroll(NCH):
                for r in T.unroll(RT):
                    for mm in T.unroll(2):
                        for j in T.vectorized(8):
                            av[j] = st[ty * SW + (((c * RT + r) * 2 + mm) * 32 + tx) * 8 + j]
                        for j in T.unroll(8):
                            af[j] = av[j]
                        for ns in T.unroll(NS):
                            T.evaluate(T.ptx_legacy.mma("m16n8k16", "row", "col", ptx_t, ptx_t, "fp32",
                                                        af.data, 0, xs.data, (c * NS + ns) * 8 + mm * 4,
                                                        acc.data, (r * NS + ns) * 4, False, dtype="float32"))
        sync_stage()
        if UNSC:
            # zeros back to the slots of this stage (the first batch's slots kept in registers, the others
            # re-read); the next stage's first barrier orders them before its scatter
            if active(bz, ty, si):
                if sv[1] + tx < sv[2]:
                    if P7:
                        for j in T.unroll(8):
                            st[ty * SW + slot7(sp, j)] = zero
                    else:
                        for j in T.unroll(8):
                            st[ty * SW + T.Cast("int32", sp[j])] = zero
                for it in range(1, (sv[2] - sv[1] + 31) // 32):
                    if sv[1] + it * 32 + tx < sv[2]:
                        load_pos(pos, p2, sv[1] * 8 + it * 256 + tx * 8, sv[1] + it * 32 + tx)
                        if P7:
                            for j in T.unroll(8):
                                st[ty * SW + slot7(p2, j)] = zero
                        else:
                            for j in T.unroll(8):
                                st[ty * SW + T.Cast("int32", p2[j])] = zero

    def bm_word(bx, bz, ty, si, tx, w):
        # bitmap word w of lane tx of the warp's stage si
        return ((gbase(bx, ty) + s_first(bz, ty) + si) * 32 + tx) * NW + w

    def bm_slot(w, b, tx):
        # half slot of bit b of word w of lane tx (tiled_layout.bit_of_slot): bit index w*32 + b is half
        # (w*32 + b) // Q of the bank's word (w*32 + b) % Q, Q = 16*NW words per bank
        if NW == 1:
            return ((b & 15) * 32 + tx) * 2 + (b >> 4)
        return ((w % (NW // 2)) * 32 + b) * 64 + tx * 2 + w // (NW // 2)

    @T.macro
    def load_bits(bits, bw, bx, bz, ty, si, tx):
        for w0 in T.unroll(NW // VW):
            for w in T.vectorized(VW):
                bw[w0 * VW + w] = bits[bm_word(bx, bz, ty, si, tx, w0 * VW + w)]

    @T.macro
    def walk(st, src, base, bw, mk, iv, ty, tx):
        # lane tx scatters its non-zeros (src[base + iv[1]], ...) to the slots of its set bits, every word from
        # its highest bit down; the stores of the 32 lanes hit 32 distinct banks
        for w in T.unroll(NW):
            mk[0] = T.Cast("uint32", bw[w])
            while mk[0] != T.uint32(0):
                iv[2] = 31 - T.call_extern("int32", "__clz", T.Cast("int32", mk[0]))
                mk[0] = mk[0] ^ (T.uint32(1) << T.Cast("uint32", iv[2]))
                st[ty * SWT + bm_slot(w, iv[2], tx)] = src[base + iv[1]]
                iv[1] = iv[1] + 1

    @T.macro
    def stage_bm(vals, bits, sptr, X, st, sv, xv, xs, av, af, acc, cv, v2, bw, mk, iv, si, by, bz, ty, tx, bx):
        # code="bitmap": one stage of the warp; cv (first 256 values) and bw (the lane's bitmap words) were
        # loaded earlier and receive the next stage's
        if SHFL:
            sv[1] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si, 31), 32, 32)
            sv[2] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + 1, 31), 32, 32)
            sv[3] = T.tvm_warp_shuffle(FULL, sv[0], T.min(si + 2, 31), 32, 32)
        else:
            sv[1] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + si, s_end(bz, ty))]
            sv[2] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + si + 1, s_end(bz, ty))]
            sv[3] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + si + 2, s_end(bz, ty))]
        if active(bz, ty, si):
            load_x(X, xv, xs, by, tx, s_first(bz, ty) + si)
            for i in T.unroll(ZIT):
                if i * 32 + tx < NZ:
                    for j in T.vectorized(8):
                        st[ty * SWT + (i * 32 + tx) * 8 + j] = zero
            if (sv[2] - sv[1]) * 8 <= CAPW:
                # the stage's values to the warp's staging area (16-byte copies)
                if sv[1] + tx < sv[2]:
                    for j in T.vectorized(8):
                        st[ty * SWT + SW + tx * 8 + j] = cv[j]
                for it in range(1, (sv[2] - sv[1] + 31) // 32):
                    if sv[1] + it * 32 + tx < sv[2]:
                        for j in T.vectorized(8):
                            v2[j] = vals[sv[1] * 8 + it * 256 + tx * 8 + j]
                        for j in T.vectorized(8):
                            st[ty * SWT + SW + it * 256 + tx * 8 + j] = v2[j]
            # the lane's first value: exclusive prefix over the lanes of the popcounts
            iv[0] = 0
            for w in T.unroll(NW):
                iv[0] = iv[0] + T.call_extern("int32", "__popc", T.Cast("uint32", bw[w]))
            iv[1] = iv[0]
            for d in T.unroll(5):
                iv[2] = T.tvm_warp_shuffle_up(FULL, iv[1], 1 << d, 32, 32)
                if tx >= (1 << d):
                    iv[1] = iv[1] + iv[2]
            iv[1] = iv[1] - iv[0]
        sync_stage()
        if active(bz, ty, si):
            if (sv[2] - sv[1]) * 8 <= CAPW:
                walk(st, st, ty * SWT + SW, bw, mk, iv, ty, tx)
            else:
                walk(st, vals, sv[1] * 8, bw, mk, iv, ty, tx)
            # the next stage's bitmap words and first batch of values (overlap this stage's mma)
            if active(bz, ty, si + 1):
                load_bits(bits, bw, bx, bz, ty, si + 1, tx)
                if sv[2] + tx < sv[3]:
                    for j in T.vectorized(8):
                        cv[j] = vals[sv[2] * 8 + tx * 8 + j]
        sync_stage()
        if active(bz, ty, si):
            for c in T.unroll(NCH):
                for r in T.unroll(RT):
                    for mm in T.unroll(2):
                        for j in T.vectorized(8):
                            av[j] = st[ty * SWT + (((c * RT + r) * 2 + mm) * 32 + tx) * 8 + j]
                        for j in T.unroll(8):
                            af[j] = av[j]
                        for ns in T.unroll(NS):
                            T.evaluate(T.ptx_legacy.mma("m16n8k16", "row", "col", ptx_t, ptx_t, "fp32",
                                                        af.data, 0, xs.data, (c * NS + ns) * 8 + mm * 4,
                                                        acc.data, (r * NS + ns) * 4, False, dtype="float32"))
        sync_stage()

    @T.macro
    def warp_store(acc, Y, bias, bx, by, bz, ty, tx):
        # split="rows": the warp owns its rows: its m16n8 accumulators go straight to Y (bias + activation with
        # one k split; fp16/bf16 atomicAdd into the zeroed Y with ksplit > 1, the bias from split 0)
        for r in T.unroll(RT):
            for ns in T.unroll(NS):
                for h in T.unroll(4):
                    row = (bx * W + ty) * RG + r * 16 + tx // 4 + 8 * (h // 2)
                    tok = by * TN + ns * 8 + 2 * (tx % 4) + h % 2
                    if row < O and tok < TT:
                        if KS == 1:
                            if HAS_BIAS:
                                Y[tok, row] = T.Cast(dt, epi(acc[(r * NS + ns) * 4 + h]
                                                             + T.Cast("float32", bias[row])))
                            else:
                                Y[tok, row] = T.Cast(dt, epi(acc[(r * NS + ns) * 4 + h]))
                        else:
                            if HAS_BIAS:
                                T.evaluate(T.call_extern(dt, "atomicAdd", T.address_of(Y[tok, row]), T.Cast(
                                    dt, acc[(r * NS + ns) * 4 + h] + T.if_then_else(
                                        bz == 0, T.Cast("float32", bias[row]), T.float32(0)))))
                            else:
                                T.evaluate(T.call_extern(dt, "atomicAdd", T.address_of(Y[tok, row]),
                                                         T.Cast(dt, acc[(r * NS + ns) * 4 + h])))

    @T.macro
    def body(vals, pos, sptr, X, bias, Y, bx, by, bz, ty, tx):
        st_ = T.alloc_buffer((W * SWT,), dt, scope="shared")
        if WSYNC:
            # the warp-private stage buffers through a pointer without the "shared" scope: TVM's ThreadSync
            # does not see them, so a stage needs __syncwarp only (nvcc still emits ld/st.shared)
            stp: T.let = T.call_extern("handle", "(void*)", T.address_of(st_[0]))
            st = T.decl_buffer((W * SWT,), dt, data=stp)
        else:
            st = T.decl_buffer((W * SWT,), dt, data=st_.data, scope="shared")
        red = T.alloc_buffer((NRED if not ROWS else 1,), "float32", scope="shared")
        acc = T.alloc_buffer((ACC,), "float32", scope="local")
        vv = T.alloc_buffer((8,), dt, scope="local")
        pv = T.alloc_buffer((PL,), PR_DT, scope="local")
        v2 = T.alloc_buffer((8,), dt, scope="local")
        p2 = T.alloc_buffer((PL,), PR_DT, scope="local")
        v3 = T.alloc_buffer((8,), dt, scope="local")
        p3 = T.alloc_buffer((PL,), PR_DT, scope="local")
        v4 = T.alloc_buffer((8,), dt, scope="local")
        p4 = T.alloc_buffer((PL,), PR_DT, scope="local")
        sp = T.alloc_buffer((PL,), PR_DT, scope="local")        # clear="unscatter": the first batch's slots
        xv = T.alloc_buffer((8,), dt, scope="local")
        xs = T.alloc_buffer((NCH * NS * 8,), dt, scope="local")
        if XPIPE:
            xs2 = T.alloc_buffer((NCH * NS * 8,), dt, scope="local")   # the second activation register set
        av = T.alloc_buffer((8,), dt, scope="local")
        af = T.alloc_buffer((8,), dt, scope="local")
        # [0] the stage pointer of the lane's stage, [1] lo, [2] hi, [3] next hi, [4] the one after (units of 8)
        sv = T.alloc_buffer((5,), "int32", scope="local")
        bw = T.alloc_buffer((max(NW, 1),), "int32", scope="local")      # code="bitmap": the lane's words
        mk = T.alloc_buffer((1,), "uint32", scope="local")
        iv = T.alloc_buffer((3,), "int32", scope="local")               # popcount, next value, bit
        if not ROWS:
            for i in T.unroll(ceil_div(NRED, W * 32)):
                if i * W * 32 + ty * 32 + tx < NRED:
                    red[i * W * 32 + ty * 32 + tx] = T.float32(0)
        for i in T.unroll(ACC):
            acc[i] = T.float32(0)
        if SHFL:
            sv[0] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + tx, s_end(bz, ty))]
            sv[1] = T.tvm_warp_shuffle(FULL, sv[0], 0, 32, 32)
            sv[2] = T.tvm_warp_shuffle(FULL, sv[0], 1, 32, 32)
        else:
            sv[1] = sptr[gbase(bx, ty) + s_first(bz, ty)]
            sv[2] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + 1, s_end(bz, ty))]
        if BM:
            if s_first(bz, ty) < s_end(bz, ty):
                load_bits(pos, bw, bx, bz, ty, 0, tx)
                if sv[1] + tx < sv[2]:
                    for j in T.vectorized(8):
                        vv[j] = vals[sv[1] * 8 + tx * 8 + j]
        elif s_first(bz, ty) < s_end(bz, ty) and sv[1] + tx < sv[2]:
            load_batch(vals, pos, vv, pv, sv[1] * 8 + tx * 8, sv[1] + tx)
        if PIPE == 3:                               # and the first batch of the second stage
            if SHFL:
                sv[3] = T.tvm_warp_shuffle(FULL, sv[0], 2, 32, 32)
            else:
                sv[3] = sptr[gbase(bx, ty) + T.min(s_first(bz, ty) + 2, s_end(bz, ty))]
            if s_first(bz, ty) + 1 < s_end(bz, ty) and sv[2] + tx < sv[3]:
                load_batch(vals, pos, v3, p3, sv[2] * 8 + tx * 8, sv[2] + tx)
        if UNSC:
            # the stage buffer is zeroed once; every stage then writes zeros back to the slots it filled
            for i in T.unroll(ZIT):
                if i * 32 + tx < NZ:
                    for j in T.vectorized(8):
                        st[ty * SW + (i * 32 + tx) * 8 + j] = zero
            sync_stage()
        # a constant trip count for every warp: TVM's ThreadSync makes the stage barriers block-wide
        # (__syncthreads), so every warp must reach them; a warp past its range idles
        if BM:
            for si in range(PER):
                stage_bm(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, vv, v2, bw, mk, iv, si, by, bz, ty, tx, bx)
        elif PIPE == 1 and XPIPE:
            # two activation register sets: stage 2i computes from xs and loads xs2, stage 2i+1 the reverse
            if s_first(bz, ty) < s_end(bz, ty):
                load_x(X, xv, xs, by, tx, s_first(bz, ty))
            for si2 in range((PER + 1) // 2):
                stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, vv, pv, vv, pv, v2, p2, 2 * si2, by, bz, ty,
                      tx, bx, sp, xs2)
                stage(vals, pos, sptr, X, st, sv, xv, xs2, av, af, acc, vv, pv, vv, pv, v2, p2, 2 * si2 + 1, by, bz,
                      ty, tx, bx, sp, xs)
        elif PIPE == 1:
            for si in range(PER):
                stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, vv, pv, vv, pv, v2, p2, si, by, bz, ty, tx, bx,
                      sp, xs)
        elif PIPE == 3:
            # three register sets: the first batch of stage si + 2 is issued at the start of stage si
            for si3 in range((PER + 2) // 3):
                stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, vv, pv, v4, p4, v2, p2, 3 * si3, by, bz, ty,
                      tx, bx, sp, xs)
                stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, v3, p3, vv, pv, v2, p2, 3 * si3 + 1, by, bz,
                      ty, tx, bx, sp, xs)
                stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, v4, p4, v3, p3, v2, p2, 3 * si3 + 2, by, bz,
                      ty, tx, bx, sp, xs)
        else:
            # two register sets: the next stage's first batch is issued at the start of this one
            for si2 in range((PER + 1) // 2):
                stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, vv, pv, v3, p3, v2, p2, 2 * si2, by, bz, ty,
                      tx, bx, sp, xs)
                stage(vals, pos, sptr, X, st, sv, xv, xs, av, af, acc, v3, p3, vv, pv, v2, p2, 2 * si2 + 1, by, bz,
                      ty, tx, bx, sp, xs)
        if ROWS:
            warp_store(acc, Y, bias, bx, by, bz, ty, tx)
        else:
            reduce_store(red, acc, Y, bias, bx, by, bz, ty, tx)
        if WSYNC and sv[1] < 0:
            # never true (stage pointers are >= 0), but not provably: a read of st_ over its whole extent at the
            # very end. st_'s accesses go through stp, so without it TVM shrinks the allocation and
            # StorageRewrite reuses it for `red` while warps still stage (a race)
            Y[0, 0] = st_[T.max(sv[1], 0) % (W * SWT)]

    NY = TT * O
    if KS == 1:
        @T.prim_func
        def kern(a_vals: T.handle, a_pos: T.handle, a_ptr: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            n_ = T.int32()
            m_ = T.int32()
            vals = T.match_buffer(a_vals, (n_,), dt)
            pos = T.match_buffer(a_pos, pos_shape(n_, m_), POS_DT)
            sptr = T.match_buffer(a_ptr, (NGR * NST + 1,), "int32")
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            for bx in T.thread_binding(NBX, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for bz in T.thread_binding(KS, thread="blockIdx.z"):
                        for ty in T.thread_binding(W, thread="threadIdx.y"):
                            for tx in T.thread_binding(32, thread="threadIdx.x"):
                                body(vals, pos, sptr, X, bias, Y, bx, by, bz, ty, tx)
    else:
        @T.prim_func
        def kern(a_vals: T.handle, a_pos: T.handle, a_ptr: T.handle, x: T.handle, b: T.handle, y: T.handle):
            T.func_attr({"tirx.noalias": True})
            n_ = T.int32()
            m_ = T.int32()
            vals = T.match_buffer(a_vals, (n_,), dt)
            pos = T.match_buffer(a_pos, pos_shape(n_, m_), POS_DT)
            sptr = T.match_buffer(a_ptr, (NGR * NST + 1,), "int32")
            X = T.match_buffer(x, (TT, K), dt)
            bias = T.match_buffer(b, (O,), dt)
            Y = T.match_buffer(y, (TT, O), dt)
            Yf = T.decl_buffer((NY,), dt, data=Y.data)
            for zb in T.thread_binding(ceil_div(NY, 256), thread="blockIdx.x"):
                for zt in T.thread_binding(256, thread="threadIdx.x"):
                    if zb * 256 + zt < NY:
                        Yf[zb * 256 + zt] = zero
            for bx in T.thread_binding(NBX, thread="blockIdx.x"):
                for by in T.thread_binding(NTT, thread="blockIdx.y"):
                    for bz in T.thread_binding(KS, thread="blockIdx.z"):
                        for ty in T.thread_binding(W, thread="threadIdx.y"):
                            for tx in T.thread_binding(32, thread="threadIdx.x"):
                                body(vals, pos, sptr, X, bias, Y, bx, by, bz, ty, tx)
    if not HAS_BIAS:
        from sparsec.backends.kernels.common import drop_param

        kern = drop_param(kern, "bias")
    if ts.minb:
        # __launch_bounds__(threads, minb): ptxas keeps registers <= 64K / (minb * threads), spilling if it must
        kern = kern.with_attr("tirx.launch_bounds_min_blocks_per_sm", ts.minb)
    return kern
