"""Knob sweep of the CUDA bitmap matmul for BERT-base's linear shapes (90 % unstructured, fp16):
which ``warps`` x ``tn`` is fastest (and correct) at 128 and 1024 tokens. The winners go into
``sparsec.backends.cuda.tuned`` (the planner's knob table).

    .venv/bin/python scripts/gpu/bert_knobs.py build OUTDIR        # here: TVM + nvcc -> OUTDIR/knobs.so + cases
    python3 scripts/gpu/bert_knobs.py run OUTDIR OUT.json          # GPU machine, runtime only
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SHAPES = [(768, 768), (3072, 768), (768, 3072)]
TOKENS = [128, 1024]
KNOBS = [{"warps": w, "tn": tn} for w in (1, 2, 4, 8) for tn in (32, 64, 128) if w * tn <= 512]   # smem <= 48 KB
TILE = (8, 32)


def weight(o: int, k: int, dtype="float16"):
    import torch

    from sparsec.ir.formats import Bitmap

    g = torch.Generator().manual_seed(o * 7 + k)
    w = torch.randn(o, k, generator=g) * (1.0 / k ** 0.5)
    w = w * (torch.rand(o, k, generator=g) >= 0.9)
    w = w.to(getattr(torch, dtype))
    return w, Bitmap.from_dense(w, tile=TILE)


def build(outdir: str) -> int:
    import tvm

    from sparsec.backends.cuda import toolchain
    from sparsec.backends.cuda.kernels.matmul import cuda_matmul_primfunc

    os.makedirs(outdir, exist_ok=True)
    funcs, cases = {}, []
    for o, k in SHAPES:
        _, fmt = weight(o, k)
        for t in TOKENS:
            for kn in KNOBS:
                name = f"bm_{o}_{k}_{t}_w{kn['warps']}_tn{kn['tn']}"
                try:
                    f, _, res = cuda_matmul_primfunc(fmt, t, bias=True, knobs=kn, name=name)
                except Exception as exc:  # noqa: BLE001  (a knob the family refuses for this shape)
                    print(f"skip {name}: {exc}")
                    continue
                funcs[name] = f
                cases.append({"name": name, "O": o, "K": k, "T": t, "knobs": kn, "resolved": res})
    lib = toolchain.build(tvm.IRModule(funcs), "sm_90")
    lib.export_library(os.path.join(outdir, "knobs.so"))
    with open(os.path.join(outdir, "knobs_cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"{len(cases)} kernels -> {outdir}/knobs.so")
    return 0


def run(outdir: str, out_json: str) -> int:
    import env  # noqa: F401  (sparsec from the checkout, TVM runtime bundle)
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.runtime import as_dl, load_library

    lib = load_library(os.path.join(outdir, "knobs.so"))
    cases = json.load(open(os.path.join(outdir, "knobs_cases.json")))
    dev = torch.device("cuda")
    cache, res = {}, []
    for c in cases:
        o, k, t = c["O"], c["K"], c["T"]
        if (o, k) not in cache:
            w, fmt = weight(o, k)
            cache[(o, k)] = (w.to(dev), [getattr(fmt, b).contiguous().to(dev) for b in fmt.buffers])
        w, bufs = cache[(o, k)]
        g = torch.Generator(device=dev).manual_seed(t)
        x = torch.randn(t, k, device=dev, generator=g).half()
        bias = (torch.randn(o, device=dev, generator=g) * 0.1).half()
        y = torch.empty(t, o, device=dev, dtype=torch.half)
        f = lib[c["name"]]
        args = [as_dl(b) for b in bufs] + [as_dl(x), as_dl(bias), as_dl(y)]
        f(*args)
        torch.cuda.synchronize()
        ref = F.linear(x.float(), w.float(), bias.float())
        err = float((y.float() - ref).abs().max() / ref.abs().max())
        ms, _ = env.bench_graph(lambda: f(*args))
        cub, _ = env.bench_graph(lambda: F.linear(x, w, bias))
        res.append({**c, "ms": ms, "cublas_dense_ms": cub, "max_rel_err": err, "ok": err < 2e-2})
        print(f"{c['name']:<32} {ms * 1e3:8.1f} us  cuBLAS dense {cub * 1e3:7.1f} us  err {err:.1e}", flush=True)
    best = {}
    for r in res:
        key = f"{r['O']}x{r['K']}@{r['T']}"
        if r["ok"] and (key not in best or r["ms"] < best[key]["ms"]):
            best[key] = {"knobs": r["knobs"], "ms": r["ms"], "cublas_dense_ms": r["cublas_dense_ms"]}
    for key, b in best.items():
        print(f"best {key}: {b['knobs']} {b['ms'] * 1e3:.1f} us (cuBLAS dense fp16 {b['cublas_dense_ms'] * 1e3:.1f} us)")
    with open(out_json, "w") as f:
        json.dump({"machine": env.machine_info(), "cases": res, "best": best}, f, indent=1)
    return 0


if __name__ == "__main__":
    mode = sys.argv[1]
    sys.exit(build(sys.argv[2]) if mode == "build" else run(sys.argv[2], sys.argv[3]))
