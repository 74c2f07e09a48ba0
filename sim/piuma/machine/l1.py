"""Per-core L1 for the read-only operands (rows or columns of B).

Caches in PIUMA are not coherent, so only data nobody writes during the
product is cached: the segments (pointer pair + entries) of B. The model is an
*ideal frequency cache*: for each core, the segments its tasks read most often
are kept, greedily by access count, until ``size_bytes`` is full; the first
access to a kept segment misses, later ones hit; other segments always miss.
This is an upper bound on what an LRU of the same size would hit, computed
once, vectorised, before the timing run (see docs/piuma.md).
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.config import L1Config


def l1_hits(cfg: L1Config, cores: int, access_core: np.ndarray, access_seg: np.ndarray,
            seg_words: np.ndarray) -> np.ndarray:
    """Boolean per access (in program order): does it hit in its core's L1?"""
    n = access_seg.size
    if not cfg.enabled or n == 0:
        return np.zeros(n, dtype=bool)
    nseg = seg_words.size
    key = access_core.astype(np.int64) * nseg + access_seg
    uniq, first, inv, counts = np.unique(key, return_index=True, return_inverse=True,
                                         return_counts=True)
    core_u = uniq // nseg
    size_u = seg_words[uniq % nseg]
    # within each core, most-used segments first (ties: lower segment id)
    order = np.lexsort((uniq, -counts, core_u))
    sizes = size_u[order]
    csum = np.cumsum(sizes)
    core_sorted = core_u[order]
    starts = np.searchsorted(core_sorted, np.arange(cores))
    base = np.concatenate([[0], csum])[starts]
    within = csum - base[core_sorted]
    cap_words = cfg.size_bytes // 8
    keep_sorted = (within <= cap_words) & (counts[order] > 1)
    keep = np.empty_like(keep_sorted)
    keep[order] = keep_sorted
    not_first = np.ones(n, dtype=bool)
    not_first[first] = False
    return keep[inv] & not_first
