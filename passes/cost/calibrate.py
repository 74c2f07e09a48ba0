"""Calibrating the cost model from measured micro-benchmarks on this machine.

The calibration grid (shapes, densities, tokens) is deliberately different
from the BERT shapes the quality benchmark evaluates on. Results are stored
as JSON under the cache directory (``$SPARSEC_CACHE`` or ``~/.cache/sparsec``),
keyed by CPU model and thread count, and re-used by every compile.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant
from sparsec.passes.cost.model import CostModel, Stats, features, fit, regime
from sparsec.passes.cost.targets import TargetDesc, host_desc
from sparsec.passes.prune import prune

SHAPES = ((256, 512), (1024, 512), (512, 2048), (2048, 1024), (1024, 2048))
TOKENS = (1, 16, 256)
DENSITIES = (0.05, 0.2, 0.5)
BLOCKS = ((4, 4), (8, 8), (16, 1), (1, 16))
NMS = ((1, 4), (2, 4), (2, 8))


def cache_dir() -> str:
    return os.environ.get("SPARSEC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sparsec")


def host_key(threads: int) -> str:
    """Cache key: the CPU model string and thread count (calibration is per machine)."""
    import hashlib
    import platform

    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cost-{hashlib.sha1(model.encode()).hexdigest()[:10]}-{threads}t"


def calibration_path(threads: int) -> str:
    return os.path.join(cache_dir(), host_key(threads) + ".json")


def candidates_for(w: torch.Tensor, density: float, first: bool):
    """Format samples for one weight: every family and every variant auto-selection may pick."""
    un = prune(w, "unstructured", 1 - density).weight
    out = [CSR.from_dense(un), Bitmap.from_dense(un, tile=(8, 8))]
    for b in BLOCKS:
        out.append(BSR.from_dense(prune(w, f"block:{b[0]}x{b[1]}", 1 - density).weight, block=b))
    out.append(GroupQuant.from_dense(prune(w, "group:32", 1 - density).weight, group=32, bits=4))
    if first:   # density-independent formats once per shape
        out.append(Dense.from_dense(w))
        out += [NM.from_dense(prune(w, f"{n}:{m}").weight, n=n, m=m) for n, m in NMS]
    return out


def calibrate(measure: Callable, threads: int, progress: Callable[[int, int, str], None] | None = None,
              desc: TargetDesc | None = None) -> CostModel:
    """Measure the grid with ``measure(fmt, tokens) -> seconds`` and fit (c, a, b, d) per format/regime."""
    desc = desc or host_desc(threads)
    g = torch.Generator().manual_seed(0)
    jobs = []
    for o, k in SHAPES:
        w = torch.randn(o, k, generator=g)
        for i, d in enumerate(DENSITIES):
            for fmt in candidates_for(w, d, i == 0):
                for t in TOKENS:
                    jobs.append((fmt, t))
    samples: dict[str, list] = {}
    for i, (fmt, t) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), f"{fmt.name} {fmt.rows}x{fmt.cols} T={t}")
        s = measure(fmt, t)
        st = Stats.of(fmt)
        f = features(st, t)
        samples.setdefault(f"{fmt.name}/{regime(t)}", []).append((f, s))
        if st.variant:
            samples.setdefault(f"{fmt.name}:{st.variant}/{regime(t)}", []).append((f, s))
    coef = {key: fit(v) for key, v in samples.items()}
    return CostModel(desc, coef, f"calibrated on {len(jobs)} kernels")


def load_calibrated(threads: int) -> CostModel | None:
    import json

    p = calibration_path(threads)
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            return CostModel.from_json(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return None
