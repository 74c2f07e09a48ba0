"""One DMA engine per core: gathers/scatters between DRAM and the scratchpad.

A thread hands it one descriptor; the engine streams ``words`` 8-byte words at
``words_per_cycle`` after ``setup_cycles``, without the thread's in-flight
limit. The DRAM and mesh still carry every word.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.config import DmaConfig


class DmaEngines:
    def __init__(self, cfg: DmaConfig, cores: int):
        self.cfg = cfg
        self.free = np.zeros(cores)
        self.busy = np.zeros(cores)

    def transfer(self, core: int, now: float, words: float) -> float:
        start = max(self.free[core], now) + self.cfg.setup_cycles
        cyc = words / self.cfg.words_per_cycle
        self.free[core] = start + cyc
        self.busy[core] += cyc + self.cfg.setup_cycles
        return start + cyc

    def stream_time(self, words: float) -> float:
        """Uncontended duration of one transfer (used for a thread's latency chain)."""
        return self.cfg.setup_cycles + words / self.cfg.words_per_cycle
