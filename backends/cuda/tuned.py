"""Kernel knobs for the CUDA matmul families, measured on a GPU (scripts/gpu/bert_knobs.py).

``knobs_for(format, O, K, T)`` returns the fastest verified ``{"warps", "tn"}`` for a measured
shape, else None (the family's default rule). Keys: ``"<format> <O>x<K>@<T>"``.
"""
from __future__ import annotations

# H100 80GB HBM3 (driver 580.159.04): filled from benchmarks/results/bert_knobs_gpu.json
TUNED: dict[str, dict] = {}


def knobs_for(fmt: str, o: int, k: int, t: int) -> dict | None:
    kn = TUNED.get(f"{fmt} {o}x{k}@{t}")
    return dict(kn) if kn else None
