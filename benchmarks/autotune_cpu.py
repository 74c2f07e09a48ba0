"""Autotuning on the CPU: tuned (formats x knobs) vs default schedules vs the format-selection pass alone.

Part 1, the SpMM grid of issue 10 (BERT-base shapes 768x768, 3072x768, 768x3072;
T in {1, 16, 128}; 50/70/90/95% unstructured: 36 cells, ``--quick``: 3x768 at 90%,
T in {1, 16, 128}): per cell the tuner runs under an equal share of 60% of the
budget (~10 s a cell at ``--budget 600``: the formats' default knobs first, then
as much of the knob space as fits; printed per cell); then three kernels are
timed in this process, interleaved, medians: ``select`` (the cost model's
format, default knobs: the selection pass alone), ``default`` (the fastest
format measured with default knobs) and ``tuned`` (the tuner's pick).
Part 2, BERT-base encoder at 90% unstructured: compiled without the database
(selection alone, the rule-based schedules: what `sparsec compile` builds) and
with the database after `autotune` of the model: its non-matmul functions
(softmax, layer norm, attention bmm, permutes, layout transposes: knobs of the
TE schedules) and its sparse layers (formats x kernel knobs). Both compiled
models are profiled per step (median over runs, grouped by operation).

    .venv/bin/python benchmarks/autotune_cpu.py [--budget 600] [--quick] [--layers 2] [--allow-busy]

The machine must be quiet: with 2 cores, one busy core makes every serial schedule
win. The load average is printed before and after, and the run refuses to start when
the 1-minute load is above 0.5 unless ``--allow-busy`` (then the JSON says ``busy``).

Goals (issue 10): tuned >= 1.3x default schedules on the median cell; e2e >= 1.2x.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import interleaved, machine, write_json  # noqa: E402


def cell_kernels(res, w2, tokens, target):
    from benchmarks.spmm_cpu import measure
    from sparsec.backends.kernels import build_matmul
    from sparsec.passes.autotune.space import pack

    xt = torch.randn(w2.shape[1], tokens)
    fns = {}
    for label, r in (("select", res.baseline), ("default", res.default_best), ("tuned", res.best)):
        c = r.config
        fo = pack(w2, c.format, c.params_dict)
        k = build_matmul(fo, tokens, target=target, knobs=c.knobs_dict)
        bufs = [getattr(fo, b).contiguous() for b in fo.buffers]
        yt = torch.empty(fo.rows, tokens)
        fns[label] = (lambda f=k.func, a=bufs + [xt, yt]: f(*a))
    return measure(fns, 15)


def step_profile(compiled, x, runs: int = 15) -> dict:
    """Median time of each executor step, summed per operation (matmul per format, softmax, ...)."""
    import collections

    ex = compiled.compiled.executor()
    docs = compiled.compiled.functions
    ex(*x)
    per = [[] for _ in ex._steps]
    for _ in range(runs):
        for i, (f, a, _s) in enumerate(ex._steps):
            t0 = time.perf_counter()
            f(*a)
            per[i].append(time.perf_counter() - t0)
    out = collections.defaultdict(float)
    for (f, a, s), ts in zip(ex._steps, per):
        doc = docs.get(s["func"], s["func"])
        op = " ".join(doc.split()[:2]) if "matmul" in doc else doc.split()[0]
        out[op] += statistics.median(ts)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600, help="total seconds (grid + BERT tuning and timing)")
    ap.add_argument("--quick", action="store_true", help="one shape (3072x768), 90%% only")
    ap.add_argument("--sparsity", default=None, help="comma-separated grid sparsities (default 0.5,0.7,0.9,0.95)")
    ap.add_argument("--tokens", default="1,16,128", help="comma-separated grid token counts")
    ap.add_argument("--allow-busy", action="store_true",
                    help="run even when the 1-minute load average is above 0.5 (numbers then favour serial)")
    ap.add_argument("--layers", type=int, default=2, help="BERT encoder layers (all share 3 tuned shapes)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--out", default="autotune_cpu.json", help="results file name in benchmarks/results/")
    args = ap.parse_args(argv)

    from sparsec.backends.target import host_target, num_threads
    from sparsec.passes.autotune.db import TuningDB
    from sparsec.passes.autotune.measure import LocalRunner
    from sparsec.passes.autotune.search import Layer, Tuner
    from sparsec.passes.prune import prune

    threads = num_threads()
    torch.set_num_threads(threads)
    target = host_target()
    info = machine(threads)
    info["loadavg_before"] = os.getloadavg()
    busy = info["loadavg_before"][0] > 0.5
    info["busy"] = busy
    print(f"machine: {info['cpu']}, threads {threads}, torch {info['torch']}, tvm {info['tvm']}; budget {args.budget:.0f}s; "
          f"load average before {' '.join(f'{v:.2f}' for v in info['loadavg_before'])}")
    if busy:
        msg = (f"load average {info['loadavg_before'][0]:.2f} > 0.5: another job is using a core; parallel "
               f"schedules lose to serial ones on a busy 2-core box and the tuned/default ratios are not "
               f"representative")
        if not args.allow_busy:
            print(f"REFUSED: {msg}. Rerun on a quiet machine, or pass --allow-busy.", file=sys.stderr)
            return 2
        print(f"WARNING: {msg} (--allow-busy: the results file says busy=true)", file=sys.stderr, flush=True)
    tmp = tempfile.mkdtemp(prefix="sparsec-autotune-bench-")
    db = TuningDB(os.path.join(tmp, "tuning.jsonl"))
    tuner = Tuner(db, LocalRunner(target), target)
    shapes = [(3072, 768)] if args.quick else [(768, 768), (3072, 768), (768, 3072)]
    sparsities = [float(v) for v in (args.sparsity or ("0.9" if args.quick else "0.5,0.7,0.9,0.95")).split(",")]
    tokens = [int(v) for v in args.tokens.split(",")]
    cells_spec = [(o, k, sp, t) for o, k in shapes for sp in sparsities for t in tokens]
    grid_budget = args.budget * 0.6
    print(f"grid: {len(cells_spec)} cells, {grid_budget:.0f}s in all (~{grid_budget / len(cells_spec):.0f}s a cell)")
    cells = []
    t_start = time.time()
    for i, (o, k, sp, t) in enumerate(cells_spec):
        w = torch.randn(o, k, generator=torch.Generator().manual_seed(shapes.index((o, k))))
        w2 = prune(w, "unstructured", sp).weight
        share = max(10.0, (grid_budget - (time.time() - t_start)) / (len(cells_spec) - i))
        res = tuner.tune_layer(Layer(f"{o}x{k} {sp:.2f} T={t}", w2, t), deadline=time.time() + share)
        if res.baseline is None or res.default_best is None or res.best is None:
            # the budget ran out before the selection's format / a default was measured
            cells.append({"O": o, "K": k, "tokens": t, "sparsity": sp, "budget_s": share, "trials": res.trials,
                          "space": res.space_size, "incomplete": True})
            print(f"{o:4d}x{k:<4d} {sp:.2f} T={t:<3d} budget {share:3.0f}s trials {res.trials:3d}/{res.space_size:4d}  "
                  f"INCOMPLETE: the selection's format or no default measured within the cell's budget", flush=True)
            continue
        times = cell_kernels(res, w2, t, target)
        cell = {"O": o, "K": k, "tokens": t, "sparsity": sp, "budget_s": share, "trials": res.trials,
                "space": res.space_size,
                "select": res.baseline.config.label, "default": res.default_best.config.label,
                "tuned": res.best.config.label, "times_s": times,
                "tuned_vs_default": times["default"] / times["tuned"],
                "tuned_vs_select": times["select"] / times["tuned"]}
        cells.append(cell)
        print(f"{o:4d}x{k:<4d} {sp:.2f} T={t:<3d} budget {share:3.0f}s trials {res.trials:3d}/{res.space_size:4d}  select {cell['select']} "
              f"{times['select'] * 1e6:.0f} us | default {cell['default']} {times['default'] * 1e6:.0f} us | "
              f"tuned {cell['tuned']} {times['tuned'] * 1e6:.0f} us | tuned/default {cell['tuned_vs_default']:.2f}x "
              f"tuned/select {cell['tuned_vs_select']:.2f}x", flush=True)
    done = [c for c in cells if not c.get("incomplete")]
    if not done:
        print("no cell was measured within its budget: raise --budget", file=sys.stderr)
        return 1
    med_d = statistics.median(c["tuned_vs_default"] for c in done)
    med_s = statistics.median(c["tuned_vs_select"] for c in done)
    print(f"median cell ({len(done)}/{len(cells)} cells complete): tuned vs default schedules {med_d:.2f}x "
          f"(goal 1.3x), vs selection alone {med_s:.2f}x")

    # -- BERT-base e2e ---------------------------------------------------------------------------
    import sparsec
    from benchmarks.e2e_cpu import bert_base
    from sparsec.passes.autotune.driver import prepare_graph, tune_graph

    m, x = bert_base(args.layers, args.seq, 1)
    g = prepare_graph(m, x, pattern="unstructured", sparsity=0.9)
    # the budget is the whole run: keep ~45 s for compiling both models and timing them
    left = max(60.0, args.budget - (time.time() - t_start) - 45.0)
    t0 = time.time()
    sites = []
    results = tune_graph(g, tuner, pattern="unstructured", budget_s=left, site_results=sites)
    tune_s = time.time() - t0
    c_sel = sparsec.compile(m, x, pattern="unstructured", sparsity=0.9, tuning_db=False)
    c_tun = sparsec.compile(m, x, pattern="unstructured", sparsity=0.9, tuning_db=db.path)
    o_sel, o_tun = c_sel(*x)[0], c_tun(*x)[0]
    err = float((o_sel - o_tun).abs().max() / o_sel.abs().max())
    with torch.no_grad():
        t = interleaved({"select": lambda: c_sel(*x), "tuned": lambda: c_tun(*x)}, repeat=30)
    e2e = t["select"] / t["tuned"]
    prof = {"select": step_profile(c_sel, x), "tuned": step_profile(c_tun, x)}
    print(f"{'per step (ms)':<28}{'selection':>10}{'tuned':>10}")
    for op in prof["select"]:
        print(f"{op:<28}{prof['select'][op] * 1e3:10.3f}{prof['tuned'].get(op, 0.0) * 1e3:10.3f}")
    for op in prof["tuned"]:
        if op not in prof["select"]:
            print(f"{op:<28}{0.0:10.3f}{prof['tuned'][op] * 1e3:10.3f}")
    step_sums = {k: sum(v.values()) for k, v in prof.items()}
    print(f"{'sum of step medians':<28}{step_sums['select'] * 1e3:10.3f}{step_sums['tuned'] * 1e3:10.3f}"
          f"  ({step_sums['select'] / step_sums['tuned']:.2f}x; robust to preemption, unlike the e2e wall time "
          f"on a loaded machine)")
    from sparsec.commands.autotune import print_sites_table
    print_sites_table(sites)
    print(f"BERT-base x{args.layers} seq {args.seq} 90% unstructured: tuned {len(results)} layer groups in "
          f"{tune_s:.0f}s; selection alone {t['select'] * 1e3:.1f} ms, tuned {t['tuned'] * 1e3:.1f} ms "
          f"({e2e:.2f}x, goal 1.2x); outputs agree to {err:.1e}")
    print(f"formats: selection {sorted({r['format'] for r in c_sel.report})}, "
          f"tuned {sorted({r['format'] for r in c_tun.report})}")
    info["loadavg_after"] = os.getloadavg()
    print(f"load average after {' '.join(f'{v:.2f}' for v in info['loadavg_after'])}"
          + ("  (BUSY machine: see the warning above)" if busy else ""))
    out = {"machine": info, "config": vars(args), "cells": cells,
           "median_tuned_vs_default": med_d, "median_tuned_vs_select": med_s,
           "bert": {"layers": args.layers, "seq": args.seq, "tune_s": tune_s, "times_s": t, "speedup": e2e,
                    "max_rel_diff": err, "profile_s": prof, "step_sum_s": step_sums,
                    "step_sum_speedup": step_sums["select"] / step_sums["tuned"],
                    "sites_tuned": [{"function": r.site.doc, "calls": r.site.count, "space": r.space,
                                     "default_s": r.default_s, "tuned_s": r.best_s, "knobs": r.best_knobs}
                                    for r in sites],
                    "layers_tuned": [{"layer": r.layer.name, "weights": len(r.layer.weights), "trials": r.trials,
                                      "select": r.baseline.config.label if r.baseline else None,
                                      "tuned": r.best.config.label if r.best else None} for r in results]},
           "total_s": time.time() - t_start,
           "goals": {"median_tuned_vs_default": 1.3, "e2e": 1.2}}
    print("wrote", write_json(args.out, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
