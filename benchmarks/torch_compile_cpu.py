"""torch.compile on the CPU: backend="sparsec" vs backend="inductor" vs eager.

1. Inference: BERT-base encoder (transformers config, random weights) with
   every linear weight pruned to 90% (block 4x4, magnitude) in the torch model
   itself, so all three run the same function; sparsec detects the sparsity
   and picks formats (``format="auto"``).
2. Training: one step (forward, backward, SGD) of an MLP with BDWP N:M
   weights (1:10 = 90% sparse forward and backward-data), ``backend="sparsec"``
   with ``options={"train": "bdwp", ...}`` vs the same BDWP training in eager
   PyTorch (``sparsec.training.bdwp_wrap``) vs a plain dense eager step.

    .venv/bin/python benchmarks/torch_compile_cpu.py [--layers 12] [--seq 128] [--repeat 10] [--no-inductor]

Prints the machine, threads, compile times and the ratios; writes
benchmarks/results/torch_compile_cpu.json and .png. Goal (issue 9): sparsec
>= 2x inductor on inference.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from benchmarks.common import RESULTS, interleaved, machine, write_json  # noqa: E402


def bert_base(layers: int, seq: int, batch: int, pattern: str, sparsity: float):
    from transformers import BertConfig, BertModel

    from sparsec.passes.prune import prune

    cfg = BertConfig(num_hidden_layers=layers, attn_implementation="eager")
    torch.manual_seed(0)
    m = BertModel(cfg, add_pooling_layer=True).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.copy_(prune(mod.weight, pattern, sparsity).weight)
    g = torch.Generator().manual_seed(1)
    return m, (torch.randint(0, cfg.vocab_size, (batch, seq), generator=g),)


def timed_compile(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def inference(args) -> dict:
    m, x = bert_base(args.layers, args.seq, args.batch, "block:4x4", 0.9)
    with torch.no_grad():
        ref = m(*x).last_hidden_state
        cs = torch.compile(m, backend="sparsec", options={"format": "auto"})
        got, sparsec_s = timed_compile(lambda: cs(*x).last_hidden_state)
        err = float((got - ref).abs().max() / ref.abs().max())
        fns = {"eager": lambda: m(*x), "sparsec": lambda: cs(*x)}
        ind_s = None
        if not args.no_inductor:
            ci = torch.compile(copy.deepcopy(m), backend="inductor")
            _, ind_s = timed_compile(lambda: ci(*x))
            fns["inductor"] = lambda: ci(*x)
        t = interleaved(fns, repeat=args.repeat)
    row = {"case": f"BERT-base x{args.layers} block 4x4 90%", "max_rel_err_vs_eager": err,
           "sparsec_compile_s": sparsec_s, "inductor_compile_s": ind_s, "times_s": t,
           "speedup_vs_eager": t["eager"] / t["sparsec"],
           "speedup_vs_inductor": t["inductor"] / t["sparsec"] if "inductor" in t else None}
    ind = f", inductor {t['inductor'] * 1e3:.1f} ms -> {row['speedup_vs_inductor']:.2f}x" if "inductor" in t else ""
    print(f"inference: err {err:.1e}, compile sparsec {sparsec_s:.1f}s"
          f"{'' if ind_s is None else f' inductor {ind_s:.1f}s'}; eager {t['eager'] * 1e3:.1f} ms, "
          f"sparsec {t['sparsec'] * 1e3:.1f} ms ({row['speedup_vs_eager']:.2f}x eager){ind}")
    return row


def mlp(d_in, hidden, d_out):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


def training(args) -> dict:
    from sparsec.training import bdwp_wrap

    pattern, k = "1:10", 10
    d_in, hidden, d_out, batch = 512, args.hidden, 10, args.train_batch
    x = torch.randn(batch, d_in)
    y = torch.randint(0, d_out, (batch,))

    def stepper(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return step

    ms = mlp(d_in, hidden, d_out)
    cs = torch.compile(ms, backend="sparsec", options={"train": "bdwp", "pattern": pattern, "mask_interval": k})
    s_step = stepper(cs)
    _, compile_s = timed_compile(s_step)
    fns = {"eager_dense": stepper(mlp(d_in, hidden, d_out)),
           "eager_bdwp": stepper(bdwp_wrap(mlp(d_in, hidden, d_out), pattern, mask_interval=k)),
           "sparsec_bdwp": s_step}
    t = interleaved(fns, repeat=args.repeat)
    row = {"case": f"MLP {d_in}-{hidden}-{hidden}-{d_out} batch {batch}, BDWP {pattern} (90%), masks every {k}",
           "sparsec_compile_s": compile_s, "times_s": t,
           "speedup_vs_eager_bdwp": t["eager_bdwp"] / t["sparsec_bdwp"],
           "speedup_vs_eager_dense": t["eager_dense"] / t["sparsec_bdwp"]}
    print(f"training step: eager dense {t['eager_dense'] * 1e3:.1f} ms, eager BDWP {t['eager_bdwp'] * 1e3:.1f} ms, "
          f"sparsec BDWP {t['sparsec_bdwp'] * 1e3:.1f} ms ({row['speedup_vs_eager_bdwp']:.2f}x eager BDWP, "
          f"{row['speedup_vs_eager_dense']:.2f}x eager dense); compile {compile_s:.1f}s")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-inductor", action="store_true")
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--out", default="torch_compile_cpu")
    args = ap.parse_args(argv)

    from sparsec.backends.target import num_threads

    threads = num_threads()
    torch.set_num_threads(threads)
    info = machine(threads)
    print(f"machine: {info['cpu']}, threads {threads} (torch and TVM), torch {info['torch']}, tvm {info['tvm']}")
    print(f"inference: BERT-base encoder, {args.layers} layers, batch {args.batch} x seq {args.seq}, fp32")
    rows = {}
    if not args.skip_inference:
        rows["inference"] = inference(args)
    rows["training"] = training(args)
    out = {"machine": info, "config": vars(args), "results": rows, "goals": {"inference_speedup_vs_inductor": 2.0}}
    print("wrote", write_json(f"{args.out}.json", out))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.5))
        axes = axes if len(rows) > 1 else [axes]
        for ax, (name, r) in zip(axes, rows.items()):
            ks = list(r["times_s"])
            ax.bar(ks, [r["times_s"][k] * 1e3 for k in ks])
            ax.set_ylabel("ms (median)")
            ax.set_title(name, fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
        fig.suptitle(f"torch.compile on CPU, {threads} threads", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"{args.out}.png"), dpi=100)
    except Exception as exc:   # the plot is a convenience; the JSON is the record
        print("plot failed:", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
