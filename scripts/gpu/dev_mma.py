"""Focused build + GPU run of the ``mma`` design (dense and 2:4 ``mma.sp``), for development.

usage (here, TVM + nvcc):   python scripts/gpu/dev_mma.py build OUTDIR
      (GPU, runtime only):  python scripts/gpu/dev_mma.py run OUTDIR OUTJSON
``run`` checks every check case vs ``F.linear`` in fp32 (format's own dense weight), then per bench
cell (shape x tokens) times cuBLAS (``F.linear``), cuSPARSELt (``to_sparse_semi_structured``) and
every knob variant of the mma kernels (dense and 2:4) in the same process (CUDA-graph medians),
checking each variant's output against ``F.linear`` too.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864)]
TOKENS = [128, 1024]
TOL = {"float16": 1e-2, "bfloat16": 3e-2}


T128 = dict(bm=128, bn=128, bk=32, wm=2, wn=4, stages=3)


def variants(T):
    if T >= 512:
        return [{}, dict(T128, gm=8)]
    return [{}, dict(bm=128, bn=64, bk=32, wm=4, wn=2, stages=4, ks=8), dict(bm=128, bn=64, bk=32, wm=4, wn=2, stages=4, ks=4),
            dict(bm=128, bn=64, bk=64, wm=4, wn=2, stages=2, ks=8), dict(bm=64, bn=128, bk=32, wm=2, wn=4, stages=4, ks=8),
            dict(bm=32, bn=64, bk=64, wm=1, wn=4, stages=4, ks=2), dict(bm=32, bn=64, bk=64, wm=1, wn=4, stages=4),
            dict(bm=64, bn=64, bk=32, wm=2, wn=2, stages=4, ks=4), dict(T128, wm=4, wn=2, ks=8)]


# split-K (fp16/bf16 atomics: red.v4 when O % 8 == 0, element atomics otherwise), staged epilogue,
# rasterisation groups: odd O, K not a multiple of bk, T not a multiple of bn, bias, bf16
SPLIT_CHECK = [
    # (fmt, O, K, T, dtype, bias, act, knobs)
    ("dense", 1000, 512, 130, "float16", True, None, dict(T128, ks=4)),
    ("dense", 1003, 520, 77, "bfloat16", True, None, dict(T128, ks=3)),
    ("dense", 4096, 4096, 128, "float16", False, None, {}),
    ("dense", 1160, 512, 1030, "float16", True, "relu", dict(T128, gm=4)),
    ("dense", 1003, 520, 200, "float16", False, "gelu", dict(T128, ks=1, gm=16)),
    ("nm", 257, 272, 129, "float16", True, None, dict(bm=128, bn=64, bk=64, wm=4, wn=2, stages=2, ks=2)),
    ("nm", 1024, 1040, 200, "bfloat16", False, None, dict(T128, ks=8)),
    ("nm", 1160, 512, 1030, "float16", False, "silu", dict(T128, gm=16)),
    ("nm", 4096, 4096, 128, "bfloat16", True, None, {}),
]


def check_cases():
    import cases as C

    out = C.mma_check_cases()
    for i, (f, O, K, T, dt, bias, act, kn) in enumerate(SPLIT_CHECK):
        params, pat = ({}, ["dense"]) if f == "dense" else ({"n": 2, "m": 4}, ["nm", 2, 4])
        out.append(C.case(f"chk_mmaks{i}_{f}_{dt}_{O}x{K}x{T}", f, params, O, K, T, dt, bias, act, pat, kn,
                          design="mma"))
    return out


def bench_cases():
    import cases as C

    out = []
    for O, K in SHAPES:
        for T in TOKENS:
            for v, kn in enumerate(variants(T)):
                out.append(C.case(f"b_mma{v}_dense_{O}x{K}x{T}", "dense", {}, O, K, T, knobs=kn, design="mma"))
                out.append(C.case(f"b_mma{v}_nm24_{O}x{K}x{T}", "nm", {"n": 2, "m": 4}, O, K, T, knobs=kn,
                                  design="mma"))
    return out


def build(outdir):
    import build_kernels as B

    os.makedirs(outdir, exist_ok=True)
    chk, bench = check_cases(), bench_cases()
    B.build(chk, os.path.join(outdir, "check.so"), "sm_90")
    B.build(bench, os.path.join(outdir, "bench.so"), "sm_90")
    json.dump({"arch": "sm_90", "check": chk, "bench": bench}, open(os.path.join(outdir, "cases.json"), "w"), indent=1)


def run(kdir, outp):
    import env  # noqa: F401  (sparsec importable, TVM runtime)
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.kernels import mma_layout as ML
    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import NM

    meta = json.load(open(os.path.join(kdir, "cases.json")))
    dev = torch.device("cuda")
    res = {"machine": env.machine_info(), "check": [], "bench": []}
    lib = load_library(os.path.join(kdir, "check.so"))
    for i, c in enumerate(meta["check"]):
        r = {"name": c["name"], "knobs": c["resolved_knobs"]}
        try:
            w = env.make_weight(c, seed=i)
            fmt = env.pack(c, w)
            if c["format"] == "nm":
                lay = ML.build(fmt)
                bufs = [lay[b].to(dev) for b in ML.BUFFERS]
            else:
                bufs = [fmt.values.contiguous().to(dev)]
            dt = getattr(torch, c["dtype"])
            x, b, ref = env.case_io(c, fmt, i)
            y = torch.full((c["T"], c["O"]), float("nan"), dtype=dt, device=dev)
            lib[c["name"]](*bufs, x.to(dev), *([b.to(dev)] if b is not None else []), y)
            torch.cuda.synchronize()
            r["rel_err"] = float((y.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
            r["ok"] = r["rel_err"] <= TOL[c["dtype"]]
        except Exception as exc:  # noqa: BLE001
            r["ok"], r["error"] = False, f"{type(exc).__name__}: {exc}"[:300]
        res["check"].append(r)
        print(f"[{'OK ' if r['ok'] else 'BAD'}] {c['name']:<44} err {r.get('rel_err', float('nan')):.2e} "
              f"{r.get('error', '')}", flush=True)
    json.dump(res, open(outp, "w"), indent=1)
    lib = load_library(os.path.join(kdir, "bench.so"))
    by = {}
    for c in meta["bench"]:
        by.setdefault((c["O"], c["K"], c["T"]), []).append(c)
    for (O, K) in SHAPES:
        w_full = torch.randn(O, K, device=dev, dtype=torch.float16) * (1.0 / K ** 0.5)
        G = K // 4
        keep = torch.zeros(O, G, 4, device=dev, dtype=torch.bool)
        keep.scatter_(2, torch.rand(O, G, 4, device=dev).argsort(-1)[..., :2], True)
        w24 = w_full * keep.view(O, K)
        lay = ML.build(NM.from_dense(w24.cpu(), n=2, m=4))
        lay = {k: v.to(dev) for k, v in lay.items()}
        try:
            from torch.sparse import to_sparse_semi_structured
            wss = to_sparse_semi_structured(w24)
        except Exception as exc:  # noqa: BLE001
            wss = None
            print("cuSPARSELt unavailable:", exc)
        for T in TOKENS:
            x = torch.randn(T, K, device=dev, dtype=torch.float16)
            y = torch.empty(T, O, device=dev, dtype=torch.float16)
            row = {"O": O, "K": K, "T": T}
            row["cublas_ms"], _ = env.bench_graph(lambda: F.linear(x, w_full))
            row["cublas24_ms"], _ = env.bench_graph(lambda: F.linear(x, w24))
            ref_d = F.linear(x.float(), w_full.float())
            ref_s = F.linear(x.float(), w24.float())
            if wss is not None:
                xt = x.t().contiguous()
                try:
                    row["cusparselt_ms"], _ = env.bench_graph(lambda: torch.mm(wss, xt))
                    row["cusparselt_linear_ms"], _ = env.bench_graph(lambda: F.linear(x, wss))
                except Exception as exc:  # noqa: BLE001
                    row["cusparselt_error"] = str(exc)[:200]
            for c in by[(O, K, T)]:
                f = lib[c["name"]]
                sp = c["format"] == "nm"
                args = ([lay["sp_values"], lay["sp_meta"]] if sp else [w_full]) + [x, y]
                y.fill_(float("nan"))
                f(*args)
                torch.cuda.synchronize()
                ref = ref_s if sp else ref_d
                err = float((y.float() - ref).abs().max() / ref.abs().max())
                ms, _ = env.bench_graph(lambda: f(*args))
                row.setdefault("mma", []).append({"name": c["name"], "sparse": sp, "knobs": c["resolved_knobs"],
                                                  "ms": ms, "rel_err": err})
                print(f"{O}x{K} T={T} {c['name']:<32} {ms * 1e3:8.1f}us err {err:.1e} "
                      f"cuBLAS {row['cublas_ms'] * 1e3:.1f}us cuSPARSELt {row.get('cusparselt_ms', 0) * 1e3:.1f}us",
                      flush=True)
            res["bench"].append(row)
            json.dump(res, open(outp, "w"), indent=1)
        del w_full, w24, lay, wss
        torch.cuda.empty_cache()
    json.dump(res, open(outp, "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3])
