"""Cores, pipelines and hardware threads.

A core has ``mtp_pipelines`` multi-threaded pipelines with ``threads_per_mtp``
threads each (a barrel: every cycle it issues from a ready thread, so one
thread's memory wait is hidden by the others) and ``stp_pipelines``
single-threaded pipelines. Thread ids within a core: the MTP threads first,
then one per STP.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.config import CoreConfig


class Pipelines:
    """Issue slots of every pipeline of every core, as reservation resources."""

    def __init__(self, core: CoreConfig):
        self.cfg = core
        self.per_core = core.pipelines
        self.threads_per_core = core.threads
        self.free = np.zeros(core.count * self.per_core)
        self.busy = np.zeros(core.count * self.per_core)
        # pipe of each thread within a core
        local = [t // core.threads_per_mtp for t in range(core.mtp_pipelines * core.threads_per_mtp)]
        local += [core.mtp_pipelines + s for s in range(core.stp_pipelines)]
        self.local_pipe = local

    def pipe_of(self, core: int, thread: int) -> int:
        """Global pipeline index of ``thread`` (0-based within ``core``)."""
        return core * self.per_core + self.local_pipe[thread]

    def issue(self, pipe: int, now: float, instr: float) -> float:
        """Reserve ``instr`` issue slots on ``pipe``; returns when the last issues."""
        cycles = instr / self.cfg.issue_per_cycle
        start = max(self.free[pipe], now)
        self.free[pipe] = start + cycles
        self.busy[pipe] += cycles
        return start + cycles
