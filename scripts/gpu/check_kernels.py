"""GPU correctness suite for the CUDA kernel families: every case of check.so vs torch on the GPU.

Reference: ``torch.nn.functional.linear`` in float32 on the GPU with the format's own dense
weight (``to_dense()``, dequantised for groupquant), plus bias and activation — independent of
sparsec's lowering. Tolerance per dtype on max |err| / max |ref|.
usage: python scripts/gpu/check_kernels.py KDIR OUTJSON
Each format group runs in its own process: a kernel fault (sticky CUDA error) fails its group only.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import env  # noqa: E402

TOL = env.KERNEL_TOL


def main():
    t_start = time.time()
    import torch

    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import dtype_name

    import cases as C

    kdir, outp = sys.argv[1], sys.argv[2]
    cases = json.load(open(os.path.join(kdir, "cases.json")))["check"]
    if len(sys.argv) == 3:
        return run_groups(kdir, outp, cases)
    if os.environ.get("CHECK_THREADS"):
        # the parent runs JOBS children at once: each gets its share of the cores (16 threads in each of 14
        # processes on 16 cores made the CPU side -- packing, layouts, references -- crawl)
        torch.set_num_threads(int(os.environ["CHECK_THREADS"]))
    lo, hi = int(sys.argv[3]), int(sys.argv[4])
    lib = load_library(os.path.join(kdir, "check.so"))
    dev = torch.device("cuda")
    torch.zeros(1, device=dev)                   # the CUDA context, so that t_ready includes it
    t_ready = time.time()
    results, bad = [], 0
    t0 = time.time()
    for i, c in enumerate(cases):
        if not lo <= i < hi:
            continue
        tc = time.time()
        r = {"name": c["name"], "format": c["format"], "design": c.get("design", "fragment"), "params": c["params"],
             "shape": [c["O"], c["K"], c["T"]],
             "dtype": c["dtype"], "bias": c["bias"], "activation": c["activation"]}
        try:
            w = env.make_weight(c, seed=i)
            fmt = env.pack(c, w)
            if c.get("design") == "tiled":          # the kernel-private layout, made from the format's buffers
                from sparsec.backends.cuda.kernels import tiled_layout as TL

                lay, names = TL.build_for(fmt, c["resolved_knobs"])
                bufs = [lay[n].to(dev) for n in names]
            elif c.get("design") in ("mma", "wgmma") and c["format"] == "nm":   # mma.sp / wgmma.sp operands
                from sparsec.backends.cuda.kernels import mma_layout as ML

                lay, names = ML.build_for(fmt, c["resolved_knobs"])
                bufs = [lay[n].to(dev) for n in names]
            else:
                want = tuple((b, dtype_name(getattr(fmt, b).dtype)) for b in fmt.buffers)
                if want != C.buffer_dtypes(c["format"], c["dtype"]):
                    raise RuntimeError(f"buffer dtypes {want} differ from the built kernel's")
                bufs = [getattr(fmt, n).contiguous().to(dev) for n in fmt.buffers]
            dt = getattr(torch, c["dtype"])
            x, b, ref = env.case_io(c, fmt, i)
            y = torch.full((c["T"], c["O"]), float("nan"), dtype=dt, device=dev)
            args = bufs + [x.to(dev)] + ([b.to(dev)] if b is not None else []) + [y]
            lib[c["name"]](*args)
            torch.cuda.synchronize()
            err = float((y.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
            r["rel_err"] = err
            r["ok"] = bool(err <= TOL[c["dtype"]])
            r["knobs"] = c.get("resolved_knobs")
            if c.get("chain"):
                r["chain_err"] = chain_err(lib[c["name"]], c, bufs, x, b, fmt, dev)
                r["ok"] = r["ok"] and all(r["chain_err"][m] <= TOL[c["dtype"]] for m in ("stream", "graph"))
        except Exception as exc:  # noqa: BLE001  (recorded as a failure)
            r["ok"] = False
            r["error"] = f"{type(exc).__name__}: {exc}"[:300]
        bad += not r["ok"]
        r["seconds"] = round(time.time() - tc, 2)
        results.append(r)
        print(f"[{'OK ' if r['ok'] else 'BAD'}] {c['name']:<48} err {r.get('rel_err', float('nan')):.2e} "
              f"{r['seconds']:6.2f}s {r.get('error', '')}", flush=True)
    print(f"cases [{lo}, {hi}): {time.time() - t0:.1f} s in this process (import and library load "
          f"{t_ready - t_start:.1f} s)", flush=True)
    json.dump(results, open(outp, "w"), indent=1)
    return 0 if bad == 0 else 1


def chain_err(fn, c, bufs, x, b, fmt, dev) -> dict:
    """A layer whose launches overlap the previous kernel (``pdl=2``) run ``c["chain"]`` times in a row, each call
    reading the last one's output (O == K) from two ping-pong buffers, so every call also overwrites the buffer the
    call before it read: on the stream, then as a CUDA graph. Relative error of the last output against the same
    chain of ``F.linear`` in fp32, rounded to the dtype after each layer: ``{"stream": e, "graph": e}``."""
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.runtime import on_torch_stream

    acts = {None: lambda v: v, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}
    dt = getattr(torch, c["dtype"])
    wd = fmt.to_dense().float().to(dev)
    bd = b.float().to(dev) if b is not None else None
    ref = x.to(dev)
    for _ in range(c["chain"]):
        ref = acts[c["activation"]](F.linear(ref.float(), wd, bd)).to(dt)
    bb = [b.to(dev)] if b is not None else []
    ping = [torch.empty(c["T"], c["K"], dtype=dt, device=dev) for _ in range(2)]

    def run():
        for j in range(c["chain"]):
            fn(*bufs, ping[j % 2], *bb, ping[(j + 1) % 2])

    out = {}
    for mode in ("stream", "graph"):
        ping[0].copy_(x.to(dev))
        ping[1].fill_(float("nan"))
        torch.cuda.synchronize()
        if mode == "stream":
            with on_torch_stream(torch.cuda.stream(torch.cuda.current_stream())):
                run()
        else:
            g = torch.cuda.CUDAGraph()
            with on_torch_stream(torch.cuda.graph(g)):
                run()
            ping[0].copy_(x.to(dev))
            ping[1].fill_(float("nan"))
            g.replay()
        torch.cuda.synchronize()
        y = ping[c["chain"] % 2]
        out[mode] = float((y.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6))
    out["ref_max"] = float(ref.float().abs().max())       # (a chain that decays to zero would prove nothing)
    if not out["ref_max"] > 1e-3:
        raise RuntimeError(f"chain of {c['chain']}: the reference decays to {out['ref_max']:.1e}")
    return out


def run_groups(kdir, outp, cases):
    import subprocess

    t0 = time.time()
    results = []
    def key(c):
        return c["format"], c["params"], c["dtype"], c.get("design", "fragment")

    starts = [i for i, c in enumerate(cases) if i == 0 or key(c) != key(cases[i - 1])] + [len(cases)]
    groups = list(zip(starts, starts[1:]))
    # the processes run JOBS at a time: each spends seconds importing torch and loading check.so (2026-11-23: 474 s
    # for 188 cases serially; 2026-11-24: 337 cases in ~150 one-group processes did not finish in 590 s), so
    # consecutive groups share a process (CHUNKS per job); a chunk with a failure is run again one group per
    # process, so a kernel fault (a sticky CUDA error) still fails its own group only. Results keep case order.
    jobs = max(1, min(int(os.environ.get("CHECK_JOBS", "0")) or min((os.cpu_count() or 2) // 2, 8), 16))
    per = max(1, -(-len(cases) // (jobs * int(os.environ.get("CHECK_CHUNKS", "3")))))
    chunks, cur = [], []
    for g in groups:
        cur.append(g)
        if sum(hi - lo for lo, hi in cur) >= per:
            chunks.append(cur)
            cur = []
    if cur:
        chunks.append(cur)

    threads = str(max(1, (os.cpu_count() or 2) // jobs))
    child_env = dict(os.environ, CHECK_THREADS=threads, OMP_NUM_THREADS=threads)
    print(f"{len(cases)} cases in {len(chunks)} chunks, {jobs} processes at a time, {threads} CPU threads each",
          flush=True)

    def run_all(spans):
        running = []
        for lo, hi in spans:
            if len(running) >= jobs:
                running.pop(0).wait()
            running.append(subprocess.Popen([sys.executable, __file__, kdir, outp + f".part{lo}", str(lo), str(hi)],
                                            env=child_env))
        for p in running:
            p.wait()
        out = {}
        for lo, hi in spans:
            part = outp + f".part{lo}"
            try:
                out[lo] = json.load(open(part))
                os.remove(part)
            except (OSError, ValueError):
                out[lo] = [{"name": c["name"], "ok": False, "error": "process died"} for c in cases[lo:hi]]
        return out

    got = run_all([(ch[0][0], ch[-1][1]) for ch in chunks])
    rerun = [g for ch in chunks if not all(r["ok"] for r in got[ch[0][0]]) for g in ch]
    if rerun:
        print(f"re-running {len(rerun)} groups one per process (a chunk had a failure)", flush=True)
        again = run_all(rerun)
    for ch in chunks:
        if all(r["ok"] for r in got[ch[0][0]]):
            results += got[ch[0][0]]
        else:
            for lo, _ in ch:
                results += again[lo]
    bad = sum(not r["ok"] for r in results)
    summary = {"machine": env.machine_info(), "cases": len(results), "failed": bad,
               "seconds": round(time.time() - t0, 1), "tolerance": TOL, "results": results}
    json.dump(summary, open(outp, "w"), indent=1)
    print(f"kernel correctness: {len(results) - bad}/{len(results)} passed")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
