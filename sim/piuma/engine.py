"""The timing engine: plays each stage's tasks on the machine in time order.

Every hardware thread is an event in a heap keyed by the time it is free. The
earliest free thread pulls the next task of its core's FIFO queue and issues
it as one burst (:meth:`Machine.execute`), which reserves the pipeline, DRAM,
mesh, scratchpad banks, remote atomics and DMA engine it needs and returns
when the burst ends; the thread is free again then. A task that is the last
of its group (the tokens of one output row) is followed, on the same thread,
by the group's readout, which starts only when every task of the group has
ended. A stage ends when its last thread is done; stages are separated by a
die-wide barrier.
"""
from __future__ import annotations

import heapq
import time
from typing import Callable

import numpy as np
import scipy.sparse as sp

from sparsec.errors import ParameterError
from sparsec.sim.piuma import analytic
from sparsec.sim.piuma.algorithms import ALGORITHMS
from sparsec.sim.piuma.algorithms.base import Plan, Stage
from sparsec.sim.piuma.algorithms.operands import Operands
from sparsec.sim.piuma.config import PiumaConfig, load_config
from sparsec.sim.piuma.machine import Machine
from sparsec.sim.piuma.report import SimResult

Progress = Callable[[int, int], None]


def _lists(d: dict) -> tuple:
    return (d["instr"].tolist(), d["chain"].tolist(), d["dram"].tolist(),
            d["banks"], d["remote"].tolist(), d["dma"].tolist(), d["reads"].tolist())


