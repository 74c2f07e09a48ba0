"""Build the tuning kernels of the benchmark grid (here: TVM + nvcc, no GPU): ``backends/cuda/tune.py``.

    python scripts/gpu/build_tune.py OUTDIR [--arch sm_90a] [--shapes 11008x4096,...] [--tokens 1,8,16,32]
                                            [--sparsity 0.7,0.8,0.9] [--cells OxK@T:sparsity|dense,...] [--space wide]

Then on the GPU machine ``python scripts/gpu/tune_tiled.py OUTDIR``, and here
``sparsec autotune --target cuda --import OUTDIR/results.json --db backends/cuda/tuned_h100.jsonl`` (the shipped
H100 records) or into your own database.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as C  # noqa: E402

TUNE_TOKENS = (1, 8, 16, 32)
TUNE_SPARSITY = (0.7, 0.8, 0.9)


def grid(shapes, tokens, sparsity, arch, space="default"):
    from sparsec.backends.cuda.tune import Cell

    # shape, then density, then tokens: the GPU side draws one weight per (shape, density)
    return [Cell(O, K, T, round(1 - s, 4), arch=arch, space=space) for (O, K) in shapes for s in sparsity
            for T in tokens]


def parse_cells(text, arch, space):
    """``OxK@T:sparsity,...`` -> cells; ``OxK@T:dense``: a dense layer on the wgmma GEMM."""
    from sparsec.backends.cuda.tune import Cell

    out = []
    for item in text.split(","):
        try:
            shape, rest = item.split("@")
            t, s = rest.split(":")
            O, K = (int(v) for v in shape.split("x"))
            out.append(Cell(O, K, int(t), 1.0, arch=arch, space=space, kind="dense") if s == "dense" else
                       Cell(O, K, int(t), round(1 - float(s), 4), arch=arch, space=space))
        except ValueError:
            raise SystemExit(f"--cells: {item!r} is not OxK@T:sparsity or OxK@T:dense (e.g. 11008x4096@32:0.9)")
    return sorted(out, key=lambda c: (c.O, c.K, c.density, c.T))


def main():
    from sparsec.backends.cuda import tune

    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--shapes", help="comma-separated OxK (default: the benchmark's LLM shapes)")
    ap.add_argument("--tokens", default=",".join(map(str, TUNE_TOKENS)))
    ap.add_argument("--sparsity", default=",".join(map(str, TUNE_SPARSITY)))
    ap.add_argument("--cells", help="instead of the grid: OxK@T:sparsity,... (e.g. 11008x4096@32:0.9)")
    ap.add_argument("--space", default="default", choices=tune.SPACES,
                    help="wide: also every single-knob neighbour of the planner's variant")
    a = ap.parse_args()
    shapes = ([tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")] if a.shapes else C.BENCH_SHAPES)
    cells = (parse_cells(a.cells, a.arch, a.space) if a.cells else
             grid(shapes, [int(t) for t in a.tokens.split(",")], [float(s) for s in a.sparsity.split(",")], a.arch,
                  a.space))
    t0 = time.time()
    doc = tune.build(cells, a.outdir, a.arch,
                     progress=lambda i, n, lab: print(f"[{i + 1}/{n}] {lab}", flush=True))
    print(f"{a.outdir}: {len(doc['cells'])} cells, {doc['kernels']} kernels, built in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
