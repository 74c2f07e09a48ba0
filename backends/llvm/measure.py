"""Measuring matmul kernels on this CPU (calibration of the cost model, `--measure`)."""
from __future__ import annotations

import time

import torch

from sparsec.ir.formats import SparseFormat


def measure_matmul(fmt: SparseFormat, tokens: int, repeat: int = 7, min_time: float = 2e-3) -> float:
    """Seconds of one ``YT = W @ XT`` call (kernel built and cached; inputs random).

    The minimum over ``repeat`` batches of back-to-back calls: on a shared
    machine other work only ever adds time, so the minimum is the most
    repeatable estimate of the kernel's own cost (calibration and --measure).
    """
    from sparsec.backends.kernels import build_matmul

    kern = build_matmul(fmt, tokens)
    dt = fmt.dtype
    xt = torch.randn(fmt.cols, tokens).to(dt)
    yt = torch.empty(fmt.rows, tokens, dtype=dt)
    bufs = [getattr(fmt, b).contiguous() for b in fmt.buffers]
    f = kern.func
    f(*bufs, xt, yt)
    # calls per sample so that one sample lasts at least min_time
    t0 = time.perf_counter()
    f(*bufs, xt, yt)
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(min_time / one))
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            f(*bufs, xt, yt)
        ts.append((time.perf_counter() - t0) / n)
    return min(ts)
