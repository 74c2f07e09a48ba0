"""`sparsec simulate piuma`: run the PIUMA SpGEMM simulator from the command line."""
from __future__ import annotations

import json
import sys

from sparsec.errors import ParameterError
from sparsec.sim.piuma.algorithms import ALGORITHMS


def register(sims) -> None:
    p = sims.add_parser("piuma", help="PIUMA-style SpGEMM (inner / outer / row-wise / SMASH)",
                        description="Simulate C = A @ B on a PIUMA-style machine.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--matrix", metavar="A.mtx", help="Matrix Market file for A")
    src.add_argument("--generate", metavar="SPEC",
                     help="generator, e.g. rmat:scale=14,ef=8 | er:n=1000,avg=8 | "
                          "banded:n=1000,bw=4 | nx:karate")
    p.add_argument("--b", metavar="B.mtx", help="Matrix Market file for B (default: A)")
    p.add_argument("--algo", default="all", choices=[*ALGORITHMS, "all"])
    p.add_argument("--config", metavar="FILE.toml", help="machine config overriding the defaults")
    p.add_argument("--cores", type=int, help="cores (default from the config: 8)")
    p.add_argument("--threads", type=int, help="hardware threads per core (default 66)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="OUT.png", help="write a bar chart of the comparison")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from sparsec.sim.piuma.config import load_config
    from sparsec.sim.piuma.engine import simulate
    from sparsec.sim.piuma.algorithms.operands import Operands
    from sparsec.sim.piuma.inputs import generate, load_mtx
    from sparsec.sim.piuma.report import comparison, plot_comparison, print_table

    cfg = load_config(args.config)
    if args.cores is not None:
        if args.cores < 1:
            raise ParameterError(f"--cores must be >= 1, got {args.cores}")
        cfg = cfg.with_(core__count=args.cores)
    if args.threads is not None:
        cfg = cfg.with_threads(args.threads)
    A = load_mtx(args.matrix) if args.matrix else generate(args.generate)
    B = load_mtx(args.b) if args.b else A
    ops = Operands(A, B)
    algos = list(ALGORITHMS) if args.algo == "all" else [args.algo]
    show = not args.quiet and sys.stderr.isatty()
    results = {}
    if show:
        from rich.progress import Progress
        with Progress(transient=True) as bar:
            for name in algos:
                task = bar.add_task(f"{name}", total=1)
                results[name] = simulate(None, None, name, cfg, operands=ops,
                                         progress=lambda d, t, task=task: bar.update(
                                             task, completed=d / max(t, 1)))
                bar.update(task, completed=1)
    else:
        for name in algos:
            results[name] = simulate(None, None, name, cfg, operands=ops)
    if args.json:
        print(json.dumps(comparison(results), indent=2, sort_keys=True))
    else:
        print_table(results)
    if args.plot:
        plot_comparison(results, args.plot)
    return 0
