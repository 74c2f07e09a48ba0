"""Focused GPU run for the ``tiled`` kernel's ``code="bitmap"`` stages (issue #12): correctness of its check cases
+ timing vs cuBLAS and vs ``code="pos"`` (default knobs, and clear="unscatter"), in one process.

    python scripts/gpu/dev_tiledbm.py build out/tiledbm [SET]      # here: TVM + nvcc (no GPU)
    python scripts/gpu/dev_tiledbm.py run out/tiledbm OUT.json     # GPU machine: torch + TVM runtime bundle

Correctness: the cases of ``check_cases()`` (below; O, K not multiples of the tiles, K % 8 != 0, empty rows and
stages (99 %), 0 % (every stage over the staging area: the direct-from-global walk), bias, every activation,
bf16, split-K, every (rt, sc) with 16*rt*sc >= 1024) plus every timed kernel at every sparsity, vs
``F.linear`` in fp32 on the GPU. Timing: per cell cuBLAS (``F.linear`` fp16) and every variant captured as
CUDA graphs of 20 calls, replayed round-robin ``ROUNDS`` times; medians.
Results: ``benchmarks/results/dev/tiledbm_run1.*`` (this code); ``tiledbm_run2.*`` is the pair-major value order
of commit dee83fe (set ``run2`` there), since reverted.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as C  # noqa: E402  (the shared decode check grid)

SHAPES = [(11008, 4096), (4096, 11008), (9216, 36864)]
TOKENS = [1, 8, 16, 32]
SPARSITY = [0.7, 0.8, 0.9]
ROUNDS = 9

BM_CHECK = C.DECODE_CHECK_BASE + [
    (500, 2000, 32, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.0, False], False, None, {"rt": 2, "sc": 64}),
    (500, 2000, 31, "csr", {}, ["unstructured", 0.9, True], True, None, {"ksplit": 2}),
    (257, 3000, 5, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, False], False, None, {"rt": 4, "sc": 128,
                                                                                           "warps": 1}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.5, True], True, None, {"rt": 2, "sc": 128,
                                                                                          "warps": 2}),
    # vsrc="global": the walk reads the values straight from global memory (no staging area)
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, True], True, "gelu", {"vsrc": "global"}),
    (1000, 4104, 9, "csr", {}, ["unstructured", 0.9, False], False, None, {"vsrc": "global", "rt": 4, "sc": 32}),
]


def check_cases() -> list[dict]:
    import cases as C

    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, fmt, params, pat, bias, act, knobs) in enumerate(BM_CHECK):
            if dtype == "bfloat16" and i % 3:
                continue
            out.append(C.case(f"chk_tiledbm{i}_{fmt}_{dtype}_{O}x{K}x{T}", fmt, params, O, K, T, dtype, bias, act,
                              pat, dict(knobs, code="bitmap"), design="tiled"))
    return out


def variants(O, K, T, which="run1"):
    """(label, knobs) of the timed kernels of a cell."""
    from sparsec.backends.cuda.kernels.tiled import KNOBS, resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    d = resolve(spec, {"code": "bitmap"})
    ks = list(KNOBS["ksplit"])
    i = ks.index(d.ksplit)
    out = [("pos", {}), ("pos_unsc", {"clear": "unscatter"}), ("bm", {"code": "bitmap"})]
    if which == "run1":
        out += [("bm_rt1", {"code": "bitmap", "rt": 1, "sc": 64}), ("bm_w4", {"code": "bitmap", "warps": 4}),
                ("bm_glob", {"code": "bitmap", "vsrc": "global"}),
                ("bm_rt4", {"code": "bitmap", "rt": 4, "sc": 32})]
        if i + 1 < len(ks):
            out.append(("bm_ks_hi", {"code": "bitmap", "ksplit": ks[i + 1]}))
    res = []
    for lab, kn in out:
        try:
            resolve(spec, kn)
        except KernelError:
            continue
        res.append((lab, kn))
    return res


def build(outdir, which="run1"):
    import build_kernels as B
    import cases as C

    os.makedirs(outdir, exist_ok=True)
    cs = check_cases()
    bench = []
    for (O, K) in SHAPES:
        for T in TOKENS:
            for lab, kn in variants(O, K, T, which):
                bench.append(C.case(f"d_{lab}_{O}x{K}x{T}", "bitmap", {"tile": [8, 32]}, O, K, T, knobs=kn,
                                    design="tiled"))
                bench[-1]["label"] = lab
    B.build(cs + bench, os.path.join(outdir, "dev.so"), "sm_90")
    json.dump({"check": cs, "bench": bench}, open(os.path.join(outdir, "cases.json"), "w"), indent=1)


def layout(w, kn):
    from sparsec.backends.cuda.kernels import tiled_layout as TL

    if kn.get("code", "pos") == "bitmap":
        lay = TL.build_bitmap(w, kn["rt"], kn["sc"])
        return [lay[n] for n in TL.BM_BUFFERS], TL.nbytes(lay)
    lay = TL.build(w, kn["rt"], kn["sc"])
    return [lay[n] for n in TL.BUFFERS], TL.nbytes(lay)


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
        bufs, _ = layout(fmt, k)
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
        for s in SPARSITY:
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
                    key = (kn.get("code", "pos"), kn["rt"], kn["sc"])
                    if key not in lays:
                        lays[key] = layout(w, kn)
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


def interleaved(fns: dict, iters: int = 20) -> dict:
    from dev_tiled import interleaved as il

    return il(fns, iters)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], *sys.argv[3:4])
    else:
        run(sys.argv[2], sys.argv[3])
