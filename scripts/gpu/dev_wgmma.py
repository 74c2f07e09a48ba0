"""Focused build + GPU run of the ``wgmma`` design (Hopper wgmma.mma_async, dense), for development.

usage (here, TVM + nvcc):   python scripts/gpu/dev_wgmma.py build OUTDIR
      (GPU, runtime only):  python scripts/gpu/dev_wgmma.py run OUTDIR OUTJSON   (``check OUTDIR OUTJSON``: checks only)
Built for ``sm_90a``. ``run`` checks every check case (``cases.wgmma_check_cases``) vs ``F.linear`` in
fp32, then per bench cell (shape x tokens) times cuBLAS (``F.linear`` fp16, before and after the
kernels), the ``mma`` design's default and every wgmma knob variant in the same process (CUDA-graph
medians), checking each variant's output against ``F.linear`` in fp32 too.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864)]
TOKENS = [128, 1024]
TOL = {"float16": 1e-2, "bfloat16": 3e-2}
ARCH = "sm_90a"


def variants(T):
    """wgmma knob variants per token count ({} = the design's defaults)."""
    if T >= 512:
        return [{}, dict(bm=256, bn=128, stages=4, ws=1, wip=1), dict(bm=128, bn=256, stages=3, ws=1, wip=1),
                dict(bm=128, bn=256, stages=4, ws=1, wip=0), dict(bm=128, bn=256, stages=4, ws=1, wip=1, gm=4),
                dict(bm=128, bn=256, stages=4, ws=0, wip=1)]
    return [{}, dict(bm=128, bn=128, stages=6, ks=1, ws=1, wip=1), dict(bm=128, bn=128, stages=5, ks=4, ws=1, wip=1),
            dict(bm=128, bn=128, stages=5, ks=1, ws=0, wip=1), dict(bm=256, bn=128, stages=4, ks=1, ws=1, wip=1),
            dict(bm=64, bn=128, stages=6, ks=2, ws=1, wip=1)]


def bench_cases():
    import cases as C

    out = []
    for O, K in SHAPES:
        for T in TOKENS:
            out.append(C.case(f"b_mma_dense_{O}x{K}x{T}", "dense", {}, O, K, T, design="mma"))
            for v, kn in enumerate(variants(T)):
                out.append(C.case(f"b_wgmma{v}_dense_{O}x{K}x{T}", "dense", {}, O, K, T, knobs=kn, design="wgmma"))
    return out


def build(outdir):
    import build_kernels as B
    import cases as C

    os.makedirs(outdir, exist_ok=True)
    chk, bench = C.wgmma_check_cases(), bench_cases()
    B.build(chk, os.path.join(outdir, "check.so"), ARCH)
    B.build(bench, os.path.join(outdir, "bench.so"), ARCH)
    json.dump({"arch": ARCH, "check": chk, "bench": bench}, open(os.path.join(outdir, "cases.json"), "w"), indent=1)


def check(kdir, outp):
    import env  # (sparsec importable, TVM runtime)

    env.check_cases_file(kdir, outp, lambda fmt, dev: [fmt.values.contiguous().to(dev)], TOL)


def run(kdir, outp):
    import env  # (sparsec importable, TVM runtime)
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.runtime import load_library

    meta = json.load(open(os.path.join(kdir, "cases.json")))
    dev = torch.device("cuda")
    res = {"machine": env.machine_info(), "arch": meta["arch"], "check": [], "bench": []}
    # the checks run in a child process with a time limit: a kernel waiting forever on an mbarrier
    # (ws=1) must not take the benchmark with it
    res["check"], timed_out = env.checks_in_child(__file__, kdir, outp, 90)
    if timed_out:
        res["check_timed_out"] = True
    ws_ok = (not res.get("check_timed_out") and len(res["check"]) == len(meta["check"])
             and all(r["ok"] for r in res["check"] if r["knobs"].get("ws")))
    res["ws_ok"] = ws_ok
    json.dump(res, open(outp, "w"), indent=1)
    lib = load_library(os.path.join(kdir, "bench.so"))
    by = {}
    for c in meta["bench"]:
        by.setdefault((c["O"], c["K"], c["T"]), []).append(c)
    for (O, K) in SHAPES:
        w_full = torch.randn(O, K, device=dev, dtype=torch.float16) * (1.0 / K ** 0.5)
        for T in TOKENS:
            x = torch.randn(T, K, device=dev, dtype=torch.float16)
            y = torch.empty(T, O, device=dev, dtype=torch.float16)
            row = {"O": O, "K": K, "T": T}
            cb0, _ = env.bench_graph(lambda: F.linear(x, w_full))
            ref = F.linear(x.float(), w_full.float())
            for c in by[(O, K, T)]:
                if c["resolved_knobs"].get("ws") and not ws_ok:
                    continue
                f = lib[c["name"]]
                y.fill_(float("nan"))
                try:
                    f(w_full, x, y)
                    torch.cuda.synchronize()
                    err = float((y.float() - ref).abs().max() / ref.abs().max())
                    ms, _ = env.bench_graph(lambda: f(w_full, x, y))
                except Exception as exc:  # noqa: BLE001
                    err, ms = float("nan"), float("nan")
                    print("  error", c["name"], str(exc)[:200], flush=True)
                ent = {"name": c["name"], "design": c["design"], "knobs": c["resolved_knobs"], "ms": ms,
                       "rel_err": err, "ok": err <= TOL["float16"]}
                row.setdefault("kernels", []).append(ent)
            cb1, _ = env.bench_graph(lambda: F.linear(x, w_full))
            row["cublas_ms_before"], row["cublas_ms_after"] = cb0, cb1
            row["cublas_ms"] = min(cb0, cb1)
            for ent in row["kernels"]:
                ent["vs_cublas"] = row["cublas_ms"] / ent["ms"] if ent["ms"] == ent["ms"] else None
                print(f"{O}x{K} T={T} {ent['name']:<34} {ent['ms'] * 1e3:8.1f}us err {ent['rel_err']:.1e} "
                      f"{'ok' if ent['ok'] else 'BAD'} x{ent['vs_cublas'] or 0:.2f} cuBLAS "
                      f"({row['cublas_ms'] * 1e3:.1f}us) {ent['knobs']}", flush=True)
            res["bench"].append(row)
            json.dump(res, open(outp, "w"), indent=1)
        w_full = None   # noqa: F841  (free the weight before the next shape)
        torch.cuda.empty_cache()
    json.dump(res, open(outp, "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        run(sys.argv[2], sys.argv[3])
