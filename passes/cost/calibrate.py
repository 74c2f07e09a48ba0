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
from sparsec.passes.cost.model import CostModel, features, fit, regime
from sparsec.passes.cost.targets import TargetDesc, host_desc
from sparsec.passes.prune import prune

SHAPES = ((256, 512), (1024, 512), (512, 2048))
TOKENS = (1, 8, 64, 256)
DENSITIES = (0.05, 0.2, 0.5)


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


def candidates_for(w: torch.Tensor, density: float):
    """(format object) samples for one pruned weight: every family at its usual parameters."""
    un = prune(w, "unstructured", 1 - density).weight
    blk = prune(w, "block:4x4", 1 - density).weight
    out = [Dense.from_dense(w), CSR.from_dense(un), Bitmap.from_dense(un, tile=(8, 8)), BSR.from_dense(blk, block=(4, 4)),
           GroupQuant.from_dense(prune(w, "group:16", 1 - density).weight, group=16, bits=4)]
    n, m = (1, 4) if density <= 0.25 else (2, 4)
    out.append(NM.from_dense(prune(w, f"{n}:{m}").weight, n=n, m=m))
    return out


def calibrate(measure: Callable, threads: int, progress: Callable[[int, int, str], None] | None = None,
              desc: TargetDesc | None = None) -> CostModel:
    """Measure the grid with ``measure(fmt, tokens) -> seconds`` and fit (c, a, b, d) per format/regime."""
    desc = desc or host_desc(threads)
    g = torch.Generator().manual_seed(0)
    jobs = []
    for o, k in SHAPES:
        w = torch.randn(o, k, generator=g)
        for d in DENSITIES:
            for fmt in candidates_for(w, d):
                if fmt.name == "dense" and d != DENSITIES[0]:
                    continue
                for t in TOKENS:
                    jobs.append((fmt, t))
    samples: dict[str, list] = {}
    for i, (fmt, t) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), f"{fmt.name} {fmt.rows}x{fmt.cols} T={t}")
        s = measure(fmt, t)
        samples.setdefault(f"{fmt.name}/{regime(t)}", []).append((features(fmt, t), s))
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
