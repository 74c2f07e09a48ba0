"""Build the CUDA kernel libraries for the GPU check (here: TVM + nvcc, no GPU needed).

usage: python scripts/gpu/build_kernels.py OUTDIR [--arch sm_90a] [--quick]
writes OUTDIR/check.so, OUTDIR/bench.so (fatbin embedded) and OUTDIR/cases.json.
``--design tiled --max-tokens 128``: a focused build (the tiled kernels + sparsec dense) for a short GPU run;
``--only NAME``: just the check cases whose name contains NAME (e.g. ``tiledpdl``); ``--shapes OxK,...``: just the
benchmark kernels of those shapes (e.g. with ``--max-tokens 32``, for ``spmm_gpu.py --shapes``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as C  # noqa: E402


def meta_of_case(c):
    from sparsec.backends.kernels.common import WeightMeta

    params = tuple((p, tuple(c["params"][p]) if isinstance(c["params"][p], list) else c["params"][p])
                   for p in C.FMT_PARAMS[c["format"]])
    return WeightMeta(c["format"], c["O"], c["K"], c["dtype"], params, C.buffer_dtypes(c["format"], c["dtype"]))


def build(cases, path, arch):
    import tvm

    from sparsec.backends.cuda import toolchain
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    funcs = {}
    for c in cases:
        func, args, knobs = cuda_matmul_primfunc(meta_of_case(c), c["T"], bias=c["bias"], activation=c["activation"],
                                                 knobs=c["knobs"], name=c["name"],
                                                 design=c.get("design", "fragment"))
        c["resolved_knobs"] = knobs
        c["args"] = [a.name for a in args]
        funcs[c["name"]] = func
    t0 = time.time()
    lib = toolchain.build(tvm.IRModule(funcs), arch)
    lib.export_library(path)
    print(f"{path}: {len(funcs)} kernels, built in {time.time() - t0:.1f}s, {os.path.getsize(path)} bytes, "
          f"fatbin embedded: {toolchain.fatbin_embedded(path)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--arch", default="sm_90a",
                    help="sm_90a (default): the wgmma design needs Hopper's arch-specific target (H100/H200 only)")
    ap.add_argument("--quick", action="store_true", help="small grids (for a smoke run)")
    ap.add_argument("--design", help="only kernels of these designs (comma-separated: fragment, tiled, dlight, mma, wgmma, bmtc), "
                                     "for a focused run")
    ap.add_argument("--max-tokens", type=int, help="only benchmark kernels with T <= this")
    ap.add_argument("--only", help="only the check cases whose name contains this, or one of these (comma-separated; "
                                   "no benchmark kernels)")
    ap.add_argument("--shapes", help="only benchmark kernels of these OxK shapes (comma-separated), no check cases")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    chk = C.check_cases()
    bench = C.bench_cases()
    if a.quick:
        chk = chk[::7]
        bench = [c for c in bench if c["O"] == 4096 and c["K"] == 4096]
    if a.design:
        ds = a.design.split(",")
        chk = [c for c in chk if c.get("design", "fragment") in ds]
        bench = [c for c in bench if c.get("design", "fragment") in ds or c["format"] in ("dense", "bitmap")]
    if a.max_tokens:
        bench = [c for c in bench if c["T"] <= a.max_tokens]
    if a.only:
        parts = [p for p in a.only.split(",") if p]
        chk, bench = [c for c in chk if any(p in c["name"] for p in parts)], []
        if not chk:
            raise SystemExit(f"--only {a.only!r}: no check case's name contains any of {parts}")
    if a.shapes:
        want = {tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")}
        chk, bench = [], [c for c in bench if (c["O"], c["K"]) in want]
        if not bench:
            raise SystemExit(f"--shapes {a.shapes}: no benchmark kernel of these shapes")
    if chk:
        build(chk, os.path.join(a.outdir, "check.so"), a.arch)
    if bench:
        build(bench, os.path.join(a.outdir, "bench.so"), a.arch)
    with open(os.path.join(a.outdir, "cases.json"), "w") as f:
        json.dump({"arch": a.arch, "check": chk, "bench": bench}, f, indent=1)


if __name__ == "__main__":
    main()
