"""`make demo`: compile the bundled BERT-like encoder pruned to 90% for this CPU,
run it, check it against eager torch, print the report and the speedup.

Also prints the format table of a random 768x3072 weight (the formats demo).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "bert_encoder.py")


def _interleaved_medians(fns: dict, repeat: int = 15, warmup: int = 3) -> dict:
    """Median seconds per call of each function, runs interleaved (a busy machine hits both alike)."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    ts = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def main() -> int:
    from sparsec.backends.target import num_threads
    from sparsec.cli import main as cli_main
    from sparsec.commands.compile import print_report
    from sparsec.frontends import load_model

    print("== formats: a random 768x3072 weight in every format ==")
    cli_main(["formats", "--rows", "768", "--cols", "3072"])
    print()
    print(f"== compiling {os.path.relpath(EXAMPLE)} pruned to 90% (unstructured) for llvm ==")
    import sparsec

    c = sparsec.compile(EXAMPLE, sparsity=0.9, pattern="unstructured", format="auto")
    print_report(c.report)
    print(f"compile time {c.timings['total_s']:.1f}s ({c.timings['functions']} functions, "
          f"{c.timings['steps']} steps)")
    out = os.path.join(tempfile.mkdtemp(prefix="sparsec-demo-"), "bert_encoder.sparsec")
    c.save(out)
    model = sparsec.load(out)
    print(f"artifact: {out}")

    # eager torch with the same pruned weights (the function sparsec compiled)
    loaded = load_model(EXAMPLE)
    m, x = loaded.model, loaded.example_inputs
    pruned = {r["weight"]: c.graph.constant(r["weight"]).dense() for r in c.report}
    sd = m.state_dict()
    sd.update({k: v for k, v in pruned.items() if k in sd})
    m.load_state_dict(sd)
    with torch.no_grad():
        ref = m(*x)
    got = model(*x)
    err = max(float((g - r).abs().max() / r.abs().max()) for g, r in zip(got, ref))
    print(f"check vs eager torch (same pruned weights): max relative error {err:.2e}")
    if not err <= 1e-4:
        print("MISMATCH", file=sys.stderr)
        return 1
    threads = num_threads()
    torch.set_num_threads(threads)
    with torch.no_grad():
        t = _interleaved_medians({"torch": lambda: m(*x), "sparsec": lambda: model(*x)})
    print(f"threads {threads}: eager torch {t['torch'] * 1e3:.2f} ms, sparsec {t['sparsec'] * 1e3:.2f} ms, "
          f"speedup {t['torch'] / t['sparsec']:.2f}x (medians of 15 interleaved runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
