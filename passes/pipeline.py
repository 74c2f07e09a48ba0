"""Running a named list of passes with the verifier between them."""
from __future__ import annotations

from typing import Callable, Sequence

from sparsec.ir.graph import Graph
from sparsec.ir.verify import verify

Pass = tuple[str, Callable[[Graph], Graph]]


def run_passes(g: Graph, passes: Sequence[Pass], check: bool = True) -> Graph:
    """Apply ``passes`` in order; with ``check`` the verifier runs after each and names the pass."""
    if check:
        verify(g, after_pass="<input>")
    done: list[str] = []
    for name, fn in passes:
        g = fn(g)
        if check:
            verify(g, after_pass=name, passes_before=done)
        done.append(name)
    return g
