"""Autotuning the ``tiled`` kernel on a GPU: the split of K and the variant, per layer shape, token count and density.

The tiled kernel's default split (``kernels/tiled.py``: the smallest that keeps a block's stages short and gives
every SM blocks) was 10 % off the best on some H100 shapes, and the best split is not a smooth function of the
shape (``docs/cuda.md``, session 11, ``ks70_run1``); the planner's variant per density (``select.tiled_knobs``)
also lost to its neighbour's on deep K. Both are measured here instead of guessed. The GPU machine has no TVM,
so tuning runs in three steps:

1. **here** (TVM + nvcc, no GPU): ``build(cells, outdir)`` writes ``outdir/tune.so`` (every candidate kernel of
   every cell) and ``outdir/tune.json`` (cells, candidates, the tuning key of each cell);
   ``sparsec autotune model.py --target cuda --emit DIR`` does it for the model's tiled layers,
   ``scripts/gpu/build_tune.py DIR`` for the benchmark grid.
2. **on the GPU**: ``python scripts/gpu/tune_tiled.py DIR`` times every candidate on a random weight of the cell's
   shape and density (each checked against ``F.linear`` first; a wrong kernel is recorded as such and never
   chosen), then re-times the fastest few and the planner's default interleaved (``CONFIRM`` rounds) and writes
   ``DIR/results.json``.
3. **here**: ``sparsec autotune --target cuda --import DIR/results.json [--db PATH]`` appends the measurements to
   the tuning database. ``sparsec compile --target cuda`` then runs each tiled layer with the database's fastest
   correct knobs for its key (``lookup``), else with the planner's. A tuned variant replaces the planner's only
   when its re-measured median is >= 2 % lower and the interquartile ranges are apart (``db.beats``).

Key (``tiled_key``): ``matmul``, ``(O, K, T)``, dtype, format ``"tiled"`` (the kernel reads its private layout,
whatever the stored format), the stored fraction to two decimals, target ``cuda:<arch>``, features
``gpu:<arch>``, sparsec/TVM versions, and for a layer with a fused activation the parameter ``epilogue=act``: the
kernel cannot split K under an activation (the splits add with atomics), so such a cell is tuned over the split-1
candidates only and its records never serve a layer without one, nor the other way round. Bias is not part of it
(tuned on the plain matmul).

The H100 measurements of the benchmark grid ship with sparsec (``tuned_h100.jsonl``, read after the user's
database); ``SPARSEC_CUDA_SHIPPED_TUNING=0`` turns them off.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass

from sparsec.ir.errors import ParameterError, SerializationError

# the planner's variants tried per cell: its own and those of the neighbouring density classes (90 / 80 / 70 %)
VARIANT_DENSITIES = (0.1, 0.2, 0.3)
SPLIT_STEPS = (-3, -2, -1, 0, 1, 2, 3)   # splits tried around each variant's default ...
SPLIT_FACTORS = (0.5, 0.67, 1.5, 2.0)     # ... and these multiples of it (H100 tuning run 1,
# benchmarks/results/dev/tune_run1.json: with default-3..default+2 the best split sat at the edge of the range in
# 16 of 48 cells, e.g. 4096x11008 at one token: split 4 against the default 2, 1.29x faster)
MAX_SPLIT = 64
# space="wide": the planner's variant with one of these knobs changed, at half, one below, at and one above its split
WIDE_KNOBS = {"wg": {"wgs": (1, 2, 3), "xd": (1, 2, 3), "pb": (1, 2), "pf": (1, 2), "ra": (1, 2),
                     "code": ("pos", "pos7"), "sc": (64, 128, 256), "rr": (0, 1), "rp": (1, 2, 4), "fx": (0, 1)},
              "sync": {"warps": (4, 8, 16), "code": ("pos", "pos7"), "clear": ("zero", "unscatter"), "pipe": (1, 2)}}
# space="pdl" (a pass after a tuning run): the planner's variant and the tuned record's (the user's database, else the
# shipped one), each at its split and one either side, as it is and launched to overlap the previous kernel on the
# stream (pdl=2). (The fixup with pdl=2 was slower than pdl=2 alone in all 15 cells of dev/pdl15.)
# space="cluster" (a pass after a tuning run): the planner's variant and the tuned record's as they are, and each with
# its splits summed across a thread-block cluster (fx=2) at every split from 2 to the cluster limit
# space="refine" (a pass after a tuning run): single-knob neighbours of the cell's tuned record (else the planner's
# variant), each at the record's split, the record at more splits, and the record with its registers capped for more
# blocks per SM (minb) at its split and one either side
REFINE_KNOBS = {"wg": dict(WIDE_KNOBS["wg"], pdl=(0, 2), sp=(0, 1)), "sync": WIDE_KNOBS["sync"]}
REFINE_MINB = (3, 4, 5, 6)
# space="hint" (a pass after a tuning run): the planner's variant and the tuned record's with each cache hint on the
# weight's loads (the wg kernel's ldw, and its bulk L2 prefetch l2f, at the split and one either side; the dense wgmma
# GEMM's TMA L2 promotion l2p)
HINT_LDW = (0, 1, 2, 3)
HINT_L2P = (0, 1, 2, 3)
# space="cross" (a pass after a tuning run): the tuned records of the layer's other token counts (CROSS_TOKENS) and
# other density classes (VARIANT_DENSITIES), tiled to this token count, each at its split and one either side (session
# 17: at 4096^2, 32 tokens, 90 %, the 80 % record's knobs ran 1.03x faster than the 90 % record's)
CROSS_TOKENS = (1, 8, 16, 32, 64, 128)
SPACES = ("default", "wide", "pdl", "cluster", "refine", "hint", "cross")
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned_h100.jsonl")
SCHEMA = "sparsec-cuda-tune/1"


@dataclass(frozen=True)
class Cell:
    """One tuning problem: ``Y[T, O] = X[T, K] @ W[O, K]^T`` with a weight of this density."""

    O: int
    K: int
    T: int
    density: float
    dtype: str = "float16"
    arch: str = "sm_90a"
    where: str = "grid"        # the layer (model file + weight) or "grid"
    space: str = "default"     # "wide": also every single-knob neighbour of the planner's variant (WIDE_KNOBS)
    fused: bool = False        # the layer has a fused activation: split-1 candidates only, key param epilogue=act
    kind: str = "tiled"        # "tiled": the decode kernel; "dense": a dense layer on the wgmma GEMM (density 1)

    @property
    def label(self) -> str:
        what = "dense wgmma" if self.kind == "dense" else f"{1 - self.density:.0%} sparse"
        return f"{self.O}x{self.K} T={self.T} {what}" + (" + activation" if self.fused else "")


def versions() -> str:
    from sparsec.passes.autotune.space import versions as v

    return v()


def tiled_key(O: int, K: int, T: int, density: float, dtype: str, arch: str, versions_: str | None = None,
              fused: bool = False):
    from sparsec.passes.autotune.db import TuningKey
    from sparsec.passes.autotune.space import signature

    return TuningKey("matmul", (int(O), int(K), int(T)), dtype, "tiled", (("epilogue", "act"),) if fused else (),
                     signature(density), f"cuda:{arch}", f"gpu:{arch}", versions_ or versions())


def dense_key(O: int, K: int, T: int, dtype: str, arch: str, versions_: str | None = None, fused: bool = False):
    """Key of a dense layer on the ``wgmma`` GEMM (format ``dense``, parameter ``design=wgmma``)."""
    from sparsec.passes.autotune.db import TuningKey
    from sparsec.passes.autotune.space import signature

    return TuningKey("matmul", (int(O), int(K), int(T)), dtype, "dense",
                     (("design", "wgmma"),) + ((("epilogue", "act"),) if fused else ()), signature(1.0),
                     f"cuda:{arch}", f"gpu:{arch}", versions_ or versions())


def cell_key(c: Cell, versions_: str | None = None):
    if c.kind == "dense":
        return dense_key(c.O, c.K, c.T, c.dtype, c.arch, versions_, c.fused)
    return tiled_key(c.O, c.K, c.T, c.density, c.dtype, c.arch, versions_, c.fused)


def model_cells(plan, dtype: str, arch: str, where: str, space: str = "default") -> list[Cell]:
    """The cells ``sparsec autotune --target cuda --emit`` measures for a lowered model (``plan``: its
    ``lower_graph_cuda``): every layer the planner runs on the tiled kernel or the dense wgmma GEMM; and for every
    layer whose weight is sparse enough to be a candidate (density <= ``select.SPARSE_MAX_DENSITY``) at a token
    count where both designs exist, both: the tiled kernel at the weight's density and the dense GEMM, so that
    ``sparsec compile`` decides the layer's format by measurement (``lookup_pair``) instead of the cost rule.
    One cell per tuning key."""
    from sparsec.backends.cuda import select as S

    cells, seen = [], set()

    def add(c: Cell) -> None:
        sig = cell_key(c).digest()
        if sig not in seen:
            seen.add(sig)
            cells.append(c)

    for kn in plan.kernels.values():
        (o, k), t = kn["shape"], kn["tokens"]
        fused = kn.get("activation") is not None          # no split under a fused activation: keys of its own
        # exact, as compile keys its lookup (the non-zeros, also of a weight the cost rule kept dense)
        density = plan.consts[kn["weight"]].value.nnz / (o * k)
        at = f"{where}: {kn['weight']}"
        tiled_ok = "tiled" in S.designs_for("bitmap", t, dtype, arch)
        dense_ok = "wgmma" in S.designs_for("dense", t, dtype, arch)
        pair = density <= S.SPARSE_MAX_DENSITY and kn["format"] in ("dense", "bitmap") and tiled_ok and dense_ok
        if kn["design"] == "tiled" or pair:
            add(Cell(o, k, t, density, dtype, arch, where=at, space=space, fused=fused, kind="tiled"))
        if (kn["design"] == "wgmma" and kn["format"] == "dense") or pair:
            add(Cell(o, k, t, 1.0, dtype, arch, where=at, space=space, fused=fused, kind="dense"))
    return cells


def _spec(c: Cell):
    """The cell's matmul as the kernel's knob rules see it (any activation stands for a fused one: no split)."""
    from sparsec.backends.kernels.common import MatmulSpec

    return MatmulSpec(c.T, c.O, c.K, False, "relu" if c.fused else None, c.dtype)


def _wgmma_knobs(ws) -> dict:
    """A resolved wgmma kernel's knobs as the tuner records them: without ``design`` and ``bk`` (not knobs), with
    ``ks`` and ``sk`` explicit (so the defaults cannot put a split back)."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import resolved_knobs

    kn = resolved_knobs(ws)
    kn.pop("design")
    kn.pop("bk")
    return dict(kn, sk=ws.sk)


