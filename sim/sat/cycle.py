"""CL: the cycle-level model. Moves the data of every step through the machine.

One clock drives three units: the DMA engine (``dram.DramEngine``, ticked
every cycle while a job is in flight), the prune unit (``prune_unit``, on the
fly when weights are not pre-generated) and the PE array (each fold's data
shifted PE by PE, cycle by cycle, by its dataflow's ``simulate_fold``). The
control follows the double-buffer rules of ``fast.py``'s recurrence; nothing
here reads the fast path's formulas: the fold lengths are the cycles the data
actually took, and the outputs are the values the PEs accumulated. Vector
passes run on ``vector.VectorUnit`` (lanes per cycle; timing only: their
numbers are the framework's element-wise ops, not modelled here).

Use it on small layers: it is a Python loop over cycles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsec.passes import bdwp
from sparsec.sim.sat import dataflow as dataflows
from sparsec.sim.sat import prune_unit
from sparsec.sim.sat.dram import DramEngine, DramTiming
from sparsec.sim.sat.vector import VecSteps, VectorUnit


@dataclass
class CLResult:
    total: int                 # cycles (SCALE-Sim convention in compat mode)
    comp_end: np.ndarray
    dma_end: np.ndarray
    outputs: dict              # (layer, phase) -> Out matrix
    trace: list


def _operands(steps, data):
    """Per GEMM (per instance when repeated): A, dense B, and (when sparse) the compressed B."""
    g = steps.gemm
    d = data[(g.layer, g.phase)]
    if g.count > 1:
        return [(a, b, mask, groups, None) for a, b, mask, groups in d]
    a, b, mask, groups = d
    comp = bdwp.compress(b, mask, groups) if g.sparse else None
    return a, b, mask, groups, comp


def _fold_inputs(steps, j, ops, pregen, cfg, trace):
    """The tiles step ``j`` feeds the array: (A tile, values, index, group start, width, prune cycles)."""
    a, b, mask, groups, comp = ops
    tl, g = steps.tiling, steps.gemm
    im, ik, inn = int(steps.iM[j]), int(steps.iK[j]), int(steps.iN[j])
    msz = tl.msz
    m0 = int(msz[:im].sum())
    n0 = int(tl.nsz[:inn].sum())
    tm, tn = int(msz[im]), int(tl.nsz[inn])
    kt = tl.kt
    d0, kd, c0, kc = int(kt.d0[ik]), int(kt.kd[ik]), int(kt.c0[ik]), int(kt.kc[ik])
    at = a[m0:m0 + tm, d0:d0 + kd]
    if not g.sparse:
        return at, b[d0:d0 + kd, n0:n0 + tn], np.zeros((kd, tn), np.int64), np.arange(kd), 1, 0
    lens = groups.lengths()[int(kt.g0[ik]):int(kt.g0[ik] + kt.ng[ik])]
    if pregen:
        vals, idx, gs = comp
        return (at, vals[c0:c0 + kc, n0:n0 + tn], idx[c0:c0 + kc, n0:n0 + tn], gs[c0:c0 + kc] - d0,
                groups.m, 0)
    # On the fly: the prune unit ranks the dense tile's groups (only when the tile was just loaded;
    # a reused tile keeps its compressed form).
    dense_tile = b[d0:d0 + kd, n0:n0 + tn]
    loaded = steps.prune[j] > 0
    tmask, pc = prune_unit.run(dense_tile, lens, groups.n, cfg, trace if loaded else None)
    if not loaded:
        pc = 0
    vals, idx, gs = _compress_lengths(dense_tile, tmask, lens, groups.n)
    return at, vals, idx, gs, groups.m, pc


def _compress_lengths(b, mask, lens, n):
    """compress() for an arbitrary list of group lengths (a tile's groups)."""
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    vals, idx, gs = [], [], []
    for s, ln in zip(starts.tolist(), lens.tolist()):
        k = min(n, ln)
        order = np.argsort(~mask[s:s + ln], axis=0, kind="stable")[:k]       # kept rows, ascending
        vals.append(np.take_along_axis(b[s:s + ln], order, axis=0))
        idx.append(order)
        gs += [s] * k
    return np.concatenate(vals), np.concatenate(idx).astype(np.int64), np.asarray(gs, np.int64)


def run(seq, data: dict, trace: list | None = None) -> CLResult:
    """Run ``seq`` (``pipeline.build_sequence``) cycle by cycle on the operands in ``data``.

    ``data[(layer, phase)] = (A, B, mask, groups)`` as ``functional.layer_operands`` returns; a
    repeated GEMM (``count`` > 1) takes a list of ``count`` such tuples and outputs ``[count, m, n]``.
    """
    cfg = seq.cfg
    R, C = cfg.array.rows, cfg.array.cols
    L = seq.lag
    pregen = seq.opts.pregen
    flat = []
    for b in seq.blocks:
        for gi, si in zip(b.gid.tolist(), b.sid.tolist()):
            flat.append((b.steps[gi] if b.steps else None, si))
    S, J = len(flat), len(flat) + L
    ops = {}
    outs = {}
    for b in seq.blocks:
        for s in b.steps:
            if isinstance(s, VecSteps):
                continue
            g = s.gemm
            ops[id(s)] = _operands(s, data)
            if g.count > 1:
                outs[(g.layer, g.phase)] = np.zeros((g.count, g.m, g.n), dtype=ops[id(s)][0][0].dtype)
            else:
                outs[(g.layer, g.phase)] = np.zeros((g.m, g.n), dtype=ops[id(s)][0].dtype)
    vec = VectorUnit(cfg)
    dram = DramEngine(DramTiming(cfg))
    bursts, extra = seq.job_bursts.tolist(), seq.job_extra.tolist()
    comp_end = np.full(S, -1, np.int64)
    dma_end = np.full(J, -1, np.int64)
    t, next_job, next_step, arr_free = 0, 0, 0, 0
    job_active, bg_left = False, 0
    while True:
        changed = True
        while changed:
            changed = False
            if job_active and not dram.busy and bg_left == 0:
                dma_end[next_job - 1] = t
                job_active, changed = False, True
            if (not job_active and next_job < J
                    and (next_job < L or 0 <= comp_end[next_job - L] <= t)):
                dram.start(next_job, bursts[next_job])
                bg_left = extra[next_job]
                job_active, changed = True, True
                next_job += 1
            if next_step < S and t >= arr_free and 0 <= dma_end[next_step] <= t:
                steps, j = flat[next_step]
                dur = 0
                if isinstance(steps, VecSteps):
                    dur = vec.run(int(steps.elems[j]), steps.vp.spec.ops, trace)
                elif steps is not None:
                    op = ops[id(steps)]
                    inst = None if steps.inst is None else int(steps.inst[j])
                    if inst is not None:
                        op = op[inst]
                    at, vals, idx, gs, width, pc = _fold_inputs(steps, j, op, pregen, cfg, trace)
                    df = dataflows.get(steps.plan.df)
                    out, fc = df.simulate_fold(R, C, at, vals, idx, gs, width)
                    tl = steps.tiling
                    m0 = int(tl.msz[:steps.iM[j]].sum())
                    n0 = int(tl.nsz[:steps.iN[j]].sum())
                    key = (steps.gemm.layer, steps.gemm.phase)
                    dst = outs[key] if inst is None else outs[key][inst]
                    dst[m0:m0 + out.shape[0], n0:n0 + out.shape[1]] += out
                    dur = pc + fc
                    if trace is not None:
                        trace.append(f"{t:8d} step {next_step} {key[0]} {key[1]} {df.name} "
                                     f"prune={pc} fold={fc} | {dram.line_trace()}")
                comp_end[next_step] = t + dur
                arr_free = t + dur
                next_step += 1
                changed = True
        if next_step == S and next_job == J and not job_active and t >= arr_free:
            break
        if job_active:
            dram.tick()
            bg_left = max(0, bg_left - 1)
            t += 1
        else:
            # Nothing in flight on the DMA side: jump to the next event (a fold ending).
            events = [x for x in (arr_free, comp_end[next_job - L] if L <= next_job < J else -1) if x > t]
            t = min(events) if events else t + 1
    total = int(max(comp_end.max(initial=0), dma_end.max(initial=0)))
    if cfg.compat.scalesim:
        total -= 1
    return CLResult(total, comp_end, dma_end, outs, trace or [])
