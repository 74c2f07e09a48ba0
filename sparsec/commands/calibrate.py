"""`sparsec calibrate`: measure kernels on this CPU and fit the cost model (stored, then re-used)."""
from __future__ import annotations

import sys


def run(args) -> int:
    from sparsec.backends.llvm.measure import measure_matmul
    from sparsec.backends.target import num_threads
    from sparsec.passes.cost.calibrate import calibrate, calibration_path

    threads = num_threads()
    progress = None
    if sys.stderr.isatty() and not args.quiet:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("calibrating", total=None)

        def progress(i, n, what):
            bar.update(task, total=n, completed=i, description=f"calibrating {what}")
    try:
        model = calibrate(measure_matmul, threads, progress)
    finally:
        if progress is not None:
            bar.stop()
    path = args.output or calibration_path(threads)
    model.save(path)
    print(f"{model.source}; {len(model.coef)} (format, regime) fits; wrote {path}")
    for key, c in sorted(model.coef.items()):
        print(f"  {key:<20} c={c[0] * 1e6:8.2f} us  a={c[1] * 1e12:8.3f} ps/MAC  b={c[2] * 1e12:8.3f} ps/B  "
              f"d={c[3] * 1e12:8.3f} ps/meta")
    return 0


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="measure kernels on this CPU and fit the format cost model",
                       description="Times each kernel family on a grid of shapes/densities/tokens and fits the cost "
                                   "model's coefficients; `sparsec compile --format auto` re-uses the result.")
    p.add_argument("-o", "--output", help="where to store the fit (default: the per-machine cache file)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
