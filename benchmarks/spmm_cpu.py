"""SpMM on the CPU: sparsec's TVM kernel families vs torch dense, torch.sparse and scipy.

``Y = X @ W^T`` for BERT-base weight shapes (O x K = 768x768, 3072x768,
768x3072), tokens {1, 16, 128}, sparsity {50, 70, 90, 95}% and every format
whose pattern fits the sparsity. All methods of one cell are timed in the same
run, interleaved (one sample of each method per round), and the median of the
rounds is kept. sparsec kernels are timed in their own layout (``XT[K, T]`` in,
``YT[O, T]`` out, what a chain of layers passes on); the cost of the two
transposes a lone layer would add is measured too and reported beside
(``e2e`` columns in the JSON). torch.sparse and scipy compute ``W @ XT``
(the same layout); torch dense computes ``F.linear(X, W)``.

    python benchmarks/spmm_cpu.py [--quick] [--rounds N] [--out benchmarks/results]
        [--shapes 3072x768 --tokens 128 --sparsity 0.95 --formats csr --tag cells]

Threads: ``TVM_NUM_THREADS`` (default: all usable CPUs) and
``torch.set_num_threads`` get the same number; scipy is single-threaded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from sparsec.backends.kernels import build_matmul
from sparsec.backends.target import cpu_model, host_target, num_threads
from sparsec.ir.formats import BSR, CSR, NM, Bitmap, GroupQuant
from sparsec.passes.prune import prune

SHAPES = [(768, 768), (3072, 768), (768, 3072)]
TOKENS = [1, 16, 128]
SPARSITY = [0.5, 0.7, 0.9, 0.95]
NM_FOR = {0.5: [(2, 4)], 0.7: [(3, 10)], 0.75: [(1, 4), (2, 8)], 0.9: [(1, 10)], 0.95: [(1, 20)]}
BASELINES = ("torch_dense", "torch_csr", "torch_bsr", "scipy_csr")


def formats_for(sparsity: float) -> list[tuple[str, str, dict]]:
    """(label, prune pattern, pack spec) of every format evaluated at this sparsity."""
    out = [("csr", "unstructured", {"cls": CSR}),
           ("bitmap8x8", "unstructured", {"cls": Bitmap, "tile": (8, 8)}),
           ("bsr4x4", "block:4x4", {"cls": BSR, "block": (4, 4)}),
           ("bsr8x1", "block:8x1", {"cls": BSR, "block": (8, 1)}),
           ("gq16x4b", "group:16", {"cls": GroupQuant, "group": 16, "bits": 4})]
    for n, m in NM_FOR.get(sparsity, []):
        out.append((f"nm{n}:{m}", f"{n}:{m}", {"cls": NM, "n": n, "m": m}))
    return out


def make_weight(o, k, pattern, sparsity, seed=0):
    w = torch.randn(o, k, generator=torch.Generator().manual_seed(seed))
    if ":" in pattern and not pattern.startswith(("block", "group")):
        pruned, _ = prune(w, pattern)
    else:
        pruned, _ = prune(w, pattern, sparsity)
    return pruned


def pack(w, spec):
    params = {k: v for k, v in spec.items() if k != "cls"}
    return spec["cls"].from_dense(w, **params)


# Before each sample, a method runs untimed for WARM_S so that its thread pool
# is awake and the other runtime's pool has stopped spinning (TVM's pool and
# torch's OpenMP workers busy-wait a while after a parallel region, then
# sleep; a sleeping worker on a loaded 2-core box can wait a whole scheduler
# slice, ~16 ms, to run again).
WARM_S = 0.003


def timer(fn, min_time=5e-4):
    """A sampler: calls ``fn`` enough times per sample that one sample lasts >= min_time."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(min_time / one))

    def sample():
        t = time.perf_counter()
        while time.perf_counter() - t < WARM_S:
            fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps
    return sample


def measure(methods: dict, rounds: int) -> dict[str, float]:
    samplers = {name: timer(fn) for name, fn in methods.items()}
    times = {name: [] for name in methods}
    for _ in range(rounds):
        for name, s in samplers.items():
            times[name].append(s())
    return {name: statistics.median(v) for name, v in times.items()}


def baselines(w_dense, x, xt):
    meth = {"torch_dense": lambda: F.linear(x, w_dense)}
    wc = w_dense.to_sparse_csr()
    meth["torch_csr"] = lambda: torch.mm(wc, xt)
    try:
        wb = w_dense.to_sparse_bsr((4, 4))
        torch.mm(wb, xt)
        meth["torch_bsr"] = lambda: torch.mm(wb, xt)
    except (RuntimeError, NotImplementedError):
        pass
    ws = sp.csr_matrix(w_dense.numpy())
    xn = xt.numpy()
    meth["scipy_csr"] = lambda: ws @ xn
    return meth


