"""What an algorithm hands the engine: stages of tasks with their per-task demands.

An algorithm is a *program*: its work is cut into tasks (an output row, a
token of a row, a column of A, ...) pulled from per-core FIFO queues by the
hardware threads. Each task is one burst the thread issues: instructions,
blocking loads and atomics (which it can overlap ``max_outstanding`` at a
time), posted stores, scratchpad bank slots, DRAM accesses, DMA transfers.
:class:`Costs` turns those operation counts into the burst's demands,
vectorised over all tasks; the engine then plays the bursts on the machine in
time order. Tasks may belong to a *group* (an output row split into tokens)
whose ``readout`` burst runs after the group's last task, on the thread that
pulled it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from sparsec.sim.piuma.config import PiumaConfig
from sparsec.sim.piuma.machine import Machine


def rounds(n: np.ndarray, window: int) -> np.ndarray:
    """Round trips needed for ``n`` independent requests, ``window`` in flight."""
    return np.ceil(np.asarray(n, dtype=float) / window)


class Costs:
    """Per-task demands of ``n`` tasks, built up operation class by operation class.

    ``core`` (per task) selects the DRAM latency (it depends on the core's
    place in the mesh). Every memory operation also costs one issue slot.
    """

    def __init__(self, n: int, core: np.ndarray, cfg: PiumaConfig, machine: Machine):
        self.n = n
        self.cfg = cfg
        self.w = cfg.core.max_outstanding
        self.core = core
        self.dram_lat = machine.dram_latency[core] if n else np.zeros(0)
        self.remote_lat = machine.remote_latency[core] if n else np.zeros(0)
        self.instr = np.zeros(n)
        self.chain = np.zeros(n)
        self.dram_read = np.zeros(n)
        self.dram_write = np.zeros(n)
        self.banks = np.zeros((n, cfg.scratchpad.banks))
        self.remote = np.zeros(n)
        self.dma = np.zeros(n)
        self.spm_ops = np.zeros(n)
        self.atomics = np.zeros(n)
        self.l1_hits = np.zeros(n)

    # -- compute --------------------------------------------------------------
    def compute(self, instr) -> None:
        self.instr += instr
        self.chain += instr

    # -- DRAM -----------------------------------------------------------------
    def dram_load(self, words) -> None:
        """Blocking loads of independent 8-byte words (one dependent level)."""
        words = np.asarray(words, dtype=float)
        self.compute(words)
        self.chain += rounds(words, self.w) * self.dram_lat
        self.dram_read += words

    def dram_store(self, words) -> None:
        """Posted stores: an issue slot each, no wait."""
        self.compute(words)
        self.dram_write += words

    def dram_atomic(self, n, blocking: bool = True) -> None:
        """Atomics at the memory controller: a read and a write each."""
        n = np.asarray(n, dtype=float)
        self.compute(n)
        if blocking:
            self.chain += rounds(n, self.w) * self.dram_lat
        self.dram_read += n
        self.dram_write += n
        self.atomics += n

    # -- L1 -------------------------------------------------------------------
    def l1_load(self, words) -> None:
        words = np.asarray(words, dtype=float)
        self.compute(words)
        self.chain += rounds(words, self.w) * self.cfg.l1.hit_latency
        self.l1_hits += words

    # -- scratchpad -----------------------------------------------------------
    def _spread(self, n, per_bank) -> np.ndarray:
        if per_bank is not None:
            return per_bank
        return np.asarray(n, dtype=float)[:, None] / self.cfg.scratchpad.banks \
            * np.ones(self.cfg.scratchpad.banks)

    def spm_load(self, n, per_bank: np.ndarray | None = None) -> None:
        """Blocking scratchpad loads; ``per_bank`` (tasks x banks) or spread evenly."""
        n = np.asarray(n, dtype=float)
        self.compute(n)
        self.chain += rounds(n, self.w) * self.cfg.scratchpad.latency
        self.banks += self._spread(n, per_bank) * self.cfg.scratchpad.access_cycles
        self.spm_ops += n

    def spm_store(self, n, per_bank: np.ndarray | None = None) -> None:
        n = np.asarray(n, dtype=float)
        self.compute(n)
        self.banks += self._spread(n, per_bank) * self.cfg.scratchpad.access_cycles
        self.spm_ops += n

    def spm_atomic(self, n, per_bank: np.ndarray | None = None, blocking: bool = True) -> None:
        n = np.asarray(n, dtype=float)
        self.compute(n)
        if blocking:
            self.chain += rounds(n, self.w) * self.cfg.scratchpad.latency
        self.banks += self._spread(n, per_bank) * self.cfg.scratchpad.atomic_cycles
        self.spm_ops += n
        self.atomics += n

    def queue_pop(self) -> None:
        """Fetch-and-add on the core's task counter (one word, bank 0)."""
        per_bank = np.zeros((self.n, self.cfg.scratchpad.banks))
        per_bank[:, 0] = 1
        self.spm_atomic(np.ones(self.n), per_bank)

    # -- remote scratchpad, DMA -----------------------------------------------
    def remote_atomic(self, n, blocking: bool = True) -> None:
        """Atomics on words spread over all cores' scratchpads (blocking, or
        posted: no reply awaited)."""
        n = np.asarray(n, dtype=float)
        self.compute(n)
        if blocking:
            self.chain += rounds(n, self.w) * self.remote_lat
        self.remote += n * self.cfg.scratchpad.atomic_cycles
        self.atomics += n

    def dma_gather(self, words, machine: Machine) -> None:
        """One descriptor; the engine streams ``words`` from DRAM into the scratchpad."""
        words = np.asarray(words, dtype=float)
        has = words > 0
        self.compute(has * 2.0)
        self.chain += has * (machine.dma.stream_time(words) + self.dram_lat)
        self.dma += words
        self.dram_read += words
        self.banks += self._spread(words, None) * self.cfg.scratchpad.access_cycles

    def demands(self) -> dict:
        return {"instr": self.instr, "chain": self.chain,
                "dram": self.dram_read + self.dram_write, "banks": self.banks,
                "remote": self.remote, "dma": self.dma, "reads": self.dram_read > 0}

    def counters(self) -> dict:
        return {"dram_read_words": float(self.dram_read.sum()),
                "dram_write_words": float(self.dram_write.sum()),
                "spm_ops": float(self.spm_ops.sum()), "atomics": float(self.atomics.sum()),
                "l1_hit_words": float(self.l1_hits.sum()), "instructions": float(self.instr.sum())}


