"""End to end on the GPU: BERT-base (transformers config, random weights, 90 % unstructured, fp16)
compiled by sparsec for CUDA vs torch eager fp16 and torch.compile (inductor), same pruned weights.

    python3 benchmarks/e2e_gpu.py MODELDIR OUTDIR        # GPU machine, TVM runtime bundle on PYTHONPATH

MODELDIR is scripts/gpu/build_models.py's output (bert_base_b1 / bert_base_b8 artifacts: the
12-layer encoder, input = embedding output [B, 128, 768]; see scripts/gpu/models.py). The torch
model is rebuilt from code with the same weights (checksum checked) and uses transformers' default
attention (SDPA, flash kernels) — the stronger eager baseline. Times: median over repetitions of
CUDA-event-timed loops; sparsec both as plain launches from Python and as one CUDA graph (its
launch sequence captured; torch eager is not graphed, inductor's default mode is not either).
Writes OUTDIR/e2e_gpu.{json,md,png} and prints a table.
"""
from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts", "gpu"))
import env  # noqa: E402,F401  (sparsec from the checkout, TVM runtime bundle)

import torch  # noqa: E402

import models as M  # noqa: E402
from check_models import rel, restore_weights  # noqa: E402

# (artifact, batch, pruning): 90 % unstructured at 1x128 and 8x128, and 2:4 at 8x128 (wgmma.mma_async.sp FFN)
CASES = (("bert_base_b1", 1, ""), ("bert_base_b8", 8, ""), ("bert_base_b8_24", 8, "2:4"))


def time_ms(fn, iters: int = 20, reps: int = 7) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / iters)
    ts.sort()
    return ts[len(ts) // 2]


def graphed(launch):
    """``launch`` (TVM kernels on torch's current stream) captured once; returns the replay."""
    from sparsec.backends.cuda.runtime import on_torch_stream

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        launch()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with on_torch_stream(torch.cuda.graph(g)):
        launch()
    return g.replay


def step_profile(ex, funcs: dict, top: int = 12) -> list[dict]:
    """GPU time per kernel kind (each step run alone, event-timed), largest first."""
    by: dict[str, float] = {}
    for f, args, s in ex._steps:
        ms = time_ms(lambda: f(*args), iters=5, reps=3)
        key = funcs.get(s["func"], s["func"])
        by[key] = by.get(key, 0.0) + ms
    tot = sum(by.values())
    return [{"kernel": k, "ms": round(v, 4), "share": round(v / tot, 3)}
            for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:top]]


