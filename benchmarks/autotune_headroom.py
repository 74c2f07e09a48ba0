"""Headroom of the schedule knobs: for each cell of the CPU SpMM grid and each candidate
format, every configuration of the declared knob space vs that format's default knobs.

No search, no surrogate: the whole space of each (cell, format) is built, each kernel is
checked against a float64 reference (``W @ XT``) before it is timed, and all of them are
timed interleaved in this process (median of rounds; each sample >= 0.5 ms after a few ms
of untimed calls). Answers "what does the best schedule in the space give over the default
schedule of the same format?" and "which knob values win where?".

    .venv/bin/python benchmarks/autotune_headroom.py [--shapes 768x768,3072x768] [--tokens 1,16,128]
        [--sparsity 0.5,0.7,0.9,0.95] [--formats csr,bitmap] [--rounds 9] [--out autotune_headroom.json]
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
    args = ap.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
