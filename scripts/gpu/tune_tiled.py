"""GPU-machine side of CUDA autotuning (``backends/cuda/tune.py``): time every candidate of every cell.

    python scripts/gpu/tune_tiled.py DIR [--out DIR/results.json] [--budget-s 500] [--rounds 3] [--confirm 9]

``DIR`` holds ``tune.so`` and ``tune.json`` (built here by ``sparsec autotune --target cuda --emit DIR`` or
``scripts/gpu/build_tune.py``). Per cell: a random weight (the cell's dtype) of the cell's shape and density (uniform mask,
seeded; a ``dense`` cell, a dense layer on the wgmma GEMM, takes the weight as it is), the tiled layouts its candidates need (made on the GPU from a bitmap, as ``benchmarks/spmm_gpu.py``
does), every candidate checked against ``F.linear`` (relative error within the kernel check's tolerance for the
dtype, ``env.KERNEL_TOL``, else ``wrong``: never chosen), then
timed: CUDA graphs of 20 calls, replayed round-robin ``--rounds`` times (medians); then the fastest three and the
planner's own are re-timed interleaved ``--confirm`` rounds (what ``sparsec autotune --import`` decides on).
``--l2 cold`` (default): the 20 calls of a graph cycle through copies of the candidate's weight arguments, as many
as make twice the GPU's L2 cache (at most 20), so every call reads its weight from DRAM as a layer of a whole model
does (``warm``: one copy, as the benchmarks time; a weight that fits in L2 is then read from L2). The mode is
recorded (``l2`` in results.json; ``sparsec autotune --import`` puts ``:l2=cold`` in the records' runner), and the
format decision compares only records measured in the same mode (``tune.lookup_pair``).
Results are written after every cell (temp file + rename), so a run stopped by ``--budget-s`` keeps what it
measured; the cells left are listed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import env  # noqa: E402  (the repository on sys.path, the TVM runtime bundle)

FINALISTS = 3


def finalists(cell: dict, entries: list[dict], times: dict, n: int = FINALISTS) -> list[dict]:
    """Give each correct entry its samples and median; the ``n`` fastest correct ones plus the planner's (when it
    is correct): what is re-timed interleaved."""
    for e in entries:
        if e["status"] == "ok":
            e["times_us"] = list(times[e["name"]])
            e["us"] = statistics.median(e["times_us"])
    ok = sorted((e for e in entries if e["status"] == "ok"), key=lambda e: e["us"])
    planner = next((e for e in entries if e["knobs"] == cell["planner"]), None)
    return ok[:n] + ([planner] if planner is not None and planner["status"] == "ok" and planner not in ok[:n]
                     else [])


def cell_result(cell: dict, entries: list[dict], fin: list[dict], conf: dict) -> dict:
    """One cell of ``results.json`` (what ``tune.import_results`` reads)."""
    confirm = [{"name": e["name"], "knobs": e["knobs"], "times_us": list(conf[e["name"]]),
                "us": statistics.median(conf[e["name"]])} for e in fin]
    return {**{k: cell[k] for k in ("O", "K", "T", "density", "dtype", "arch", "where", "key", "planner")},
            "kind": cell.get("kind", "tiled"),
            "candidates": entries, "confirm": confirm}


def main() -> int:
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.kernels import tiled_layout as TL
    from sparsec.backends.cuda.tune import SCHEMA
    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import Bitmap

    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--out")
    ap.add_argument("--budget-s", type=float, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--confirm", type=int, default=9)
    ap.add_argument("--l2", choices=("cold", "warm"), default="cold",
                    help="cold (default): weights past the L2 cache, as in a whole model; warm: one weight copy")
    a = ap.parse_args()
    t0 = time.time()
    spec = json.load(open(os.path.join(a.dir, "tune.json")))
    if spec.get("schema") != SCHEMA:
        print(f"{a.dir}/tune.json: schema {spec.get('schema')!r}, expected {SCHEMA!r}", file=sys.stderr)
        return 2
    lib = load_library(os.path.join(a.dir, "tune.so"))
    out_path = a.out or os.path.join(a.dir, "results.json")
    info = env.machine_info()
    print("machine:", info, flush=True)
    res = {"schema": SCHEMA, "machine": info, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "arch": spec["arch"],
           "versions": spec["versions"], "rounds": a.rounds, "confirm_rounds": a.confirm, "l2": a.l2,
           "l2_bytes": env.l2_bytes(), "cells": [], "skipped": []}

    def save():
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, out_path)

    dev = torch.device("cuda")
    weights = {}           # (O, K, density) -> (w on the GPU, bitmap with GPU buffers)
    cells = spec["cells"]
    for ci, cell in enumerate(cells):
        if time.time() - t0 > a.budget_s:
            res["skipped"] = [f"{c['O']}x{c['K']} T={c['T']} d={c['density']}" for c in cells[ci:]]
            print(f"budget spent: {len(cells) - ci} cells left", flush=True)
            break
        O, K, T, d = cell["O"], cell["K"], cell["T"], cell["density"]
        dense = cell.get("kind", "tiled") == "dense"      # a dense layer on the wgmma GEMM: the weight itself
        dt = getattr(torch, cell.get("dtype", "float16"))
        wk = (O, K, d, dt, dense)
        if wk not in weights:
            weights.clear()
            torch.cuda.empty_cache()
            g = torch.Generator(device=dev).manual_seed(O * 31 + K * 7 + int(d * 1000))
            w = torch.randn(O, K, device=dev, dtype=dt, generator=g) * (1.0 / K ** 0.5)
            f = None
            if not dense:
                w = w * (torch.rand(O, K, device=dev, generator=g) < d)
                f = Bitmap.from_dense(w.cpu(), tile=(8, 32))
                f = dataclasses.replace(f, **{b: getattr(f, b).to(dev) for b in f.buffers})
            weights[wk] = (w, f)
        w, f = weights[wk]
        x = torch.randn(T, K, device=dev, dtype=dt)
        y = torch.empty(T, O, device=dev, dtype=dt)
        ref = F.linear(x.float(), w.float())
        layouts, fns, out_c = {}, {}, []
        wsets = env.weight_copies([w], a.l2) if dense else None
        for cd in cell["candidates"]:
            kn = cd["knobs"]
            if dense:
                fn = env.cycling(lambda *ws, k_=lib[cd["name"]]: k_(*ws, x, y), wsets)
            else:
                lk = TL.layout_key(kn)
                if lk not in layouts:
                    lay, names = TL.build_for(f, kn)
                    layouts[lk] = env.weight_copies([lay[b] for b in names], a.l2)
                fn = env.cycling(lambda *ws, k_=lib[cd["name"]]: k_(*ws, x, y), layouts[lk])
            y.fill_(float("nan"))
            entry = {"name": cd["name"], "knobs": kn}
            try:
                fn()
                torch.cuda.synchronize()
                err = float((y.float() - ref).abs().max() / ref.abs().max())
            except Exception as exc:  # noqa: BLE001  (a kernel that cannot launch is recorded, not fatal)
                entry.update(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
                out_c.append(entry)
                continue
            entry["rel_err"] = err
            if not err <= env.KERNEL_TOL[cell.get("dtype", "float16")]:
                entry.update(status="wrong", error=f"relative error {err:.3e} vs F.linear")
                print(f"WRONG {cd['name']} {kn}: {err:.2e}", flush=True)
            else:
                entry["status"] = "ok"
                fns[cd["name"]] = fn
            out_c.append(entry)
        graphs = env.capture_graphs(fns)
        times = env.replay_interleaved(graphs, a.rounds)
        fin = finalists(cell, out_c, times)
        conf = env.replay_interleaved({e["name"]: graphs[e["name"]] for e in fin}, a.confirm)
        del graphs
        res["cells"].append(cell_result(cell, out_c, fin, conf))
        confirm = res["cells"][-1]["confirm"]
        cbest = min(confirm, key=lambda e: e["us"]) if confirm else None
        cpl = next((e for e in confirm if e["knobs"] == cell["planner"]), None)
        n_ok = sum(e["status"] == "ok" for e in out_c)
        print(f"[{ci + 1}/{len(cells)}] {O}x{K} T={T} {'dense' if dense else f'{1 - d:.0%}'}: {n_ok}/{len(out_c)} ok; planner "
              f"{cpl['us'] if cpl else float('nan'):.1f} us, best {cbest['us'] if cbest else float('nan'):.1f} us "
              f"{cbest['knobs'] if cbest else ''}  ({time.time() - t0:.0f}s)", flush=True)
        save()
    res["seconds"] = time.time() - t0
    save()
    bad = sum(1 for c in res["cells"] for e in c["candidates"] if e["status"] != "ok")
    print(f"tuned {len(res['cells'])}/{len(cells)} cells in {res['seconds']:.0f}s; {bad} candidates not ok; "
          f"wrote {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
