"""SCALE-Sim v3 compatible mode: a plain R×C systolic array, dense, stall-free.

``gemm_cycles`` runs SAT's own schedule/fast path (or the CL model) under
``config.scalesim_config`` (ideal memory, untiled streamed dimension, the
count reported as SCALE-Sim's last-cycle index) on ``A (M×K) · B (K×N)``.
SCALE-Sim names a GEMM ``M×N×K``. ``conv_gemm`` gives a conv layer's GEMM
with SCALE-Sim's output-size rule ``ceil((H - R + stride) / stride)``
(which differs from PyTorch's floor for AlexNet's 224-pixel conv1).
"""
from __future__ import annotations

import math

import numpy as np

from sparsec.sim.sat import fast, schedule
from sparsec.sim.sat.config import scalesim_config
from sparsec.sim.sat.pipeline import Block, Opts, _concat
from sparsec.sim.sat.workloads import Gemm, dense_groups


def sequence(m: int, n: int, k: int, dataflow: str, rows: int = 32, cols: int = 32):
    cfg = scalesim_config(rows, cols, dataflow)
    g = Gemm("gemm", "FF", m, k, n, dense_groups(k))
    p = schedule.plan(g, dataflow, cfg, offline=False, pregen=True)
    s = schedule.build(g, p, cfg, pregen=True)
    return _concat([Block([s], np.zeros(len(s), np.int64), np.arange(len(s)))], cfg, Opts(False, True, False))


def gemm_cycles(m: int, n: int, k: int, dataflow: str, rows: int = 32, cols: int = 32) -> int:
    """Stall-free cycles of ``A (m×k) · B (k×n)`` as SCALE-Sim v3 counts them."""
    return fast.evaluate(sequence(m, n, k, dataflow, rows, cols)).total


def conv_gemm(h: int, w: int, kh: int, kw: int, cin: int, cout: int, stride: int) -> tuple[int, int, int]:
    """(M, N, K) of an unpadded conv layer under SCALE-Sim's output-size rule."""
    ho = math.ceil((h - kh + stride) / stride)
    wo = math.ceil((w - kw + stride) / stride)
    return ho * wo, cout, kh * kw * cin
