"""Kernel knobs for the CUDA matmul families, measured on a GPU (scripts/gpu/bert_knobs.py).

``knobs_for(format, O, K, T)`` returns the fastest verified ``{"warps", "tn"}`` for a measured
shape, else None (the family's default rule). Keys: ``"<format> <O>x<K>@<T>"``. These are knobs of the
``fragment`` design only (``tiled`` and ``dlight`` run their own defaults); their measured times are the
``MEASURED`` entries of the cost rule (``backends/cuda/select.py``), which picks the design per linear.
"""
from __future__ import annotations

# H100 80GB HBM3 (driver 580.159.04, 2026-11-23): BERT-base's linears, bitmap 8x32 at 90 %, bias, fp16;
# the fastest of warps {1,2,4,8} x tn {32,64,128} (warps*tn <= 512), every one checked vs F.linear
# (benchmarks/results/e2e_gpu_knobs.json, scripts/gpu/bert_knobs.py)
TUNED: dict[str, dict] = {
    "bitmap 3072x768@1024": {"warps": 1, "tn": 64},   # 47.9 us (cuBLAS dense fp16 9.6 us)
    "bitmap 3072x768@128": {"warps": 4, "tn": 64},   # 13.3 us (cuBLAS dense fp16 4.9 us)
    "bitmap 768x3072@1024": {"warps": 4, "tn": 64},   # 48.5 us (cuBLAS dense fp16 12.2 us)
    "bitmap 768x3072@128": {"warps": 8, "tn": 32},   # 18.2 us (cuBLAS dense fp16 6.9 us)
    "bitmap 768x768@1024": {"warps": 4, "tn": 64},   # 20.3 us (cuBLAS dense fp16 5.2 us)
    "bitmap 768x768@128": {"warps": 8, "tn": 32},   # 7.8 us (cuBLAS dense fp16 3.8 us)
}


def knobs_for(fmt: str, o: int, k: int, t: int) -> dict | None:
    kn = TUNED.get(f"{fmt} {o}x{k}@{t}")
    return dict(kn) if kn else None
