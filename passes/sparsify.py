"""Pruning weights of a graph to a pattern (only when asked: compile never
changes the model's function otherwise)."""
from __future__ import annotations

from sparsec.ir.errors import ParameterError
from sparsec.ir.formats import Dense
from sparsec.ir.graph import Graph
from sparsec.ir.ops import Op
from sparsec.passes.prune import parse_pattern, prune

# The ops whose weights `sparsify` prunes (the ones kernel families exist for).
PRUNABLE = (Op.LINEAR, Op.CONV2D)


def prunable_weights(g: Graph) -> list[str]:
    out = []
    for node, const in g.weights():
        if node.op in PRUNABLE and const.name not in out and len(const.value.shape) >= 2:
            out.append(const.name)
    return out


def sparsify(g: Graph, pattern: str, sparsity: float | None = None, only: list[str] | None = None) -> Graph:
    """Prune every prunable weight (or those named in ``only``) to ``pattern`` at ``sparsity``."""
    p = parse_pattern(pattern)
    if p.kind != "nm" and sparsity is None:
        raise ParameterError(f"--pattern {p} needs --sparsity")
    names = prunable_weights(g) if only is None else only
    for name in names:
        c = g.constant(name)
        w = c.dense()
        if not w.dtype.is_floating_point:
            continue
        g = g.with_constant(name, Dense.from_dense(prune(w, p, sparsity).weight))
    return g
