"""The CPU backend's pass pipeline (a named list; shared phases live in sparsec.passes)."""
from __future__ import annotations

from sparsec.passes.canonicalize import canonicalize_matmul
from sparsec.passes.fuse import fuse_epilogues
from sparsec.passes.pipeline import Pass
from sparsec.passes.select import Choice, select_formats
from sparsec.passes.sparsify import sparsify


def cost_model(threads: int | None = None):
    """The calibrated cost model of this machine if `sparsec calibrate` stored one, else the analytic one."""
    from sparsec.backends.target import num_threads
    from sparsec.passes.cost import CostModel, host_desc
    from sparsec.passes.cost.calibrate import load_calibrated

    threads = threads or num_threads()
    return load_calibrated(threads) or CostModel.analytic(host_desc(threads))


def cpu_pipeline(pattern: str | None, sparsity: float | None, fmt: str, choices: list[Choice],
                 cost=None, measure=None, spec: str | None = None) -> list[Pass]:
    """``choices`` receives the format decisions (for the report); ``measure`` enables --measure."""
    cost = cost or cost_model()

    def select(g):
        g, ch = select_formats(g, fmt, pattern, cost=cost, measure=measure)
        choices.extend(ch)
        return g

    passes: list[Pass] = [("canonicalize_matmul", canonicalize_matmul)]
    if spec is not None:
        from sparsec.passes.spec import load_spec, sparsify_by_spec
        s = load_spec(spec)
        passes.append(("sparsify_by_spec", lambda g: sparsify_by_spec(g, s)))
    elif pattern is not None:
        passes.append(("sparsify", lambda g: sparsify(g, pattern, sparsity)))
    passes += [("select_formats", select), ("fuse_epilogues", fuse_epilogues)]
    return passes
