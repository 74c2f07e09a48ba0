"""Headroom of the schedule knobs: for each cell of the CPU SpMM grid and each candidate
format, every configuration of the declared knob space vs that format's default knobs.

No search, no surrogate: the whole space of each (cell, format) is built, each kernel is
checked against a float64 reference (``W @ XT``) before it is timed, and all of them are
timed interleaved in this process (median of rounds; each sample >= 0.5 ms after a few ms
of untimed calls). Answers "what does the best schedule in the space give over the default
schedule of the same format?" and "which knob values win where?".

    .venv/bin/python benchmarks/autotune_headroom.py [--shapes 768x768,3072x768] [--tokens 1,16,128]
        [--sparsity 0.5,0.7,0.9,0.95] [--formats csr,bitmap] [--rounds 9] [--out autotune_headroom.json]
    .venv/bin/python benchmarks/autotune_headroom.py --parallel-sweep [--rounds 21] [--out parallel_sweep.json]

``--parallel-sweep``: the evidence behind the ``parallel`` knob's default
(``backends/kernels/parallelism.py``): for kernels of every CPU family over a range of
work (stored entries x tokens), the same kernel with ``parallel=True`` and ``False``,
both checked, timed interleaved round by round; per case the median of the per-round
ratios serial/parallel and its quartiles (the box is shared: the paired ratio cancels
most of the slow drifts that separate medians do not), plus what the rule picks.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import machine, write_json  # noqa: E402


def fmt_params(name: str):
    """'csr' | 'bitmap' | 'bitmap16x16' | 'bsr4x4' | 'dense' -> (format, params)."""
    if name.startswith("bsr"):
        r, c = name[3:].split("x")
        return "bsr", {"block": (int(r), int(c))}
    if name.startswith("bitmap"):
        t = name[6:] or "8x8"
        r, c = t.split("x")
        return "bitmap", {"tile": (int(r), int(c))}
    return name, {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="768x768,3072x768,768x3072")
    ap.add_argument("--tokens", default="1,16,128")
    ap.add_argument("--sparsity", default="0.5,0.7,0.9,0.95")
    ap.add_argument("--formats", default="csr,bitmap")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default="autotune_headroom.json")
    ap.add_argument("--parallel-sweep", action="store_true",
                    help="serial vs parallel of every family over a range of work (the parallel default's evidence)")
    ap.add_argument("--cases", default="", help="parallel sweep: only cases whose label contains one of these "
                    "|-separated strings")
    args = ap.parse_args(argv)
    if args.parallel_sweep:
        return parallel_sweep(args)

    from benchmarks.spmm_cpu import timer
    from sparsec.backends.kernels import build_matmul
    from sparsec.backends.target import host_target, num_threads
    from sparsec.passes.autotune.measure import check_output
    from sparsec.passes.autotune.space import FormatSpace, pack
    from sparsec.passes.prune import prune

    threads = num_threads()
    torch.set_num_threads(threads)
    target = host_target()
    info = machine(threads)
    info["loadavg_before"] = os.getloadavg()
    print(f"machine: {info['cpu']}, threads {threads}; loadavg {info['loadavg_before']}", flush=True)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    cells = []
    t_start = time.time()
    for ci, (o, k) in enumerate(shapes):
        w = torch.randn(o, k, generator=torch.Generator().manual_seed(ci))
        for sp in (float(s) for s in args.sparsity.split(",")):
            w2 = prune(w, "unstructured", sp).weight
            for t in (int(v) for v in args.tokens.split(",")):
                xt = torch.rand(k, t) + 0.5
                ref = (w2.double() @ xt.double())
                for fname in args.formats.split(","):
                    fmt, params = fmt_params(fname)
                    fsp = FormatSpace(w2, fmt, params, t, target)
                    fo = pack(w2, fmt, params)
                    bufs = [getattr(fo, b).contiguous() for b in fo.buffers]
                    fns, labels, wrong = {}, {}, []
                    default = fsp.default()
                    for cfg in fsp.all():
                        kern = build_matmul(fo, t, target=target, knobs=cfg.knobs_dict)
                        yt = torch.full((o, t), float("nan"))
                        kern.func(*bufs, xt, yt)
                        why = check_output(yt, ref, "float32")
                        if why:
                            wrong.append((cfg.label, why))
                            continue
                        key = "default" if cfg == default else cfg.label
                        labels[key] = {n: v for n, v in kern.knobs.items()}
                        fns[key] = (lambda f=kern.func, a=bufs + [xt, yt]: f(*a))
                    if "default" not in fns:
                        raise SystemExit(f"{fname} {o}x{k} T={t}: default schedule failed its check: {wrong}")
                    samplers = {n: timer(f) for n, f in fns.items()}
                    times = {n: [] for n in fns}
                    for _ in range(args.rounds):
                        for n, s in samplers.items():
                            times[n].append(s())
                    med = {n: statistics.median(v) for n, v in times.items()}
                    best = min(med, key=med.get)
                    cell = {"O": o, "K": k, "tokens": t, "sparsity": sp, "format": fname,
                            "space": fsp.size, "knob_choices": {n: [str(v) for v in vs] for n, vs in fsp.choices.items()},
                            "default_knobs": {n: str(v) for n, v in labels["default"].items()},
                            "best": best, "best_knobs": {n: str(v) for n, v in labels[best].items()},
                            "times_s": med, "wrong": wrong,
                            "best_vs_default": med["default"] / med[best]}
                    cells.append(cell)
                    print(f"{o:4d}x{k:<4d} T={t:<3d} {sp:.2f} {fname:<10} space {fsp.size:3d} default "
                          f"{med['default'] * 1e6:8.1f} us  best {med[best] * 1e6:8.1f} us  "
                          f"{cell['best_vs_default']:.2f}x  {best}  (load {os.getloadavg()[0]:.2f})", flush=True)
    info["loadavg_after"] = os.getloadavg()
    out = {"machine": info, "config": vars(args), "cells": cells, "total_s": time.time() - t_start}
    print("wrote", write_json(args.out, out))
    return 0


SWEEP_SHAPES = ((256, 256), (768, 768), (3072, 768), (768, 3072))


def sweep_cases():
    """(label, format name, params, O, K, sparsity, tokens): CSR densely over work, the other
    families at a few points each so the work metric can be compared across them."""
    out = []
    for o, k in SWEEP_SHAPES:
        for sp in (0.5, 0.7, 0.9, 0.95, 0.99):
            for t in (1, 4, 16, 64, 128):
                if (o, k) == (256, 256) and sp in (0.7, 0.95):
                    continue
                out.append(("csr", {}, o, k, sp, t))
    for o, k in SWEEP_SHAPES:
        for t in (1, 4, 16, 64, 128):
            out.append(("dense", {}, o, k, 0.0, t))
    for o, k in ((256, 256), (768, 768), (3072, 768)):
        for t in (1, 16, 128):
            out.append(("bsr", {"block": (4, 4)}, o, k, 0.9, t))
            out.append(("bitmap", {"tile": (8, 8)}, o, k, 0.9, t))
            out.append(("nm", {"n": 2, "m": 4}, o, k, 0.5, t))
            out.append(("groupquant", {"group": 32, "bits": 4}, o, k, 0.7, t))
    return [(f"{f}{'' if not p else '(' + ','.join(str(v) for v in p.values()) + ')'} {o}x{k} "
             f"{sp:.2f} T={t}", f, p, o, k, sp, t) for f, p, o, k, sp, t in out]


def parallel_sweep(args) -> int:
    from benchmarks.spmm_cpu import timer
    from sparsec.backends.kernels import build_matmul
    from sparsec.backends.kernels.parallelism import (
        PARALLEL_MIN_US, parallel_default, pool_threads, serial_us, stored_entries,
    )
    from sparsec.backends.target import host_target, num_threads
    from sparsec.passes.autotune.measure import check_output
    from sparsec.passes.prune import prune, prune_block, prune_nm
    from sparsec.passes.select import Choice, pack_choice

    threads = num_threads()
    torch.set_num_threads(threads)
    target = host_target()
    info = machine(threads)
    info["loadavg_before"] = os.getloadavg()
    info["tvm_pool_threads"] = pool_threads()
    print(f"machine: {info['cpu']}, threads {threads}, TVM pool threads {info['tvm_pool_threads']} "
          f"(TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}); loadavg {info['loadavg_before']}; "
          f"PARALLEL_MIN_US {PARALLEL_MIN_US:.0f}", flush=True)
    want = [c for c in args.cases.split("|") if c]
    rows, t_start = [], time.time()
    for label, f, params, o, k, sp, t in sweep_cases():
        if want and not any(w in label for w in want):
            continue
        g = torch.Generator().manual_seed(o * 7 + k)
        w = torch.randn(o, k, generator=g)
        if f == "nm":
            w2 = prune_nm(w, params["n"], params["m"]).weight
        elif f == "bsr":
            w2 = prune_block(w, sp, params["block"]).weight
        elif f == "dense":
            w2 = w
        else:
            w2 = prune(w, "unstructured", sp).weight
        if f == "groupquant":
            wq = prune_block(w, sp, (1, params["group"])).weight
            fo = pack_choice(wq, Choice("w", f, dict(params), 0.0, ""))
            w2 = fo.to_dense()
        else:
            fo = pack_choice(w2, Choice("w", f, dict(params), 0.0, ""))
        xt = torch.rand(k, t) + 0.5
        ref = w2.double() @ xt.double()
        bufs = [getattr(fo, b).contiguous() for b in fo.buffers]
        fns = {}
        for par in (True, False):
            kern = build_matmul(fo, t, target=target, knobs={"parallel": par})
            yt = torch.full((o, t), float("nan"))
            kern.func(*bufs, xt, yt)
            why = check_output(yt, ref, "float32")
            if why:
                raise SystemExit(f"{label} parallel={par}: wrong result: {why}")
            fns[par] = (lambda fn=kern.func, a=bufs + [xt, yt]: fn(*a))
        samplers = {p: timer(fn) for p, fn in fns.items()}
        ts = {True: [], False: []}
        for r in range(args.rounds):
            for p in ((True, False) if r % 2 == 0 else (False, True)):
                ts[p].append(samplers[p]())
        ratios = sorted(s / q for s, q in zip(ts[False], ts[True]))   # > 1: parallel faster
        qs = statistics.quantiles(ratios, n=4)
        work = stored_entries(fo) * t
        row = {"case": label, "format": f, "params": {n: list(v) if isinstance(v, tuple) else v
                                                         for n, v in params.items()},
               "O": o, "K": k, "sparsity": sp, "tokens": t, "stored": stored_entries(fo), "work": work,
               "parallel_s": statistics.median(ts[True]), "serial_s": statistics.median(ts[False]),
               "ser_over_par": statistics.median(ratios), "ratio_q1": qs[0], "ratio_q3": qs[2],
               "rule_parallel": parallel_default(f, stored_entries(fo), t, min(threads, pool_threads()), o, k),
               "rule_serial_us": serial_us(f, stored_entries(fo), t, o, k), "load": os.getloadavg()[0]}
        rows.append(row)
        print(f"{label:<34} work {work:>11d}  par {row['parallel_s'] * 1e6:9.1f} us  ser "
              f"{row['serial_s'] * 1e6:9.1f} us  ser/par {row['ser_over_par']:.2f} "
              f"[{qs[0]:.2f}-{qs[2]:.2f}]  rule {'par' if row['rule_parallel'] else 'ser'}  "
              f"(load {row['load']:.2f})", flush=True)
    info["loadavg_after"] = os.getloadavg()
    out = {"machine": info, "config": vars(args), "min_us": PARALLEL_MIN_US, "cases": rows,
           "total_s": time.time() - t_start}
    print("wrote", write_json(args.out, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
