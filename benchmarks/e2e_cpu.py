"""End-to-end CPU benchmark: BERT-base encoder (transformers config, random
weights) pruned to 90% (block 4x4 and unstructured) compiled by sparsec, vs
torch eager and torch.compile (inductor) on the same pruned weights and inputs.

    .venv/bin/python benchmarks/e2e_cpu.py [--layers 12] [--seq 128] [--repeat 10] [--no-inductor]

Prints the machine, threads, compile times and the speedup table; writes
benchmarks/results/e2e_cpu.json and e2e_cpu.png. Goals (issue 5): >= 2.5x eager,
>= 2x inductor, compile < 30 s with default schedules.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import RESULTS, interleaved, machine, write_json  # noqa: E402


def bert_base(layers: int, seq: int, batch: int):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(num_hidden_layers=layers, attn_implementation="eager")
    torch.manual_seed(0)
    m = BertModel(cfg, add_pooling_layer=True).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    return m, (ids,)


def with_weights(m, graph, report):
    """Copy the pruned weights sparsec compiled back into the torch model (same function)."""
    sd = m.state_dict()
    for r in report:
        w = graph.constant(r["weight"]).dense()
        name = r["weight"]
        if name.endswith(".T"):                 # canonicalised addmm weight
            name, w = name[:-2], w.t()
        if name in sd:
            sd[name] = w.reshape(sd[name].shape)
    m.load_state_dict(sd)
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-inductor", action="store_true")
    ap.add_argument("--out", default="e2e_cpu")
    args = ap.parse_args(argv)

    import sparsec
    from sparsec.backends.target import num_threads

    threads = num_threads()
    torch.set_num_threads(threads)
    info = machine(threads)
    print(f"machine: {info['cpu']}, threads {threads} (torch and TVM), torch {info['torch']}, tvm {info['tvm']}")
    print(f"model: BERT-base encoder, {args.layers} layers, batch {args.batch} x seq {args.seq}, fp32")
    rows = []
    for label, pattern, sparsity in [("block 4x4 90%", "block:4x4", 0.9), ("unstructured 90%", "unstructured", 0.9)]:
        m, x = bert_base(args.layers, args.seq, args.batch)
        t0 = time.perf_counter()
        c = sparsec.compile(m, x, pattern=pattern, sparsity=sparsity, format="auto")
        compile_s = time.perf_counter() - t0
        m = with_weights(m, c.graph, c.report)
        with torch.no_grad():
            ref = m(*x).last_hidden_state
        got = c(*x)[0]
        err = float((got - ref).abs().max() / ref.abs().max())
        fns = {"eager": lambda: m(*x), "sparsec": lambda: c(*x)}
        ind_s = None
        if not args.no_inductor:
            t1 = time.perf_counter()
            mi = torch.compile(m, backend="inductor")
            with torch.no_grad():
                mi(*x)
            ind_s = time.perf_counter() - t1
            fns["inductor"] = lambda: mi(*x)
        with torch.no_grad():
            t = interleaved(fns, repeat=args.repeat)
        formats = sorted({r["format"] for r in c.report})
        row = {"case": label, "formats": formats, "max_rel_err_vs_eager": err, "compile_s": compile_s,
               "inductor_compile_s": ind_s, "times_s": t,
               "speedup_vs_eager": t["eager"] / t["sparsec"],
               "speedup_vs_inductor": t["inductor"] / t["sparsec"] if "inductor" in t else None}
        rows.append(row)
        ind = f", inductor {t['inductor'] * 1e3:.1f} ms ({row['speedup_vs_inductor']:.2f}x)" if "inductor" in t else ""
        print(f"{label:<18} formats {','.join(formats):<10} err {err:.1e}  compile {compile_s:.1f}s  "
              f"eager {t['eager'] * 1e3:.1f} ms, sparsec {t['sparsec'] * 1e3:.1f} ms "
              f"({row['speedup_vs_eager']:.2f}x){ind}")
        # per-layer profile of the compiled model: where the time goes
        _, prof = c.compiled.executor().run_profiled(*x)
        row["profile_top"] = sorted(prof.items(), key=lambda kv: -kv[1])[:15]
    out = {"machine": info, "config": vars(args), "results": rows,
           "goals": {"speedup_vs_eager": 2.5, "speedup_vs_inductor": 2.0, "compile_s": 30}}
    print("wrote", write_json(f"{args.out}.json", out))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = [r["case"] for r in rows]
        sys_names = [k for k in ("eager", "inductor", "sparsec") if k in rows[0]["times_s"]]
        for i, s in enumerate(sys_names):
            ax.bar([j + i * 0.25 for j in range(len(rows))], [r["times_s"][s] * 1e3 for r in rows], 0.25, label=s)
        ax.set_xticks([j + 0.25 for j in range(len(rows))], labels)
        ax.set_ylabel("ms per forward (median)")
        ax.set_title(f"BERT-base x{args.layers} layers, seq {args.seq}, {threads} threads")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"{args.out}.png"), dpi=100)
    except Exception as exc:  # the plot is a convenience; the JSON is the record
        print("plot failed:", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