def run_stage(stage: Stage, machine: Machine, t0: float, progress: Progress | None = None,
              done0: int = 0, total: int = 0) -> dict:
    """Time one stage starting at ``t0``; returns its end and thread statistics."""
    cores, tpc = machine.cores, machine.threads_per_core
    n = stage.core.size
    instr, chain, dram, banks, remote, dma, reads = _lists(stage.tasks)
    task_core = stage.core
    queues = [np.flatnonzero(task_core == c).tolist() for c in range(cores)]
    grouped = stage.group is not None
    if grouped:
        group = stage.group.tolist()
        r_instr, r_chain, r_dram, r_banks, r_remote, r_dma, r_reads = _lists(stage.readout)
        last = np.ones(n, dtype=bool)
        for q in queues:                      # last task of its group in its queue
            g = stage.group[q]
            if len(q) > 1:
                last[np.asarray(q[:-1])[g[:-1] == g[1:]]] = False
        last = last.tolist()
        ngroups = stage.readout["instr"].size
        group_end = [t0] * ngroups
        group_start = [-1.0] * ngroups
        spm_intervals = []
    # events: (time, thread, group whose readout is due, or -1 to pull a task)
    heap = [(t0, c * tpc + t, -1) for c in range(cores) for t in range(tpc) if queues[c]]
    heapq.heapify(heap)
    head = [0] * cores
    busy = 0.0
    end_all = t0
    done = 0
    step = max(1, n // 50)
    execute = machine.execute
    while heap:
        now, tid, due = heapq.heappop(heap)
        core, thread = divmod(tid, tpc)
        if due >= 0:
            # every burst is issued at its own start time, in time order, so
            # reservations never jump ahead of bursts issued later
            end = execute(core, thread, now, r_instr[due], r_chain[due], r_dram[due],
                          r_banks[due], r_remote[due], r_dma[due], r_reads[due])
            group_end[due] = end
            spm_intervals.append((core, group_start[due], end, due))
            busy += end - now
            heapq.heappush(heap, (end, tid, -1))
            continue
        q = queues[core]
        if head[core] == len(q):
            end_all = max(end_all, now)
            continue
        i = q[head[core]]
        head[core] += 1
        end = execute(core, thread, now, instr[i], chain[i], dram[i], banks[i], remote[i], dma[i],
                      reads[i])
        busy += end - now
        done += 1
        if progress is not None and done % step == 0:
            progress(done0 + done, total)
        if grouped:
            g = group[i]
            if group_start[g] < 0:
                group_start[g] = now
            group_end[g] = max(group_end[g], end)
            if last[i]:
                # the thread waits for the group's other tasks, then reads out
                heapq.heappush(heap, (group_end[g], tid, g))
                continue
        heapq.heappush(heap, (end, tid, -1))
    out = {"end": end_all, "busy": busy, "tasks": n}
    if grouped and stage.spm_bytes is not None:
        out["spm"] = _occupancy(spm_intervals, stage.spm_bytes, cores, t0, end_all)
    return out


def _occupancy(intervals, nbytes, cores, t0, t1) -> dict:
    """Peak and time-averaged scratchpad bytes held by open tables, per core."""
    peak = np.zeros(cores)
    area = np.zeros(cores)
    if intervals:
        arr = np.array(intervals)
        core = arr[:, 0].astype(int)
        b = nbytes[arr[:, 3].astype(int)]
        area = np.bincount(core, weights=b * (arr[:, 2] - arr[:, 1]), minlength=cores)
        for c in range(cores):
            sel = core == c
            if not sel.any():
                continue
            times = np.concatenate([arr[sel, 1], arr[sel, 2]])
            delta = np.concatenate([b[sel], -b[sel]])
            order = np.lexsort((delta, times))       # frees before allocations at a tie
            peak[c] = np.cumsum(delta[order]).max()
    span = max(t1 - t0, 1e-9)
    return {"spm_peak_bytes": float(peak.max()), "spm_mean_bytes": float((area / span).mean())}


def run_plan(plan: Plan, machine: Machine, progress: Progress | None = None) -> dict:
    cfg = machine.cfg
    t = 0.0
    stages = {}
    busy = 0.0
    spm = {"spm_peak_bytes": 0.0, "spm_mean_bytes": 0.0}
    total = sum(s.core.size for s in plan.stages)
    done = 0
    for k, stage in enumerate(plan.stages):
        if k:
            t += cfg.sync.barrier_cycles
        start = t
        out = run_stage(stage, machine, t, progress, done, total)
        done += stage.core.size
        t = out["end"]
        busy += out["busy"]
        stages[stage.name] = t - start
        if "spm" in out:
            spm = out["spm"]
    threads = machine.cores * machine.threads_per_core
    return {"cycles": t, "stage_cycles": stages,
            "thread_utilisation": busy / max(t * threads, 1e-9), **spm}


def simulate(A, B=None, algo: str = "smash", config: PiumaConfig | None = None,
             progress: Progress | None = None, operands: Operands | None = None) -> SimResult:
    """Run ``algo`` for ``A @ B`` (``B`` defaults to ``A``) on the machine."""
    if algo not in ALGORITHMS:
        raise ParameterError(f"algo: unknown algorithm {algo!r} (known: {', '.join(ALGORITHMS)})")
    cfg = config or load_config()
    wall = time.perf_counter()
    cpu = time.process_time()
    ops = operands or Operands(A, A if B is None else B)
    machine = Machine(cfg)
    plan = ALGORITHMS[algo]().plan(ops, cfg, machine)
    est = analytic.estimate(plan, machine)
    timing = run_plan(plan, machine, progress)
    counters = {}
    for st in plan.stages:
        for key, v in st.counters.items():
            counters[key] = counters.get(key, 0.0) + v
    counters.update(plan.counters)
    return SimResult.build(algo=algo, cfg=cfg, ops=ops, C=plan.C, timing=timing,
                           counters=counters, machine=machine, analytic_cycles=est,
                           wall_s=time.perf_counter() - wall,
                           cpu_s=time.process_time() - cpu)


def simulate_all(A, B=None, algos=None, config: PiumaConfig | None = None,
                 progress: Progress | None = None) -> dict[str, SimResult]:
    """Every algorithm (or ``algos``) on the same operands."""
    ops = Operands(A, A if B is None else B)
    return {name: simulate(None, None, name, config, progress, operands=ops)
            for name in (algos or list(ALGORITHMS))}


def check_product(result: SimResult, A, B=None, rtol: float = 1e-9) -> None:
    """Raise if ``result.C`` differs from scipy's ``A @ B`` (pattern or values)."""
    ref = sp.csr_matrix(A @ (A if B is None else B))
    ref.eliminate_zeros()
    diff = abs(ref - result.C)
    scale = abs(ref).max() if ref.nnz else 1.0
    if ref.shape != result.C.shape or (diff.nnz and diff.max() > rtol * max(scale, 1.0)):
        raise AssertionError(f"{result.algo}: product differs from scipy")
