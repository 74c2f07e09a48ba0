"""Fast analytical estimate of a plan's cycles: the largest throughput bound.

Per stage, with the same per-task demands the engine plays, the stage takes at
least as long as each of: the issue slots of the busiest core over its
pipelines; the latency-bound chains of the busiest core over its threads
(perfect latency hiding); all DRAM accesses over the DRAM rate; each core's
mesh link and the bisection; the busiest scratchpad bank; the remote-atomic
pool; the busiest DMA engine; and the longest single task (with its readout).
The estimate is the maximum of those, plus the DRAM latency once (the pipe
fill) and the barriers. The engine adds what the bound leaves out: queueing,
load imbalance in time, and bursts that do not overlap; docs/piuma.md states
the agreement measured and the tolerance the tests hold it to.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.algorithms.base import Plan, Stage
from sparsec.sim.piuma.machine import Machine


def _stage_bounds(stage: Stage, machine: Machine) -> dict:
    cfg = machine.cfg
    cores = machine.cores
    parts = [(stage.core, stage.tasks)]
    if stage.readout is not None:
        parts.append((stage.readout_core, stage.readout))

    def per_core(key):
        return sum(np.bincount(c, weights=d[key], minlength=cores) for c, d in parts)

    instr, chain, dram = per_core("instr"), per_core("chain"), per_core("dram")
    dma = per_core("dma")
    remote = sum(d["remote"].sum() for _, d in parts)
    banks = sum(np.stack([np.bincount(c, weights=d["banks"][:, b], minlength=cores)
                          for b in range(d["banks"].shape[1])], axis=1) for c, d in parts)
    longest = stage.tasks["chain"].max() if stage.core.size else 0.0
    if stage.readout is not None and stage.readout["chain"].size:
        longest += stage.readout["chain"].max()
    mesh = machine.mesh
    return {
        "issue": float((instr / (cfg.core.pipelines * cfg.core.issue_per_cycle)).max()),
        "latency": float((chain / cfg.core.threads).max()),
        "dram": float(dram.sum() / machine.dram.rate),
        "link": float((dram * mesh.bytes_per_access / mesh.link_rate).max()),
        "bisection": float((dram * mesh.cross_fraction).sum() * mesh.bytes_per_access
                           / mesh.bisection_rate),
        "bank": float(banks.max()) if banks.size else 0.0,
        "remote": float(remote / machine.remote.rate),
        "dma": float((dma / cfg.dma.words_per_cycle).max()),
        "longest_task": float(longest),
    }


def stage_bounds(plan: Plan, machine: Machine) -> list[dict]:
    return [_stage_bounds(s, machine) for s in plan.stages]


def estimate(plan: Plan, machine: Machine) -> float:
    """Estimated cycles of ``plan`` (see the module docstring)."""
    total = 0.0
    for k, b in enumerate(stage_bounds(plan, machine)):
        if k:
            total += machine.cfg.sync.barrier_cycles
        total += max(b.values()) + float(machine.dram_latency.mean())
    return total


def bottleneck(plan: Plan, machine: Machine) -> list[str]:
    """Name of the binding bound of each stage."""
    return [max(b, key=b.get) for b in stage_bounds(plan, machine)]
