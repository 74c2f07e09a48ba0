"""Per-core scratchpad: ``banks`` banks, one access per bank per cycle.

A load or store occupies its bank ``access_cycles``, an atomic (read-modify-write
done at the bank) ``atomic_cycles``; requests to one bank queue behind each
other (bank conflicts), requests to different banks proceed in parallel. The
round trip seen by a thread is ``latency`` after its last bank slot.
Capacity (``size_bytes``) is enforced by the algorithms that allocate in it.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.config import ScratchpadConfig


class Scratchpads:
    def __init__(self, cfg: ScratchpadConfig, cores: int):
        self.cfg = cfg
        self.free = np.zeros((cores, cfg.banks))
        self.busy = np.zeros((cores, cfg.banks))

    def serve(self, core: int, now: float, bank_cycles: np.ndarray) -> float:
        """Reserve ``bank_cycles[b]`` cycles on each bank of ``core``; returns the
        time the last reply reaches the thread."""
        touched = bank_cycles > 0
        if not touched.any():
            return now
        free = self.free[core]
        ends = np.maximum(free, now) + bank_cycles
        free[touched] = ends[touched]
        self.busy[core] += bank_cycles
        return float(ends[touched].max()) + self.cfg.latency


class RemoteAtomics:
    """Atomics on words spread over every core's scratchpad (e.g. per-row
    counters), modelled as one pool of ``cores * banks`` banks."""

    def __init__(self, cfg: ScratchpadConfig, cores: int):
        self.rate = cores * cfg.banks
        self.free = 0.0
        self.busy = 0.0

    def serve(self, now: float, cycles: float) -> float:
        start = max(self.free, now)
        self.free = start + cycles / self.rate
        self.busy += cycles
        return self.free
