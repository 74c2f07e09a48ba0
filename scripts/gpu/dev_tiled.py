"""Focused GPU run for the ``tiled`` kernel (issue #12): correctness of the tiled check cases + timing of
kernel variants vs cuBLAS at decode token counts, in one process.

    python scripts/gpu/dev_tiled.py build out/dev_tiled [sync|pipe|bank|clear]   # here: TVM + nvcc (no GPU)
    python scripts/gpu/dev_tiled.py run out/dev_tiled OUT.json     # GPU machine: torch + TVM runtime bundle

Correctness: every tiled case of ``cases.py`` plus every timed kernel at every sparsity, vs
``F.linear`` in fp32 on the GPU (torch's own dense weight; independent of sparsec's lowering).
Timing: per cell, cuBLAS (``F.linear`` fp16) and every variant captured as CUDA graphs of 20 calls,
replayed round-robin (interleaved) ``ROUNDS`` times; medians.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TL_DEFAULT_ORDER = "bank"     # tiled_layout.build's default (kept here: this module imports no torch at the top)
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864)]
TOKENS = [1, 8, 16, 32]
SPARSITY = [0.7, 0.8, 0.9]
ROUNDS = 9


def variants(O, K, T, which="sync"):
    """(label, knobs). ``sync``: the previous kernel (block barriers per stage) and the warp-synchronised one
    with the default split and splits two steps down/up; ``pipe``: block, warp, and warp with the compressed
    stream prefetched one stage ahead at the stage's start (pipe=2) or two stages ahead (pipe=3); ``bank``: the
    warp kernel (default knobs) on the previous layout order (``tiled_layout.build(..., order="rows")``, label
    ``warp``) and on the default ``order="bank"`` (label ``warp_bank``: the same kernel, the stage entries
    permuted against shared-memory bank conflicts). Other sets time the default layout order. ``clear``: warp
    (stage buffer zeroed per stage) vs ``clear="unscatter"`` (zeroed once, then zeros written back to the slots
    each stage filled), at the default split and the split one step up."""
    from sparsec.backends.cuda.kernels.tiled import KNOBS, resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    d = resolve(spec, {"sync": "warp"})
    ks = list(KNOBS["ksplit"])
    i = ks.index(d.ksplit)
    out = [("block", {"sync": "block"}), ("warp", {"sync": "warp"})]
    if which == "bank":
        return [("warp", {"sync": "warp"}), ("warp_bank", {"sync": "warp"})]
    if which == "clear":
        out = [("warp", {}), ("unsc", {"clear": "unscatter"})]
        if i + 1 < len(ks):
            out.append(("unsc_ks_hi", {"clear": "unscatter", "ksplit": ks[i + 1]}))
    elif which == "pipe":
        out += [("warp_pipe2", {"sync": "warp", "pipe": 2}), ("warp_pipe3", {"sync": "warp", "pipe": 3})]
    elif i > 0:
        out.append(("warp_ks_lo", {"sync": "warp", "ksplit": ks[max(0, i - 2)]}))
    if which == "sync" and i + 1 < len(ks):
        out.append(("warp_ks_hi", {"sync": "warp", "ksplit": ks[min(len(ks) - 1, i + 2)]}))
    res = []
    for lab, kn in out:
        try:
            resolve(spec, kn)
            res.append((lab, kn))
        except KernelError:
            pass
    return res


def build(outdir, which="sync"):
    import build_kernels as B
    import cases as C

    os.makedirs(outdir, exist_ok=True)
    cs = C.tiled_check_cases()
    if which == "pipe":                       # every check case again with pipe=3 where it sets no pipe
        cs += [dict(c, name=c["name"] + "_p3", knobs=dict(c["knobs"], pipe=3)) for c in C.tiled_check_cases()
               if "pipe" not in c["knobs"]]
    if which == "clear":                      # every pipe=1 check case again with clear="unscatter"
        cs += [dict(c, name=c["name"] + "_unsc", knobs=dict(c["knobs"], clear="unscatter"))
               for c in C.tiled_check_cases() if c["knobs"].get("pipe", 1) == 1]
        cs += [dict(c, name=c["name"] + "_unsc_block", knobs=dict(c["knobs"], clear="unscatter", sync="block"))
               for c in C.tiled_check_cases()[:6] if c["knobs"].get("pipe", 1) == 1]
    if which == "bank":                       # every check case again on the previous (row-major) layout order
        cs += [dict(c, name=c["name"] + "_rows", order="rows") for c in C.tiled_check_cases()]
    bench = []
    for (O, K) in SHAPES:
        for T in TOKENS:
            for lab, kn in variants(O, K, T, which):
                bench.append(C.case(f"d_{lab}_{O}x{K}x{T}", "bitmap", {"tile": [8, 32]}, O, K, T, knobs=kn,
                                    design="tiled"))
                bench[-1]["label"] = lab
                if which == "bank":
                    bench[-1]["order"] = "bank" if lab.endswith("_bank") else "rows"
    B.build(cs + bench, os.path.join(outdir, "dev.so"), "sm_90")
    json.dump({"check": cs, "bench": bench}, open(os.path.join(outdir, "cases.json"), "w"), indent=1)


def run(kdir, outp):
    import env
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.kernels import tiled_layout as TL
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
        lay = TL.build(fmt, k["rt"], k["sc"], order=c.get("order", TL_DEFAULT_ORDER))
        dt = getattr(torch, c["dtype"])
        x, b, ref = env.case_io(c, fmt, i)
        y = torch.full((c["T"], c["O"]), float("nan"), dtype=dt, device=dev)
        lib[c["name"]](*[lay[n].to(dev) for n in TL.BUFFERS], x.to(dev), *([b.to(dev)] if b is not None else []), y)
        torch.cuda.synchronize()
        err = float((y.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
        out["check"].append({"name": c["name"], "knobs": k, "order": c.get("order", TL_DEFAULT_ORDER),
                             "rel_err": err, "ok": err <= tol[c["dtype"]]})
        print(f"[{'OK ' if err <= tol[c['dtype']] else 'BAD'}] {c['name']:<48} {err:.2e}", flush=True)
    by_cell = {}
    for c in cases["bench"]:
        by_cell.setdefault((c["O"], c["K"], c["T"]), []).append(c)
    for (O, K) in SHAPES:
        wf = torch.randn(O, K, device=dev, dtype=torch.float16) * (1.0 / K ** 0.5)
        for s in SPARSITY:
            w = wf * (torch.rand(O, K, device=dev) >= s)
            lays = {}
            for T in TOKENS:
                x = torch.randn(T, K, device=dev, dtype=torch.float16)
                ref = F.linear(x.float(), w.float())
                y = torch.empty(T, O, device=dev, dtype=torch.float16)
                fns = {"cublas": (lambda x=x: F.linear(x, w))}
                cell = {"O": O, "K": K, "T": T, "sparsity": s, "err": {}, "knobs": {}}
                for c in by_cell[(O, K, T)]:
                    kn = c["resolved_knobs"]
                    key = (kn["rt"], kn["sc"], c.get("order", TL_DEFAULT_ORDER))
                    if key not in lays:
                        lays[key] = TL.build(w, *key[:2], order=key[2])
                        cell.setdefault("store_wavefronts", {})[key[2]] = TL.store_wavefronts(lays[key])
                    args = [lays[key][n] for n in TL.BUFFERS]
                    f = lib[c["name"]]
                    y.fill_(float("nan"))
                    f(*args, x, y)
                    torch.cuda.synchronize()
                    cell["err"][c["label"]] = float((y.float() - ref).abs().max() / ref.abs().max())
                    cell["knobs"][c["label"]] = kn
                    cell["bytes"] = TL.nbytes(lays[key])
                    fns[c["label"]] = (lambda f=f, args=args, x=x, y=y: f(*args, x, y))
                cell["us"] = interleaved(fns)
                out["cells"].append(cell)
                u = cell["us"]
                print(f"{O}x{K} T={T:<3} s={s} cuBLAS {u['cublas']:.1f}us " + " ".join(
                    f"{k} {v:.1f}us x{u['cublas'] / v:.2f} (err {cell['err'][k]:.1e})"
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


def interleaved(fns: dict, iters: int = 20) -> dict:
    """Median µs per call of each function: CUDA graphs of ``iters`` calls, replayed round-robin."""
    import env

    times = env.replay_interleaved(env.capture_graphs(fns, iters), ROUNDS, iters)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], *sys.argv[3:4])
    else:
        run(sys.argv[2], sys.argv[3])
