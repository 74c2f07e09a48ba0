"""The machine: the parts wired together, and how one thread's task is timed."""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.config import PiumaConfig
from sparsec.sim.piuma.machine.dma import DmaEngines
from sparsec.sim.piuma.machine.dram import Dram
from sparsec.sim.piuma.machine.mesh import Mesh
from sparsec.sim.piuma.machine.pipeline import Pipelines
from sparsec.sim.piuma.machine.scratchpad import RemoteAtomics, Scratchpads


class Machine:
    """All shared resources of one die, reset for each simulation."""

    def __init__(self, cfg: PiumaConfig):
        self.cfg = cfg
        self.cores = cfg.core.count
        self.threads_per_core = cfg.core.threads
        self.pipes = Pipelines(cfg.core)
        self.spm = Scratchpads(cfg.scratchpad, self.cores)
        self.remote = RemoteAtomics(cfg.scratchpad, self.cores)
        self.dram = Dram(cfg)
        self.mesh = Mesh(cfg)
        self.dma = DmaEngines(cfg.dma, self.cores)
        # round trip of one DRAM access seen from each core
        self.dram_latency = cfg.dram.latency + self.mesh.round_trip
        self.remote_latency = cfg.scratchpad.latency + self.mesh.round_trip

    def execute(self, core: int, thread: int, now: float, instr: float, chain: float,
                dram_words: float = 0.0, bank_cycles: np.ndarray | None = None,
                remote_cycles: float = 0.0, dma_words: float = 0.0,
                dram_reads: bool = True) -> float:
        """Time one burst issued by ``thread`` of ``core`` at ``now``; returns its end.

        ``chain`` is the burst's own latency-bound duration (issue plus the
        round trips it cannot overlap, computed by the algorithm); the burst
        also ends no earlier than each shared resource it uses has served it
        (plus the round trip when it waits for a reply: ``dram_reads`` false means
        all its DRAM accesses are posted stores).
        """
        end = now + chain
        end = max(end, self.pipes.issue(self.pipes.pipe_of(core, thread), now, instr))
        if dram_words:
            served = self.dram.serve(now, dram_words)
            carried = self.mesh.carry(core, now, dram_words)
            tail = self.dram_latency[core] if dram_reads else 0.0
            end = max(end, max(served, carried) + tail)
        if bank_cycles is not None:
            end = max(end, self.spm.serve(core, now, bank_cycles))
        if remote_cycles:
            end = max(end, self.remote.serve(now, remote_cycles) + self.remote_latency[core])
        if dma_words:
            end = max(end, self.dma.transfer(core, now, dma_words) + self.dram_latency[core])
        return end

    def counters(self, cycles: float) -> dict:
        """Utilisation of each resource over ``cycles``."""
        c = max(cycles, 1e-9)
        return {
            "pipeline_utilisation": float(self.pipes.busy.sum() / (c * self.pipes.busy.size)),
            "dram_utilisation": float(self.dram.busy / c),
            "scratchpad_bank_utilisation": float(self.spm.busy.sum() / (c * self.spm.busy.size)),
            "mesh_link_utilisation": float(self.mesh.link_busy.max() / c),
            "mesh_bisection_utilisation": float(self.mesh.bisection_busy / c),
            "dma_utilisation": float(self.dma.busy.max() / c),
        }
