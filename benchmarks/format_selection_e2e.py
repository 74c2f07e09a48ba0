"""Format selection end to end: BERT-base at 90% sparsity compiled with `--format auto` vs every
single forced format (dense, csr, bitmap, bsr, nm where it applies), same pruned weights.

    .venv/bin/python benchmarks/format_selection_e2e.py [--layers 12] [--pattern unstructured] [--repeat 7]

Prints per-layer (per linear node) median times of auto vs the dense-format compile — no layer of
the auto compile may be slower than its dense counterpart (issue 6) — and total times: auto must be
at least as fast as the best single forced format. Writes benchmarks/results/format_selection_e2e.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import interleaved, machine, write_json  # noqa: E402
from benchmarks.e2e_cpu import bert_base  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--pattern", default="unstructured")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    import sparsec
    from sparsec.backends.llvm.pipeline import cost_model
    from sparsec.backends.target import num_threads
    from sparsec.passes.sparsify import sparsify
    from sparsec.ir.ops import Op

    threads = num_threads()
    torch.set_num_threads(threads)
    info = machine(threads)
    from sparsec.backends.llvm.measure import measure_matmul
    from sparsec.passes.cost.calibrate import ensure_calibrated
    ensure_calibrated(measure_matmul, threads)      # a stale or missing calibration is redone first
    print(f"machine: {info['cpu']}, {threads} threads; cost model: {cost_model(threads).source}")
    print(f"BERT-base x{args.layers}, seq {args.seq}, {args.pattern} {args.sparsity:.0%}")
    m, x = bert_base(args.layers, args.seq, 1)
    formats = ["auto", "dense", "csr", "bitmap", "bsr"] + (["nm"] if ":" in args.pattern and "block" not in args.pattern else [])
    compiled = {}
    for f in formats:
        compiled[f] = sparsec.compile(m, x, pattern=args.pattern, sparsity=args.sparsity, format=f)
        print(f"compiled {f:<7} formats {sorted({r['format'] for r in compiled[f].report})} "
              f"in {compiled[f].timings['total_s']:.1f}s")
    ref = compiled["dense"](*x)[0]
    for f, c in compiled.items():
        err = float((c(*x)[0] - ref).abs().max() / ref.abs().max())
        assert err < 1e-3, f"{f}: disagrees with the dense compile ({err:.1e})"
    execs = {f: c.compiled.executor() for f, c in compiled.items()}
    totals = interleaved({f: (lambda e=e: e(*x)) for f, e in execs.items()}, repeat=args.repeat)
    # per-layer: median over profiled runs, interleaved between auto and dense
    linear_nodes = [n.name for n in compiled["auto"].graph.nodes if n.op == Op.LINEAR]
    samples = {"auto": {}, "dense": {}}
    for _ in range(args.repeat):
        for f in ("auto", "dense"):
            _, prof = execs[f].run_profiled(*x)
            for k, v in prof.items():
                samples[f].setdefault(k, []).append(v)
    def layer_time(f, node):   # the matmul step plus its transposes
        return sum(statistics.median(v) for k, v in samples[f].items() if k == node or k.startswith(node + "."))
    by_node = {}
    for n in compiled["auto"].graph.nodes:
        if n.op == Op.LINEAR:
            w = n.inputs[1]
            by_node[n.name] = compiled["auto"].graph.constant(w).format
    layers = []
    for node in linear_nodes:
        ta, td = layer_time("auto", node), layer_time("dense", node)
        layers.append({"node": node, "format": by_node[node], "auto_s": ta, "dense_s": td, "ratio": td / ta})
    slower = [l for l in layers if l["ratio"] < 1.0]
    slower_noise = [l for l in layers if l["ratio"] < 0.95]
    print()
    print(f"{'format':<8}{'total ms':>10}{'vs dense':>10}")
    for f in formats:
        print(f"{f:<8}{totals[f] * 1e3:>10.2f}{totals['dense'] / totals[f]:>10.2f}x")
    best_forced = min((f for f in formats if f != "auto"), key=totals.get)
    print(f"auto vs best single forced format ({best_forced}): {totals[best_forced] / totals['auto']:.2f}x "
          f"(goal >= 1.0)")
    print(f"layers where auto is slower than dense: {len(slower)} of {len(layers)} "
          f"(beyond 5% noise: {len(slower_noise)}; goal 0)")
    for l in sorted(layers, key=lambda l: l["ratio"])[:5]:
        print(f"  {l['node']:<14} {l['format']:<8} auto {l['auto_s'] * 1e6:8.1f} us  dense {l['dense_s'] * 1e6:8.1f} us"
              f"  {l['ratio']:.2f}x")
    out = {"machine": info, "config": vars(args), "totals_s": totals, "best_forced": best_forced,
           "auto_vs_best_forced": totals[best_forced] / totals["auto"], "layers": layers,
           "layers_slower_than_dense": len(slower), "layers_slower_beyond_5pct": len(slower_noise)}
    print("wrote", write_json("format_selection_e2e.json", out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
