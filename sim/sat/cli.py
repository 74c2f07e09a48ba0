"""``sparsec simulate sat``: one training step of a workload on SAT, sparse (BDWP) vs dense."""
from __future__ import annotations

import json
import os
import sys
import tempfile

from sparsec.ir.errors import ParameterError


def register(sims) -> None:
    p = sims.add_parser("sat", help="SAT: N:M sparse training accelerator (BDWP dataflow)",
                        description="Simulate one training step (FF, BP, WU of every conv/linear layer, and the "
                                    "non-GEMM work: norms, activations, pooling, attention matmuls, loss, weight "
                                    "update) on SAT with BDWP N:M weights, against dense training on the same "
                                    "accelerator.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workload", help="built-in workload: resnet18, resnet50, vgg16, vit_b16, bert_base")
    src.add_argument("--model", help="model file (defines model/get_model() and example_inputs()/EXAMPLE_INPUTS)")
    p.add_argument("--pattern", default="2:8", help="BDWP N:M pattern (default 2:8)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default 32 for built-ins, the example inputs' batch for --model)")
    p.add_argument("--config", help="SAT config TOML (overrides default.toml section by section)")
    p.add_argument("--opts", default="all", help="dataflow optimisations: all | none | interleave,pregen,offline")
    p.add_argument("--gemm-only", action="store_true",
                   help="simulate only the conv/linear GEMMs (sets [step] gemm_only = true)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None,
                   help="weight update (default: the built-in's recipe, else [step] optimizer)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--plot", help="write a PNG of per-layer cycles (dense vs sparse) and utilisation")
    p.add_argument("--top", type=int, default=0, help="print only the first TOP per-layer rows (0: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def _progress(total: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None, None
    from rich.progress import Progress
    prog = Progress(transient=True, console=__import__("rich.console").console.Console(stderr=True))
    task = prog.add_task("planning GEMMs", total=total)
    prog.start()
    return prog, (lambda: prog.advance(task))


def main(args) -> int:
    from sparsec.sim.sat import report
    from sparsec.sim.sat.config import load_config
    from sparsec.sim.sat.pipeline import Opts
    from sparsec.sim.sat.simulator import compare, gemm_only
    from sparsec.sim.sat.workloads import OPTIMISER, builtin, canonical

    cfg = load_config(args.config)
    if args.gemm_only:
        cfg = gemm_only(cfg)
    opts = Opts.parse(args.opts)
    route = "built-in"
    optimizer = args.optimizer
    if args.workload:
        layers, batch = builtin(args.workload), 32
        name = args.workload
        optimizer = optimizer or OPTIMISER[canonical(name)]
    else:
        from sparsec.sim.sat.from_graph import load_layers
        layers, batch, route = load_layers(args.model)
        name = os.path.basename(args.model)
    if args.batch is not None:
        if args.batch < 1:
            raise ParameterError(f"--batch must be >= 1, got {args.batch}")
        batch = args.batch
    prog, tick = _progress(None, args.quiet)
    try:
        res = compare(layers, cfg, args.pattern, batch, opts, tick, optimizer)
    finally:
        if prog:
            prog.stop()
    sp, de = res["sparse"], res["dense"]
    if args.plot:
        plot(sp.rows, de.rows, args.plot, f"{name} {sp.pattern} vs dense (batch {batch}, opts {opts})")
    if args.json:
        out = {"workload": name, "layers_from": route, "config": cfg.source, "pattern": sp.pattern,
               "opts": str(opts), "batch": batch, "gemm_only": res["gemm_only"],
               "optimizer": None if cfg.step.gemm_only else (optimizer or cfg.step.optimizer),
               "speedup": res["speedup"], "speedup_gemm_only": res["speedup_gemm_only"], "bound": res["bound"],
               "work_bound": res["work_bound"],
               "energy_ratio": res["energy_ratio"], "sparse": {"totals": sp.totals,
                                                             "rows": [r.as_dict() for r in sp.rows]},
               "dense": {"totals": de.totals, "rows": [r.as_dict() for r in de.rows]}}
        print(json.dumps(out, indent=1))
        return 0
    a = cfg.array
    print(f"SAT {a.rows}x{a.cols} @ {a.freq_mhz:g} MHz, config {cfg.source}; workload {name} "
          f"({len(layers)} layers, from {route}), batch {batch}, pattern {sp.pattern}, opts {opts}")
    print(report.format_table(sp.rows, de.rows, args.top or None))
    st, dt = sp.totals, de.totals
    print(f"\ntotal cycles: sparse {st['cycles']:,} ({st['seconds'] * 1e3:.2f} ms), dense {dt['cycles']:,} "
          f"({dt['seconds'] * 1e3:.2f} ms)")
    print(f"utilisation: sparse {st['utilisation']:.1%}, dense {dt['utilisation']:.1%}; stall cycles: "
          f"sparse {st['stall']:,}, dense {dt['stall']:,}")
    print(f"DRAM: sparse {st['dram_bytes'] / 1e9:.3f} GB, dense {dt['dram_bytes'] / 1e9:.3f} GB; energy: "
          f"sparse {st['energy_pj'] / 1e12:.4f} J, dense {dt['energy_pj'] / 1e12:.4f} J "
          f"({res['energy_ratio']:.2f}x)")
    if not cfg.step.gemm_only:
        kinds = ", ".join(f"{k} {sp.totals['cycles_by_kind'][k]:,}/{de.totals['cycles_by_kind'][k]:,}"
                          for k in ("gemm", "matmul", "vector", "update", "pregen"))
        print(f"cycles by kind (sparse/dense): {kinds}; optimizer {optimizer or cfg.step.optimizer}")
        print(f"speedup vs dense training, conv/linear GEMMs only: {res['speedup_gemm_only']:.3f}x")
    what = "GEMMs only" if cfg.step.gemm_only else "full step"
    print(f"speedup vs dense training ({what}): {res['speedup']:.3f}x   (bound 3/(2N/M+1) = {res['bound']:.3f}x; "
          f"this workload's MAC ratio {res['work_bound']:.3f}x)")
    return 0


def plot(rows, dense_rows, path: str, title: str) -> None:
    """Per-layer cycles (sum of phases) dense vs sparse, and per-layer utilisation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def per_layer(rs):
        d = {}
        for r in rs:
            c, m = d.get(r.layer, (0, 0))
            d[r.layer] = (c + r.cycles, m + r.macs)
        return d

    sp, de = per_layer(rows), per_layer(dense_rows)
    names = list(de)
    x = range(len(names))
    cfg_pes = None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, len(names) * 0.18), 7), sharex=True)
    ax1.bar([i - 0.2 for i in x], [de[n][0] for n in names], 0.4, label="dense")
    ax1.bar([i + 0.2 for i in x], [sp.get(n, (0, 0))[0] for n in names], 0.4, label="BDWP sparse")
    ax1.set_ylabel("cycles (FF+BP+WU)")
    ax1.legend()
    ax1.set_title(title)
    ud = [de[n][1] / de[n][0] if de[n][0] else 0 for n in names]
    us = [sp[n][1] / sp[n][0] if sp.get(n, (0, 0))[0] else 0 for n in names]
    del cfg_pes
    ax2.plot(list(x), ud, ".-", label="dense")
    ax2.plot(list(x), us, ".-", label="sparse")
    ax2.set_ylabel("MACs / cycle")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels(names, rotation=90, fontsize=5)
    ax2.legend()
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=d)
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
