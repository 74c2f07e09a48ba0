"""Per layer and phase statistics of a simulated training step, and their tables.

Cycles of a block of steps are the array's progress over it (end of its last
fold minus end of the previous block's); when BP and WU are interleaved the
block's cycles are split between them in proportion to their compute cycles.
Stall cycles are a phase's cycles minus its fold (+ on-the-fly prune) cycles.
Pre-generation traffic appears as its own ``PG`` row, owned by the layer
whose weights it prepares; its cycles are zero except for the exposed tail.
Vector passes are rows of phase ``VF`` / ``VB`` (forward / backward of an
element-wise, norm, pooling or loss op) or ``OPT`` (a layer's weight update);
their ``compute`` is the vector unit's cycles. ``kind`` sorts every row into
``gemm`` (conv/linear), ``matmul`` (activation × activation), ``vector``,
``update`` or ``pregen``; ``totals`` sums cycles per kind.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sparsec.sim.sat.energy import energy_pj
from sparsec.sim.sat.vector import VecSteps


@dataclass
class PhaseStats:
    layer: str
    phase: str
    sparse: bool
    dataflow: str
    order: str
    t: int
    steps: int
    cycles: int
    compute: int
    stall: int
    macs: int
    dense_macs: int
    utilisation: float
    dram_bytes: int
    sram_bytes: int
    prune_groups: int
    energy_pj: float
    kind: str = "gemm"
    vector_ops: int = 0

    def as_dict(self):
        return asdict(self)


def _sram_bytes(s, cfg) -> int:
    tl, g = s.tiling, s.gemm
    eb, pb = cfg.data.elem_bytes, cfg.data.psum_bytes
    a = tl.msz[s.iM] * tl.kt.kd[s.iK] * eb
    if g.sparse:
        b = tl.kt.kc[s.iK] * tl.nsz[s.iN] * eb
    else:
        b = tl.kt.kd[s.iK] * tl.nsz[s.iN] * eb
    o = 2 * tl.msz[s.iM] * tl.nsz[s.iN] * pb
    return int(a.sum() + b.sum() + o.sum()) + int(s.load.sum() + s.write.sum())


def phase_stats(seq, tl) -> list[PhaseStats]:
    cfg = seq.cfg
    R, C = cfg.array.rows, cfg.array.cols
    rows = []
    start = 0
    prev_end = 0
    S = len(seq.comp)
    raw_total = tl.total + (1 if cfg.compat.scalesim else 0)
    for bi, (b, end) in enumerate(zip(seq.blocks, seq.block_end)):
        end = int(end)
        blk = int(tl.comp_end[end - 1]) - prev_end
        if end == S:
            blk += raw_total - int(tl.comp_end[S - 1])
        prev_end = int(tl.comp_end[end - 1])
        comps = [int(s.fold.sum() + s.prune.sum()) for s in b.steps]
        tot_c = sum(comps)
        shares = []
        acc = 0
        for i, c in enumerate(comps):
            sh = blk - acc if i == len(comps) - 1 else (blk * c // tot_c if tot_c else 0)
            shares.append(sh)
            acc += sh
        for s, c, cyc in zip(b.steps, comps, shares):
            if isinstance(s, VecSteps):
                rows.append(_vec_row(s, c, cyc, cfg))
                continue
            g = s.gemm
            dram = int(s.load.sum() + s.write.sum())
            sram = _sram_bytes(s, cfg)
            groups = 0
            if g.sparse and not seq.opts.pregen:
                groups = int(np.where(s.prune > 0, s.tiling.kt.ng[s.iK] * s.tiling.nsz[s.iN], 0).sum())
            e = energy_pj(cfg, g.macs, g.macs if g.sparse else 0, sram, dram, groups, cyc)
            rows.append(PhaseStats(g.layer, g.phase, g.sparse, s.plan.df, "".join(s.plan.order), s.plan.t,
                                   len(s), cyc, c, cyc - c, g.macs, g.dense_macs,
                                   g.macs / (cyc * R * C) if cyc else 0.0, dram, sram, groups, e["total"],
                                   "matmul" if g.activation else "gemm"))
        if b.bg_owner:
            cyc = blk if not b.steps else 0
            e = energy_pj(cfg, 0, 0, b.bg_bytes, b.bg_bytes, b.bg_groups, cyc)
            rows.append(PhaseStats(b.bg_owner, "PG", True, "-", "-", 0, 0, cyc, 0, cyc, 0, 0, 0.0,
                                   b.bg_bytes, b.bg_bytes, b.bg_groups, e["total"], "pregen"))
        start = end
    return rows


def _vec_row(s: VecSteps, comp: int, cyc: int, cfg) -> PhaseStats:
    vp = s.vp
    dram = int(s.load.sum() + s.write.sum())
    sram = 2 * dram        # each byte is written into its buffer and read by the unit (or the reverse)
    # a lane operation is charged as one MAC (an fp32 FMA on a DSP slice)
    e = energy_pj(cfg, vp.ops, 0, sram, dram, 0, cyc)
    return PhaseStats(vp.layer, vp.phase, False, "vec", "-", int(s.elems[0]), len(s), cyc, comp, cyc - comp,
                      0, 0, 0.0, dram, sram, 0, e["total"], "update" if vp.phase == "OPT" else "vector", vp.ops)


KINDS = ("gemm", "matmul", "vector", "update", "pregen")


def totals(rows: list[PhaseStats], total_cycles: int, cfg) -> dict:
    R, C = cfg.array.rows, cfg.array.cols
    macs = sum(r.macs for r in rows)
    return {
        "cycles": total_cycles,
        "compute": sum(r.compute for r in rows),
        "stall": sum(r.stall for r in rows),
        "macs": macs,
        "dense_macs": sum(r.dense_macs for r in rows),
        "utilisation": macs / (total_cycles * R * C) if total_cycles else 0.0,
        "dram_bytes": sum(r.dram_bytes for r in rows),
        "energy_pj": sum(r.energy_pj for r in rows),
        "seconds": total_cycles / (cfg.array.freq_mhz * 1e6),
        "cycles_by_kind": {k: sum(r.cycles for r in rows if r.kind == k) for k in KINDS},
    }


def bound(n: int, m: int) -> float:
    """Best possible BDWP speedup when FF, BP and WU have equal MACs: 3 / (2·N/M + 1)."""
    return 3.0 / (2.0 * n / m + 1.0)


def format_table(rows: list[PhaseStats], dense_rows: list[PhaseStats] | None = None, limit: int | None = None) -> str:
    dense = {(r.layer, r.phase): r for r in dense_rows or []}
    hdr = f"{'layer':<26} {'ph':<3} {'df':<3} {'cycles':>12} {'stall':>10} {'util':>6} {'DRAM MB':>9} {'uJ':>10}"
    if dense_rows:
        hdr += f" {'dense cyc':>12} {'x':>6}"
    out = [hdr]
    for r in rows[:limit] if limit else rows:
        line = (f"{r.layer[:26]:<26} {r.phase:<3} {r.dataflow:<3} {r.cycles:>12,} {r.stall:>10,} "
                f"{r.utilisation:>6.1%} {r.dram_bytes / 1e6:>9.2f} {r.energy_pj / 1e6:>10.1f}")
        if dense_rows:
            d = dense.get((r.layer, r.phase))
            if d and r.cycles:
                line += f" {d.cycles:>12,} {d.cycles / r.cycles:>6.2f}"
        out.append(line)
    return "\n".join(out)