@dataclass
class Stage:
    """One phase of an algorithm; phases are separated by a die-wide barrier."""

    name: str
    core: np.ndarray                      # per task
    tasks: dict                           # Costs.demands() of the tasks
    group: np.ndarray | None = None       # per task: its group (None: no readouts)
    readout: dict | None = None           # Costs.demands() per group
    readout_core: np.ndarray | None = None
    spm_bytes: np.ndarray | None = None   # per group: scratchpad held from first task to readout
    counters: dict = field(default_factory=dict)


@dataclass
class Plan:
    """Everything an algorithm produced: the product and the stages to time."""

    C: sp.csr_matrix
    stages: list[Stage]
    counters: dict = field(default_factory=dict)


def partition(weights: np.ndarray, parts: int) -> np.ndarray:
    """Contiguous blocks of tasks, one per part, with near-equal total weight."""
    n = weights.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    w = np.asarray(weights, dtype=float) + 1e-9
    csum = np.cumsum(w) - w / 2
    part = np.floor(csum / w.sum() * parts).astype(np.int64)
    return np.clip(part, 0, parts - 1)


def merge_counters(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out


def log2_ceil(x: np.ndarray) -> np.ndarray:
    """ceil(log2(x)) for x >= 1 (0 for x <= 1)."""
    x = np.maximum(np.asarray(x, dtype=float), 1.0)
    return np.ceil(np.log2(x))


def next_pow2(x: np.ndarray) -> np.ndarray:
    x = np.maximum(np.asarray(x, dtype=np.int64), 1)
    return (1 << np.ceil(np.log2(x)).astype(np.int64)).astype(np.int64)


def csr_from_rows(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape) -> sp.csr_matrix:
    """CSR from entries already grouped by row and sorted by column within each row."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    C = sp.csr_matrix((vals, cols, indptr), shape=shape)
    C.has_sorted_indices = True
    return C


def drop_zeros(C: sp.csr_matrix) -> sp.csr_matrix:
    """scipy stores no output whose sum cancels to exactly 0; neither do we."""
    C.eliminate_zeros()
    return C


def sort_instructions(c: np.ndarray, ncols: int, costs) -> np.ndarray:
    """Instructions to sort each output row's c keys (columns < ncols): the
    cheaper of a comparison sort (c ceil(log2 c) comparisons of
    ``sort_compare``) and an LSD radix sort (ceil(log2 ncols / radix_bits)
    passes, each ``radix_step`` per key plus clearing and scanning 2^radix_bits
    counters), as an implementation would pick per row."""
    c = np.asarray(c, dtype=float)
    comparison = c * log2_ceil(c) * costs.sort_compare
    passes = max(1.0, float(np.ceil(np.log2(max(ncols, 2)) / costs.radix_bits)))
    radix = passes * (c * costs.radix_step + 2.0 * (1 << costs.radix_bits))
    return np.where(c > 1, np.minimum(comparison, radix), 0.0)
