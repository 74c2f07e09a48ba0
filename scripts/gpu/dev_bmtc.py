"""Focused GPU run for the ``bmtc`` kernel (issue #12): correctness of the bmtc check cases + timing of bmtc
variants vs cuBLAS and vs the ``tiled`` design's default knobs at decode token counts, in one process.

    python scripts/gpu/dev_bmtc.py build out/bmtc [SET]       # here: TVM + nvcc (no GPU)
    python scripts/gpu/dev_bmtc.py run out/bmtc OUT.json      # GPU machine: torch + TVM runtime bundle

SET: ``explore`` (variants at 70/90 %), ``full`` (default + best neighbours, 70/80/90 %).
Correctness: every bmtc case of ``cases.py`` plus every timed kernel at every sparsity, vs ``F.linear`` in fp32
on the GPU. Timing: cuBLAS (``F.linear`` fp16), the tiled kernel (default knobs) and every bmtc variant, each
captured as a CUDA graph of 20 calls, replayed round-robin ``ROUNDS`` times; medians.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [(11008, 4096), (4096, 11008), (9216, 36864)]
TOKENS = [1, 8, 16, 32]
SETS = {"explore": [0.7, 0.9], "full": [0.7, 0.8, 0.9]}


def variants(O, K, T, which="explore"):
    """(label, design, knobs) of the timed kernels of a cell."""
    from sparsec.backends.cuda.kernels.bmtc import KNOBS, resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    d = resolve(spec, {})
    ks = list(KNOBS["ksplit"])
    i = ks.index(d.ksplit)
    out = [("tiled", "tiled", {}), ("bmtc", "bmtc", {})]
    if which == "explore":
        out += [("bmtc_rt1sc64", "bmtc", {"rt": 1, "sc": 64}), ("bmtc_w4", "bmtc", {"warps": 4}),
                ("bmtc_rt4w4", "bmtc", {"rt": 4, "sc": 32, "warps": 4})]
        if i + 1 < len(ks):
            out.append(("bmtc_ks_hi", "bmtc", {"ksplit": ks[i + 1]}))
        if i > 0:
            out.append(("bmtc_ks_lo", "bmtc", {"ksplit": ks[i - 1]}))
    else:
        out += [("bmtc_w8nb2", "bmtc", {"warps": 8, "nbuf": 2}), ("bmtc_rt1sc64", "bmtc", {"rt": 1, "sc": 64}),
                ("bmtc_rt4w2", "bmtc", {"rt": 4, "sc": 32, "warps": 2}),
                ("bmtc_sc64w2", "bmtc", {"sc": 64, "warps": 2}), ("bmtc_w2nb6", "bmtc", {"warps": 2, "nbuf": 6}),
                ("bmtc_rt1w8", "bmtc", {"rt": 1, "sc": 32, "warps": 8})]
        if i + 1 < len(ks):
            out.append(("bmtc_ks_hi", "bmtc", {"ksplit": ks[i + 1]}))
    res = []
    for lab, des, kn in out:
        if des == "bmtc":
            try:
                resolve(spec, kn)
            except KernelError:
                continue
        res.append((lab, des, kn))
    return res


def build(outdir, which="explore"):
    import build_kernels as B
    import cases as C

    os.makedirs(outdir, exist_ok=True)
    cs = C.bmtc_check_cases()
    bench = []
    for (O, K) in SHAPES:
        for T in TOKENS:
            for lab, des, kn in variants(O, K, T, which):
                bench.append(C.case(f"d_{lab}_{O}x{K}x{T}", "bitmap", {"tile": [8, 32]}, O, K, T, knobs=kn,
                                    design=des))
                bench[-1]["label"] = lab
    B.build(cs + bench, os.path.join(outdir, "dev.so"), "sm_90")
    json.dump({"check": cs, "bench": bench, "sparsity": SETS[which]}, open(os.path.join(outdir, "cases.json"), "w"),
              indent=1)


def layout(design, w, kn):
    from sparsec.backends.cuda.kernels import bmtc_layout as BL
    from sparsec.backends.cuda.kernels import tiled_layout as TL

    if design == "tiled":
        lay = TL.build(w, kn["rt"], kn["sc"])
        return [lay[n] for n in TL.BUFFERS], TL.nbytes(lay)
    lay = BL.build(w, kn["rt"], kn["sc"])
    return [lay[n] for n in BL.BUFFERS], BL.nbytes(lay)


def run(kdir, outp):
    import env
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.runtime import load_library

    cases = json.load(open(os.path.join(kdir, "cases.json")))
    lib = load_library(os.path.join(kdir, "dev.so"))
    dev = torch.device("cuda")
    tol = {"float16": 1e-2, "bfloat16": 3e-2}
    out = {"machine": env.machine_info(), "check": [], "cells": []}
    t0 = time.time()
    for i, c in enumerate(cases["check"]):
        w = env.make_weight(c, seed=i)
        fmt = env.pack(c, w)
        k = c["resolved_knobs"]
        bufs, _ = layout("bmtc", fmt, k)
        dt = getattr(torch, c["dtype"])
        x, b, ref = env.case_io(c, fmt, i)
        y = torch.full((c["T"], c["O"]), float("nan"), dtype=dt, device=dev)
        lib[c["name"]](*[t.to(dev) for t in bufs], x.to(dev), *([b.to(dev)] if b is not None else []), y)
        torch.cuda.synchronize()
        err = float((y.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
        ok = err <= tol[c["dtype"]]
        out["check"].append({"name": c["name"], "knobs": k, "rel_err": err, "ok": ok})
        print(f"[{'OK ' if ok else 'BAD'}] {c['name']:<48} {err:.2e}", flush=True)
    by_cell = {}
    for c in cases["bench"]:
        by_cell.setdefault((c["O"], c["K"], c["T"]), []).append(c)
    for (O, K) in SHAPES:
        wf = torch.randn(O, K, device=dev, dtype=torch.float16) * (1.0 / K ** 0.5)
        for s in cases["sparsity"]:
            w = wf * (torch.rand(O, K, device=dev) >= s)
            lays = {}
            for T in TOKENS:
                x = torch.randn(T, K, device=dev, dtype=torch.float16)
                ref = F.linear(x.float(), w.float())
                y = torch.empty(T, O, device=dev, dtype=torch.float16)
                fns = {"cublas": (lambda x=x: F.linear(x, w))}
                cell = {"O": O, "K": K, "T": T, "sparsity": s, "err": {}, "knobs": {}, "bytes": {}}
                for c in by_cell.get((O, K, T), []):
                    kn = c["resolved_knobs"]
                    key = (c["design"], kn["rt"], kn["sc"])
                    if key not in lays:
                        lays[key] = layout(c["design"], w, kn)
                    args, nb = lays[key]
                    f = lib[c["name"]]
                    y.fill_(float("nan"))
                    f(*args, x, y)
                    torch.cuda.synchronize()
                    cell["err"][c["label"]] = float((y.float() - ref).abs().max() / ref.abs().max())
                    cell["knobs"][c["label"]] = kn
                    cell["bytes"][c["label"]] = nb
                    fns[c["label"]] = (lambda f=f, args=args, x=x, y=y: f(*args, x, y))
                cell["us"] = interleaved(fns)
                out["cells"].append(cell)
                u = cell["us"]
                print(f"{O}x{K} T={T:<3} s={s} cuBLAS {u['cublas']:.1f}us " + " ".join(
                    f"{k} {v:.1f}us x{u['cublas'] / v:.2f}{'' if cell['err'][k] <= 1e-2 else ' BAD'}"
                    for k, v in u.items() if k != "cublas"), flush=True)
                json.dump(out, open(outp, "w"), indent=1)
            del lays
        del wf
        torch.cuda.empty_cache()
    out["seconds"] = time.time() - t0
    json.dump(out, open(outp, "w"), indent=1)
    bad = [c["name"] for c in out["check"] if not c["ok"]]
    badb = [(c["O"], c["K"], c["T"], c["sparsity"], k) for c in out["cells"] for k, e in c["err"].items() if e > 1e-2]
    print(f"check: {len(out['check']) - len(bad)}/{len(out['check'])} ok {bad}; bench errors > 1e-2: {badb}")


def interleaved(fns: dict, iters: int = 20, rounds: int = 7) -> dict:
    """Median µs per call of each function: CUDA graphs of ``iters`` calls, replayed round-robin."""
    import dev_tiled

    dev_tiled.ROUNDS = rounds
    return dev_tiled.interleaved(fns, iters)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], *sys.argv[3:4])
    else:
        run(sys.argv[2], sys.argv[3])