def main() -> int:
    mdir, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    import sparsec

    index = json.load(open(os.path.join(mdir, "models.json")))
    info = env.machine_info()
    dev = torch.device("cuda")
    rows = []
    for name, b, pattern in CASES:
        if name not in index:
            print(f"{name}: not built, skipped", flush=True)
            continue
        entry = index[name]
        ref = M.BertBaseEncoder("sdpa").eval()
        M.init_weights(ref, M._seed("bert_base"))
        M.prune_24(ref) if pattern == "2:4" else M.prune(ref)
        csum = M.checksum(ref)
        model = ref.half().to(dev)
        if any(abs(x - y) > 1e-6 * max(1.0, abs(y)) for x, y in zip(csum, entry["checksum"])):
            print(f"{name}: reference weights differ from the build's: {csum} vs {entry['checksum']}")
            return 1
        x = M.bert_base_inputs(b, torch.float16)[0].to(dev)
        art = sparsec.load(restore_weights(mdir, name, entry))
        ex = art.executor
        with torch.no_grad():
            want = model(x)
            got = art(x)[0]
            err = rel(got, want)
            t_eager = time_ms(lambda: model(x))
            t0 = time.perf_counter()
            cmodel = torch.compile(model)
            cmodel(x)
            compile_s = time.perf_counter() - t0
            err_ind = rel(cmodel(x), want)
            t_ind = time_ms(lambda: cmodel(x))
        ex.load_inputs(x)
        t_sc = time_ms(ex.launch)
        replay = graphed(ex.launch)
        t_sc_graph = time_ms(replay)
        torch.cuda.synchronize()
        err_graph = rel(ex.output_views()[0], want)
        funcs = art.manifest.get("functions", {})
        prof = step_profile(ex, funcs)
        dense_bytes = sum(p.numel() * 2 for p in model.parameters())
        row = {"name": name, "pattern": pattern or "90% unstructured", "batch": b, "tokens": b * M.BERT_BASE_SEQ, "max_rel_err_vs_eager": err, "max_rel_err_graph": err_graph,
               "inductor_rel_err": err_ind, "eager_ms": t_eager, "inductor_ms": t_ind, "inductor_compile_s": compile_s,
               "sparsec_ms": t_sc, "sparsec_graph_ms": t_sc_graph, "speedup_vs_eager": t_eager / t_sc,
               "speedup_graph_vs_eager": t_eager / t_sc_graph, "speedup_graph_vs_inductor": t_ind / t_sc_graph,
               "steps": entry["steps"], "functions": entry["functions"], "dense_fp16_weight_bytes": dense_bytes,
               "profile": prof,
               # per linear: format + kernel design of the H100 cost rule (backends/cuda/select.py)
               "kernels": {n: {key: k[key] for key in ("weight", "format", "design", "predicted_us",
                                                       "dense_predicted_us")}
                           for n, k in art.manifest.get("kernels", {}).items()}}
        rows.append(row)
        print(f"BERT-base encoder {b}x128 fp16 {row['pattern']}: eager {t_eager:.3f} ms | inductor {t_ind:.3f} ms | sparsec "
              f"{t_sc:.3f} ms (graph {t_sc_graph:.3f} ms) | sparsec/eager {t_eager / t_sc:.2f}x (graph "
              f"{t_eager / t_sc_graph:.2f}x) | max rel err {err:.2e}", flush=True)
        for p in prof[:6]:
            print(f"    {p['ms']:8.3f} ms {p['share']:6.1%}  {p['kernel']}")
        cmodel = model = ref = None      # noqa: F841  (free the GPU weights before the next case)
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    res = {"machine": info, "model": "BERT-base encoder (transformers BertConfig defaults, 12 layers), "
                                     "embeddings excluded, 90% unstructured magnitude pruning per linear (and one 2:4 row), fp16",
           "goal": "sparsec >= 1.3x torch eager fp16", "rows": rows}
    with open(os.path.join(outdir, "e2e_gpu.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(outdir, "e2e_gpu.md"), "w") as f:
        f.write(f"# e2e GPU: BERT-base encoder, 90% unstructured and 2:4, fp16 ({info.get('gpu')}, driver {info.get('driver')}, "
                f"torch {info.get('torch')}, {info.get('date')})\n\n")
        f.write("| pattern | batch x seq | torch eager ms | inductor ms | sparsec ms | sparsec CUDA graph ms | vs eager | "
                "graph vs eager | graph vs inductor | max rel err |\n|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['pattern']} | {r['batch']}x128 | {r['eager_ms']:.3f} | {r['inductor_ms']:.3f} | {r['sparsec_ms']:.3f} | "
                    f"{r['sparsec_graph_ms']:.3f} | {r['speedup_vs_eager']:.2f}x | {r['speedup_graph_vs_eager']:.2f}x | "
                    f"{r['speedup_graph_vs_inductor']:.2f}x | {r['max_rel_err_vs_eager']:.1e} |\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = ["eager", "inductor", "sparsec", "sparsec graph"]
        for i, r in enumerate(rows):
            vals = [r["eager_ms"], r["inductor_ms"], r["sparsec_ms"], r["sparsec_graph_ms"]]
            ax.bar([j + i * 0.27 for j in range(4)], vals, width=0.27, label=f"{r['batch']}x128 {r['pattern']}")
        ax.set_xticks([j + 0.27 for j in range(4)], labels)
        ax.set_ylabel("ms")
        ax.set_title(f"BERT-base encoder fp16, 90% sparse, {info.get('gpu', 'GPU')}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "e2e_gpu.png"), dpi=110)
    except Exception as exc:  # noqa: BLE001
        print(f"plot skipped: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
