"""`sparsec autotune model.py`: tune formats × kernel knobs per sparse layer into the tuning database.

    sparsec autotune model.py --target llvm [--budget 10m | --trials N] [--db tuning.jsonl]
                              [--rpc host:port --key NAME] [--pattern P --sparsity S]
    sparsec autotune --merge OUT.jsonl A.jsonl B.jsonl ...

    sparsec autotune model.py --target cuda [--arch sm_90a] --emit DIR    # here: build the candidates
    python scripts/gpu/tune_tiled.py DIR                                  # on the GPU machine (no TVM there)
    sparsec autotune --target cuda --import DIR/results.json [--db ...]  # here: record the measurements

Resumable: configurations already in the database (same machine, target and
versions) are not measured again. `sparsec compile` reads the same database
(default ``$SPARSEC_TUNING_DB`` or ``<cache>/tuning.jsonl``).
"""
from __future__ import annotations

import re
import sys
import time

from sparsec.ir.errors import ParameterError


def parse_budget(text: str | None) -> float | None:
    """'90s', '10m', '1h', '600' -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise ParameterError(f"--budget {text!r}: expected a duration like 90s, 10m or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _fmt_us(t):
    return f"{t * 1e6:9.1f}" if t is not None else "      n/a"


def print_table(results) -> None:
    print(f"{'layer (shape, tokens, density)':<30}{'#w':>4}  {'selection':<34}{'us':>9}  "
          f"{'tuned':<52}{'us':>9}{'speedup':>9}")
    for r in results:
        base, best = r.baseline, r.best
        sp = base.time_s / best.time_s if base and best else float("nan")
        print(f"{r.layer.name:<30}{len(r.layer.weights):>4}  {base.config.label if base else 'n/a':<34.34}"
              f"{_fmt_us(base.time_s if base else None)}  {best.config.label if best else 'n/a':<52.52}"
              f"{_fmt_us(best.time_s if best else None)}{sp:>8.2f}x")


def print_sites_table(results) -> None:
    """Non-matmul functions: default (rule-based) vs tuned schedule, per distinct function."""
    if not results:
        return
    print(f"{'function':<50}{'calls':>6}{'space':>6}  {'default us':>10}  {'tuned knobs':<36}{'us':>9}{'speedup':>9}")
    for r in results:
        kn = ",".join(f"{k}={v}" for k, v in sorted((r.best_knobs or {}).items()) if v is not None) or "default"
        sp = r.default_s / r.best_s if r.default_s and r.best_s else float("nan")
        print(f"{r.site.doc:<50.50}{r.site.count:>6}{r.space:>6}  {_fmt_us(r.default_s):>10}  {kn:<36.36}"
              f"{_fmt_us(r.best_s)}{sp:>8.2f}x")


def run(args) -> int:
    from sparsec.passes.autotune.apply import default_db_path
    from sparsec.passes.autotune.db import TuningDB, merge

    if args.merge:
        out = merge(args.merge[0], *args.merge[1:])
        print(f"merged {len(args.merge) - 1} database(s) into {out.path}: {len(out)} records"
              + (f", {out.skipped} damaged lines dropped" if out.skipped else ""))
        return 0
    if (args.replace or args.decisive_only) and not args.import_:
        raise ParameterError("--replace and --decisive-only apply to --import RESULTS (--target cuda)")
    if args.target == "cuda":
        return run_cuda(args)
    if args.emit or args.import_ or args.arch or args.dtype or args.space != "default":
        raise ParameterError("--emit, --import, --arch, --dtype and --space apply to --target cuda only")
    if not args.model:
        raise ParameterError("sparsec autotune: give a model file (or --merge OUT IN...)")
    if args.target != "llvm":
        raise ParameterError(f"sparsec autotune --target {args.target!r}: llvm and cuda are tunable "
                             f"(arm kernels have no measured schedule space here)")
    budget = parse_budget(args.budget)
    if budget is None and args.trials is None:
        budget = 600.0
    if args.trials is not None and args.trials < 1:
        raise ParameterError(f"--trials must be >= 1, got {args.trials}")
    if (args.rpc is None) != (args.key is None):
        raise ParameterError("--rpc HOST:PORT and --key NAME go together")
    from sparsec.backends.target import host_target
    from sparsec.passes.autotune.driver import prepare_graph, tune_graph
    from sparsec.passes.autotune.search import Tuner

    target = host_target()
    db = TuningDB(args.db or default_db_path())
    if db.skipped:
        print(f"note: {db.skipped} damaged line(s) in {db.path} skipped (an interrupted write)", file=sys.stderr)
    if args.rpc:
        from sparsec.passes.autotune.rpc import RPCRunner
        runner = RPCRunner(args.rpc, args.key, target=target, parallel=args.parallel)
    else:
        from sparsec.passes.autotune.measure import LocalRunner
        runner = LocalRunner(target)
    g = prepare_graph(args.model, pattern=args.pattern, sparsity=args.sparsity)
    show = not args.quiet and sys.stderr.isatty()
    bar = task = None
    if show:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                       TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        bar.start()
    t_start = time.time()

    def progress(info):
        if bar is None:
            return
        nonlocal task
        total = info["budget"] or None
        best = f"best {info['best'] * 1e6:.1f} us {info['best_label']}" if info["best"] else "best -"
        text = f"trials {info['trials']}" + (f"/{total}" if total else "") + f" (space {info['space']}, " \
               f"reused {info['reused']})  {best}"
        if task is None:
            task = bar.add_task(info["layer"], total=total, info=text)
        if budget is not None and total is None:
            # the time budget drives the bar (and so the ETA)
            bar.update(task, total=budget, completed=min(budget, time.time() - t_start), info=text,
                       description=info["layer"])
        else:
            bar.update(task, total=total, completed=info["trials"], info=text, description=info["layer"])

    def on_layer(i, n, layer):
        nonlocal task
        task = None
        if not show:
            print(f"[{i + 1}/{n}] tuning {layer.name} ({len(layer.weights)} weights)", file=sys.stderr)

    site_task = None

    def on_sites(info):
        nonlocal site_task
        text = f"non-matmul functions: {info['trials']}/{info['total']} configurations"
        if bar is None:
            if info["trials"] == 0:
                print(f"tuning {text}", file=sys.stderr)
            return
        if site_task is None:
            site_task = bar.add_task("softmax, layer norm, bmm, transposes", total=max(1, info["total"]), info=text)
        bar.update(site_task, completed=info["trials"], info=text)

    tuner = Tuner(db, runner, target, progress=progress)
    sites = []
    try:
        results = tune_graph(g, tuner, pattern=args.pattern, trials=args.trials, budget_s=budget,
                             on_layer=on_layer, sites=not args.no_sites, site_results=sites, on_sites=on_sites)
    finally:
        if bar is not None:
            bar.stop()
    print_table(results)
    print_sites_table(sites)
    tr = sum(r.trials for r in results)
    print(f"{tr} new trials, {sum(r.reused for r in results)} reused, in {time.time() - t_start:.0f}s; "
          f"database {db.path} ({len(db)} records)")
    return 0


def run_cuda(args) -> int:
    """``--target cuda``: the GPU machine has no TVM, so tuning is three steps (``backends/cuda/tune.py``)."""
    from sparsec.backends.cuda import tune

    if args.import_:
        if args.model or args.emit:
            raise ParameterError("sparsec autotune --target cuda --import RESULTS takes no model and no --emit")
        from sparsec.passes.autotune.apply import default_db_path
        from sparsec.passes.autotune.db import TuningDB

        db = TuningDB(args.db or default_db_path())
        s = tune.import_results(args.import_, db, decisive_only=args.decisive_only, replace=args.replace)
        print(f"{args.import_}: {s['cells']} cells measured on {s['gpu']}: {s['ok']} candidates correct, "
              f"{s['not_ok']} not (wrong or failed: never chosen); database {db.path} ({len(db)} records"
              + (f", {s['replaced']} earlier records of these cells replaced)" if args.replace else ")"))
        for cell, rec in s["changed"]:
            base = next((c for c in cell.get("confirm", []) if c["knobs"] == cell["planner"]), None)
            gain = f" ({base['us'] * 1e-6 / rec.time_s:.2f}x the planner's {base['us']:.1f} us)" if base else ""
            diff = {k: v for k, v in rec.knobs.items() if cell["planner"].get(k) != v}
            what = "dense wgmma" if cell.get("kind") == "dense" else f"{1 - cell['density']:.0%} sparse"
            print(f"  {cell['O']}x{cell['K']} T={cell['T']} {what}: tuned "
                  f"{rec.time_s * 1e6:.1f} us{gain} with {diff}")
        if s["stale"]:
            print(f"warning: {args.import_} was built with {s['stale']}, this is {tune.versions()}: its records "
                  f"will not match compiles here (rebuild the candidates with --emit and measure again)",
                  file=sys.stderr)
        kept = s["cells"] - len(s["changed"])
        print(f"{len(s['changed'])} cells take tuned knobs; {kept} keep the planner's (not reliably faster, "
              f">= 2 % and apart beyond the spread)")
        return 0
    if not args.emit:
        raise ParameterError("sparsec autotune --target cuda: the GPU machine has no TVM, so tuning is three steps: "
                             "--emit DIR (build the candidates here), `python scripts/gpu/tune_tiled.py DIR` on the "
                             "GPU, then --import DIR/results.json")
    if not args.model:
        raise ParameterError("sparsec autotune --target cuda --emit DIR: give a model file")
    from sparsec.api import cuda_graph
    from sparsec.backends.cuda.compile import DEFAULT_DTYPE, lower_graph_cuda
    from sparsec.backends.cuda.toolchain import check_arch

    arch = check_arch(args.arch or "sm_90a")
    dtype = args.dtype or DEFAULT_DTYPE
    g, _, _, _, _ = cuda_graph(args.model, None, sparsity=args.sparsity,
                               pattern=args.pattern or ("unstructured" if args.sparsity is not None else None),
                               format="auto", spec=None, arch=arch, dtype=dtype, tuning_db=False)
    p = lower_graph_cuda(g, arch, tuning_db=False)
    cells = tune.model_cells(p, dtype, arch, args.model, args.space)
    if not cells:
        raise ParameterError(f"{args.model}: no layer runs the tiled kernel or the dense wgmma GEMM at --arch {arch} "
                             f"(nothing to tune; "
                             f"`sparsec compile --target cuda --explain` shows each layer's kernel)")
    print(f"{args.model}: {len(cells)} cell(s) to tune ({sum(c.kind == 'dense' for c in cells)} dense wgmma); "
          f"building the candidates for {arch} ...",
          file=sys.stderr)
    doc = tune.build(cells, args.emit, arch,
                     progress=lambda i, n, lab: print(f"[{i + 1}/{n}] {lab}", file=sys.stderr))
    print(f"wrote {args.emit}/tune.so and tune.json: {len(doc['cells'])} cells, {doc['kernels']} candidate kernels.\n"
          f"next: on the GPU machine `python scripts/gpu/tune_tiled.py {args.emit}`, then here "
          f"`sparsec autotune --target cuda --import {args.emit}/results.json`")
    return 0


def register(sub) -> None:
    p = sub.add_parser("autotune", help="tune formats and kernel knobs per layer into the tuning database",
                       description="Measure candidate formats x schedule knobs of every sparse layer (checked "
                                   "against a reference before timing) and record them; `sparsec compile` "
                                   "then uses the fastest. Resumable.")
    p.add_argument("model", nargs="?", help="model file (as for `sparsec compile`)")
    p.add_argument("--target", default="llvm", help="llvm (this CPU, or the RPC devices' CPU) | cuda (the tiled "
                   "kernels' split and variant, measured on a GPU machine: --emit, then --import)")
    p.add_argument("--arch", help="--target cuda: the GPU architecture (default sm_90a)")
    p.add_argument("--emit", metavar="DIR", help="--target cuda: build the model's tuning candidates into DIR")
    p.add_argument("--dtype", choices=("float16", "bfloat16"),
                   help="--target cuda --emit: the dtype the model is compiled in (as `compile --dtype`; default "
                        "float16): the tuning key includes it")
    p.add_argument("--import", dest="import_", metavar="RESULTS",
                   help="--target cuda: record scripts/gpu/tune_tiled.py's results.json in the database")
    p.add_argument("--space", default="default", choices=("default", "wide", "pdl", "cluster", "refine", "hint", "cross"),
                   help="--target cuda --emit: 'wide' also tries every single-knob neighbour of the planner's "
                        "variant (~4x the candidates); 'pdl' (after a tuning run) the planner's and the tuned "
                        "knobs, at one split either side, each launched to overlap the previous kernel (pdl=2); "
                        "'cluster' (after a tuning run) those knobs with the splits summed across a thread-block "
                        "cluster (fx=2) at splits 2-8; 'refine' (after a tuning run) every single-knob neighbour of "
                        "the tuned knobs, more splits, and register caps for more blocks per SM (minb); 'hint' "
                        "(after a tuning run) the planner's and the tuned knobs with each cache hint on the weight's "
                        "loads (ldw; a dense layer's TMA L2 promotion, l2p); 'cross' (after a tuning run) the tuned "
                        "knobs of the layer's other token counts and density classes")
    p.add_argument("--decisive-only", action="store_true",
                   help="--import: only the records the choice rests on (re-measured finalists, failed candidates)")
    p.add_argument("--replace", action="store_true",
                   help="--import: remove the database's earlier records of the measured cells first (a re-tune)")
    p.add_argument("--budget", help="time budget (90s, 10m, 1h; default 10m unless --trials)")
    p.add_argument("--trials", type=int, help="new measurements in total")
    p.add_argument("--db", help="tuning database (default $SPARSEC_TUNING_DB or <cache>/tuning.jsonl)")
    p.add_argument("--pattern", help="prune to this pattern first (as `sparsec compile`)")
    p.add_argument("--sparsity", type=float, help="prune to this fraction of zeros (default pattern unstructured)")
    p.add_argument("--rpc", help="TVM RPC tracker HOST:PORT (measure on its devices)")
    p.add_argument("--key", help="device key registered with the tracker")
    p.add_argument("--parallel", type=int, default=None, help="RPC: measurements in flight (default: free devices)")
    p.add_argument("--merge", nargs="+", metavar="DB", help="merge databases: OUT IN [IN ...] (atomic)")
    p.add_argument("--no-sites", action="store_true",
                   help="tune the sparse layers only (not softmax, layer norm, bmm, transposes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
