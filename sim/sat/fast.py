"""Fast path: the step sequence's timing in closed form per step.

Per step the fold cycles come from the dataflow's formula and the DMA job
cycles from ``DramTiming.job_cycles`` (both vectorised); the only sequential
part is the two-line recurrence of a ``lag``-deep double-buffered pipeline:

    dma_end[j]  = max(dma_end[j-1], comp_end[j-lag]) + D[j]
    comp_end[j] = max(comp_end[j-1], dma_end[j])     + C[j]

(job j carries step j's loads and the write-backs of step j-lag). The
cycle-level model (``cycle.py``) moves the same data cycle by cycle and must
agree with this exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsec.sim.sat.dram import DramTiming


@dataclass
class Timeline:
    comp_end: np.ndarray     # per step
    dma_end: np.ndarray      # per job (steps + lag)
    total: int               # cycles of the whole sequence (SCALE-Sim convention in compat mode)


def job_cycles(seq) -> np.ndarray:
    d = DramTiming(seq.cfg).job_cycles(seq.job_bursts)
    return np.maximum(d, seq.job_extra)


def evaluate(seq) -> Timeline:
    C = seq.comp.tolist()
    D = job_cycles(seq).tolist()
    L = seq.lag
    S = len(C)
    ce = [0] * S
    de = [0] * (S + L)
    d_prev = 0
    c_prev = 0
    for j in range(S):
        gate = ce[j - L] if j >= L else 0
        d_prev = (d_prev if d_prev > gate else gate) + D[j]
        de[j] = d_prev
        c_prev = (c_prev if c_prev > d_prev else d_prev) + C[j]
        ce[j] = c_prev
    for j in range(S, S + L):
        gate = ce[j - L] if j >= L else 0
        d_prev = (d_prev if d_prev > gate else gate) + D[j]
        de[j] = d_prev
    total = max(c_prev, d_prev)
    if seq.cfg.compat.scalesim:
        total -= 1
    return Timeline(np.asarray(ce, np.int64), np.asarray(de, np.int64), total)
