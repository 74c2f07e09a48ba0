"""Per-linear kernel design + format for --target cuda: a GPU cost rule fitted to H100 measurements.

A sparse weight is not always faster on the GPU: the bitmap *fragment* kernel is instruction-bound
(its time hardly depends on sparsity), the ``tiled`` kernel wins for few tokens, and for many tokens
a dense shared-memory GEMM (``dlight``) beats both. ``choose(O, K, T, density, dtype, formats)``
predicts the time of every (format, design) pair that can run the layer and returns them sorted;
format selection (``compile.py: cuda_choice``, ``--format auto``) stores the weight in the format of the
fastest candidate, and the planner runs the fastest design of the stored format at the layer's actual
token count (``best_design``). **Dense is always a candidate**, and a sparse format is kept only if it is
predicted at least 5 % faster than the best dense design (``SPARSE_MARGIN``), so a layer is never
compiled to a design predicted slower than dense (the no-regression guarantee, by prediction).
A forced ``--format`` is kept as asked; the planner still picks the faster of its designs.

Designs (``backends/cuda/kernels``; ``T`` = tokens, ``O x K`` = weight, ``d`` = density):

| design | formats | dtypes | tokens | predicted time (us) |
| --- | --- | --- | --- | --- |
| ``fragment`` dense | dense | all | any | ``3.0 + max(2OK / 2.60e6, OKT / 3.90e7)`` |
| ``dlight`` | dense | fp16/bf16 | T >= 128 | ``5.96 + waves * K * 0.01552``, ``waves = ceil(ceil(T/128) ceil(O/128) / 132)`` |
| ``fragment`` bitmap 8x32 | bitmap | all | any | ``8.28 + max((2dOK + OK/8) / 0.949e6, OKT / 3.66e7)`` |
| ``fragment`` nm | nm | all | any | ``4.47 + max(3dOK / 0.907e6, OKT / 2.68e7)`` |
| ``mma`` dense | dense | fp16/bf16 | T >= 128 | ``3.0 + max(OK / 0.77e6, OKT / 1.25e8)`` (with an activation: 0.66e6, 1.10e8) |
| ``mma`` 2:4 (``mma.sp``) | nm 2:4, K % 16 == 0 | fp16/bf16 | T >= 128 | ``3.0 + max(OK / 1.0e6, OKT / 1.33e8)`` (with an activation: 0.65e6, 1.30e8) |
| ``wgmma`` dense (sm_90a) | dense | fp16/bf16 | any | ``3 + max(OK / 1.2e6 occ_m, OKT / 2.6e8 occ_c)`` (T <= 32: ``OK / 1.4e6``) |
| ``wgmma`` 2:4 (sm_90a, ``wgmma.mma_async.sp``) | nm 2:4, K % 128 == 0 | fp16/bf16 | any | ``3 + max(1.125 OK / 2.8e6 occ_m, OKT / 3.5e8 occ_c)`` (x1.2 at 32 < T <= 128; T > 128: OKT / 4.6e8) |
| ``tiled`` | bitmap, nm | fp16/bf16 | T <= 128 | ``3.0 + max(B / 3.54e6, ceil(T/32) (4.40e-4 S + 1.59e-6 dOK))`` |

On sm_90a the tiled design runs as ``mma="wg"`` from 8 tokens (``tiled_knobs``), and there it has a row of its
own (session 11, ``predict_tiled_wg_us``): ``3.05 + 0.403 B / 1e6 + W (0.047 + 0.403 T / 64)``, ``B`` = bytes
streamed (3.1 per non-zero with ``pos7`` stages, 4.1 with ``pos``, + split-K partial outputs), ``W`` = 64-column
stage units one SM runs in series. Fitted to 99 H100 cells of the planner's variant (T 8-128, 70-90 %, BERT-base
and LLM shapes): median error x1.04, worst x1.18. The row above overstated the wg kernel 1.4x on the LLM shapes at
70 %, so those layers ran dense at 1.3-1.6x the time; it also understated it on BERT-base's 3072x768 at 16-64
tokens, which then ran tiled and slower. Below 8 tokens (any arch: the ``mma.sync`` kernel) a third row, ``predict_tiled_small_us``:
``3.87 + 0.481 B / 1e6 + 3.19 [ksplit > 1]``, fitted to 63 H100 cells at T = 1, 2, 4 (BERT-base and LLM shapes,
70-90 %; median x1.05, worst x1.18). With the row above, 70 % LLM layers at batch-1 decode ran dense (predicted 34 us
against 35; measured tiled 24 us, dense 33 us), and BERT-size layers at 80-90 % ran tiled, 10-70 % slower than
dense. Elsewhere (sm_80/sm_90 at 8-128 tokens, a fused activation from 8 tokens) the row above stands.
One limit: the dense rows assume the weight streams from DRAM. In a benchmark that replays one 4096^2 layer (33.5
MB, inside the 50 MB L2), dense measured 7.9-8.5 us against the predicted 15, and the wg rule's tiled pick at 70 %
(9-11 us) is slower there. In a model with many layers the weights do stream.

``occ_m = max(1, 132 / 2 blocks)``, ``occ_c = max(1, 132 / blocks)`` (blocks of the design's default knobs: a grid
smaller than the H100's 132 SMs streams and computes at its share). ``B`` = tiled layout bytes (4 per non-zero + 16 per stage), ``S`` = stages ``ceil(O/16rt) ceil(K/sc)``
(``rt, sc`` = 2, 64 for T <= 32 else 4, 32: the kernel's defaults). The tiled kernel has since become 3-15 %
faster on the LLM shapes (bank-ordered layout; ``clear="unscatter"`` at <= 1/8 density,
``benchmarks/results/dev/tiled_{bank,clear}.json``), which is deliberately NOT folded in: at BERT-base sizes
the rule already overstates tiled (session 3's all-tiled 1x128 encoder: 1.46 ms as a CUDA graph; session 4's all-dense
``mma`` one: 0.93 ms, ``docs/cuda.md``), and a 3-10 % cut flips its FFN layers to tiled. Each formula is
``launch + max(bytes / bandwidth, work / rate)`` with constants fitted (least squares on log time) to:

- ``benchmarks/results/spmm_gpu_tiled_dev.json`` (H100, 2026-11-23): dense fragment (24 cells,
  median error x1.23, worst x2.5), dlight (T = 128/1024, 8 cells, worst x1.02; the wave count is that
  of 128x128 output tiles, which is what fits), bitmap fragment (96 cells + the 6 tuned BERT cells,
  median x1.16), tiled (80 cells T = 1..128, 50-90 %, median x1.19, worst x1.53);
- ``benchmarks/results/spmm_gpu_mma_dev.json`` (H100, 2026-11-23): mma dense and 2:4 with their default
  knobs (4 LLM shapes x T = 128, 1024; 8 cells each, worst x1.2); refitted to the split-K defaults
  (``spmm_gpu_mma_splitk2.json``: ``ks`` up to 8 at T < 512 where ``mma_gemm.default_knobs`` splits K;
  a fused activation cannot use split-K, and small layers (< 132 tiles x splits) are not split: those
  keep the old tiles and the old constants);
- ``benchmarks/results/spmm_gpu.json``: nm fragment (2:4, 1:4, 2:8; 72 cells, median x1.20);
- ``MEASURED`` below: exact shapes timed on the H100 replace the formula (the tuned bitmap knobs of
  BERT-base's linears, ``benchmarks/results/e2e_gpu_knobs.json``).

Outside a design's measured token range it is not a candidate (dlight at T = 32 was 13x slower than
at 128; tiled was never timed above 130 tokens). The launch floor of the dense fragment kernel is
bounded below at 3 us (the unconstrained fit puts it at 0, which would favour dense for tiny layers).
The formulas are predictions: at BERT-base sizes (<= 2.4 M weights) every kernel is a few
microseconds and the error of the fit is of the order of the differences; the GPU check measures it.
"""
from __future__ import annotations

