"""On-chip operand buffers: capacity, double buffering, panel pinning.

Each operand (A, B, Out) has its own SRAM. With double buffering a buffer
holds two tile slots, so the next step's tile loads while the current one is
computed (the pipeline ``lag`` is 2; 1 without). A planned (offline) schedule
may *pin* an operand's panel, the tiles one outermost-loop iteration touches,
when it fits beside one prefetch slot; pinned tiles are fetched once.
Out tiles are held as fp32 partial sums.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Buffer:
    name: str
    capacity: int        # bytes
    double: bool

    @property
    def slots(self) -> int:
        return 2 if self.double else 1

    def fits(self, tile_bytes: int) -> bool:
        return tile_bytes * self.slots <= self.capacity

    def pinnable(self, panel_bytes: int, tile_bytes: int) -> bool:
        return panel_bytes + (tile_bytes if self.double else 0) <= self.capacity


def buffers(cfg, share: float = 1.0) -> dict[str, Buffer]:
    """The three operand buffers; ``share`` < 1 when two phases split them (interleaving)."""
    b = cfg.buffers
    return {op: Buffer(op, int(b.capacity(op) * share), b.double_buffer) for op in ("a", "b", "out")}


def lag(cfg) -> int:
    return 2 if cfg.buffers.double_buffer else 1
