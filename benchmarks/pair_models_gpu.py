"""GPU side: one model compiled twice for --target cuda, timed against itself (two ways of compiling it).

    python3 benchmarks/pair_models_gpu.py MODELDIR OUTDIR [--pair first,second ...] [--study format|pdl]

MODELDIR is ``scripts/gpu/build_models.py``'s output with both artifacts of each pair. Studies:

- ``format`` (default; writes ``format_measured_gpu.*``): the formats from the cost rule and from measurement,
  default pair ``llm_mlp60,llm_mlp60_tuned`` (``examples/llm_mlp.py`` at 60 % and 64 tokens, built without a
  tuning database and with ``benchmarks/results/dev/fmt14/db.jsonl``, where ``sparsec autotune --target cuda``
  measured each layer's tiled kernel and dense GEMM);
- ``pdl`` (writes ``pdl_models_gpu.*``): the planner's launches without and with ``pdl=2`` (every launch
  overlapping the previous kernel), default pairs ``decode_mlp16_70_nopdl,decode_mlp16_70`` and
  ``llm_mlp60_nopdl,llm_mlp60`` (built with ``SPARSEC_CUDA_PDL=0`` and without).

Per pair: both artifacts against eager torch fp16 (the reference rebuilt from code, its checksum the build's),
then both timed as CUDA graphs of 20 calls, replayed alternately ``ROUNDS`` times (medians), GPU time per call.
Writes OUTDIR/<study file>.{json,png} and prints one line per pair.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts", "gpu"))
import env  # noqa: E402,F401  (sparsec from the checkout, TVM runtime bundle)

import torch  # noqa: E402

import models as M  # noqa: E402
from check_models import TOL, rel, restore_weights  # noqa: E402

ROUNDS = 15
ITERS = 20
STUDIES = {"format": ("format_measured_gpu", ("cost rule", "measured formats"), ["llm_mlp60,llm_mlp60_tuned"]),
           "pdl": ("pdl_models_gpu", ("pdl off", "pdl=2"),
                   ["decode_mlp16_70_nopdl,decode_mlp16_70", "llm_mlp60_nopdl,llm_mlp60"])}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mdir")
    ap.add_argument("outdir")
    ap.add_argument("--pair", action="append", help="first,second artifact names (models.json)")
    ap.add_argument("--study", choices=sorted(STUDIES), default="format")
    a = ap.parse_args()
    import sparsec

    fname, legend, default_pairs = STUDIES[a.study]
    os.makedirs(a.outdir, exist_ok=True)
    index = json.load(open(os.path.join(a.mdir, "models.json")))
    pairs = [p.split(",") for p in (a.pair or default_pairs)]
    res = {"machine": env.machine_info(), "rounds": ROUNDS, "iters": ITERS, "pairs": []}
    bad = 0
    dev = torch.device("cuda")
    for names in pairs:
        entries = [index[n] for n in names]
        model, _ = M.build(entries[0]["model"])
        if any(abs(x - y) > 1e-6 * max(1.0, abs(y)) for x, y in zip(M.checksum(model), entries[0]["checksum"])):
            print(f"{names}: reference weights differ from the build's", flush=True)
            return 1
        inputs = (M.bert_base_inputs(entries[0]["batch"]) if entries[0].get("batch") is not None    # drawn from code
                  else torch.load(os.path.join(a.mdir, f"{names[0]}.inputs.pt")))
        x = inputs[0].to(dev)
        with torch.no_grad():
            ref = model.half().to(dev)(x)
        row = {"pair": names, "model": entries[0]["model"], "tokens": int(x.numel() // x.shape[-1]), "variants": []}
        graphs = []
        for n, e in zip(names, entries):
            art = sparsec.load(restore_weights(a.mdir, n, e))
            out = art(x)[0]
            err = rel(out, ref)
            ok = bool(err <= TOL[e["dtype"]]) and bool(torch.isfinite(out).all())
            bad += not ok
            ex = art.executor
            ex.load_inputs(x)
            graphs.append((n, env.capture_graph(ex.launch, ITERS), art))
            row["variants"].append({"name": n, "max_rel_err": err, "ok": ok, "tuning_db": e.get("tuning_db"),
                                    "kernels": {k["weight"]: f"{k['format']} {k['design']}"
                                                for k in art.manifest.get("kernels", {}).values()}})
        # alternately (the machine is shared and noisy): us per call of each replay
        times = env.replay_interleaved({n: g for n, g, _ in graphs}, ROUNDS, ITERS)
        for v in row["variants"]:
            v["us"] = statistics.median(times[v["name"]])
            v["times_us"] = times[v["name"]]
        p, m = row["variants"]
        row["speedup"] = p["us"] / m["us"]
        res["pairs"].append(row)
        print(f"{row['model']} T={row['tokens']}: {legend[0]} {p['us']:.1f} us ({', '.join(sorted(set(p['kernels'].values())))}"
              f"; err {p['max_rel_err']:.1e}) | {legend[1]} {m['us']:.1f} us "
              f"({', '.join(sorted(set(m['kernels'].values())))}; err {m['max_rel_err']:.1e}) | {row['speedup']:.2f}x",
              flush=True)
        graphs = None
    with open(os.path.join(a.outdir, f"{fname}.json"), "w") as f:
        json.dump(res, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        labels = [f"{r['model']}\nT={r['tokens']}" for r in res["pairs"]]
        xs = range(len(labels))
        ax.bar([i - 0.2 for i in xs], [r["variants"][0]["us"] for r in res["pairs"]], 0.4, label=legend[0])
        ax.bar([i + 0.2 for i in xs], [r["variants"][1]["us"] for r in res["pairs"]], 0.4, label=legend[1])
        ax.set_xticks(list(xs), labels)
        ax.set_ylabel("us per call (CUDA graph)")
        ax.set_title(res["machine"].get("gpu", "GPU"), fontsize=8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(a.outdir, f"{fname}.png"), dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
    print(f"{fname}: {len(pairs) * 2 - bad}/{len(pairs) * 2} artifacts match eager torch")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
