"""The N:M prune unit: ranks groups of M weights and keeps the N largest.

Throughput ``[prune] groups_per_cycle`` groups per cycle plus a pipeline
depth ``[prune] pipeline_cycles`` per tile. The same selection rule as
``passes.prune.prune_nm`` (largest |w|, ties to the earlier position), so
weights pruned on the fly equal the pre-generated ones.
"""
from __future__ import annotations

import numpy as np


def tile_cycles(groups: int, cfg) -> int:
    return -(-groups // cfg.prune.groups_per_cycle) + cfg.prune.pipeline_cycles


def run(tile: np.ndarray, lengths: np.ndarray, n: int, cfg, trace=None) -> tuple[np.ndarray, int]:
    """Mask of a dense ``[kd, tn]`` weight tile whose rows form groups of ``lengths``; (mask, cycles)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    work = [(g, c) for c in range(tile.shape[1]) for g in range(len(lengths))]
    mask = np.zeros(tile.shape, dtype=bool)
    gpc = cfg.prune.groups_per_cycle
    cycles = 0
    for i in range(0, len(work), gpc):               # one batch of groups per cycle
        for g, c in work[i:i + gpc]:
            s, ln = starts[g], lengths[g]
            order = np.argsort(-np.abs(tile[s:s + ln, c]), kind="stable")[: min(n, ln)]
            mask[s + order, c] = True
        if trace is not None:
            trace.append(f"prune cycle {cycles}: groups {i}..{min(i + gpc, len(work)) - 1}")
        cycles += 1
    return mask, cycles + cfg.prune.pipeline_cycles