import math

# (format, design, O, K, T) -> us, measured on the H100 (bitmap 8x32 at 90 %, the TUNED knobs of tuned.py)
MEASURED: dict[tuple, float] = {
    ("bitmap", "fragment", 768, 768, 128): 7.79,
    ("bitmap", "fragment", 768, 768, 1024): 20.30,
    ("bitmap", "fragment", 3072, 768, 128): 13.32,
    ("bitmap", "fragment", 3072, 768, 1024): 47.88,
    ("bitmap", "fragment", 768, 3072, 128): 18.23,
    ("bitmap", "fragment", 768, 3072, 1024): 48.46,
}

H100_SMS = 132
DLIGHT_MIN_T = 128          # measured at 128 and 1024; at 32 it is 13x slower than the wave model
TILED_MAX_T = 128           # measured up to 128 (checked to 130)
MMA_MIN_T = 128             # the mma design was timed at 128 and 1024 tokens
WGMMA_MIN_T = 1             # the wgmma design (sm_90a only): dense timed at 1-32, 128, 1024 tokens, 2:4 at 1-1024
WGMMA_ARCHS = ("sm_90a",)   # wgmma has no sm_90 encoding: only a module built for sm_90a may hold it
HALF = ("float16", "bfloat16")
# --format auto: a sparse format is a candidate up to this density (the measured range: 50-90 % sparse)
SPARSE_MAX_DENSITY = 0.5
# a sparse format is chosen only if predicted at most this fraction of the best dense time: below 5 %
# the fit (median error x1.2) cannot tell them apart, and dense is the baseline (no regression)
SPARSE_MARGIN = 0.95
# tiled kernel: clear="unscatter" up to this density (``tiled_knobs``)
UNSCATTER_MAX_DENSITY = 0.125
# tiled kernel: code="pos7" from this density (``tiled_knobs``; the crossover with pos lies in 0.1-0.2, not measured)
POS7_MIN_DENSITY = 0.2
# mma="wg": 128-column pos7 stages up to this density (above it, 64-column stages: 70 % at T=32 1.23-1.31x against
# 1.39-1.55x cuBLAS in benchmarks/results/dev/wgr_run3)
WG_WIDE_MAX_DENSITY = 0.25
WSP_MAX_DENSITY = 0.105       # mma="wg" with sp=1 (the 2:4 sparse operand) below 32 tokens: 90 % (+ rounding)