def planner_knobs(c: Cell) -> dict:
    """The knobs ``sparsec compile`` gives this cell without tuning (resolved, without ``design``)."""
    if c.kind == "dense":
        from sparsec.backends.cuda.kernels.wgmma_gemm import resolve as wg_resolve

        return _wgmma_knobs(wg_resolve(c.O, c.K, c.T, {}, _spec(c)))
    from sparsec.backends.cuda import select as S
    from sparsec.backends.cuda.kernels.tiled import resolve

    kn = resolve(_spec(c), S.tiled_knobs(c.density, c.T, c.arch, c.fused)).knobs()
    kn.pop("design", None)
    return kn


def _adjacent(density: float) -> list[float]:
    i = min(range(len(VARIANT_DENSITIES)), key=lambda j: abs(VARIANT_DENSITIES[j] - density))
    return [VARIANT_DENSITIES[j] for j in (i - 1, i + 1) if 0 <= j < len(VARIANT_DENSITIES)]


def candidates(c: Cell) -> list[dict]:
    """Resolved knob sets to time for ``c``, the planner's first: its variant and its neighbouring density classes'
    variants, each at ``split_candidates`` of its default split (what the kernel accepts: a fused cell, split 1
    only)."""
    from sparsec.backends.cuda import select as S
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError

    if c.kind == "dense":
        return dense_candidates(c)
    spec = _spec(c)
    out, seen = [], set()

    def add(kn):
        try:
            r = resolve(spec, kn).knobs()
        except KernelError:
            return
        r.pop("design", None)
        key = json.dumps(r, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(r)
    add(S.tiled_knobs(c.density, c.T, c.arch, c.fused))
    if not out:
        raise ParameterError(f"{c.where}: {c.label}: the tiled kernel does not take this shape")
    if c.space == "refine":
        hit = lookup(c.O, c.K, c.T, c.density, c.dtype, c.arch, fused=c.fused)
        base = {k: v for k, v in (hit[0] if hit else out[0]).items() if k != "design"}
        add(base)
        for knob, values in REFINE_KNOBS[base.get("mma", "sync")].items():
            for v in values:
                if base.get(knob) != v:
                    add(dict(base, **{knob: v}))
        for split in split_candidates(base["ksplit"]):
            add(dict(base, ksplit=split))
        for minb in REFINE_MINB:
            for split in sorted({max(1, base["ksplit"] - 1), base["ksplit"], base["ksplit"] + 1}):
                add(dict(base, minb=minb, ksplit=split))
        return out
    if c.space == "cluster":
        from sparsec.backends.cuda.kernels.tiled import WG_CLUSTER_MAX

        hit = lookup(c.O, c.K, c.T, c.density, c.dtype, c.arch, fused=c.fused)
        for kn in [dict(out[0])] + ([hit[0]] if hit else []):
            add(dict(kn))
            if kn.get("mma") == "wg":
                for split in range(2, WG_CLUSTER_MAX + 1):
                    add(dict(kn, ksplit=split, fx=2))
        return out
    if c.space == "cross":
        for t in sorted(set(CROSS_TOKENS) | {c.T}):
            for d in sorted(set(VARIANT_DENSITIES) | {round(c.density, 4)}):
                hit = lookup(c.O, c.K, t, d, c.dtype, c.arch, fused=c.fused)
                if hit is None:
                    continue
                kn = {k: v for k, v in hit[0].items() if k != "design" and not (k == "tn" and t != c.T)}
                for split in sorted({max(1, kn["ksplit"] - 1), kn["ksplit"], kn["ksplit"] + 1}):
                    add(dict(kn, ksplit=split))
        return out
    if c.space == "hint":
        hit = lookup(c.O, c.K, c.T, c.density, c.dtype, c.arch, fused=c.fused)
        for kn in [dict(out[0])] + ([hit[0]] if hit else []):
            kn = {k: v for k, v in kn.items() if k not in ("ldw", "design")}
            if kn.get("mma") != "wg":
                add(kn)
                continue
            kn.pop("l2f", None)
            for split in sorted({max(1, kn["ksplit"] - 1), kn["ksplit"], kn["ksplit"] + 1}):
                for ldw in HINT_LDW:
                    add(dict(kn, ksplit=split, ldw=ldw))
                add(dict(kn, ksplit=split, l2f=1))
        return out
    if c.space == "pdl":
        hit = lookup(c.O, c.K, c.T, c.density, c.dtype, c.arch, fused=c.fused)
        for kn in [dict(out[0])] + ([hit[0]] if hit else []):
            kn = {k: v for k, v in kn.items() if k != "pdl"}
            for split in sorted({max(1, kn["ksplit"] - 1), kn["ksplit"], kn["ksplit"] + 1}):
                add(dict(kn, ksplit=split))
                if kn.get("mma") == "wg":
                    add(dict(kn, ksplit=split, pdl=2))
        return out
    for d in [c.density] + _adjacent(c.density):
        if c.fused:
            # also the mma.sync kernel the planner ran under an activation before session 13 (split 1 only); the
            # wgmma variants below sum their splits with the fixup there (fx=1, the default under an activation)
            add(dict(S.tiled_knobs(d, c.T, None, True), ksplit=1))
        base = S.tiled_knobs(d, c.T, c.arch)
        try:
            ks = resolve(spec, base).ksplit
        except KernelError:
            continue
        for split in split_candidates(ks):
            add(dict(base, ksplit=split))
    if c.space == "wide":
        base = S.tiled_knobs(c.density, c.T, c.arch, c.fused)
        for knob, values in WIDE_KNOBS[out[0].get("mma", "sync")].items():
            for v in values:
                kn = dict(base, **{knob: v})
                try:
                    ks = resolve(spec, kn).ksplit
                except KernelError:
                    continue
                for split in sorted({max(1, round(ks / 2)), max(1, ks - 1), ks, ks + 1}):
                    add(dict(kn, ksplit=split))       # (a fused cell: resolve refuses every split but 1)
        if c.T < 8 and c.arch in S.WGMMA_ARCHS:
            # below 8 tokens also the wg kernel (an 8-token tile), its splits summed by atomics after a zeroing
            # launch or by the fixup in one launch (fx=1): on a small layer a launch and a latency chain weigh
            for kn in (S.tiled_knobs(c.density, 8, c.arch, c.fused), dict(S.tiled_knobs(c.density, 8, c.arch), fx=1)):
                try:
                    ks = resolve(spec, kn).ksplit
                except KernelError:
                    continue
                for split in sorted({max(1, round(ks / 2)), ks, 2 * ks}):
                    add(dict(kn, ksplit=split))
    elif c.space not in SPACES:
        raise ParameterError(f"tuning space {c.space!r}: one of {', '.join(SPACES)}")
    return out


DENSE_SPLITS = (1, 2, 3, 4, 6, 8)


def dense_candidates(c: Cell) -> list[dict]:
    """A dense layer on the wgmma GEMM (sm_90a), the planner's knobs first: its token tile and 128 tokens, each
    with every split of K that keeps the grid within two waves, and the stream-K schedules where the grid leaves a
    partial wave (``sk=2`` over a wave, ``sk=3``); under a fused activation no split and no ``sk=2`` (both add with
    atomics). ``space="wide"`` adds 64-row tiles and 4-8 pipeline stages at splits up to four waves."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import SMS, default_knobs, resolve as wg_resolve
    from sparsec.backends.kernels.common import KernelError, ceil_div

    spec = _spec(c)
    out, seen = [planner_knobs(c)], set()
    seen.add(json.dumps(out[0], sort_keys=True))

    def add(knobs):
        """Resolve ``knobs`` (a kernel that refuses them is left out) and keep them when new."""
        try:
            kn = _wgmma_knobs(wg_resolve(c.O, c.K, c.T, knobs, spec))
        except KernelError:
            return
        key = json.dumps(kn, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(kn)

    if c.space in ("cluster", "refine", "cross"):
        # the cluster sum, the refine walk and the cross pass are the tiled kernel's: a dense cell keeps the planner's
        # and the tuned record's knobs
        hit = lookup(c.O, c.K, c.T, 1.0, c.dtype, c.arch, fused=c.fused, kind="dense")
        for kn in [dict(out[0])] + ([hit[0]] if hit else []):
            add(dict(kn))
        return out
    if c.space == "hint":
        # the planner's and the tuned record's knobs, as they are and overlapping the previous kernel (pdl=2), with
        # each L2 promotion of the weight's TMA boxes
        hit = lookup(c.O, c.K, c.T, 1.0, c.dtype, c.arch, fused=c.fused, kind="dense")
        for kn in [dict(out[0])] + ([hit[0]] if hit else []):
            for pdl in (0, 2):
                for p in HINT_L2P:
                    add(dict(kn, pdl=pdl, l2p=p))
        return out
    if c.space == "pdl":
        # the planner's and the tuned record's knobs, each as they are and overlapping the previous kernel (pdl=2)
        hit = lookup(c.O, c.K, c.T, 1.0, c.dtype, c.arch, fused=c.fused, kind="dense")
        for kn in [dict(out[0])] + ([hit[0]] if hit else []):
            for p in (0, 2):
                add(dict(kn, pdl=p))
        return out
    base = default_knobs(c.O, c.K, c.T, spec.activation)
    for bn in sorted({base["bn"], min(128, base["bn"])}, reverse=True):
        tiles = ceil_div(c.O, base["bm"]) * ceil_div(c.T, bn)
        for sk in (0, 2, 3):
            if (sk == 2 and not (tiles > SMS and tiles % SMS)) or (sk == 3 and not tiles % SMS):
                continue            # the schedule would be the plain grid's
            for ks in (DENSE_SPLITS if sk == 0 else (1,)):
                if ks > 1 and ks * tiles > 2 * SMS:
                    break
                add(dict(bn=bn, ks=ks, sk=sk))
    if c.space == "wide":
        # also 64-row tiles (twice the blocks: more loads in flight on a grid under a wave) and the pipeline depth,
        # each at every split of K that keeps the grid within four waves
        for bm, stages in [(64, None), (64, 8), (128, 4), (128, 6), (128, 8)]:
            tiles = ceil_div(c.O, bm) * ceil_div(c.T, base["bn"])
            for ks in DENSE_SPLITS:
                if ks > 1 and (spec.activation or ks * tiles > 4 * SMS):
                    break
                add(dict(bm=bm, stages=stages, ks=ks))
    elif c.space not in SPACES:
        raise ParameterError(f"tuning space {c.space!r}: one of {', '.join(SPACES)}")
    return out


def split_candidates(default: int) -> list[int]:
    """The splits tried for a variant whose default split is ``default`` (1..MAX_SPLIT, increasing)."""
    cand = {default + s for s in SPLIT_STEPS} | {max(1, round(default * f)) for f in SPLIT_FACTORS}
    return sorted(k for k in cand if 1 <= k <= MAX_SPLIT)


def cell_doc(c: Cell, i: int, versions_: str | None = None) -> dict:
    """The cell's entry of ``tune.json``: the cell, its tuning key, the planner's knobs, the candidates (kernel
    ``tune<i>_<j>``)."""
    cands = [{"name": f"tune{i}_{j}", "knobs": kn} for j, kn in enumerate(candidates(c))]
    return {**asdict(c), "key": cell_key(c, versions_).to_json(),
            "planner": cands[0]["knobs"], "candidates": cands}


def _atomic_write(path: str, write) -> None:
    """``write(tmp)`` writes the file at a temp path beside ``path``, which is then renamed over ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp" + os.path.splitext(path)[1])     # the suffix: export_library's format
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build(cells: list[Cell], outdir: str, arch: str | None = None, progress=None) -> dict:
    """Write ``outdir/tune.so`` (every candidate of every cell, one library) and ``outdir/tune.json``."""
    import tvm

    from sparsec.backends.cuda import toolchain
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.kernels.common import WeightMeta

    if not cells:
        raise ParameterError("nothing to tune: no layer runs the tiled kernel (see `sparsec compile --explain`)")
    arch = arch or cells[0].arch
    if any(c.arch != arch for c in cells):
        raise ParameterError(f"tune cells for several archs ({sorted({c.arch for c in cells})}); build one per arch")
    toolchain.ensure_cuda_codegen()
    vers = versions()
    funcs, doc = {}, {"schema": SCHEMA, "arch": arch, "versions": vers, "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "cells": []}
    for i, c in enumerate(cells):
        if c.kind == "dense":
            meta = WeightMeta("dense", c.O, c.K, c.dtype, (), (("values", c.dtype),))
        else:
            meta = WeightMeta("bitmap", c.O, c.K, c.dtype, (("tile", (8, 32)),),
                              (("bits", "uint8"), ("tile_ptr", "int32"), ("values", c.dtype)))
        cd = cell_doc(c, i, vers)
        for cand in cd["candidates"]:
            func, args, resolved = cuda_matmul_primfunc(meta, c.T, knobs=cand["knobs"], name=cand["name"],
                                                        design="wgmma" if c.kind == "dense" else "tiled")
            got = {k: v for k, v in resolved.items() if k not in ("design", "bk")}
            assert got == ({k: v for k, v in cand["knobs"].items() if not (k == "sk" and v == 0)}
                           if c.kind == "dense" else cand["knobs"]), (cand, resolved)
            funcs[cand["name"]] = func
            cand["args"] = [a.name for a in args]
        doc["cells"].append(cd)
        if progress:
            progress(i, len(cells), c.label)
    lib = toolchain.build(tvm.IRModule(funcs), arch)
    _atomic_write(os.path.join(outdir, "tune.so"), lib.export_library)
    doc["kernels"] = len(funcs)

    def write_json(p):
        with open(p, "w") as f:
            json.dump(doc, f, indent=1)
    _atomic_write(os.path.join(outdir, "tune.json"), write_json)
    return doc


def import_results(path: str, db, decisive_only: bool = False, replace: bool = False) -> dict:
    """Append the GPU measurements of ``path`` (``tune_tiled.py``'s ``results.json``) to the tuning database ``db``:
    one record per candidate (``ok`` with its samples, or ``wrong`` with its error), then the interleaved
    re-measurement of the finalists (``CONFIRM``; the planner's as ``INCUMBENT``). ``decisive_only``: only what
    ``TuningDB.best`` decides on (the re-measurements and the failed candidates; how the shipped file is kept
    small). ``replace``: the database's earlier records of the measured cells' keys are removed first, so each cell
    is decided by this run alone (a re-tune: e.g. under another L2 mode, or a ``pdl`` pass). Returns a summary."""
    from sparsec.passes.autotune.db import CONFIRM, INCUMBENT, Record, TuningKey

    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as exc:
        raise SerializationError(f"{path}: not a tuning result file: {exc}") from None
    if not isinstance(res, dict) or res.get("schema") != SCHEMA or not isinstance(res.get("cells"), list):
        raise SerializationError(f"{path}: not a tuning result file of this sparsec (schema {SCHEMA!r}; "
                                 f"made by scripts/gpu/tune_tiled.py)")
    gpu = str(res.get("machine", {}).get("gpu", "gpu"))
    stale = res.get("versions") not in (None, versions())
    # the measurement condition: weights past the L2 cache (tune_tiled.py --l2 cold, the default since session 14)
    # or one warm copy (earlier results, the shipped records); lookup_pair compares only like with like
    runner = f"gpu:{gpu}" + (":l2=cold" if res.get("l2") == "cold" else "")
    n_ok = n_bad = n_cells = 0
    changed = []
    dropped = 0
    if replace:
        try:
            digests = {TuningKey.from_json(cell["key"]).digest() for cell in res["cells"]}
        except (KeyError, TypeError) as exc:
            raise SerializationError(f"{path}: a cell without its key: {exc}") from None
        dropped = db.drop_keys(digests)
    for ci, cell in enumerate(res["cells"]):
        try:
            key = TuningKey.from_json(cell["key"])
            planner = cell["planner"]
            cands = cell["candidates"]
        except (KeyError, TypeError) as exc:
            raise SerializationError(f"{path}: cell {ci}: missing field {exc}") from None
        n_cells += 1
        recs = []
        for cd in cands:
            kn = cd["knobs"]
            if cd.get("status") == "ok":
                n_ok += 1
                if decisive_only and cell.get("confirm"):
                    continue
                recs.append(Record(key, kn, "ok", cd["us"] * 1e-6, [t * 1e-6 for t in cd["times_us"]], runner=runner,
                                   host=gpu, when=res.get("when", "")))
            else:
                recs.append(Record(key, kn, cd.get("status", "error"), None, [], error=cd.get("error", ""),
                                   runner=runner, host=gpu, when=res.get("when", "")))
                n_bad += 1
        for cd in cell.get("confirm", []):
            suffix = INCUMBENT if cd["knobs"] == planner else CONFIRM
            recs.append(Record(key, cd["knobs"], "ok", cd["us"] * 1e-6, [t * 1e-6 for t in cd["times_us"]],
                               runner=runner + suffix, host=gpu, when=res.get("when", "")))
        db.extend(recs)
        best = db.best(key)
        if best is not None and best.knobs != planner:
            changed.append((cell, best))
    return {"cells": n_cells, "ok": n_ok, "not_ok": n_bad, "changed": changed, "gpu": gpu,
            "stale": res.get("versions") if stale else None, "replaced": dropped}


def _dbs(db=None) -> list:
    """The databases a lookup reads: ``db`` (a ``TuningDB``), then the shipped H100 records; ``db=False``: none."""
    if db is False:
        return []
    out = [db] if db is not None else []
    if os.environ.get("SPARSEC_CUDA_SHIPPED_TUNING", "1") != "0" and os.path.exists(SHIPPED):
        out.append(_shipped())
    return out


_SHIPPED_DB = None


def _shipped():
    global _SHIPPED_DB
    from sparsec.passes.autotune.db import TuningDB

    if _SHIPPED_DB is None:
        _SHIPPED_DB = TuningDB(SHIPPED)
    return _SHIPPED_DB


def lookup(O: int, K: int, T: int, density: float, dtype: str, arch: str, db=None, fused: bool = False,
           kind: str = "tiled"):
    """``(knobs, record, source path)`` of the fastest correct tuned configuration for this key (the user's
    database first, then the shipped H100 one; ``db=False``: no lookup; ``fused``: the layer has a fused
    activation; ``kind="dense"``: a dense layer on the wgmma GEMM), or None."""
    key = (dense_key(O, K, T, dtype, arch, fused=fused) if kind == "dense"
           else tiled_key(O, K, T, density, dtype, arch, fused=fused))
    for d in _dbs(db):
        rec = d.best(key)
        if rec is not None:
            return dict(rec.knobs), rec, d.path
    return None


def _condition(rec) -> str:
    """Where and how a record was measured: its runner without the confirmation suffix (the GPU, and
    ``:l2=cold`` when the tuner rotated weight copies past the L2 cache)."""
    from sparsec.passes.autotune.db import CONFIRM

    return rec.runner.split(CONFIRM)[0]


def lookup_pair(O: int, K: int, T: int, density: float, dtype: str, arch: str, db=None, fused: bool = False):
    """The measured format decision of a sparse layer: ``{"tiled": (us, record, path), "dense": (us, record, path)}``
    when one database holds the fastest correct record of both the tiled kernel at this density and the dense
    layer on the wgmma GEMM, measured under the same condition (same GPU, same L2 mode; ``_condition``), else None.
    ``sparsec autotune --target cuda`` measures both for every layer whose weight is sparse enough to be a
    candidate (``model_cells``), so ``sparsec compile`` can choose between them by measurement."""
    tk = tiled_key(O, K, T, density, dtype, arch, fused=fused)
    dk = dense_key(O, K, T, dtype, arch, fused=fused)
    for d in _dbs(db):
        # the conditions the tiled key was measured under, the latest first
        conds = list(dict.fromkeys(_condition(r) for r in reversed(d.by_key.get(tk.digest(), []))))
        for cond in conds:
            rt, rd = d.best(tk, cond), d.best(dk, cond)
            if rt is not None and rd is not None:
                return {"tiled": (rt.time_s * 1e6, rt, d.path), "dense": (rd.time_s * 1e6, rd, d.path)}
    return None

