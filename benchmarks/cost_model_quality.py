"""How good is the format choice? The cost model's pick vs the measured best, on the CPU SpMM grid.

    .venv/bin/python benchmarks/cost_model_quality.py [--quick] [--rounds 5]

For every cell (BERT-base weight shape x tokens x sparsity x pruning pattern)
all exact candidate formats are measured on this CPU, and the format
`select_formats(auto)` picks from predictions alone is compared with the
measured best. Prints the share of cells where the pick is within 10% of
the best (goal >= 90%), the cells where the pick is slower than dense (goal:
none), and the worst misses; writes benchmarks/results/cost_model_quality.json.
Each cell's candidates are timed *interleaved*: ``--rounds`` rounds, each
timing every candidate once (one batch of >= 2 ms of back-to-back calls, the
order rotated per round), and each candidate's time is the median over the
rounds, so one slow sample (another job on the shared cores) does not decide
a cell; every sample is stored (``samples``).
The cost model is the calibrated one (its calibration grid uses different
shapes); a missing or older-layout calibration is redone first. Each cell also
records every candidate's required no-regression margin (the calibrated
model's measured error for that format and regime).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import machine, write_json  # noqa: E402


def interleaved(fmts: dict, tokens: int, rounds: int, measure) -> dict[str, list[float]]:
    """``key -> [seconds per round]``: every format timed once per round, the order rotated."""
    keys = list(fmts)
    for key in keys:                       # build every kernel (cached) and warm up before timing
        measure(fmts[key], tokens, repeat=1, min_time=1e-4)
    out = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            out[key].append(measure(fmts[key], tokens, repeat=1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell (median)")
    args = ap.parse_args(argv)

    from sparsec.backends.llvm.measure import measure_matmul
    from sparsec.backends.llvm.pipeline import cost_model
    from sparsec.backends.target import num_threads
    from sparsec.passes.prune import prune
    from sparsec.passes.select import Choice, _auto, pack_choice

    from sparsec.passes.cost.calibrate import ensure_calibrated

    threads = num_threads()
    torch.set_num_threads(threads)
    ensure_calibrated(measure_matmul, threads)      # a stale or missing calibration is redone first
    cm = cost_model(threads)
    info = machine(threads)
    print(f"machine: {info['cpu']}, {threads} threads; cost model: {cm.source}")
    shapes = [(768, 768), (3072, 768), (768, 3072)]
    tokens = [1, 16, 128]
    sparsities = [0.5, 0.7, 0.9, 0.95]
    patterns = ["unstructured", "block:4x4"]
    if args.quick:
        shapes, tokens, sparsities = shapes[:2], [1, 128], [0.5, 0.9]
    g = torch.Generator().manual_seed(0)
    cells = []
    for o, k in shapes:
        base = torch.randn(o, k, generator=g)
        for s in sparsities:
            for pat in patterns + (["2:4"] if s == 0.5 else []):
                w = prune(base, pat, None if ":" in pat and "block" not in pat else s).weight
                for t in tokens:
                    ch = _auto("w", w, t, None, False, cm, None)
                    fmts = {}
                    for c in ch.candidates:
                        params = {kk: tuple(v) if isinstance(v, list) else v for kk, v in c["params"].items()}
                        fmts[c["format"] + str(params)] = pack_choice(w, Choice("w", c["format"], params, 0.0, ""))
                    samples = interleaved(fmts, t, args.rounds, measure_matmul)
                    measured = {key: statistics.median(v) for key, v in samples.items()}
                    pick = ch.format + str({kk: tuple(v) if isinstance(v, list) else v for kk, v in ch.params.items()})
                    best_key = min(measured, key=measured.get)
                    dense = measured["dense{}"]
                    cell = {"O": o, "K": k, "tokens": t, "sparsity": s, "pattern": pat, "pick": pick,
                            "best": best_key, "t_pick": measured[pick], "t_best": measured[best_key],
                            "t_dense": dense, "measured": measured, "samples": samples,
                            "predicted": {c["format"] + str(c["params"]): c["predicted_s"] for c in ch.candidates},
                            "required_margin": {c["format"] + str(c["params"]): c["required_margin"]
                                                for c in ch.candidates if "required_margin" in c},
                            "reason": ch.reason}
                    cell["pick_vs_best"] = measured[pick] / measured[best_key]
                    cell["pick_vs_dense"] = measured[pick] / dense
                    cells.append(cell)
                    print(f"{o}x{k} T={t:<4} {pat:<13} s={s:.2f}  pick {pick:<26} {measured[pick] * 1e6:9.1f} us  "
                          f"best {best_key:<26} {measured[best_key] * 1e6:9.1f} us  dense {dense * 1e6:9.1f} us  "
                          f"pick/best {cell['pick_vs_best']:.2f}")
    within = sum(c["pick_vs_best"] <= 1.10 for c in cells) / len(cells)
    slower = [c for c in cells if c["pick_vs_dense"] > 1.0]
    slower_noise = [c for c in cells if c["pick_vs_dense"] > 1.05]
    print()
    print(f"pick within 10% of the measured best: {within:.0%} of {len(cells)} cells (goal >= 90%)")
    print(f"cells where the pick measured slower than dense: {len(slower)} (beyond 5% noise: {len(slower_noise)}; "
          f"goal 0)")
    worst = sorted(cells, key=lambda c: -c["pick_vs_best"])[:5]
    print("worst misses:")
    for c in worst:
        print(f"  {c['O']}x{c['K']} T={c['tokens']} {c['pattern']} s={c['sparsity']}: pick {c['pick']} "
              f"{c['pick_vs_best']:.2f}x the best ({c['best']})")
    out = {"machine": info, "cost_model": cm.source, "rounds": args.rounds, "within_10pct": within, "slower_than_dense": len(slower),
           "slower_than_dense_beyond_5pct": len(slower_noise), "cells": cells,
           "goals": {"within_10pct": 0.9, "slower_than_dense": 0}}
    print("wrote", write_json("cost_model_quality.json", out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
