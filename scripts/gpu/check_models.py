"""GPU side: every whole model compiled by scripts/gpu/build_models.py vs eager torch on the GPU.

    python3 scripts/gpu/check_models.py MODELDIR OUT.json

Per model: the eager reference is rebuilt from code (scripts/gpu/models.py; its weight checksum must
equal the build's), cast to the artifact's dtype and run on the GPU (torch eager, the same pruned
weights); the artifact runs through ``sparsec.load`` (TVM runtime only). Passes when
``max|sparsec - torch| / max|torch| <= TOL[dtype]``; the error of torch's own low-precision run
against torch fp32 is printed beside it for scale. Exit 1 if any model fails.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import env  # noqa: E402,F401  (sparsec from the checkout, TVM runtime bundle)

import torch  # noqa: E402

import models as M  # noqa: E402

TOL = {"float16": 2e-2, "bfloat16": 6e-2, "float32": 1e-4}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def restore_weights(mdir: str, name: str, entry: dict) -> str:
    """The artifact path. An artifact shipped without weights/ gets them back: copied from its twin
    (``weights_from``) or packed from the model rebuilt from code (``weights_from_code``); either way
    ``sparsec.load`` checks every file against the manifest's sha256."""
    path = os.path.join(mdir, f"{name}.sparsec")
    if entry.get("dispatch"):                   # a dispatch artifact: every variant's weights/ from code
        if entry.get("weights_from_code"):
            model, _ = M.build(entry["model"])
            for i in range(entry["dispatch"]):
                if not os.path.isdir(os.path.join(path, f"v{i}", "weights")):
                    M.write_weights(model, os.path.join(path, f"v{i}"))
        return path
    if os.path.isdir(os.path.join(path, "weights")):
        return path
    src = entry.get("weights_from")
    if src and os.path.isdir(os.path.join(mdir, src, "weights")):
        shutil.copytree(os.path.join(mdir, src, "weights"), os.path.join(path, "weights"))
    elif entry.get("weights_from_code"):
        model, _ = M.build(entry["model"])
        M.write_weights(model, path)
    return path


def check_one(mdir: str, name: str, entry: dict) -> dict:
    import sparsec

    dt = getattr(torch, entry["dtype"])
    model, _ = M.build(entry["model"])
    csum = M.checksum(model)
    if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(csum, entry["checksum"])):
        return {"ok": False, "error": f"reference weights differ from the build's (checksum {csum} vs "
                                      f"{entry['checksum']}): torch/transformers versions draw differently"}
    if entry.get("batch") is not None:          # BERT-base: inputs drawn from code (scripts/gpu/models.py)
        inputs = M.bert_base_inputs(entry["batch"], dt)
    else:
        inputs = torch.load(os.path.join(mdir, f"{name}.inputs.pt"))
    # a dispatch model: one input tuple per variant, each run through the one artifact (its shapes pick the variant)
    calls = list(inputs) if entry.get("dispatch") else [inputs]
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    art = sparsec.load(restore_weights(mdir, name, entry))
    load_s = time.perf_counter() - t0
    errs, lowp, vs32, finite, variants = [], [], [], True, []
    for i, call in enumerate(calls):
        ins = tuple(x.to(dev) for x in call)
        with torch.no_grad(), torch.device(dev):     # factories inside forward (torch.arange(t)) on the GPU
            ref32 = _tuple(model.float().to(dev)(*tuple(x.float() if x.is_floating_point() else x for x in ins)))
            ref = _tuple(model.to(dt)(*ins))
        outs = tuple(art(*ins))
        torch.cuda.synchronize()
        if len(outs) != len(ref) or any(o.shape != r.shape for o, r in zip(outs, ref)):
            return {"ok": False, "error": f"call {i}: outputs {[tuple(o.shape) for o in outs]} vs torch "
                                          f"{[tuple(r.shape) for r in ref]}"}
        if entry.get("dispatch") and art.last_variant != i:
            return {"ok": False, "error": f"call {i} (inputs {[tuple(x.shape) for x in ins]}) ran variant "
                                          f"v{art.last_variant}, not v{i}"}
        errs.append(max(rel(o, r) for o, r in zip(outs, ref)))
        lowp.append(max(rel(r, r2) for r, r2 in zip(ref, ref32)))
        vs32.append(max(rel(o, r2) for o, r2 in zip(outs, ref32)))
        finite = finite and all(bool(torch.isfinite(o).all()) for o in outs)
        variants.append({"inputs": [list(x.shape) for x in ins], "max_rel_err": errs[-1]})
    err = max(errs)
    out = {"ok": bool(err <= TOL[entry["dtype"]]) and finite, "max_rel_err": err, "outputs": len(outs),
           "tol": TOL[entry["dtype"]], "torch_lowp_vs_fp32": max(lowp), "sparsec_vs_fp32": max(vs32),
           "dtype": entry["dtype"], "steps": entry["steps"], "load_s": round(load_s, 2),
           "formats": sorted(set(entry["formats"].values())),
           "designs": sorted(set(entry.get("designs", {}).values()))}
    if entry.get("dispatch"):
        out["variants"] = variants
        # weight files the variants share are on the GPU once (CudaLoaded's ``shared``): distinct vs all
        consts = [v.executor.views[n] for v in art.variants for n, val in v.executor.plan["values"].items()
                  if val["kind"] == "const"]
        out["gpu_weights"] = {"tensors": len(consts), "distinct": len({t.data_ptr() for t in consts})}
    return out


def _tuple(y) -> tuple:
    if isinstance(y, torch.Tensor):
        return (y,)
    return tuple(t for t in y if isinstance(t, torch.Tensor))


def main() -> int:
    mdir, out_json = sys.argv[1], sys.argv[2]
    index = json.load(open(os.path.join(mdir, "models.json")))
    results = {"machine": env.machine_info(), "models": {}}
    bad = 0
    for name, entry in index.items():
        try:
            r = check_one(mdir, name, entry)
        except Exception as exc:  # noqa: BLE001  (report every model)
            r = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        results["models"][name] = r
        bad += not r["ok"]
        if "max_rel_err" in r:
            print(f"[{'OK ' if r['ok'] else 'BAD'}] {name:<14} {r['dtype']:<9} max rel err vs torch {r['max_rel_err']:.2e} "
                  f"(tol {r['tol']:.0e}; torch {r['dtype']} vs fp32 {r['torch_lowp_vs_fp32']:.2e}, sparsec vs fp32 "
                  f"{r['sparsec_vs_fp32']:.2e}) {r['steps']} steps {','.join(r['designs'] or r['formats'])}", flush=True)
        else:
            print(f"[BAD] {name:<14} {r['error']}", flush=True)
    results["passed"] = len(index) - bad
    results["total"] = len(index)
    with open(out_json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"whole models: {len(index) - bad}/{len(index)} match eager torch on the GPU")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
