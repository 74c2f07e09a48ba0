"""Does fusing the residual add into the matmul epilogue pay end to end? BERT-like encoder, CPU.

    .venv/bin/python benchmarks/fusion_residual_e2e.py [--model examples/bert_encoder.py] [--repeat 30]

Compiles each model (the BERT-like post-LN encoder, and a pre-LN block stack defined here)
twice per setting (dense, and pruned unstructured 90% with --format auto),
once with the full fusion pass and once with ``fuse_epilogues(residual=False)``, checks both
against the reference interpreter, and times them interleaved (median of --repeat runs).
Prints the plan's step counts and the speedup of fusing; writes
benchmarks/results/fusion_residual_e2e.json.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import interleaved, machine, write_json  # noqa: E402


class PreLNBlock(torch.nn.Module):
    """A pre-LN (GPT-style) block: ``x + proj(attn(ln1(x)))`` then ``x + ff2(gelu(ff1(ln2(x))))``. Each
    sum has two users (the next LayerNorm and the next residual), so unfused it is a kernel of its own."""

    def __init__(self, d=256, heads=4, ff=1024):
        super().__init__()
        self.h = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ff1, self.ff2 = torch.nn.Linear(d, ff), torch.nn.Linear(ff, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (y.view(b, t, self.h, d // self.h).transpose(1, 2) for y in self.qkv(self.ln1(x)).split(d, -1))
        a = torch.softmax(q @ k.transpose(-2, -1) / (d // self.h) ** 0.5, -1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(torch.nn.functional.gelu(self.ff1(self.ln2(x))))


def pre_ln(layers=2, seq=128):
    torch.manual_seed(0)
    return torch.nn.Sequential(*[PreLNBlock() for _ in range(layers)]).eval(), (torch.randn(1, seq, 256),)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                    "examples", "bert_encoder.py"))
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)

    import sparsec
    import sparsec.backends.llvm.pipeline as pipe
    from sparsec.backends.target import num_threads
    from sparsec.ir.interpret import interpret
    from sparsec.ir.ops import Op
    from sparsec.passes.fuse import fuse_epilogues

    threads = num_threads()
    torch.set_num_threads(threads)
    info = machine(threads)
    print(f"machine: {info['cpu']}, {threads} threads; model {os.path.basename(args.model)}")
    rows = []
    sp = {"pattern": "unstructured", "sparsity": 0.9}
    settings = [(f"{os.path.basename(args.model)} dense", (args.model,), {}),
                (f"{os.path.basename(args.model)} 90% auto", (args.model,), sp),
                ("pre-LN x2 dense", pre_ln(), {}), ("pre-LN x2 90% auto", pre_ln(), sp)]
    for label, model, kw in settings:
        compiled = {}
        for fused in (True, False):
            pipe.fuse_epilogues = (fuse_epilogues if fused else (lambda g: fuse_epilogues(g, residual=False)))
            try:
                c = sparsec.compile(*model, **kw)
            finally:
                pipe.fuse_epilogues = fuse_epilogues
            x = c.example_inputs
            ref = interpret(c.graph, *x)[0]
            err = float((c(*x)[0] - ref).abs().max() / ref.abs().max())
            assert err < 1e-4, f"{label} fused={fused}: disagrees with the interpreter ({err:.1e})"
            compiled[fused] = c
        x = compiled[True].example_inputs
        ex = {f: compiled[f].compiled.executor() for f in (True, False)}
        t = interleaved({f: (lambda e=e: e(*x)) for f, e in ex.items()}, repeat=args.repeat)
        n_res = sum(n.op == Op.LINEAR and n.attr["residual"] for n in compiled[True].graph.nodes)
        steps = {f: len(compiled[f].compiled.plan["steps"]) for f in (True, False)}
        row = {"setting": label, "fused_residuals": n_res, "steps_fused": steps[True], "steps_unfused": steps[False],
               "ms_fused": t[True] * 1e3, "ms_unfused": t[False] * 1e3, "speedup": t[False] / t[True]}
        rows.append(row)
        print(f"{label:<30} residual adds fused: {n_res}  steps {steps[False]} -> {steps[True]}  "
              f"unfused {row['ms_unfused']:.2f} ms  fused {row['ms_fused']:.2f} ms  speedup {row['speedup']:.3f}x")
    print("wrote", write_json("fusion_residual_e2e.json", {"machine": info, "repeat": args.repeat, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