def ours(fmt, tokens, xt, target):
    import tvm

    kern = build_matmul(fmt, tokens, target=target)
    dev = tvm.cpu(0)
    args = [tvm.runtime.from_dlpack(getattr(fmt, b).contiguous()) for b in fmt.buffers]
    args.append(tvm.runtime.from_dlpack(xt))
    yt = torch.empty(fmt.rows, tokens)
    args.append(tvm.runtime.from_dlpack(yt))
    func = kern.func
    return kern, (lambda: func(*args)), yt


def run(args):
    nthreads = num_threads()
    os.environ.setdefault("TVM_NUM_THREADS", str(nthreads))
    torch.set_num_threads(nthreads)
    target = host_target(nthreads)
    shapes = [(3072, 768)] if args.quick else SHAPES
    tokens_list = [1, 128] if args.quick else TOKENS
    sparsities = [0.5, 0.9] if args.quick else SPARSITY
    if args.shapes:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    if args.tokens:
        tokens_list = [int(v) for v in args.tokens.split(",")]
    if args.sparsity:
        sparsities = [float(v) for v in args.sparsity.split(",")]
    machine = {"loadavg_before": os.getloadavg(), "cpu": cpu_model(), "mcpu": str(target.attrs["mcpu"]), "cores_usable": len(os.sched_getaffinity(0)),
               "tvm_threads": int(os.environ["TVM_NUM_THREADS"]), "torch_threads": torch.get_num_threads(),
               "scipy_threads": 1, "python": platform.python_version(), "torch": torch.__version__}
    import tvm
    machine["tvm"] = tvm.__version__
    print(f"machine: {machine['cpu']} (llvm mcpu {machine['mcpu']}), {machine['cores_usable']} usable cores; "
          f"threads: TVM {machine['tvm_threads']}, torch {machine['torch_threads']}, scipy 1")
    print(f"torch {torch.__version__}, tvm {tvm.__version__}; {args.rounds} interleaved rounds, medians")
    cells = []
    for (o, k) in shapes:
        for tokens in tokens_list:
            g = torch.Generator().manual_seed(1)
            x = torch.randn(tokens, k, generator=g)
            xt = x.t().contiguous()
            # the transposes a lone layer would add around a feature-major kernel
            y0 = torch.randn(o, tokens)
            tr = measure({"transposes": lambda: (x.t().contiguous(), y0.t().contiguous())}, args.rounds)
            for s in sparsities:
                methods, kernels, refs = {}, {}, {}
                w_unstructured = make_weight(o, k, "unstructured", s)
                methods.update(baselines(w_unstructured, x, xt))
                for label, pattern, spec in formats_for(s):
                    if args.formats and label not in args.formats.split(","):
                        continue
                    w = w_unstructured if pattern == "unstructured" else make_weight(o, k, pattern, s)
                    fmt = pack(w, spec)
                    kern, fn, yt = ours(fmt, tokens, xt, target)
                    fn()
                    ref = F.linear(x, fmt.to_dense()).t()
                    err = ((yt - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
                    if err > 1e-4:
                        raise SystemExit(f"{label} {o}x{k} T={tokens} s={s}: result off by {err:.3g} (relative)")
                    methods[label] = fn
                    kernels[label] = {"density": fmt.density, "knobs": kern.knobs, "nbytes": fmt.nbytes}
                t = measure(methods, args.rounds)
                dense = t["torch_dense"]
                best_base = min(t[b] for b in ("torch_csr", "torch_bsr", "scipy_csr") if b in t)
                cell = {"O": o, "K": k, "tokens": tokens, "sparsity": s, "times_s": t,
                        "transpose_s": tr["transposes"], "formats": kernels,
                        "speedup_vs_dense": {m: dense / v for m, v in t.items()},
                        "speedup_vs_best_sparse_baseline": {m: best_base / t[m] for m in kernels},
                        "e2e_speedup_vs_dense": {m: dense / (t[m] + tr["transposes"]) for m in kernels}}
                cells.append(cell)
                best = max(kernels, key=lambda m: cell["speedup_vs_dense"][m])
                print(f"{o:4d}x{k:<4d} T={tokens:<3d} {int(s * 100):2d}%  dense {dense * 1e3:7.3f} ms | "
                      + " ".join(f"{m} {cell['speedup_vs_dense'][m]:5.2f}x" for m in kernels)
                      + " | torch_csr {:.2f}x torch_bsr {} scipy {:.2f}x | best {} {:.2f}x dense, {:.2f}x sparse-base"
                      .format(cell["speedup_vs_dense"]["torch_csr"],
                              f"{cell['speedup_vs_dense']['torch_bsr']:.2f}x" if "torch_bsr" in t else "n/a",
                              cell["speedup_vs_dense"]["scipy_csr"], best, cell["speedup_vs_dense"][best],
                              cell["speedup_vs_best_sparse_baseline"][best]), flush=True)
    goals = check_goals(cells)
    for line in goals:
        print(line)
    machine["loadavg_after"] = os.getloadavg()
    print(f"load average before {machine['loadavg_before']}, after {machine['loadavg_after']} "
          f"(other processes share these cores: ratios are noisy)")
    result = {"machine": machine, "rounds": args.rounds, "quick": args.quick, "cells": cells, "goals": goals}
    write(args.out, result, args.tag)


def check_goals(cells) -> list[str]:
    lines = []
    cells = [c for c in cells if c["formats"]]     # a --formats filter may leave a cell with none

    def sp(cell, m):
        return cell["speedup_vs_dense"].get(m, 0.0)

    def best(cell, among=None):
        ms = [m for m in cell["formats"] if among is None or m in among]
        return max(ms, key=lambda m: sp(cell, m)) if ms else None

    def goal(name, rows):
        ok = all(r[0] for r in rows)
        misses = [r[1] for r in rows if not r[0]]
        lines.append(f"[{'MET ' if ok else 'MISS'}] {name}" + ("" if ok else ": " + "; ".join(misses)))

    def tag(c):
        return f"{c['O']}x{c['K']} T={c['tokens']} {int(c['sparsity'] * 100)}%"

    goal("best sparse format >= 1.0x dense in every cell",
         [(sp(c, best(c)) >= 1.0, f"{tag(c)} {best(c)} {sp(c, best(c)):.2f}x") for c in cells])
    unstructured = ("csr", "bitmap8x8")
    goal("90% unstructured >= 6x dense at T=128",
         [(sp(c, best(c, unstructured)) >= 6, f"{tag(c)} {sp(c, best(c, unstructured)):.2f}x")
          for c in cells if c["tokens"] == 128 and c["sparsity"] == 0.9])
    goal("95% unstructured >= 10x dense at T=128",
         [(sp(c, best(c, unstructured)) >= 10, f"{tag(c)} {sp(c, best(c, unstructured)):.2f}x")
          for c in cells if c["tokens"] == 128 and c["sparsity"] == 0.95])
    goal("BSR 4x4 at 90% >= 7x dense (T=128)",
         [(sp(c, "bsr4x4") >= 7, f"{tag(c)} {sp(c, 'bsr4x4'):.2f}x")
          for c in cells if c["tokens"] == 128 and c["sparsity"] == 0.9])
    goal("2:4 >= 1.7x dense (T>1)",
         [(sp(c, "nm2:4") >= 1.7, f"{tag(c)} {sp(c, 'nm2:4'):.2f}x")
          for c in cells if "nm2:4" in c["formats"] and c["tokens"] > 1])
    goal("T=1 at 90%: best format >= 4x dense",
         [(sp(c, best(c)) >= 4, f"{tag(c)} {best(c)} {sp(c, best(c)):.2f}x")
          for c in cells if c["tokens"] == 1 and c["sparsity"] == 0.9])
    goal("best format >= 2x the best of torch.sparse/scipy everywhere",
         [(c["speedup_vs_best_sparse_baseline"][best(c)] >= 2,
           f"{tag(c)} {c['speedup_vs_best_sparse_baseline'][best(c)]:.2f}x") for c in cells])
    return lines


def write(out_dir, result, tag=""):
    os.makedirs(out_dir, exist_ok=True)
    stem = "spmm_cpu" + (f"_{tag}" if tag else "")
    path = os.path.join(out_dir, stem + ".json")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".spmm_cpu.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)
    print(f"wrote {path}")
    try:
        plot(result, os.path.join(out_dir, stem + ".png"))
    except ImportError as exc:
        print(f"no plot: {exc}", file=sys.stderr)


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["cells"]
    tokens = sorted({c["tokens"] for c in cells})
    fig, axes = plt.subplots(1, len(tokens), figsize=(5 * len(tokens), 4), squeeze=False)
    for ax, t in zip(axes[0], tokens):
        sub = [c for c in cells if c["tokens"] == t]
        methods = sorted({m for c in sub for m in c["speedup_vs_dense"] if m != "torch_dense"})
        for m in methods:
            pts = {}
            for c in sub:
                if m in c["speedup_vs_dense"]:
                    pts.setdefault(c["sparsity"], []).append(c["speedup_vs_dense"][m])
            xs = sorted(pts)
            ys = [float(np.exp(np.mean(np.log(pts[x])))) for x in xs]   # geomean over the shapes
            style = "--" if m in BASELINES else "-"
            ax.plot([100 * x for x in xs], ys, style, marker="o", label=m)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"T = {t} tokens (geomean over shapes)")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("speedup vs torch dense")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left")
    m = result["machine"]
    fig.suptitle(f"sparsec SpMM, {m['cpu']}, {m['tvm_threads']} threads (torch {m['torch_threads']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3072x768, T in {1, 128}, sparsity {50, 90}%%")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds per cell (median kept)")
    ap.add_argument("--shapes", default="", help="cell filter: OxK list, e.g. 3072x768,768x768")
    ap.add_argument("--tokens", default="", help="cell filter: token counts, e.g. 1,128")
    ap.add_argument("--sparsity", default="", help="cell filter: sparsities, e.g. 0.5,0.95")
    ap.add_argument("--formats", default="", help="only these sparsec formats, e.g. csr,nm2:4 (baselines always run)")
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. t1 for a 1-thread run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
