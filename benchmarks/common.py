"""Helpers shared by the benchmarks: machine description, interleaved timing, output files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from typing import Callable

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict:
    import torch
    import tvm

    return {"cpu": cpu_model(), "cores_visible": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "torch": torch.__version__, "tvm": tvm.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def interleaved(fns: dict[str, Callable[[], object]], repeat: int = 10, warmup: int = 2,
                settle_s: float = 0.01) -> dict[str, float]:
    """Median seconds per call of each function, runs interleaved so drift hits all alike.

    ``settle_s``: a pause before each timed call, so that the previous function's thread pool (torch's
    OpenMP workers, TVM's pool) has stopped spinning: its spin would take a core from the next function
    (on a 2-core machine a TVM model run right after a parallel torch op measured 3x slower; docs/cpu.md
    "Threads")."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    ts = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            if settle_s:
                time.sleep(settle_s)
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def write_json(name: str, data: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return path
