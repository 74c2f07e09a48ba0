"""DRAM model: channels, sustained bandwidth, bursts, request latency.

One DMA job (a step's tile loads plus the write-backs it carries) is a set of
transfers; each transfer is rounded up to whole bursts, bursts are spread
round-robin over the channels, and the job takes the request latency plus the
time the fullest channel needs to move its bursts at its sustained rate. A job
with no bytes takes no time. ``job_cycles`` is the closed form (fast path);
``DramEngine`` ticks the same rule cycle by cycle (CL).
"""
from __future__ import annotations

import numpy as np


class DramTiming:
    def __init__(self, cfg):
        self.channels = cfg.dram.channels
        self.burst = cfg.dram.burst_bytes
        self.latency = cfg.dram.latency_cycles
        self.bpc = cfg.dram_bytes_per_cycle          # per channel
        self.ideal = cfg.compat.scalesim

    def bursts(self, nbytes) -> np.ndarray:
        """Bursts of each transfer (vectorised): ceil(bytes / burst_bytes)."""
        b = np.asarray(nbytes, dtype=np.int64)
        return -(-b // self.burst)

    def job_cycles(self, bursts) -> np.ndarray:
        """Cycles of DMA jobs given their total bursts (vectorised)."""
        b = np.asarray(bursts, dtype=np.int64)
        if self.ideal:
            return np.zeros_like(b)
        per_ch = -(-b // self.channels)
        t = self.latency + (-(-(per_ch * self.burst) // self.bpc))
        return np.where(b > 0, t, 0)


class DramEngine:
    """Cycle-by-cycle DMA engine: one job at a time, ``tick()`` once per cycle."""

    def __init__(self, timing: DramTiming):
        self.t = timing
        self.job = None
        self.wait = 0
        self.moved = 0
        self.need = 0

    def start(self, job: int, bursts: int) -> None:
        self.job = job
        if bursts == 0 or self.t.ideal:
            self.wait, self.need, self.moved = 0, 0, 0
            return
        self.wait = self.t.latency
        self.need = -(-bursts // self.t.channels) * self.t.burst   # bytes on the fullest channel
        self.moved = 0

    @property
    def busy(self) -> bool:
        return self.job is not None and (self.wait > 0 or self.moved < self.need)

    def tick(self) -> None:
        if self.wait > 0:
            self.wait -= 1
        elif self.moved < self.need:
            self.moved += self.t.bpc

    def line_trace(self) -> str:
        if not self.busy:
            return "dram idle"
        return f"dram job {self.job} " + (f"latency {self.wait}" if self.wait else f"{self.moved}/{self.need}B")
