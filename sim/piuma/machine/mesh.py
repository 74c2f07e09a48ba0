"""On-die 2D mesh of ``rows x cols`` routers.

Cores and DRAM channels are attached to routers spread evenly over the mesh
(row-major). An access from core ``c`` to an (evenly interleaved) channel
travels the average XY distance ``hops(c)`` there and back: latency
``2 * hops * hop_latency``. Bandwidth: every access carries 8 data bytes plus
``header_bytes`` over the core's router link (``link_bytes_per_cycle``), and
the share of accesses that cross the mesh's vertical bisection also crosses its
``2 * rows`` bisection links.
"""
from __future__ import annotations

import numpy as np

from sparsec.sim.piuma.config import PiumaConfig


def router_positions(n: int, rows: int, cols: int) -> np.ndarray:
    """(row, col) of ``n`` endpoints spread evenly over the routers."""
    routers = rows * cols
    idx = (np.arange(n) * routers) // max(n, 1)
    return np.stack([idx // cols, idx % cols], axis=1)


class Mesh:
    def __init__(self, cfg: PiumaConfig):
        m = cfg.mesh
        cores, channels = cfg.core.count, cfg.dram.channels
        cpos = router_positions(cores, m.rows, m.cols)
        dpos = router_positions(channels, m.rows, m.cols)
        dist = np.abs(cpos[:, None, :] - dpos[None, :, :]).sum(axis=2)
        self.hops = dist.mean(axis=1)                           # per core
        left = m.cols // 2
        cross = (cpos[:, None, 1] < left) != (dpos[None, :, 1] < left)
        self.cross_fraction = cross.mean(axis=1)                # per core
        self.round_trip = 2 * self.hops * m.hop_latency          # per core
        self.bytes_per_access = 8 + m.header_bytes
        self.link_rate = m.link_bytes_per_cycle
        self.bisection_rate = 2 * m.rows * m.link_bytes_per_cycle if m.cols > 1 else float("inf")
        self.link_free = np.zeros(cores)
        self.link_busy = np.zeros(cores)
        self.bisection_free = 0.0
        self.bisection_busy = 0.0

    def carry(self, core: int, now: float, words: float) -> float:
        """Reserve the core's link and the bisection for ``words`` accesses."""
        nbytes = words * self.bytes_per_access
        start = max(self.link_free[core], now)
        cyc = nbytes / self.link_rate
        self.link_free[core] = start + cyc
        self.link_busy[core] += cyc
        end = start + cyc
        crossing = nbytes * self.cross_fraction[core]
        if crossing > 0:
            start = max(self.bisection_free, now)
            cyc = crossing / self.bisection_rate
            self.bisection_free = start + cyc
            self.bisection_busy += cyc
            end = max(end, start + cyc)
        return end
