"""Tiling and scheduling of one GEMM phase onto the array: the *step* list.

A step is one fold: one row-tile × column-tile of the array for one tile of
the time dimension. A schedule is a loop nest over the GEMM's three
dimensions (``order``, outermost first) with a tile size ``t`` for the
dimension the dataflow streams in time; the row/column dimensions are tiled
by the array (the sparse reduction K by packing whole N:M groups, kept
length <= rows, never splitting a group).

Per step we record what the hardware must do (vectorised numpy arrays):
the fold's stall-free cycles (``dataflow.fold_cycles``), the on-the-fly prune
unit's cycles when N:M weights are not pre-generated, and the bytes the DMA
must load (A tile, B tile, Out partial sums) or write back (Out partials or
finals). A tile is loaded when the step's tile differs from the previous
step's (reactive reuse); a *pinned* operand (offline plan, panel fits its
buffer) is loaded on its first visit only.

``plan`` picks the schedule: **greedy** takes the dataflow's natural order
(stationary tile outer, stream inner), the largest ``t`` whose tiles fit and
no pinning; **offline** searches every loop order × ``t`` candidate with
pinning wherever it fits and keeps the lowest estimate max(compute, DMA).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sparsec.ir.errors import ConfigError
from sparsec.passes.bdwp import Groups
from sparsec.sim.sat import dataflow as dataflows
from sparsec.sim.sat.buffers import buffers
from sparsec.sim.sat.workloads import Gemm

DEPS = {"a": ("M", "K"), "b": ("K", "N"), "out": ("M", "N")}


@dataclass(frozen=True)
class KTiles:
    """Tiles of the reduction: kept (compressed) length, dense length, groups, offsets."""

    kc: np.ndarray
    kd: np.ndarray
    ng: np.ndarray
    c0: np.ndarray
    d0: np.ndarray
    g0: np.ndarray


@lru_cache(maxsize=4096)
def pack_k(groups: Groups, cap: int, where: str = "") -> KTiles:
    """Pack consecutive whole groups into tiles of at most ``cap`` kept elements."""
    lens, kept = groups.lengths(), groups.kept()
    if groups.n == groups.m:   # dense: plain tiles of cap
        total = groups.dense_len
        kc = np.full(-(-total // cap), cap, dtype=np.int64)
        kc[-1] = total - cap * (len(kc) - 1)
        c0 = np.concatenate([[0], np.cumsum(kc)[:-1]])
        return KTiles(kc, kc.copy(), kc.copy(), c0, c0.copy(), c0.copy())
    if kept.max() > cap:
        raise ConfigError(f"{where}: N:M group keeps {kept.max()} weights but only {cap} array rows/steps "
                          f"hold one tile ([array] rows)")
    if np.all(kept == kept[0]):
        per = cap // int(kept[0])
        ng = np.full(-(-len(kept) // per), per, dtype=np.int64)
        ng[-1] = len(kept) - per * (len(ng) - 1)
    else:
        ng_list, cur, acc = [], 0, 0
        for k in kept.tolist():
            if acc + k > cap:
                ng_list.append(cur)
                cur, acc = 0, 0
            cur, acc = cur + 1, acc + k
        ng_list.append(cur)
        ng = np.asarray(ng_list, dtype=np.int64)
    g0 = np.concatenate([[0], np.cumsum(ng)[:-1]])
    ck = np.concatenate([[0], np.cumsum(kept)])
    cl = np.concatenate([[0], np.cumsum(lens)])
    kc = ck[g0 + ng] - ck[g0]
    kd = cl[g0 + ng] - cl[g0]
    return KTiles(kc, kd, ng, ck[g0], cl[g0], g0)


def _uniform(total: int, cap: int) -> np.ndarray:
    s = np.full(-(-total // cap), cap, dtype=np.int64)
    s[-1] = total - cap * (len(s) - 1)
    return s


@dataclass
class Tiling:
    """Tile sizes of one GEMM under one dataflow and time-tile ``t``."""

    gemm: Gemm
    df: object
    t: int
    msz: np.ndarray
    nsz: np.ndarray
    kt: KTiles

    def ntiles(self, d: str) -> int:
        return len({"M": self.msz, "N": self.nsz, "K": self.kt.kc}[d])


def tiling(g: Gemm, df, cfg, t: int) -> Tiling:
    caps = {"row": cfg.array.rows, "col": cfg.array.cols, "time": t}
    where = f"layer {g.layer} {g.phase}"
    kt = pack_k(g.groups, caps[df.roles["K"]], where)
    return Tiling(g, df, t, _uniform(g.m, caps[df.roles["M"]]), _uniform(g.n, caps[df.roles["N"]]), kt)


def _ceil_div(a, b):
    return -(-a // b)


@dataclass
class TileBytes:
    a: np.ndarray      # [nM, nK]
    b: np.ndarray      # [nK, nN]
    out_final: np.ndarray   # [nM, nN]
    out_psum: np.ndarray    # [nM, nN]
    prune: np.ndarray  # [nK, nN] on-the-fly prune cycles of a B tile


def tile_bytes(tl: Tiling, cfg, pregen: bool) -> TileBytes:
    g, eb, pb = tl.gemm, cfg.data.elem_bytes, cfg.data.psum_bytes
    kt = tl.kt
    a = np.ceil(np.outer(tl.msz, kt.kd) * eb / g.a_expand).astype(np.int64)
    if g.sparse and pregen:
        ib = cfg.index_bits(g.groups.m)
        e = np.outer(kt.kc, tl.nsz)
        b = e * eb + _ceil_div(e * ib, 8)
    else:
        b = np.outer(kt.kd, tl.nsz) * eb
    e_out = np.outer(tl.msz, tl.nsz)
    fin = np.ceil(e_out * eb / g.out_expand).astype(np.int64)
    if g.sparse and not pregen:
        prune = _ceil_div(np.outer(kt.ng, tl.nsz), cfg.prune.groups_per_cycle) + cfg.prune.pipeline_cycles
    else:
        prune = np.zeros_like(b)
    return TileBytes(a, b, fin, e_out * pb, prune)


def _panel(mat: np.ndarray, deps: tuple, l0: str) -> int:
    """Bytes of the tiles one iteration of the outermost loop touches (max over iterations)."""
    if l0 not in deps:
        return int(mat.sum())
    axis = deps.index(l0)
    return int(mat.sum(axis=1 - axis).max())


@dataclass(frozen=True)
class Plan:
    df: str
    order: tuple
    t: int
    pin: tuple           # operands pinned, subset of ("a", "b", "out")
    estimate: int = 0


def _fits(tl: Tiling, tb: TileBytes, bufs) -> bool:
    return (bufs["a"].fits(int(tb.a.max())) and bufs["b"].fits(int(tb.b.max()))
            and bufs["out"].fits(int(tb.out_psum.max())))


def _pins(tb: TileBytes, order, bufs) -> tuple:
    mats = {"a": tb.a, "b": tb.b, "out": tb.out_psum}
    tiles = {"a": tb.a, "b": tb.b, "out": tb.out_psum}
    return tuple(op for op in ("a", "b", "out")
                 if bufs[op].pinnable(_panel(mats[op], DEPS[op], order[0]), int(tiles[op].max())))


def _estimate(tl: Tiling, tb: TileBytes, order, pin, cfg, dram) -> int:
    """max(compute cycles, DMA cycles) of a candidate, in closed form (no step list)."""
    trips = {d: tl.ntiles(d) for d in "MKN"}
    steps = math.prod(trips.values())
    tdim = next(d for d, r in tl.df.roles.items() if r == "time")
    tlen = {"M": tl.msz, "N": tl.nsz, "K": tl.kt.kc}[tdim]
    comp = steps // len(tlen) * int(np.sum(tl.df.fold_cycles(cfg.array.rows, cfg.array.cols, tlen)))

    def reloads(op):
        if op in pin:
            return 1
        deps = DEPS[op]
        p = max(order.index(d) for d in deps)
        return math.prod(trips[order[i]] for i in range(p + 1) if order[i] not in deps)

    ra, rb, ro = reloads("a"), reloads("b"), reloads("out")
    byts = ra * int(tb.a.sum()) + rb * int(tb.b.sum()) + int(tb.out_final.sum()) \
        + 2 * (ro - 1) * int(tb.out_psum.sum())
    comp += rb * int(tb.prune.sum())
    if dram.ideal:
        return comp
    bw = dram.channels * dram.bpc
    return max(comp, byts // bw + dram.latency * steps)


def candidates_t(g: Gemm, df, cfg) -> list[int]:
    tdim = next(d for d, r in df.roles.items() if r == "time")
    full = {"M": g.m, "N": g.n, "K": g.kc}[tdim]
    if cfg.compat.scalesim:
        return [full]
    return sorted({min(t, full) for t in cfg.tiling.t_candidates} | ({full} if full <= max(cfg.tiling.t_candidates) else set()))


def natural_order(df) -> tuple:
    inv = {r: d for d, r in df.roles.items()}
    return (inv["col"], inv["row"], inv["time"])


def plan(g: Gemm, df_name: str, cfg, offline: bool, pregen: bool, share: float = 1.0) -> Plan:
    """The schedule of ``g`` on dataflow ``df_name`` (see module docstring)."""
    from sparsec.sim.sat.dram import DramTiming
    df = dataflows.get(df_name)
    bufs = buffers(cfg, share)
    dram = DramTiming(cfg)
    best, smallest = None, None
    ts = candidates_t(g, df, cfg)
    orders = list(itertools.permutations("MKN")) if offline else [natural_order(df)]
    for t in sorted(ts, reverse=not offline):
        tl = tiling(g, df, cfg, t)
        tb = tile_bytes(tl, cfg, pregen)
        if smallest is None or t < smallest[0]:
            smallest = (t, tb)
        if not _fits(tl, tb, bufs):
            continue
        if not offline:
            est = _estimate(tl, tb, orders[0], (), cfg, dram)
            return Plan(df_name, orders[0], t, (), est)
        for order in orders:
            pin = _pins(tb, order, bufs)
            est = _estimate(tl, tb, order, pin, cfg, dram)
            if best is None or est < best.estimate:
                best = Plan(df_name, tuple(order), t, pin, est)
    if best is None:
        t, tb = smallest
        need = {"a": int(tb.a.max()), "b": int(tb.b.max()), "out": int(tb.out_psum.max())}
        op = next(o for o in ("a", "b", "out") if not bufs[o].fits(need[o]))
        raise ConfigError(f"{cfg.source}: [buffers] {op}_kib = {bufs[op].capacity / 1024:g} KiB "
                          f"{'(half, interleaved) ' if share < 1 else ''}is smaller than "
                          f"{bufs[op].slots} tile(s) of {need[op]} bytes for layer {g.layer} {g.phase} "
                          f"(dataflow {df_name}, t={t})")
    return best


@dataclass
class Steps:
    """The step list of one scheduled GEMM (all arrays have one entry per step)."""

    gemm: Gemm
    plan: Plan
    tiling: Tiling
    fold: np.ndarray
    prune: np.ndarray
    load: np.ndarray       # bytes loaded (A + B + Out partial reads) ...
    load_bursts: np.ndarray  # ... in bursts (each transfer rounded separately)
    write: np.ndarray      # bytes written back after the step
    write_bursts: np.ndarray
    iM: np.ndarray
    iK: np.ndarray
    iN: np.ndarray
    inst: np.ndarray = None  # instance of a repeated GEMM (``repeat``); None: one instance

    def __len__(self):
        return len(self.fold)


def _first_visit(key: np.ndarray) -> np.ndarray:
    first = np.zeros(len(key), dtype=bool)
    first[np.unique(key, return_index=True)[1]] = True
    return first


def _last_visit(key: np.ndarray) -> np.ndarray:
    last = np.zeros(len(key), dtype=bool)
    rev = np.unique(key[::-1], return_index=True)[1]
    last[len(key) - 1 - rev] = True
    return last


def build(g: Gemm, p: Plan, cfg, pregen: bool) -> Steps:
    """The step list of ``g`` under plan ``p``."""
    from sparsec.sim.sat.dram import DramTiming
    df = dataflows.get(p.df)
    tl = tiling(g, df, cfg, p.t)
    tb = tile_bytes(tl, cfg, pregen)
    dram = DramTiming(cfg)
    trips = [tl.ntiles(d) for d in p.order]
    grids = np.indices(trips).reshape(3, -1)
    ix = {d: grids[i] for i, d in enumerate(p.order)}
    iM, iK, iN = ix["M"], ix["K"], ix["N"]
    tdim = next(d for d, r in df.roles.items() if r == "time")
    tlen = {"M": tl.msz[iM], "N": tl.nsz[iN], "K": tl.kt.kc[iK]}[tdim]
    fold = df.fold_cycles(cfg.array.rows, cfg.array.cols, tlen).astype(np.int64)
    nN = tl.ntiles("N")
    keys = {"a": iM * tl.ntiles("K") + iK, "b": iK * nN + iN, "out": iM * nN + iN}
    loads = {}
    for op, key in keys.items():
        if op in p.pin:
            loads[op] = _first_visit(key)
        else:
            loads[op] = np.ones(len(key), dtype=bool)
            loads[op][1:] = key[1:] != key[:-1]
    a_b = np.where(loads["a"], tb.a[iM, iK], 0)
    b_b = np.where(loads["b"], tb.b[iK, iN], 0)
    prune = np.where(loads["b"], tb.prune[iK, iN], 0)
    ok = keys["out"]
    seen_before = ~_first_visit(ok)
    r_b = np.where(loads["out"] & seen_before, tb.out_psum[iM, iN], 0)
    last = _last_visit(ok)
    if "out" in p.pin:
        w_b = np.where(last, tb.out_final[iM, iN], 0)
    else:
        leaving = np.ones(len(ok), dtype=bool)
        leaving[:-1] = ok[:-1] != ok[1:]
        w_b = np.where(leaving, np.where(last, tb.out_final[iM, iN], tb.out_psum[iM, iN]), 0)
    load = a_b + b_b + r_b
    lb = dram.bursts(a_b) + dram.bursts(b_b) + dram.bursts(r_b)
    return Steps(g, p, tl, fold, prune, load, lb, w_b, dram.bursts(w_b), iM, iK, iN)


def repeat(s: Steps, count: int) -> Steps:
    """``count`` independent instances of the same GEMM back to back (batched activation GEMMs).

    Each instance has its own operands, so it reloads exactly what the first one loaded: the step
    list is the single instance's, repeated, and ``inst`` says which instance a step belongs to.
    """
    if count == 1:
        return s
    t = lambda a: np.tile(a, count)
    inst = np.repeat(np.arange(count, dtype=np.int64), len(s))
    return Steps(s.gemm, s.plan, s.tiling, t(s.fold), t(s.prune), t(s.load), t(s.load_bursts), t(s.write),
                 t(s.write_bursts), t(s.iM), t(s.iK), t(s.iN), inst)
