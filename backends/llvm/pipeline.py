"""The CPU backend's pass pipeline (a named list; shared phases live in sparsec.passes)."""
from __future__ import annotations

from sparsec.passes.canonicalize import canonicalize_matmul
from sparsec.passes.fuse import fuse_epilogues
from sparsec.passes.pipeline import Pass
from sparsec.passes.select import Choice, select_formats
from sparsec.passes.sparsify import sparsify


def cpu_pipeline(pattern: str | None, sparsity: float | None, fmt: str, choices: list[Choice]) -> list[Pass]:
    """``choices`` receives the format decisions (for the report)."""
    def select(g):
        g, ch = select_formats(g, fmt, pattern)
        choices.extend(ch)
        return g

    passes: list[Pass] = [("canonicalize_matmul", canonicalize_matmul)]
    if pattern is not None:
        passes.append(("sparsify", lambda g: sparsify(g, pattern, sparsity)))
    passes += [("select_formats", select), ("fuse_epilogues", fuse_epilogues)]
    return passes