def _cd(a: int, b: int) -> int:
    return -(-a // b)


def tiled_shape(T: int) -> tuple[int, int]:
    """The tiled kernel's default ``(rt, sc)`` for ``T`` tokens (``kernels/tiled.py: resolve``)."""
    rt = 2 if T <= 32 else 4
    return rt, (64 if rt <= 2 else 32)


def tiled_wg(density: float, tokens: int | None, arch: str | None, activation: bool = False) -> bool:
    """Whether the planner runs the tiled design as ``mma="wg"`` (``kernels/tiled_wg.py``, sm_90a): at T >= 8, with or
    without a fused activation (since session 13 its splits are summed by a fixup under one, ``fx=1``: H100,
    ``benchmarks/results/dev/tune_fused_run1.json``, 3 LLM shapes x T 8/32 x 70/90 % with an activation, 1.0-2.1x
    the ``mma.sync`` kernel at split 1 it replaces, slower in none beyond 1 %). H100 session 8
    (``benchmarks/results/spmm_gpu.json``, every tiled variant timed per cell): at T = 32 and 128 the wg kernel was
    the fastest tiled variant in all 16 + 16 unstructured cells of the 4 LLM shapes (T=32 70 %: 1.22-1.40x cuBLAS,
    the mma.sync kernel 0.84-0.94x on the large shapes); at T = 16 in 11 of 16, the mma.sync kernel winning at 90 %
    (3 of 4 shapes) and on 11008x4096 at 70 %, where 128-column stages (dev run 4) then win at 90 %; at T = 1 the
    mma.sync kernel is faster."""
    if arch not in WGMMA_ARCHS or tokens is None:
        return False
    # dev runs 3-4 (benchmarks/results/dev/wg_run{3,4}.json): at T=8 faster at 70 % on all 3 large shapes (1.54-1.65x
    # cuBLAS against 1.07-1.57x) and at 90 % with 128-column stages (2.42-2.68x against 2.13-2.66x), at 80 % even
    return tokens >= 8


# pdl=2 (session 15): every launch of a layer overlaps the previous kernel on the stream, the weight's first loads
# before griddepcontrol.wait. H100, benchmarks/results/dev/pdlpass15 (cold weights, CUDA graphs of 20 calls): the
# wg tiled kernel faster with it in 29 of 36 LLM-shape cells (1.02-1.21x; slower in 4, by 1-17 %), the dense wgmma
# GEMM 1.12-1.14x on 4096^2, 1.05-1.07x on 4096x11008, 1.01-1.02x on 11008x4096 and 0.94-0.97x on 9216x36864 (a
# 680 MB weight: the next launch's early blocks compete with a long kernel). The official run
# (benchmarks/results/spmm_gpu.json, session 15): 2:4 1.04-1.20x at 1-128 tokens up to 11008x4096, 0.85-0.88x on
# 9216x36864; at 1024 tokens 0.99-1.01x (0.88x on 9216x36864), dense 0.96-1.00x there: not taken above 128 tokens
PDL_MAX_WEIGHT_BYTES = 128 << 20
PDL_MAX_TOKENS = 128


def pdl_enabled() -> bool:
    """The planner's ``pdl=2`` (``SPARSEC_CUDA_PDL=0`` turns it off; tuned records keep theirs)."""
    import os

    return os.environ.get("SPARSEC_CUDA_PDL", "1") != "0"


def tiled_knobs(density: float, tokens: int | None = None, arch: str | None = None, activation: bool = False) -> dict:
    """``_tiled_knobs``, and on the wg kernel every launch overlapping the previous kernel (``pdl=2``)."""
    kn = _tiled_knobs(density, tokens, arch, activation)
    return dict(kn, pdl=2) if kn.get("mma") == "wg" and pdl_enabled() else kn


def wgmma_takes_pdl(O: int, K: int, T: int, sparse: bool = False) -> bool:
    """Whether the wgmma GEMM's default grid for this layer takes ``pdl=2`` (not where it runs stream-K)."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    try:
        resolve(O, K, T, {"pdl": 2}, MatmulSpec(T, O, K, False, None, "float16"), sparse)
    except KernelError:
        return False
    return True


# l2p=3 (session 17): the weight's TMA boxes promote each L2 miss to 256 bytes (the next k-tile of the same rows).
# H100, benchmarks/results/dev/hint17 (dense wgmma, weights cold in the tuner, warm in dev_wgsp) and the official run
# (benchmarks/results/spmm_gpu.json, cold): on the weights larger than the L2 (11008x4096, 4096x11008, 9216x36864)
# 1.02-1.03x at 1-32 tokens (11008x4096 T=32 with pdl=2 34.1 -> 33.3 us, 9216x36864 T=1 239.5 -> 232.6 us); at 128
# tokens 1.02-1.03x on the two 4096/11008 shapes but 0.95x on 9216x36864 (cold; 1.02x warm); on 4096^2 (33.5 MB)
# 0.97-1.02x; at 1024 tokens 0.94-0.98x. Taken for a dense weight over L2P_MIN_WEIGHT_BYTES up to L2P_MAX_TOKENS
L2P_MAX_TOKENS = 32
L2P_MIN_WEIGHT_BYTES = 64 << 20


def wgmma_knobs(O: int, K: int, T: int, sparse: bool = False) -> dict:
    """Knobs the planner gives the wgmma GEMM (dense, or 2:4 on ``wgmma.sp``) beyond its defaults: ``pdl=2`` for a
    weight of at most ``PDL_MAX_WEIGHT_BYTES`` (fp16 bytes; 2:4 half of them) at up to ``PDL_MAX_TOKENS`` tokens where
    the default grid takes it (``wgmma_takes_pdl``); the 256-byte L2 promotion of the weight's boxes (``l2p=3``) for a
    dense weight of over ``L2P_MIN_WEIGHT_BYTES`` at up to ``L2P_MAX_TOKENS`` tokens."""
    kn = {}
    if not sparse and T <= L2P_MAX_TOKENS and O * K * 2 > L2P_MIN_WEIGHT_BYTES:
        kn["l2p"] = 3
    if O * K * (1 if sparse else 2) > PDL_MAX_WEIGHT_BYTES or T > PDL_MAX_TOKENS or not pdl_enabled():
        return kn
    return dict(kn, pdl=2) if wgmma_takes_pdl(O, K, T, sparse) else kn


def _tiled_knobs(density: float, tokens: int | None = None, arch: str | None = None, activation: bool = False) -> dict:
    """Knobs the planner gives the tiled kernel beyond its defaults: ``mma="wg"`` where ``tiled_wg`` says so (up to
    density 1/8 128-column ``pos`` stages, up to 0.25 128-column ``pos7`` stages with a one-buffer A ring, above
    64-column ``pos7`` stages, with the one-buffer ring from 32 tokens; at 33-64 tokens 90 % takes the 0.25 variant); else ``clear="unscatter"`` when a stage holds
    about one 256-entry batch or less (density <= 1/8 at the default rt, sc), where it measured faster;
    ``code="pos7"`` (3-byte non-zeros) from density 0.2 (H100, ``benchmarks/results/dev/tiledp7_run1.json``: faster
    than ``pos`` in all 24 LLM-shape cells at 70/80 %, geomean 1.09x; slower in all 12 at 90 %)."""
    if tiled_wg(density, tokens, arch, activation):
        if density <= WSP_MAX_DENSITY and tokens < 32:
            # 90 %, 8-16 tokens: the stage decoded into the 2:4 sparse wgmma operand (half the A tile to zero and read;
            # ~1 % of the non-zeros as a CUDA-core residual), 256-column pos7 stages (two compressed atoms: half the
            # stages and barriers of 128), two batches, one A buffer, one activation tile ahead, the residual during
            # the wgmma. H100 (benchmarks/results/dev/s256_run1.*, 3 LLM shapes): 2.65-3.25x cuBLAS at T=8, 2.54-2.80x
            # at T=16, ahead of 128-column sp=1 stages (2.52-2.99x, 2.37-2.74x) in all 6 cells, which were ahead of the
            # dense-operand variant below (wsp_run3: 2.31-2.49x, 2.26-2.42x); at T=32 sp=1 is 0.94-1.02x of the variant
            # below, at 80 % 0.6-0.95x (the residual grows to ~4 % of the non-zeros)
            return {"mma": "wg", "code": "pos7", "sc": 256, "pb": 2, "wgs": 1, "sp": 1, "rr": 1, "ra": 1, "xd": 1}
        if density <= WSP_MAX_DENSITY and tokens == 32:
            # 90 % at 32 tokens: the same with pos stages and two warpgroups per block; ahead of the 128-column
            # dense-operand variant below in all 3 LLM-shape cells of session 10's official run (2.05-2.40x against
            # 1.99-2.39x cuBLAS, benchmarks/results/spmm_gpu.json; measured again in every official run)
            return {"mma": "wg", "code": "pos", "sc": 256, "pb": 2, "wgs": 2, "sp": 1, "rr": 1, "ra": 1, "xd": 1}
        if density <= UNSCATTER_MAX_DENSITY and 32 < tokens <= 64:
            # 90 % at 33-64 tokens: the 80 % variant below (128-column pos7 stages, one A buffer, one activation tile
            # ahead) beat the 128-column pos variant at T=64 on all 6 shapes of benchmarks/results/dev/t128_run1
            # (BERT-base's three and three LLM shapes: 0-19 % faster); at T=128 the pos variant was 1-6 % faster
            return {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1}
        if density <= UNSCATTER_MAX_DENSITY:
            # ~100 entries per 16x64 strip stage: 128-column stages (one batch), one warpgroup per block below 32
            # tokens (dev run 4: 90 % T=8/16 2.42-2.68x / 2.27-2.39x cuBLAS, 64-column stages 2.01-2.23x / 1.90-2.15x)
            return {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if tokens < 32 else {})}
        if density <= WG_WIDE_MAX_DENSITY:
            # ~80 %: 128-column pos7 stages with a one-buffer A ring and one activation tile ahead (more blocks per SM):
            # faster than 64-column stages in all 9 cells of two H100 dev runs (benchmarks/results/dev/wgr_run{2,3},
            # 3 LLM shapes x T 8/16/32: +2-15 %)
            return {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1}
        # 70 %: 64-column stages; the one-buffer A ring from 32 tokens (wgr_run2/3: +3-4 % at T=32 on all three
        # shapes, 1-3 % slower at T=8)
        return {"mma": "wg", **({"code": "pos7"} if density >= POS7_MIN_DENSITY else {}),
                **({"ra": 1} if tokens >= 32 else {})}
    if density <= UNSCATTER_MAX_DENSITY:
        return {"clear": "unscatter"}
    return {"code": "pos7"} if density >= POS7_MIN_DENSITY else {}


def predict_tiled_wg_us(O: int, K: int, T: int, density: float) -> float:
    """Predicted H100 time of the tiled design as the planner runs it on sm_90a from 8 tokens (``mma="wg"`` with
    ``tiled_knobs``): ``3.05 + 0.403 B / 1e6 + W (0.047 + 0.403 T / 64)`` us, where ``B`` = bytes streamed (3.1 per
    non-zero with ``pos7`` stages, 4.1 with ``pos``, plus the split-K partial outputs ``2 T O ksplit``) and ``W`` =
    64-column stage units one SM runs in series (``ceil(blocks / 3 per SM / 132) * stages per block * sc / 64``).
    Fitted (least squares on the relative error) to 99 H100 cells of the planner's variant, 2026-11-24: T = 8-32 on
    the three LLM shapes and 4096^2 at 70-90 % (session 13's warm run, ``dev/spmm_gpu_warm_s13.json``; cold, since
    session 14, it under-predicts 4096^2 and the 90 % cells of the 4096/11008 shapes by up to x1.28: not refitted),
    T = 8-32 on BERT-base's three shapes (``dev/tbert_run1.json``), T = 64/128 on all six (``dev/t128_run1.json``):
    median error x1.04, worst x1.18."""
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import MatmulSpec

    ts = resolve(MatmulSpec(T, O, K, False, None, "float16"), tiled_knobs(density, T, WGMMA_ARCHS[0]))
    blocks = _cd(_cd(O, 16), 4 * ts.wgs) * ts.ksplit * _cd(T, ts.tn)
    per = _cd(_cd(K, ts.sc), ts.ksplit)
    nbytes = density * O * K * (3.1 if ts.code == "pos7" else 4.1) + 2 * T * O * ts.ksplit
    w = _cd(blocks, 3 * H100_SMS) * per * ts.sc / 64
    return 3.05 + 0.403 * nbytes / 1e6 + w * (0.047 + 0.403 * T / 64)


def predict_tiled_small_us(O: int, K: int, T: int, density: float, activation: bool = False) -> float:
    """Predicted H100 time of the tiled design below 8 tokens (the ``mma.sync`` kernel with ``tiled_knobs``: ``pos7``
    stages from density 0.2, ``clear="unscatter"`` up to 1/8): ``3.87 + 0.481 B / 1e6 + 3.19 [ksplit > 1]`` us, ``B``
    = 3.1 bytes per non-zero with ``pos7``, 4.1 with ``pos`` (a split adds the zeroing launch and the atomics).
    Fitted (least squares on the relative error) to 63 H100 cells of the planner's variant, 2026-11-24: T = 1, 2, 4 x
    70-90 % x BERT-base's three shapes, 4096^2 and the three LLM shapes (``benchmarks/results/dev/t1_run1.json``):
    median error x1.05, worst x1.18."""
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import MatmulSpec

    ts = resolve(MatmulSpec(T, O, K, False, "gelu" if activation else None, "float16"),
                 tiled_knobs(density, T, None, activation))
    nbytes = density * O * K * (3.1 if ts.code == "pos7" else 4.1)
    return 3.87 + 0.481 * nbytes / 1e6 + (3.19 if ts.ksplit > 1 else 0.0)


def predict_us(fmt: str, design: str, O: int, K: int, T: int, density: float, activation: bool = False,
               arch: str | None = None) -> float:
    """Predicted H100 time of one matmul ``Y[T, O] = X[T, K] @ W^T`` (see the module docstring);
    ``activation``: a fused activation (the mma design then runs without split-K); ``arch``: where the tiled design
    runs as ``mma="wg"`` (``tiled_wg``) its own rule, ``predict_tiled_wg_us``."""
    key = (fmt, design, O, K, T)
    if key in MEASURED:
        return MEASURED[key]
    if design == "tiled" and ((wg := tiled_wg(density, T, arch, activation)) and T <= TILED_MAX_T or T < 8):
        from sparsec.backends.kernels.common import KernelError

        try:
            return predict_tiled_wg_us(O, K, T, density) if wg else predict_tiled_small_us(O, K, T, density, activation)
        except KernelError as exc:      # the planner's kernel cannot run this shape (e.g. K % 8 != 0 for mma="wg")
            raise KeyError(f"no tiled candidate for {O}x{K} at {T} tokens: {exc}") from None
    ok, okt = O * K, O * K * T
    if fmt == "dense" and design == "fragment":
        return 3.0 + max(2 * ok / 2.60e6, okt / 3.90e7)
    if fmt == "dense" and design == "dlight":
        waves = _cd(_cd(T, 128) * _cd(O, 128), H100_SMS)
        return 5.96 + waves * K * 0.01552
    if fmt == "bitmap" and design == "fragment":
        return 8.28 + max((2 * density * ok + ok / 8) / 0.949e6, okt / 3.66e7)
    if fmt == "nm" and design == "fragment":
        return 4.47 + max(3 * density * ok / 0.907e6, okt / 2.68e7)
    if fmt == "dense" and design == "wgmma":
        # H100 run 3 of the wgmma design (benchmarks/results/dev/wgmma_run3.json: default knobs, 4 LLM shapes x
        # T 128/1024, +-15 % per shape), and its occupancy: a grid of fewer blocks than SMs streams the weight at
        # about 2 SMs' share of the bandwidth per block and computes at one SM's share (BERT-base on the H100,
        # 2026-11-23: 768x768 at T=128 is 6 blocks, 10 us measured against 3.5 us from the LLM fit alone)
        from sparsec.backends.cuda.kernels.wgmma_gemm import default_knobs as wg_defaults
        kn = wg_defaults(O, K, T, "act" if activation else None)
        # sk=3 (stream-K under a wave, session 13): every SM busy
        blocks = H100_SMS if kn.get("sk") == 3 else _cd(O, kn["bm"]) * _cd(T, kn["bn"]) * kn["ks"]
        # T <= 32 (dev run benchmarks/results/dev/wgsp_run1.json: 3 LLM shapes x T 1-32, 1.0-1.09x cuBLAS):
        # the weight streams at 2.8 TB/s
        return 3.0 + max(ok / (1.4e6 if T <= 32 else 1.2e6) * max(1.0, H100_SMS / (2 * blocks)),
                         okt / 2.6e8 * max(1.0, H100_SMS / blocks))
    if fmt == "nm" and design == "wgmma":
        # 2:4 wgmma.mma_async.sp, default knobs (dev run benchmarks/results/dev/wgsp_run1.json, 4 LLM shapes x
        # T 1-1024): 1.125 bytes per weight element (values + metadata) at 2.8 TB/s, math at 3.5e8 MAC/us
        # (dense wgmma: 2.6e8), the same occupancy terms as dense; x1.2 at 32 < T <= 128 (pipeline fill). T > 128:
        # 256/192-row tiles, wip 0 (session 7, benchmarks/results/dev/wgbig_run6.json: 4.5-5.3e8 MAC/us at T=1024)
        from sparsec.backends.cuda.kernels.wgmma_gemm import default_sparse_knobs
        kn = default_sparse_knobs(O, K, T, "act" if activation else None)
        blocks = _cd(O, kn["bm"]) * _cd(T, kn["bn"]) * kn["ks"]
        t = max(1.125 * ok / 2.8e6 * max(1.0, H100_SMS / (2 * blocks)),
                okt / (4.6e8 if T > 128 else 3.5e8) * max(1.0, H100_SMS / blocks))
        return 3.0 + t * (1.2 if 32 < T <= 128 else 1.0)
    if design == "mma":                         # the split-K constants only where the defaults split K
        from sparsec.backends.cuda.kernels.mma_gemm import default_knobs
        split = default_knobs(O, K, T, fmt == "nm", "act" if activation else None)["ks"] > 1
    if fmt == "dense" and design == "mma":
        return 3.0 + (max(ok / 0.77e6, okt / 1.25e8) if split else max(ok / 0.66e6, okt / 1.10e8))
    if fmt == "nm" and design == "mma":
        return 3.0 + (max(ok / 1.0e6, okt / 1.33e8) if split else max(ok / 0.65e6, okt / 1.30e8))
    if design == "tiled":
        rt, sc = tiled_shape(T)
        stages = _cd(O, 16 * rt) * _cd(K, sc)
        nnz = density * ok
        return 3.0 + max((4 * nnz + 16 * stages) / 3.54e6, _cd(T, 32) * (4.40e-4 * stages + 1.59e-6 * nnz))
    raise KeyError(f"no cost rule for {fmt} {design}")


def designs_for(fmt: str, T: int, dtype: str, arch: str = "sm_90", nm: tuple | None = None) -> list[str]:
    """Kernel designs that can run a ``fmt`` weight at ``T`` tokens in ``dtype`` (within measured ranges)
    in a module built for ``arch`` (``wgmma`` needs ``sm_90a``); ``nm``: the ``(n, m)`` of an nm weight when known
    (the 2:4 tensor-core designs take only patterns with at most 2 non-zeros per 4 columns)."""
    if fmt == "nm" and nm is not None:
        from sparsec.backends.cuda.kernels.mma_layout import fits_24

        if not fits_24(*nm):
            return [d for d in designs_for(fmt, T, dtype, arch) if d not in ("mma", "wgmma")]
    if fmt == "dense":
        return (["fragment"] + (["dlight"] if dtype in HALF and T >= DLIGHT_MIN_T else [])
                + (["mma"] if dtype in HALF and T >= MMA_MIN_T else [])
                + (["wgmma"] if dtype in HALF and T >= WGMMA_MIN_T and arch in WGMMA_ARCHS else []))
    if fmt in ("bitmap", "nm"):
        return (["fragment"] + (["tiled"] if dtype in HALF and T <= TILED_MAX_T else [])
                + (["mma"] if fmt == "nm" and dtype in HALF and T >= MMA_MIN_T else [])
                + (["wgmma"] if fmt == "nm" and dtype in HALF and arch in WGMMA_ARCHS else []))
    return ["fragment"]                  # csr, bsr, groupquant (forced formats): the fragment family


def choose(O: int, K: int, T: int, density: float, dtype: str, formats, activation: bool = False,
           arch: str = "sm_90", nm: tuple | None = None) -> list[dict]:
    """Every (format, design) candidate for the layer, fastest first; ``formats`` are the stored formats
    that may hold the weight (``"dense"`` is always added). Ties keep dense first."""
    fmts = ["dense"] + [f for f in formats if f != "dense"]
    out = []
    for f in fmts:
        for d in designs_for(f, T, dtype, arch, nm):
            try:
                us = predict_us(f, d, O, K, T, 1.0 if f == "dense" else density, activation, arch)
            except KeyError:
                continue
            out.append({"format": f, "design": d, "predicted_us": round(us, 2),
                        "source": "measured" if (f, d, O, K, T) in MEASURED else "fit"})
    out.sort(key=lambda c: (c["predicted_us"], c["format"] != "dense"))
    return out


def best_design(fmt: str, O: int, K: int, T: int, density: float, dtype: str,
                activation: bool = False, arch: str = "sm_90") -> tuple[str, float, float]:
    """For a weight already stored as ``fmt``: ``(design, predicted us, predicted us of the best dense)``."""
    ranked, dense = ranked_designs(fmt, O, K, T, density, dtype, activation, arch)
    return (*ranked[0], dense)


def ranked_designs(fmt: str, O: int, K: int, T: int, density: float, dtype: str, activation: bool = False,
                   arch: str = "sm_90") -> tuple[list[tuple[str, float]], float]:
    """For a weight stored as ``fmt``: ``([(design, predicted us)] fastest first, predicted us of the best
    dense)``; the planner takes the first whose kernel can be generated for the layer (a design can refuse a
    shape, e.g. 2:4 ``wgmma`` needs K % 128 == 0), ending with ``fragment`` (any shape)."""
    cands = [(c["design"], c["predicted_us"])
             for c in choose(O, K, T, density, dtype, [fmt], activation, arch) if c["format"] == fmt]
    dense = min(c["predicted_us"] for c in choose(O, K, T, density, dtype, [], activation, arch))
    if not any(d == "fragment" for d, _ in cands):
        cands.append(("fragment", math.inf))
    return cands, dense


def pick(cands: list[dict]) -> tuple[dict, dict]:
    """``(chosen, best dense)`` of ``choose``'s candidates: the fastest sparse one if it is predicted at
    most ``SPARSE_MARGIN`` of the best dense time, else the best dense."""
    dense = next(c for c in cands if c["format"] == "dense")
    best = cands[0]
    if best["format"] != "dense" and best["predicted_us"] <= SPARSE_MARGIN * dense["predicted_us"]:
        return best, dense
    return dense, dense
