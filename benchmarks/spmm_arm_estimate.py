"""Estimated aarch64 SpMM cycles (llvm-mca on the generated work loop), sparse vs dense.

``Y = X @ W^T`` for BERT-base weight shapes (O x K = 768x768, 3072x768,
768x3072), tokens {1, 16, 128}, sparsity {50, 70, 90, 95}%, every format
whose pattern fits the sparsity, on a Neoverse-N1 and a Cortex-A76 (one
core). The numbers are the static estimate of ``sparsec.backends.arm.mca``
(steady-state work-loop cycles x trips; no cache misses, no tails), not
measurements: no ARM hardware here. Writes
``benchmarks/results/spmm_arm_estimate.json`` (+ ``.png``) with the speedups
over dense, the goals (90% unstructured >= 3x, 2:4 >= 1.5x at 128 tokens) and
per-cell format rankings (what format selection for --target arm uses), and
``--qemu`` checks the ranking against guest instruction counts from qemu on
small cases.

    .venv/bin/python benchmarks/spmm_arm_estimate.py [--quick] [--qemu]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from benchmarks.spmm_cpu import NM_FOR, formats_for, make_weight, pack
from sparsec.backends.arm.mca import estimate
from sparsec.ir.formats import Dense

CPUS = ("neoverse-n1", "cortex-a76")
SHAPES = [(768, 768), (3072, 768), (768, 3072)]
TOKENS = [1, 16, 128]
SPARSITY = [0.5, 0.7, 0.9, 0.95]
NM_FOR = {**NM_FOR, 0.5: [(2, 4)]}
OUT = os.path.join(os.path.dirname(__file__), "results", "spmm_arm_estimate")


def grid(cpus, shapes, tokens, sparsities, log=print):
    rows = []
    for (o, k) in shapes:
        dense_w = torch.randn(o, k, generator=torch.Generator().manual_seed(0))
        weights = {}
        for s in sparsities:
            for label, pattern, spec in formats_for(s):
                weights[(s, label)] = pack(make_weight(o, k, pattern, s), spec)
        for cpu in cpus:
            for t in tokens:
                d = estimate(Dense.from_dense(dense_w), t, cpu)
                for s in sparsities:
                    cell = []
                    for (s2, label), w in weights.items():
                        if s2 != s:
                            continue
                        e = estimate(w, t, cpu)
                        cell.append({"format": label, "cycles": e.cycles, "speedup": d.cycles / e.cycles,
                                     "density": float(w.density), "macs_per_iter": e.macs_per_iter,
                                     "cycles_per_iter": e.cycles_per_iter, "knobs": e.knobs})
                    cell.sort(key=lambda r: r["cycles"])
                    rows.append({"cpu": cpu, "O": o, "K": k, "tokens": t, "sparsity": s,
                                 "dense_cycles": d.cycles, "dense_cycles_per_iter": d.cycles_per_iter,
                                 "formats": cell, "ranking": [r["format"] for r in cell]})
                    log(f"{cpu:<12} {o:>4}x{k:<4} T={t:<3} s={s:.2f}  dense {d.cycles:>12,.0f}  "
                        + "  ".join(f"{r['format']} {r['speedup']:.2f}x" for r in cell))
    return rows


def goals(rows):
    """90% unstructured (best of csr/bitmap) >= 3x dense, 2:4 >= 1.5x dense: per cpu, shape, at T=128."""
    out = []
    for r in rows:
        if r["tokens"] != 128:
            continue
        sp = {f["format"]: f["speedup"] for f in r["formats"]}
        if r["sparsity"] == 0.9:
            best = max(sp.get("csr", 0), sp.get("bitmap8x8", 0))
            out.append({"goal": "90% unstructured >= 3x", "cpu": r["cpu"], "shape": [r["O"], r["K"]],
                        "speedup": best, "met": best >= 3.0})
        if r["sparsity"] == 0.5 and "nm2:4" in sp:
            out.append({"goal": "2:4 >= 1.5x", "cpu": r["cpu"], "shape": [r["O"], r["K"]],
                        "speedup": sp["nm2:4"], "met": sp["nm2:4"] >= 1.5})
    return out


def qemu_check(cpu="neoverse-n1", log=print):
    """Small cases: estimated cycles vs guest instructions counted under qemu (kernel only); Kendall tau
    of the two orders over the formats of each case."""
    from sparsec.backends.arm.qemu_count import kernel_instructions

    cases = []
    for (o, k, t, s) in [(64, 64, 16, 0.9), (96, 64, 32, 0.5), (64, 128, 16, 0.7)]:
        items = []
        for label, pattern, spec in formats_for(s) + [("dense", "dense", None)]:
            w = (Dense.from_dense(torch.randn(o, k, generator=torch.Generator().manual_seed(0)))
                 if spec is None else pack(make_weight(o, k, pattern, s), spec))
            e = estimate(w, t, cpu)
            n = kernel_instructions(w, t, cpu)
            items.append({"format": label, "est_cycles": e.cycles, "qemu_insns": n})
            log(f"qemu {o}x{k} T={t} s={s} {label:<10} est {e.cycles:>10,.0f} cycles  qemu {n:>10,} insns")
        a = [i["est_cycles"] for i in items]
        b = [i["qemu_insns"] for i in items]
        conc = disc = 0
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                x = (a[i] - a[j]) * (b[i] - b[j])
                conc += x > 0
                disc += x < 0
        tau = (conc - disc) / max(conc + disc, 1)
        cases.append({"O": o, "K": k, "tokens": t, "sparsity": s, "items": items, "kendall_tau": tau})
        log(f"qemu {o}x{k} T={t} s={s}: Kendall tau(estimate, qemu instructions) = {tau:.2f}")
    return cases


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CPUS), figsize=(6 * len(CPUS), 4), sharey=True)
    for ax, cpu in zip(axes, CPUS):
        sel = [r for r in rows if r["cpu"] == cpu and r["tokens"] == 128 and (r["O"], r["K"]) == (768, 3072)]
        fmts = sorted({f["format"] for r in sel for f in r["formats"]})
        for f in fmts:
            xs = [r["sparsity"] for r in sel if any(g["format"] == f for g in r["formats"])]
            ys = [next(g["speedup"] for g in r["formats"] if g["format"] == f) for r in sel
                  if any(g["format"] == f for g in r["formats"])]
            ax.plot(xs, ys, "o-", label=f)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(f"{cpu}: 768x3072, T=128 (llvm-mca estimate)")
        ax.set_xlabel("sparsity")
        ax.set_yscale("log")
    axes[0].set_ylabel("estimated speedup over dense")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one shape, T=128 only")
    ap.add_argument("--qemu", action="store_true", help="check rankings against qemu instruction counts")
    args = ap.parse_args(argv)
    t0 = time.time()
    shapes, tokens = (SHAPES[:1], [128]) if args.quick else (SHAPES, TOKENS)
    print(f"llvm-mca static estimate, one core; cpus {', '.join(CPUS)}; shapes {shapes}; tokens {tokens}; "
          f"sparsity {SPARSITY}")
    rows = grid(CPUS, shapes, tokens, SPARSITY)
    g = goals(rows)
    print("\ngoals (T=128):")
    for r in g:
        print(f"  {r['goal']:<24} {r['cpu']:<12} {r['shape'][0]}x{r['shape'][1]:<5} {r['speedup']:.2f}x  "
              f"{'met' if r['met'] else 'NOT met'}")
    result = {"what": "estimated cycles (llvm-mca-19 work loop x trips), one aarch64 core, fp32",
              "cpus": CPUS, "shapes": shapes, "tokens": tokens, "sparsity": SPARSITY, "rows": rows, "goals": g}
    if args.qemu:
        result["qemu_check"] = qemu_check()
    result["elapsed_s"] = time.time() - t0
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, OUT + ".json")
    if not args.quick:
        plot(rows, OUT + ".png")
    print(f"wrote {OUT}.json ({result['elapsed_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
