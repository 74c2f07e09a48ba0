"""DRAM: ``channels`` channels of 8-byte accesses.

Addresses are interleaved finely across channels, so a task's accesses spread
evenly and the channels act as one pool of ``channels * GB/s / (8 B * GHz)``
accesses per cycle (per-channel imbalance is not modelled). A read costs one
access; a posted write one access; an atomic at the memory controller two
(read + write). Latency ``latency`` plus the mesh round trip.
"""
from __future__ import annotations

from sparsec.sim.piuma.config import PiumaConfig


class Dram:
    def __init__(self, cfg: PiumaConfig):
        self.rate = cfg.dram_words_per_cycle
        self.latency = cfg.dram.latency
        self.free = 0.0
        self.busy = 0.0

    def serve(self, now: float, words: float) -> float:
        """Reserve ``words`` accesses; returns when the last one is served (no latency)."""
        start = max(self.free, now)
        cycles = words / self.rate
        self.free = start + cycles
        self.busy += cycles
        return self.free
