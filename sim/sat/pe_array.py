"""The unified PE array: dense and N:M sparse MACs in the same PEs.

Each PE holds one multiplier-accumulator and an N:M *selection unit*: a
window of M operand values (the dense group of the non-sparse operand) and a
multiplexer that picks the one its compressed weight's index points at. A
dense MAC is the special case of a window of one. Because B is compressed
along the reduction, a sparse fold covers M/N times more of the dense
reduction per PE row (WS/IS) or per time step (OS).

The dataflow modules drive these helpers; the grid itself is numpy arrays
(rows × cols [× window]), shifted one PE per cycle.
"""
from __future__ import annotations

import numpy as np


def windows(a: np.ndarray, gstart: np.ndarray, width: int) -> np.ndarray:
    """``w[t, k, j] = a[t, gstart[k] + j]`` (zero past the end): the group windows of A's rows."""
    pad = np.concatenate([a, np.zeros((a.shape[0], width), dtype=a.dtype)], axis=1)
    cols = gstart[:, None] + np.arange(width)[None, :]
    return pad[:, cols]


def select(window: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The selection unit of every PE: ``window[..., index]`` (window has a trailing M axis)."""
    return np.take_along_axis(window, index[..., None], axis=-1)[..., 0]


def shift_right(grid: np.ndarray, inject: np.ndarray) -> np.ndarray:
    """Values move one PE to the right; column 0 receives ``inject`` (one value per row)."""
    out = np.empty_like(grid)
    out[:, 1:] = grid[:, :-1]
    out[:, 0] = inject
    return out


def shift_down(grid: np.ndarray, inject: np.ndarray) -> np.ndarray:
    """Values move one PE down; row 0 receives ``inject`` (one value per column)."""
    out = np.empty_like(grid)
    out[1:] = grid[:-1]
    out[0] = inject
    return out


def line(cycle: int, phase: str, active: int, emitted: int) -> str:
    """One line of a fold's trace: cycle, phase, busy PEs, outputs written this cycle."""
    return f"{cycle:6d} {phase:<6s} busy={active:5d} out={emitted:4d}"
