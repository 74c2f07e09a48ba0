"""GPU correctness suite for the CUDA kernel families: every case of check.so vs torch on the GPU.

Reference: ``torch.nn.functional.linear`` in float32 on the GPU with the format's own dense
weight (``to_dense()``, dequantised for groupquant), plus bias and activation — independent of
sparsec's lowering. Tolerance per dtype on max |err| / max |ref|.
usage: python scripts/gpu/check_kernels.py KDIR OUTJSON
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import env  # noqa: E402

TOL = {"float16": 1e-2, "bfloat16": 3e-2, "float32": 1e-4}


def main():
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import dtype_name

    import cases as C

    kdir, outp = sys.argv[1], sys.argv[2]
    cases = json.load(open(os.path.join(kdir, "cases.json")))["check"]
    lib = load_library(os.path.join(kdir, "check.so"))
    dev = torch.device("cuda")
    acts = {None: lambda v: v, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}
    results, bad = [], 0
    t0 = time.time()
    for i, c in enumerate(cases):
        r = {"name": c["name"], "format": c["format"], "params": c["params"], "shape": [c["O"], c["K"], c["T"]],
             "dtype": c["dtype"], "bias": c["bias"], "activation": c["activation"]}
        try:
            w = env.make_weight(c, seed=i)
            fmt = env.pack(c, w)
            want = tuple((b, dtype_name(getattr(fmt, b).dtype)) for b in fmt.buffers)
            if want != C.buffer_dtypes(c["format"], c["dtype"]):
                raise RuntimeError(f"buffer dtypes {want} differ from the built kernel's")
            dt = getattr(torch, c["dtype"])
            g = torch.Generator().manual_seed(1000 + i)
            x = torch.randn(c["T"], c["K"], generator=g).to(dt)
            b = (torch.randn(c["O"], generator=g) * 0.1).to(dt) if c["bias"] else None
            wd = fmt.to_dense().float()
            ref = x.float() @ wd.t()
            if b is not None:
                ref = ref + b.float()
            ref = acts[c["activation"]](ref)
            bufs = [getattr(fmt, n).contiguous().to(dev) for n in fmt.buffers]
            y = torch.full((c["T"], c["O"]), float("nan"), dtype=dt, device=dev)
            args = bufs + [x.to(dev)] + ([b.to(dev)] if b is not None else []) + [y]
            lib[c["name"]](*args)
            torch.cuda.synchronize()
            err = float((y.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
            r["rel_err"] = err
            r["ok"] = bool(err <= TOL[c["dtype"]])
            r["knobs"] = c.get("resolved_knobs")
        except Exception as exc:  # noqa: BLE001  (recorded as a failure)
            r["ok"] = False
            r["error"] = f"{type(exc).__name__}: {exc}"[:300]
        bad += not r["ok"]
        results.append(r)
        print(f"[{'OK ' if r['ok'] else 'BAD'}] {c['name']:<48} err {r.get('rel_err', float('nan')):.2e} "
              f"{r.get('error', '')}", flush=True)
    summary = {"machine": env.machine_info(), "cases": len(results), "failed": bad,
               "seconds": round(time.time() - t0, 1), "results": results}
    json.dump(summary, open(outp, "w"), indent=1)
    print(f"kernel correctness: {len(results) - bad}/{len(results)} passed")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
