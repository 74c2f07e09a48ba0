"""Constant folding: a node whose inputs are all constants becomes a constant.

aot_autograd graphs (torch.compile) take parameters as graph inputs, which the
dynamo backend turns into constants; the ATen graph then holds ``permute(W)``
before ``addmm`` and, under BDWP training, ``mul(W, mask)`` before it. Folding
these makes the weight operand of the matmul a constant again, so
``canonicalize_matmul`` turns it into ``linear`` and ``select_formats`` can
pack it. The lowering already folds small results (``FOLD_LIMIT``); this pass
folds any size, but only ops whose result is no larger than their largest
input (layout ops, elementwise ops without broadcasting blow-up, casts), so a
fold never multiplies memory (``expand`` of a constant stays a node).

A folded node keeps its name (a graph output may be one), evaluated with the
op's reference rule, so folding cannot change a value.
"""
from __future__ import annotations

import dataclasses
import math

from sparsec.ir.graph import Constant, Graph
from sparsec.ir.formats import Dense
from sparsec.ir.ops import WEIGHT_OPERAND, Op, evaluate

# matmul-class ops (a kernel family runs them) and ops that grow their input are never folded
NO_FOLD = set(WEIGHT_OPERAND) | {Op.EXPAND, Op.EMBEDDING}


def fold_constants(g: Graph) -> Graph:
    consts = g.constant_map()
    new: dict[str, Constant] = {}
    nodes = []
    for n in g.nodes:
        ins = [new.get(i) or consts.get(i) for i in n.inputs]
        if (n.op in NO_FOLD or not n.inputs or any(c is None for c in ins)
                or n.type.numel > max(math.prod(c.value.shape) for c in ins)):
            nodes.append(n)
            continue
        out = evaluate(n.op, [c.dense() for c in ins], n.attr)
        new[n.name] = Constant(n.name, Dense.from_dense(out.contiguous()))
    if not new:
        return g
    used = {i for n in nodes for i in n.inputs} | set(g.outputs)
    constants = [c for c in (*g.constants, *new.values()) if c.name in used]
    return dataclasses.replace(g, constants=tuple(constants), nodes=tuple(nodes))
